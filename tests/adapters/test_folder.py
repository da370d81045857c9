"""The drop-folder bridge as its own process, against a real axis: a sender's bridge and a
province platform's bridge (a relay for two agencies), files in, files out, and SIGKILL."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

from axis import edxml, keystore, receipts
from axis.server.runtime import Running
from axis.store import open_store
from tests.adapters.conftest import Adapter, axis_command, environment
from tests.server.conftest import G22, H14, H41, NGHE_AN, Network, eventually


def files(folder: Path, pattern: str = "*") -> list[Path]:
    return sorted(p for p in folder.glob(pattern) if p.is_file() and not p.name.startswith("."))


async def bridge(network: Network, axis: Running, directory: Path, name: str, agencies: list[str]) -> Adapter:
    token = network.endpoint(name, agencies)
    args = ["adapter", "folder", "--dir", str(directory), "--keys", str(network.root / "agencies"), "--settle", "0", "--poll", "0.2"]
    for agency in agencies:
        args += ["--agency", agency]
    env = environment(AXIS_URL=axis.url, AXIS_TOKEN=token, AXIS_TRUST=str(network.settings.trust))
    return await Adapter.spawn(directory.parent / f"{name}.log", *args, env=env), env, args  # type: ignore[return-value]


def drop(folder: Path, name: str, data: bytes) -> None:
    """As agency software should: write under a hidden name, then rename."""
    hidden = folder / f".{name}.part"
    hidden.write_bytes(data)
    hidden.rename(folder / name)


async def test_documents_statuses_and_refusals_through_two_bridges(network: Network, axis: Running, tmp_path: Path) -> None:
    sender_dir, platform_dir = tmp_path / "vpcp", tmp_path / "platform"
    sender, sender_env, _ = await bridge(network, axis, sender_dir, "vpcp-folder", [G22])
    platform, _, _ = await bridge(network, axis, platform_dir, "province-platform", [H41, H14])
    try:
        outbox = sender_dir / G22 / "outbox"
        (outbox / "1234-VPCP.pdf").write_bytes(b"%PDF-1.4 cong van\n" * 1000)
        drop(outbox, "letter.json", json.dumps({
            "to": [H41, H14], "subject": "V/v báo cáo tình hình kết nối", "code": "1234/VPCP-KSTT",
            "content": "Đề nghị báo cáo trước ngày 30/11.", "attachments": ["1234-VPCP.pdf"], "due_date": "2026/12/30",
        }, ensure_ascii=False).encode())
        unsigned = edxml.build(network.document(recipients=(NGHE_AN,)))
        drop(outbox, "unsigned.edxml", unsigned)
        signed = network.sign(network.document(recipients=(NGHE_AN,)))
        drop(outbox, "signed.edxml", signed)
        drop(outbox, "broken.json", b'{"to": ["000.00.00.H41"]}')
        stranger = network.document(recipients=(edxml.Organization(organ_id="000.00.00.H99"),))
        drop(outbox, "stranger.edxml", network.sign(stranger))
        forged = network.sign(network.document(recipients=(NGHE_AN,))).replace("Đề nghị".encode(), "Yêu cầu".encode())
        drop(outbox, "forged.edxml", forged)

        sent = sender_dir / G22 / "sent"
        error = sender_dir / G22 / "error"
        await eventually(lambda: len(files(sent, "*.receipt.xml")) == 3 and len(files(error, "*.reason")) == 3, timeout=60)
        assert {p.name for p in files(sent)} >= {
            "letter.json", "1234-VPCP.pdf", "letter.signed.edxml", "unsigned.edxml", "unsigned.signed.edxml", "signed.edxml",
            "letter.json.receipt.xml", "unsigned.edxml.receipt.xml", "signed.edxml.receipt.xml",
        }
        assert (sent / "signed.edxml").read_bytes() == signed  # sent as it was
        reasons = {p.name: p.read_text().split("\n")[0] for p in files(error, "*.reason")}
        assert reasons == {
            "broken.json.reason": "adapter.invalid_description",
            "stranger.edxml.reason": "recipient.not_registered",
            "forged.edxml.reason": "signature.digest_mismatch",
        }
        assert files(outbox) == []
        trust = keystore.read_trust(network.settings.trust)
        for receipt in files(sent, "*.receipt.xml"):
            assert receipts.verify(receipt.read_bytes(), trust).receipt.kind == "accepted"

        # The platform writes each department's packages into its own tree, verified.
        await eventually(lambda: len(files(platform_dir / H41 / "inbox")) == 3 and len(files(platform_dir / H14 / "inbox")) == 1, timeout=60)
        letter = edxml.parse(files(platform_dir / H14 / "inbox")[0].read_bytes())
        assert isinstance(letter, edxml.DocumentPackage) and letter.attachments[0].data == (outbox.parent / "sent" / "1234-VPCP.pdf").read_bytes()
        # ... and the sender gets a delivered receipt for each of the four deliveries.
        await eventually(lambda: len(files(sender_dir / G22 / "receipts")) == 4, timeout=60)
        assert {p.name.split(".")[1] for p in files(sender_dir / G22 / "receipts")} == {"delivered"}

        # Nghệ An's software drops an unsigned status 03 about the letter; it reaches the sender.
        status = edxml.build(network.status(letter, NGHE_AN, "03"))
        drop(platform_dir / H41 / "outbox", "status-03.edxml", status)
        await eventually(lambda: len(files(sender_dir / G22 / "status")) == 1, timeout=60)
        reported = edxml.parse(files(sender_dir / G22 / "status")[0].read_bytes())
        assert isinstance(reported, edxml.StatusPackage) and reported.status_code == "03"
        assert reported.response_for.document_id == letter.document_id
        # A second bridge on the same tree would race the first: it refuses to start.
        code, _, err = await axis_command("adapter", "folder", "--dir", str(sender_dir), "--agency", G22, env=sender_env)
        assert code == 1 and "adapter.folder_in_use" in err
    finally:
        assert await sender.stop() == 0
        assert await platform.stop() == 0


async def test_sigkill_mid_transfer_loses_and_duplicates_nothing(network: Network, axis: Running, tmp_path: Path) -> None:
    """Both bridges are killed (SIGKILL) again and again while 24 packages with 1 MB attachments
    travel; after restarts every package is sent once, received once, acknowledged once."""
    total = 24
    sender_dir, platform_dir = tmp_path / "vpcp", tmp_path / "platform"
    sender, sender_env, sender_args = await bridge(network, axis, sender_dir, "vpcp-folder", [G22])
    platform, platform_env, platform_args = await bridge(network, axis, platform_dir, "province-platform", [H41, H14])
    outbox = sender_dir / G22 / "outbox"
    for n in range(total):
        (outbox / f"annex-{n}.bin").write_bytes(bytes([n]) * 1_000_000)
        drop(outbox, f"letter-{n:02}.json", json.dumps({
            "to": [H41, H14], "subject": f"Công văn số {n}", "code": f"{n + 1}/VPCP-TH", "attachments": [f"annex-{n}.bin"],
        }).encode())
    sent, inbox41, inbox14 = sender_dir / G22 / "sent", platform_dir / H41 / "inbox", platform_dir / H14 / "inbox"
    kills = in_flight = 0
    try:
        sending = sender_dir / ".axis" / "sending"
        for _ in range(4):
            # Kill while a package is prepared and not yet finished (or once everything is sent).
            await eventually(lambda: list(sending.rglob("*.edxml")) or len(files(sent, "*.receipt.xml")) == total, timeout=60)
            await asyncio.sleep(0.05 * kills)
            assert await sender.stop(signal.SIGKILL) == -signal.SIGKILL
            assert await platform.stop(signal.SIGKILL) == -signal.SIGKILL
            kills += 1
            in_flight += len(list(sending.rglob("*.edxml")))
            sender = await Adapter.spawn(sender_dir.parent / "vpcp-folder.log", *sender_args, env=sender_env)
            platform = await Adapter.spawn(platform_dir.parent / "province-platform.log", *platform_args, env=platform_env)
        await eventually(lambda: len(files(sent, "*.receipt.xml")) == total and len(files(inbox41)) == total and len(files(inbox14)) == total, timeout=120)
    finally:
        await sender.stop()
        await platform.stop()
    assert kills == 4 and in_flight > 0  # some kills caught a package prepared and not yet finished
    # Sent once each: one receipt per file, no "~" duplicates, nothing left in flight.
    assert sorted(p.name for p in files(sent, "*.receipt.xml")) == [f"letter-{n:02}.json.receipt.xml" for n in range(total)]
    assert files(outbox) == [] and not list((sender_dir / ".axis" / "sending").rglob("*.edxml"))
    assert not [p for p in (platform_dir / ".axis" / "incoming").rglob("*") if p.is_file()]
    # Received once each, byte for byte what the axis holds.
    store = open_store(network.settings)
    try:
        sent = {r["agency"]: r["sent"] for r in store.stats("0000", "9999", 0, "9999/12/31")}
        assert sent[G22] == total  # the axis holds no duplicate
        ids = sorted(p.stem for p in files(inbox41))
        messages = [store.message(i) for i in ids]
        assert len(ids) == total and all(messages)
        for folder in (inbox41, inbox14):
            assert sorted(p.stem for p in files(folder)) == sorted(ids)
            for path in files(folder):
                assert path.read_bytes() == store.blobs.get(store.message(path.stem).sha256)  # type: ignore[union-attr]
        await eventually(lambda: all(d.state == "delivered" for m in messages for d in store.deliveries_of(m.id)), timeout=30)  # type: ignore[union-attr]
    finally:
        store.close()


async def test_bad_descriptions_go_to_error_and_the_bridge_carries_on(network: Network, axis: Running, tmp_path: Path) -> None:
    """Descriptions that once made the bridge exit 1 (and again at every restart, stopping every
    agency it serves) are refused into error/ with adapter.invalid_description; the bridge keeps
    sending what follows them."""
    directory = tmp_path / "vpcp"
    sender, _, _ = await bridge(network, axis, directory, "vpcp-folder", [G22])
    outbox, sent, error = directory / G22 / "outbox", directory / G22 / "sent", directory / G22 / "error"
    letter = {"to": [H41], "subject": "V/v kiểm tra mô tả"}
    bad = {
        "attachments-number.json": json.dumps({**letter, "attachments": 5}).encode(),
        "attachments-true.json": json.dumps({**letter, "attachments": True}).encode(),
        "attachment-nul.json": json.dumps({**letter, "attachments": ["cong-van\u0000.pdf"]}).encode(),
        "deep.json": b'{"to": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "priority-infinite.json": json.dumps({**letter, "priority": 1e400}).encode(),  # "Infinity" in JSON
    }
    try:
        for name, data in bad.items():
            drop(outbox, name, data)
        await eventually(lambda: len(files(error, "*.reason")) == len(bad), timeout=60)
        drop(outbox, "good.json", json.dumps(letter).encode())
        await eventually(lambda: files(sent, "good.json.receipt.xml"), timeout=60)
        reasons = {p.name.removesuffix(".reason"): p.read_text().split("\n") for p in files(error, "*.reason")}
        assert {name: lines[0] for name, lines in reasons.items()} == dict.fromkeys(bad, "adapter.invalid_description")
        assert "attachment" in reasons["attachments-number.json"][1] and "null" in reasons["attachment-nul.json"][1]
        assert {p.name for p in files(error, "*.json")} == set(bad) and files(outbox) == []
        assert sender.process.returncode is None
    finally:
        assert await sender.stop() == 0
