"""The administrator's and auditor's commands, driven through click's runner against real files."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from axis import edxml, keystore, signing
from cli import cli
from tests.conftest import FIXTURES, MALFORMED_SAMPLES, REPO

EXAMPLES = REPO / "schemas" / "examples"
EXPECTED_SAMPLE_CODES = {
    "edoc.edxml": "xml.malformed",
    "edoc_new.edxml": "xml.malformed",
    "edoc_replacement.edxml": "signature.wrong_namespace",
    "edoc_revocation.edxml": "signature.wrong_namespace",
    "edoc_update.edxml": "signature.wrong_namespace",
}


def run(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, input=input, catch_exceptions=False)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("cli") / "keys"
    result = run("keys", "init", "--dir", str(directory))
    assert result.exit_code == 0, result.output
    return directory


def _issue(keys: Path, organ_id: str, *extra: str, env: dict[str, str] | None = None) -> tuple[Path, Path]:
    result = run("keys", "issue", organ_id, "--dir", str(keys), *extra, env=env)
    assert result.exit_code == 0, result.output
    key_line, cert_line = result.stdout.splitlines()[:2]
    return Path(key_line), Path(cert_line)


def test_every_command_has_help() -> None:
    def walk(command: click.Command, path: str) -> None:
        assert command.help, f"{path} has no help text"
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, f"{path} {name}")

    walk(cli, "axis")


def test_keys_init_writes_private_keys_0600_and_refuses_twice(keys: Path) -> None:
    for private in (keys / "ca" / "ca.key", keys / "axis.key"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert (keys / "trust" / "ca.pem").exists() and (keys / "trust" / "ca.crl").exists()
    again = run("keys", "init", "--dir", str(keys))
    assert again.exit_code == 1
    assert "keystore.exists" in again.output


def test_issue_prints_both_paths_and_writes_key_0600(keys: Path) -> None:
    key, cert = _issue(keys, "000.00.00.H14")
    assert (key.name, cert.name) == ("000.00.00.H14.key", "000.00.00.H14.pem")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"BEGIN CERTIFICATE" in cert.read_bytes()
    malformed = run("keys", "issue", "28.22.H17", "--dir", str(keys))
    assert malformed.exit_code == 1 and "identifier.organ_id" in malformed.output


@pytest.mark.parametrize("name", sorted(EXPECTED_SAMPLE_CODES) + ["status_acceptance_03.edxml"])
def test_verify_each_shared_sample_exits_1_with_a_precise_reason(
    keys: Path, samples: Path, name: str
) -> None:
    result = run("verify", str(samples / name), "--trust", str(keys / "trust"))
    assert result.exit_code == 1
    code = EXPECTED_SAMPLE_CODES.get(name, "signature.missing")
    assert f"INVALID  {code}" in result.output
    assert "reason" in result.output


def test_verify_every_shared_sample_is_invalid(keys: Path, samples: Path) -> None:
    for path in sorted(samples.glob("*.edxml")):
        result = run("verify", str(path), "--trust", str(keys / "trust"), "--json")
        report = json.loads(result.output)
        assert result.exit_code == 1 and report["valid"] is False, path.name
        expected = EXPECTED_SAMPLE_CODES.get(path.name, "signature.missing")
        assert report["code"] == expected, path.name
        assert path.name in MALFORMED_SAMPLES or report["code"].startswith("signature.")


@pytest.mark.parametrize(
    ("sample", "organ_id", "replace"),
    [("status_acceptance_03.edxml", "000.00.00.H41", False), ("edoc_update.edxml", "000.00.00.G22", True)],
)
def test_newly_issued_agency_signs_a_sample_and_it_verifies(
    keys: Path, samples: Path, tmp_path: Path, sample: str, organ_id: str, replace: bool
) -> None:
    key, cert = _issue(keys, organ_id, "--out", str(tmp_path))
    out = tmp_path / f"signed-{sample}"
    args = ["sign", str(samples / sample), "--key", str(key), "--cert", str(cert), "-o", str(out)]
    if replace:
        refused = run(*args)
        assert refused.exit_code == 1 and "signature.already_signed" in refused.output
        args.append("--replace")
    assert run(*args).exit_code == 0
    result = run("verify", str(out), "--trust", str(keys / "trust"))
    assert result.exit_code == 0, result.output
    assert "VALID" in result.output and organ_id in result.output and "RSA-SHA256" in result.output
    report = json.loads(run("verify", str(out), "--trust", str(keys / "trust"), "--json").output)
    assert report["valid"] is True
    assert report["signer"]["organ_id"] == organ_id
    assert report["algorithms"]["digest"] == "http://www.w3.org/2001/04/xmlenc#sha256"
    assert len(report["sha256"]) == 64


def test_revoke_then_verify_now_and_at_acceptance_time(keys: Path, samples: Path, tmp_path: Path) -> None:
    key, cert = _issue(keys, "000.00.00.H41", "--out", str(tmp_path))
    out = tmp_path / "status.edxml"
    assert (
        run(
            "sign",
            str(samples / "status_finish_06.edxml"),
            "--key",
            str(key),
            "--cert",
            str(cert),
            "-o",
            str(out),
        ).exit_code
        == 0
    )
    signed_at = datetime.now(UTC)
    fingerprint = json.loads(run("verify", str(out), "--trust", str(keys / "trust"), "--json").output)[
        "signer"
    ]["fingerprint"]
    revoked = run("keys", "revoke", fingerprint, "--dir", str(keys))
    assert revoked.exit_code == 0, revoked.output
    later = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    refused = run("verify", str(out), "--trust", str(keys / "trust"), "--at", later)
    assert refused.exit_code == 1 and "certificate.revoked" in refused.output
    before = (signed_at - timedelta(seconds=5)).isoformat()
    assert run("verify", str(out), "--trust", str(keys / "trust"), "--at", before).exit_code == 0
    unknown = run("keys", "revoke", "00" * 32, "--dir", str(keys))
    assert unknown.exit_code == 1 and "certificate.unknown" in unknown.output
    refreshed = run("keys", "crl", "--dir", str(keys))
    assert refreshed.exit_code == 0 and "valid until" in refreshed.output


def test_encrypted_key_needs_its_passphrase(keys: Path, samples: Path, tmp_path: Path) -> None:
    env = {"AXIS_KEY_PASSPHRASE": "correct horse battery staple"}
    key, cert = _issue(keys, "000.00.00.G22", "--out", str(tmp_path), "--encrypt", env=env)
    assert b"ENCRYPTED" in key.read_bytes()
    out = tmp_path / "signed.edxml"
    args = [
        "sign",
        str(samples / "edoc_update.edxml"),
        "--replace",
        "--key",
        str(key),
        "--cert",
        str(cert),
        "-o",
        str(out),
    ]
    wrong = run(*args, env={"AXIS_KEY_PASSPHRASE": "wrong"})
    assert wrong.exit_code == 1 and "keystore.unreadable_key" in wrong.output
    assert not out.exists()
    prompted = run(*args, env={"AXIS_KEY_PASSPHRASE": ""}, input="correct horse battery staple\n")
    assert prompted.exit_code == 0, prompted.output
    assert "correct horse" not in prompted.output.replace("Passphrase", "")


@pytest.mark.parametrize(
    "args",
    [
        ["verify", "/nonexistent.edxml"],
        ["verify", "{sample}", "--at", "yesterday"],
        ["verify", "{sample}", "--trust", "/nonexistent-trust"],
        ["sign", "{sample}"],
        ["keys", "issue"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    filled = [a.format(sample=EXAMPLES / "status.edxml") for a in args]
    assert run(*filled).exit_code == 2


def test_verify_without_trust_directory_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("verify", str(EXAMPLES / "status.edxml"))
    assert result.exit_code == 2 and "keystore.missing" in result.output


def test_trust_directory_may_hold_der_files(keys: Path, samples: Path, tmp_path: Path) -> None:
    from axis import pki

    der_trust = tmp_path / "trust-der"
    der_trust.mkdir()
    (der_trust / "state-ca.crt").write_bytes(
        pki.load_certificates((keys / "trust" / "ca.pem").read_bytes())[0].public_bytes(Encoding.DER)
    )
    (der_trust / "state-ca.crl").write_bytes(
        pki.load_crl((keys / "trust" / "ca.crl").read_bytes()).public_bytes(Encoding.DER)
    )
    key, cert = _issue(keys, "000.00.00.G22", "--out", str(tmp_path))
    out = tmp_path / "signed.edxml"
    assert (
        run(
            "sign",
            str(samples / "edoc_revocation.edxml"),
            "--replace",
            "--key",
            str(key),
            "--cert",
            str(cert),
            "-o",
            str(out),
        ).exit_code
        == 0
    )
    result = run("verify", str(out), "--trust", str(der_trust))
    assert result.exit_code == 0, result.output
    empty = tmp_path / "empty-trust"
    empty.mkdir()
    refused = run("verify", str(out), "--trust", str(empty))
    assert refused.exit_code == 1 and "certificate.untrusted" in refused.output


# ---------------------------------------------------------------- axis sign refuses what the axis would refuse

HEADER = f"{edxml.q('edXMLEnvelope')}/{edxml.q('edXMLHeader')}"


def _example(name: str) -> etree._Element:
    return etree.fromstring((EXAMPLES / name).read_bytes())


def _write(root: etree._Element, path: Path) -> Path:
    path.write_bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))
    return path


def _sign(keys: Path, tmp_path: Path, organ_id: str, package: Path, *extra: str) -> tuple[Result, Path]:
    """``axis sign`` with a key issued to ``organ_id`` in ``tmp_path`` (once per test)."""
    key, cert = tmp_path / f"{organ_id}.key", tmp_path / f"{organ_id}.pem"
    if not key.exists():
        _issue(keys, organ_id, "--out", str(tmp_path))
    out = tmp_path / f"signed-{package.name}"
    return run("sign", str(package), "--key", str(key), "--cert", str(cert), "-o", str(out), *extra), out


def _status_header(root: etree._Element) -> etree._Element:
    message = root.find(f"{HEADER}/{edxml.q('MessageHeader')}")
    assert message is not None
    message.tag = edxml.q("Status")
    return root


def test_sign_accepts_a_status_header_element_and_it_verifies(keys: Path, tmp_path: Path) -> None:
    package = _write(_status_header(_example("status.edxml")), tmp_path / "status.edxml")
    signed, out = _sign(keys, tmp_path, "000.00.00.H41", package)
    assert signed.exit_code == 0, signed.output
    verified = run("verify", str(out), "--trust", str(keys / "trust"))
    assert verified.exit_code == 0, verified.output
    assert "status 000.00.00.G22,2026/11/20,1234/VPCP-KSTT from 000.00.00.H41" in verified.output


@pytest.mark.parametrize(
    ("organ_id", "example", "damage", "code"),
    [
        ("000.00.00.G22", "document.edxml", "unknown element", "edxml.schema_invalid"),
        ("000.00.00.G22", "document.edxml", "no subject", "edxml.missing_field"),
        ("000.00.00.H41", "status.edxml", "two header elements", "edxml.ambiguous_kind"),
        ("000.00.00.H41", "document.edxml", "another agency's package", "signature.signer_not_sender"),
    ],
)
def test_sign_refuses_before_signing_what_the_axis_would_refuse(
    keys: Path, tmp_path: Path, organ_id: str, example: str, damage: str, code: str
) -> None:
    root = _example(example)
    message = root.find(f"{HEADER}/{edxml.q('MessageHeader')}")
    assert message is not None
    if damage == "unknown element":
        message.append(etree.Element(edxml.q("Unknown")))
    elif damage == "no subject":
        message.remove(message.find(edxml.q("Subject")))  # type: ignore[arg-type]
    elif damage == "two header elements":
        status = etree.Element(edxml.q("Status"))
        status.extend(etree.fromstring(etree.tostring(message)))
        message.addnext(status)
    signed, out = _sign(keys, tmp_path, organ_id, _write(root, tmp_path / example))
    assert signed.exit_code == 1
    assert f"Error: {code}: " in signed.output
    assert not out.exists()


@pytest.mark.parametrize("where", ["edXMLHeader", "edXML"])
def test_sign_replace_removes_a_placeholder_signature_before_the_shape_check(
    keys: Path, tmp_path: Path, where: str
) -> None:
    """Agency software writes an edXML:Signature placeholder (where the schema allows one, or not):
    with --replace it is removed first and is never taken for a shape fault."""
    root = _example("document.edxml")
    parent = root.find(HEADER) if where == "edXMLHeader" else root
    assert parent is not None
    etree.SubElement(parent, edxml.q("Signature")).text = "placeholder"
    package = _write(root, tmp_path / "placeholder.edxml")
    refused, out = _sign(keys, tmp_path, "000.00.00.G22", package)
    assert refused.exit_code == 1 and "signature.already_signed" in refused.output
    signed, out = _sign(keys, tmp_path, "000.00.00.G22", package, "--replace")
    assert signed.exit_code == 0, signed.output
    assert b"placeholder" not in out.read_bytes()
    assert run("verify", str(out), "--trust", str(keys / "trust")).exit_code == 0


# ---------------------------------------------------------------- axis verify names the file's own lines


@pytest.mark.parametrize(
    ("fixture", "line", "fault"),
    [
        ("unclosed-element.edxml", 16, "line 16, column 23: Opening and ending tag mismatch: From line 7 and MessageHeader"),
        ("undeclared-prefix.edxml", 15, "line 15, column 38: Namespace prefix xlink for href on Reference is not defined"),
    ],
)
def test_verify_names_libxml2_fault_in_a_malformed_file(keys: Path, fixture: str, line: int, fault: str) -> None:
    result = run("verify", str(FIXTURES / fixture), "--trust", str(keys / "trust"))
    assert result.exit_code == 1
    assert "INVALID  xml.malformed" in result.output
    assert f"reason       {fault}" in result.output
    report = json.loads(run("verify", str(FIXTURES / fixture), "--trust", str(keys / "trust"), "--json").output)
    assert (report["code"], report["line"]) == ("xml.malformed", line)


def test_verify_reports_a_fault_in_the_signed_content_at_its_line_in_the_file(keys: Path, tmp_path: Path) -> None:
    """The schema is checked on the canonical form (no XML declaration, comments or signature); the
    fault is still reported at the line the sender sees."""
    root = _example("document.edxml")
    root.find(HEADER).insert(0, etree.Comment(" written by\n  the agency's software "))  # type: ignore[union-attr]
    manifest = root.find(f"{edxml.q('edXMLEnvelope')}/{edxml.q('edXMLBody')}/{edxml.q('edXMLManifest')}")
    assert manifest is not None
    manifest.addnext(etree.Element(edxml.q("Unknown")))
    etree.indent(root)
    key, cert = _issue(keys, "000.00.00.G22", "--out", str(tmp_path))
    unsigned = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    signed = signing.sign(unsigned, keystore.read_private_key(key), keystore.read_certificates(cert)[0])
    package = tmp_path / "signed.edxml"
    package.write_bytes(signed.replace(b"<ds:KeyInfo>", b"\n<ds:KeyInfo>"))
    line = next(n for n, text in enumerate(package.read_text().splitlines(), 1) if "<Unknown" in text)
    report = json.loads(run("verify", str(package), "--trust", str(keys / "trust"), "--json").output)
    assert (report["code"], report["line"]) == ("edxml.schema_invalid", line)
    assert report["detail"].startswith(f"line {line}: Element '{{{edxml.NS}}}Unknown'")


def test_trail_prints_when_each_status_was_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """The store names the status time ``updated_at``; a column read under another key stays empty."""
    import cli as cli_module

    class Axis:
        def __enter__(self) -> Axis:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def trail(self, message_id: str) -> dict[str, object]:
            return {
                "message": {"kind": "document", "id": message_id, "document_id": "000.00.00.G22,2026/01/02,7/VPCP",
                            "sender": "000.00.00.G22", "accepted_at": "2026-01-02T01:00:00+00:00"},
                "deliveries": [{"recipient": "000.00.00.H41", "state": "delivered", "attempts": 1,
                                "delivered_at": "2026-01-02T01:00:05+00:00", "last_error": None}],
                "statuses": [{"recipient": "000.00.00.H41", "status_code": "03", "message_id": "s1",
                              "updated_at": "2026-01-02T02:30:00+00:00"}],
                "events": [],
            }

    monkeypatch.setattr(cli_module, "_client", lambda *args, **kwargs: Axis())
    result = run("trail", "m1", "--url", "http://axis.invalid", "--token", "t")
    assert result.exit_code == 0, result.output
    status_row = next(line for line in result.output.splitlines() if " 03 " in f" {line} ")
    assert "2026-01-02T02:30:00+00:00" in status_row


def test_verify_receipt_keeps_every_label_apart_from_its_value(keys: Path, tmp_path: Path) -> None:
    from axis import receipts

    key, certificate = keystore.KeyStore(keys).axis_signer()
    receipt = receipts.Receipt(
        "accepted", "m1", "document", "000.00.00.G22,2026/01/02,7/VPCP", "ab" * 32, "000.00.00.G22",
        ("000.00.00.H41",), datetime.now(UTC).isoformat(),
    )
    path = tmp_path / "receipt.xml"
    path.write_bytes(receipts.sign(receipt, key, certificate))
    result = run("verify-receipt", str(path), "--trust", str(keys / "trust"), "--axis-cert", str(keys / "axis.pem"))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert all(len(line.split(maxsplit=1)) == 2 and "  " in line for line in lines), lines
    assert dict(line.split(maxsplit=1) for line in lines)["axis_certificate_checked"] == "True"
