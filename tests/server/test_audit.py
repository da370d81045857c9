"""Signed checkpoints of the audit log, tried as an insider would: on the axis's own database,
drop the append-only triggers, turn a ``delivery.delivered`` event into ``delivery.expired`` and
recompute every later hash. The chain alone still verifies; the checkpoints do not, and a
witness's kept copies catch even an insider who holds the axis key and signs again."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import shutil
import sqlite3
import zipfile
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from adapters.demo import NGHE_AN
from axis import bundles, checkpoints, keystore, pki, witness
from axis.pki import fingerprint as pki_fingerprint
from axis.server.runtime import start
from axis.store import open_store
from axis.store.events import GENESIS, Event, chain_hash
from cli import cli
from tests.server.conftest import G22, H41, Client, Network, make_network


def audit(network: Network, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--config", str(network.settings.path), "audit", *args])
    return result.exit_code, result.output


async def _traffic(network: Network, session: aiohttp.ClientSession, keep: Path) -> None:
    """Two documents delivered, a checkpoint after each, and a witness's copies of both."""
    sender_token, recipient_token = network.endpoint("vpcp", [G22]), network.endpoint("nghe-an", [H41])
    axis = await start(network.settings)
    try:
        sender, recipient = Client(session, axis.url, sender_token), Client(session, axis.url, recipient_token)
        auditor = Client(session, axis.url, network.admin_token)
        for _ in range(2):
            status, body = await sender.submit(network.sign(network.document(recipients=(NGHE_AN,))))
            assert status == 202, body
            status, _, _ = await recipient.request("POST", f"/v1/messages/{body['message_id']}/ack")
            assert status == 200
            status, made, _ = await auditor.request("POST", "/v1/audit/checkpoints")
            assert status == 201 and made["checkpoint"]["checkpoint"]["number"] >= 1
        status, listed, _ = await recipient.request("GET", "/v1/audit/checkpoints")  # any registered party
        assert status == 200 and [c["checkpoint"]["number"] for c in listed["items"]] == [1, 2]
        pulled = await asyncio.to_thread(witness.pull, axis.url, recipient_token, keep)
        assert pulled.added == 2
        again = await asyncio.to_thread(witness.pull, axis.url, recipient_token, keep)
        assert again.added == 0
    finally:
        await axis.stop()


def _rewrite(database: Path, kind: str, to: str) -> int:
    """The insider: the first event of ``kind`` says ``to`` instead, and every hash after it is
    recomputed, so the chain verifies again. Returns the event's number."""
    db = sqlite3.connect(database)
    db.execute("DROP TRIGGER events_append_only_update")
    db.execute("DROP TRIGGER events_append_only_delete")
    rows = db.execute("SELECT seq, content FROM events ORDER BY seq").fetchall()
    target = next(seq for seq, content in rows if json.loads(content)["kind"] == kind)
    previous = db.execute("SELECT hash FROM events WHERE seq = ?", (target - 1,)).fetchone()[0]
    for seq, content in rows:
        if seq < target:
            continue
        if seq == target:
            changed = json.loads(content)
            changed["kind"] = to
            content = json.dumps(changed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        digest = chain_hash(previous, content)
        db.execute("UPDATE events SET content = ?, previous = ?, hash = ? WHERE seq = ?", (content, previous, digest, seq))
        previous = digest
    db.commit()
    db.close()
    return target


async def _rewritten_by_the_key_holder(network: Network, session: aiohttp.ClientSession, tmp_path: Path) -> Path:
    """Traffic a witness copies; then the log rewritten, and every checkpoint (and what followed
    the first) removed, as the holder of the axis key would before signing new ones. The
    witness's directory."""
    keep = tmp_path / "witness"
    await _traffic(network, session, keep)
    database = network.settings.data / "axis.sqlite3"
    _rewrite(database, "delivery.delivered", "delivery.expired")
    db = sqlite3.connect(database)
    first = db.execute("SELECT min(seq) FROM events WHERE json_extract(content, '$.kind') = 'audit.checkpoint'").fetchone()[0]
    db.execute("DELETE FROM events WHERE seq >= ?", (first,))
    db.commit()
    db.close()
    return keep


@pytest.fixture
def network(tmp_path: Path) -> Network:
    return make_network(tmp_path, {"audit": {"checkpoint_interval": 0}})


@pytest.fixture
def insider(network: Network) -> Network:
    """A network whose database file the insider edits (the SQLite store's)."""
    if network.settings.store.url:
        pytest.skip("the insider edits the SQLite file; the contract suite holds PostgreSQL to the checkpoint rules")
    return network


async def test_an_insider_rewriting_the_log_is_caught_by_the_checkpoints(
    insider: Network, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    network = insider
    keep = tmp_path / "witness"
    await _traffic(network, session, keep)
    code, output = audit(network, "verify", "--checkpoints", str(keep))
    assert code == 0 and "chain intact, every checkpoint holds" in output, output

    target = _rewrite(network.settings.data / "axis.sqlite3", "delivery.delivered", "delivery.expired")
    store = open_store(network.settings)
    try:
        assert store.verify_chain().events > target  # the chain alone is fooled
    finally:
        store.close()
    code, output = audit(network, "verify", "--json")
    report = json.loads(output)
    assert code == 1 and not report["valid"]
    rewritten = [f for f in report["faults"] if f["code"] == "audit.rewritten"]
    assert len(rewritten) == 1 and rewritten[0]["first"] <= target <= rewritten[0]["last"], report["faults"]
    assert {f["code"] for f in report["faults"]} <= {"audit.rewritten", "audit.chain_rewritten"}
    code, output = audit(network, "checkpoint")  # and the axis signs nothing more over it
    assert code != 0 and "store.chain_broken" in output, output


def test_events_that_are_not_objects_are_faults_not_tracebacks() -> None:
    content = "[]"
    event = Event(1, content, GENESIS, chain_hash(GENESIS, content))
    report = checkpoints.verify_log([event], [])
    assert [f["code"] for f in report.faults] == ["audit.event_malformed"]


async def test_an_insider_with_the_axis_key_is_caught_by_a_witness(
    insider: Network, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    network = insider
    keep = await _rewritten_by_the_key_holder(network, session, tmp_path)  # ... who signs new checkpoints:
    key, certificate = keystore.KeyStore(network.settings.keys).axis_signer()
    store = open_store(network.settings)
    try:
        assert checkpoints.checkpoint(store, key, certificate, datetime.now(UTC), force=True) is not None
    finally:
        store.close()
    code, output = audit(network, "verify")
    assert code == 0, output  # alone, the forged log holds: only witnesses can tell
    code, output = audit(network, "verify", "--checkpoints", str(keep), "--json")
    report = json.loads(output)
    assert code == 1 and {f["code"] for f in report["faults"]} >= {"audit.witness_mismatch"}, report


def _bundle(network: Network, tmp_path: Path, name: str = "bundle.zip") -> Path:
    today = datetime.now(UTC).date()
    target = tmp_path / name
    code, output = audit(network, "export", "--from", f"{today}", "--to", f"{today + timedelta(days=1)}", "-o", str(target))
    assert code == 0, output
    return target


def _auditor_trust(network: Network, tmp_path: Path) -> Path:
    """The auditor's own trust directory: the CA certificate (and CRL) it trusts, copied once."""
    trust = tmp_path / "auditor-trust"
    shutil.copytree(network.settings.trust, trust)
    return trust


def verify_bundle(*args: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(cli, ["verify-bundle", *args, "--json"])
    assert result.exit_code != 2, result.output
    return result.exit_code, json.loads(result.output) if result.output.startswith("{") else {"output": result.output}


def _tampered(bundle: Path, member: str, into: Path) -> Path:
    """The bundle with one byte of one member changed (the ZIP rewritten around it, so that only
    the content differs)."""
    with zipfile.ZipFile(bundle) as source, zipfile.ZipFile(into, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            data = bytearray(source.read(info.filename))
            if info.filename == member:
                at = len(data) // 2
                data[at] = data[at] ^ 0x01
            target.writestr(info.filename, bytes(data))
    return into


async def test_a_bundle_verifies_offline_and_names_every_altered_member(
    network: Network, session: aiohttp.ClientSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keep = tmp_path / "witness"
    await _traffic(network, session, keep)
    bundle = _bundle(network, tmp_path)
    trust = _auditor_trust(network, tmp_path)
    elsewhere = tmp_path / "auditor"  # no axis data, no configuration
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("AXIS_CONFIG", raising=False)
    axis_cert = str(trust.parent / "axis.pem")
    shutil.copy(network.keys.axis_certificate, axis_cert)
    code, report = verify_bundle(str(bundle), "--trust", str(trust), "--checkpoints", str(keep))  # the witness's pin
    assert code == 0 and report["valid"], report
    assert len(report["messages"]) == 2 and report["kept_compared"] >= 1
    for message in report["messages"]:
        assert message["valid"] and {r["kind"] for r in message["receipts"]} == {"accepted", "delivered"}
        assert {"message.accepted", "delivery.delivered"} <= {e["kind"] for e in message["events"]}
    with zipfile.ZipFile(bundle) as opened:
        members = opened.namelist()
    assert {"manifest.json", "manifest.sig", "axis-certificate.pem"} <= set(members)
    for member in members:
        code, report = verify_bundle(
            str(_tampered(bundle, member, tmp_path / "tampered.zip")), "--trust", str(trust), "--axis-cert", axis_cert
        )
        named = {f["member"] for f in report.get("faults", [])}
        expected = "manifest.json" if member == "manifest.sig" else member
        assert code == 1 and expected in named, (member, report)


async def test_a_bundle_of_a_log_rewritten_with_the_key_fails_against_kept_checkpoints(
    insider: Network, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    network = insider
    keep = await _rewritten_by_the_key_holder(network, session, tmp_path)
    bundle = _bundle(network, tmp_path)  # the export signs a new checkpoint over the rewritten log
    trust = _auditor_trust(network, tmp_path)
    code, report = verify_bundle(str(bundle), "--trust", str(trust), "--axis-cert", str(network.keys.axis_certificate))
    assert code == 0, report  # alone, a log rewritten by the key holder holds together
    code, report = verify_bundle(str(bundle), "--trust", str(trust), "--checkpoints", str(keep))
    assert code == 1 and "bundle.witness_mismatch" in {f["code"] for f in report["faults"]}, report


async def test_a_key_holder_renumbering_the_checkpoints_is_caught_by_the_witness(
    insider: Network, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Signing the rewritten log's checkpoints under numbers the witness never saw does not help:
    a bundle's checkpoint covering events a witness vouched for must be the witness's."""
    network = insider
    keep = await _rewritten_by_the_key_holder(network, session, tmp_path)
    key, certificate = keystore.KeyStore(network.settings.keys).axis_signer()
    store = open_store(network.settings)
    try:
        events = list(store.events())
        forged = checkpoints.make(events, None, key, certificate, datetime.now(UTC), force=True)
        assert forged is not None
        renumbered = checkpoints.sign(replace(forged.checkpoint, number=1_000_001), key)
        store.add_checkpoint(1_000_001, 0, datetime.now(UTC).isoformat(), renumbered.as_json())
    finally:
        store.close()
    bundle = _bundle(network, tmp_path)
    trust = _auditor_trust(network, tmp_path)
    code, report = verify_bundle(str(bundle), "--trust", str(trust), "--checkpoints", str(keep))
    assert code == 1 and "bundle.witness_mismatch" in {f["code"] for f in report["faults"]}, report


def test_a_hostile_bundle_is_reported_never_a_traceback(tmp_path: Path) -> None:
    """Members a forger controls (once the manifest's signature holds, as for an insider with the
    key): events that are not objects, numbers out of range, receipts that are not a list."""
    key, certificate = pki.new_key("ec"), None
    ca = pki.create_ca("test CA", datetime.now(UTC) - timedelta(minutes=1))
    axis = pki.issue(ca, "axis", datetime.now(UTC) - timedelta(minutes=1), key=key)
    certificate = axis.certificate
    trust = pki.Trust((ca.certificate,))
    members = {
        "messages/m/package.xml": b"<edXML/>",
        "messages/m/events.json": b'[{"seq": 1e999, "content": "[]", "previous": "x", "hash": "y", "path": [], "checkpoint": 1, "index": 0, "size": 1}, []]',
    }
    manifest = json.dumps({
        "format": "axis-bundle/1", "created_at": datetime.now(UTC).isoformat(), "axis": pki_fingerprint(certificate),
        "messages": [{"id": "m", "package": "messages/m/package.xml", "receipts": 5, "events": "messages/m/events.json",
                      "sha256": "0" * 64, "accepted_at": "not a time"}],
        "members": {name: hashlib.sha256(data).hexdigest() for name, data in members.items()},
    }).encode()
    path = tmp_path / "hostile.zip"
    with zipfile.ZipFile(path, "w") as out:
        for name, data in members.items():
            out.writestr(name, data)
        out.writestr("manifest.json", manifest)
        out.writestr("manifest.sig", base64.b64encode(pki.sign_bytes(key, manifest)))
    report = bundles.verify(path, trust, certificate)
    assert not report.valid and report.faults

