"""The push receiver as its own process: the axis pushes to it, it verifies and writes the folder
layout once; forged, corrupted, misaddressed and repeated pushes are handled."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import aiohttp

from adapters.client import AxisClient
from axis import edxml, receipts
from axis.server.runtime import Running
from tests.adapters.conftest import Adapter, environment
from tests.server.conftest import CAO_BANG, G22, H14, H41, NGHE_AN, Network, eventually, free_port

FORGED_ID = "11111111-1111-4111-8111-111111111111"


def files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


async def test_pushed_packages_are_verified_and_written_once(network: Network, axis: Running, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/axis"
    platform_token = network.endpoint("province-platform", [H41, H14], url)
    directory = tmp_path / "platform"
    env = environment(AXIS_URL=axis.url, AXIS_TOKEN=platform_token, AXIS_TRUST=str(network.settings.trust))
    webhook = await Adapter.spawn(
        tmp_path / "webhook.log", "adapter", "webhook", "--listen", f"127.0.0.1:{port}", "--dir", str(directory),
        "--agency", H41, "--agency", H14, "--keys", str(network.root / "agencies"), "--settle", "0", "--poll", "0.2", env=env,
    )
    sender = AxisClient(axis.url, network.endpoint("vpcp", [G22]), trust=network.settings.trust)
    try:
        assert webhook.first["event"] == "listening"
        sent = await sender.send(network.sign(network.document()))
        await eventually(lambda: len(files(directory / H41 / "inbox")) == 1 and len(files(directory / H14 / "inbox")) == 1)
        assert (directory / H41 / "inbox" / f"{sent.message_id}.edxml").read_bytes() == (
            directory / H14 / "inbox" / f"{sent.message_id}.edxml").read_bytes()

        # The sender's delivered receipts carry the SHA-256 of the receiver's answer.
        async def delivered() -> list[receipts.Receipt]:
            items = [i for i in await sender.receipts(sent.message_id) if i["kind"] == "delivered"]
            return [(await sender.verify_receipt(i["xml"].encode())).receipt for i in items]

        found: list[receipts.Receipt] = []

        async def two() -> bool:
            found[:] = await delivered()
            return len(found) == 2

        await eventually(two)
        answer = json.dumps({"message_id": sent.message_id, "recipient": H41, "outcome": "stored"}).encode()
        assert hashlib.sha256(answer).hexdigest() in {r.acknowledgement_sha256 for r in found}

        # Direct requests, as an attacker or a repeated push would make them.
        data = (directory / H41 / "inbox" / f"{sent.message_id}.edxml").read_bytes()
        headers = {
            "X-Axis-Message-Id": sent.message_id, "X-Axis-Kind": "document", "X-Axis-Sender": G22,
            "X-Axis-Recipient": H41, "X-Axis-Sha256": hashlib.sha256(data).hexdigest(),
            "Content-Type": "application/xml",
        }
        forged = data.replace("Đề nghị".encode(), "Yêu cầu".encode())
        forged_sha = hashlib.sha256(forged).hexdigest()
        only_h14 = await sender.send(network.sign(network.document(recipients=(CAO_BANG,))))
        await eventually(lambda: (directory / H14 / "inbox" / f"{only_h14.message_id}.edxml").exists())
        async with aiohttp.ClientSession() as session:
            async def push(body: bytes, **changes: str) -> tuple[int, dict[str, str]]:
                async with session.post(url, data=body, headers={**headers, **changes}) as response:
                    return response.status, await response.json(content_type=None)

            assert await push(data) == (200, {"message_id": sent.message_id, "recipient": H41, "outcome": "duplicate"})
            # Forged bytes under an id the axis does not hold, or under a genuine id: not confirmed.
            assert (await push(forged, **{"X-Axis-Sha256": forged_sha, "X-Axis-Message-Id": FORGED_ID}))[1]["code"] == "adapter.bad_push"
            assert (await push(forged, **{"X-Axis-Sha256": forged_sha, "X-Axis-Message-Id": only_h14.message_id}))[1]["code"] == "adapter.bad_push"
            # A genuine package for Cao Bằng replayed as if for Nghệ An: confirmed, verified, not addressed to it.
            h14_data = (directory / H14 / "inbox" / f"{only_h14.message_id}.edxml").read_bytes()
            status, body = await push(h14_data, **{"X-Axis-Message-Id": only_h14.message_id, "X-Axis-Sha256": hashlib.sha256(h14_data).hexdigest()})
            assert (status, body["code"]) == (400, "adapter.bad_push") and "not addressed" in body["detail"]
            status, body = await push(forged, **{"X-Axis-Message-Id": FORGED_ID})
            assert (status, body["code"]) == (400, "adapter.corrupt_download")
            status, body = await push(data, **{"X-Axis-Recipient": "000.00.00.G01", "X-Axis-Message-Id": FORGED_ID})
            assert (status, body["code"]) == (403, "adapter.not_served")
            status, body = await push(data, **{"X-Axis-Kind": ""})
            assert (status, body["code"]) == (400, "adapter.bad_push")
            # A message id that would climb out of the folders never becomes a file name.
            status, body = await push(forged, **{"X-Axis-Sha256": forged_sha, "X-Axis-Message-Id": "../../../escaped"})
            assert (status, body["code"]) == (400, "adapter.bad_push")
        assert not list(tmp_path.rglob("escaped*")) and not files(directory / H41 / "error")
        assert len(files(directory / H41 / "inbox")) == 1  # nothing handed twice, nothing forged handed

        # The platform answers through the same process: its outbox goes to the axis.
        letter = edxml.parse(data)
        assert isinstance(letter, edxml.DocumentPackage)
        status_package = edxml.build(network.status(letter, NGHE_AN, "04"))
        (directory / H41 / "outbox" / "status-04.edxml").write_bytes(status_package)
        await eventually(lambda: (directory / H41 / "sent" / "status-04.edxml.receipt.xml").exists())
        inbox = await sender.inbox(wait=5)
        assert any(e.kind == "status" and e.sender == H41 for e in inbox)
    finally:
        await sender.close()
        assert await webhook.stop() == 0
