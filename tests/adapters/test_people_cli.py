"""The people's CLI, each command its own process against a real axis: send (options, a JSON
description, an edXML file), inbox, fetch, status, receipts, trail."""

from __future__ import annotations

import json
from pathlib import Path

from axis import edxml
from axis.server.runtime import Running
from tests.adapters.conftest import axis_command, environment
from tests.server.conftest import G22, H14, H41, Network


async def test_send_inbox_fetch_status_receipts_trail(network: Network, axis: Running, tmp_path: Path) -> None:
    agencies = network.root / "agencies"
    trust = str(network.settings.trust)
    vpcp = environment(AXIS_URL=axis.url, AXIS_TOKEN=network.endpoint("vpcp", [G22]), AXIS_TRUST=trust,
                       AXIS_KEY=str(agencies / f"{G22}.key"), AXIS_CERT=str(agencies / f"{G22}.pem"))
    nghean = environment(AXIS_URL=axis.url, AXIS_TOKEN=network.endpoint("nghean", [H41]), AXIS_TRUST=trust,
                         AXIS_KEY=str(agencies / f"{H41}.key"), AXIS_CERT=str(agencies / f"{H41}.pem"))
    annex = tmp_path / "phu-luc.pdf"
    annex.write_bytes(b"%PDF-1.4 phu luc\n")

    code, out, err = await axis_command("send", "--to", H41, "--to", H14, "--subject", "V/v kiểm tra", "--code", "77/VPCP-TH",
                                        "--attach", str(annex), "--receipt", str(tmp_path / "r.xml"), "--json", env=vpcp)
    assert code == 0, err
    first = json.loads(out)
    assert first["recipients"] == [H41, H14] and first["receipt_verified"] and not first["resubmitted"]
    assert first["document_id"].endswith(",77/VPCP-TH") and (tmp_path / "r.xml").read_bytes() == first["receipt"].encode()

    description = tmp_path / "letter.json"
    description.write_text(json.dumps({"to": [H41], "subject": "V/v mô tả", "attachments": ["phu-luc.pdf"]}))
    code, out, err = await axis_command("send", "--describe", str(description), env=vpcp)
    assert code == 0 and "accepted" in out and "verified" in out, err

    unsigned = tmp_path / "unsigned.edxml"
    unsigned.write_bytes(edxml.build(network.document(recipients=(edxml.Organization(organ_id=H41),))))
    code, out, err = await axis_command("send", str(unsigned), "--json", env=vpcp)
    assert code == 0, err
    code, again, err = await axis_command("send", str(network.root / "none.edxml"), env=vpcp)
    assert code == 2  # no such file: a usage error

    code, out, err = await axis_command("send", "--to", "000.00.00.H99", "--subject", "x", env=vpcp)
    assert code == 1 and "recipient.not_registered" in err

    code, out, err = await axis_command("inbox", "--wait", "5", "--json", env=nghean)
    assert code == 0, err
    items = json.loads(out)
    assert len(items) == 3 and {i["kind"] for i in items} == {"document"}
    code, table, err = await axis_command("inbox", env=nghean)
    assert first["message_id"] in table and "MESSAGE_ID" in table

    target = tmp_path / "got.edxml"
    code, out, err = await axis_command("fetch", first["message_id"], "-o", str(target), "--ack", "--json", env=nghean)
    assert code == 0, err
    fetched = json.loads(out)
    assert fetched["verified"] and fetched["signer"] == G22 and fetched["acknowledged"] == [H41]
    letter = edxml.parse(target.read_bytes())
    assert isinstance(letter, edxml.DocumentPackage) and letter.attachments[0].data == annex.read_bytes()

    for status in ("03", "04", "05", "06"):
        code, out, err = await axis_command("status", first["message_id"], status, "--description", f"bước {status}", env=nghean)
        assert code == 0 and f"status {status} sent" in out, err

    code, out, err = await axis_command("receipts", first["message_id"], "--json", env=vpcp)
    assert code == 0, err
    kinds = sorted((r["kind"], r["recipient"], r["verified"]) for r in json.loads(out))
    assert kinds == [("accepted", None, "yes"), ("delivered", H41, "yes")]
    code, out, err = await axis_command("trail", first["message_id"], env=vpcp)
    assert code == 0 and "delivered" in out and "06" in out and "queued" in out, err
    code, out, err = await axis_command("trail", first["message_id"], "--json", env=vpcp)
    trail = json.loads(out)
    assert {s["status_code"] for s in trail["statuses"]} == {"06"}

    # The auditor's offline checks: the receipt against the axis certificate, the whole event chain.
    axis_cert = str(network.keys.axis_certificate)
    code, out, err = await axis_command("verify-receipt", str(tmp_path / "r.xml"), "--trust", trust, "--axis-cert", axis_cert, "--json", env=vpcp)
    assert code == 0 and json.loads(out)["message_id"] == first["message_id"] and json.loads(out)["axis_certificate_checked"], err
    agency_cert = str(network.root / "agencies" / f"{G22}.pem")
    code, out, err = await axis_command("verify-receipt", str(tmp_path / "r.xml"), "--trust", trust, "--axis-cert", agency_cert, env=vpcp)
    assert code == 1 and "signature.not_axis" in out
    (tmp_path / "r-altered.xml").write_bytes((tmp_path / "r.xml").read_bytes().replace(G22.encode(), b"000.00.00.G01", 1))
    code, out, err = await axis_command("verify-receipt", str(tmp_path / "r-altered.xml"), "--trust", trust, env=vpcp)
    assert code == 1 and "signature.digest_mismatch" in out
    code, out, err = await axis_command("--config", str(network.root / "axis.toml"), "audit", "verify")
    assert code == 0 and "chain intact" in out, err

    # Someone else's message is not found; a wrong token is refused with its code.
    code, out, err = await axis_command("trail", first["message_id"], env={**nghean, "AXIS_TOKEN": "wrong"})
    assert code == 1 and "auth.invalid" in err and "wrong" not in err
