"""Large packages over real HTTP: spooled to a file as they arrive, verified from it, kept by
renaming it, served back from it; nothing of a refused or interrupted upload left behind."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from adapters.demo import NGHE_AN
from axis import edxml
from axis.server.runtime import start
from tests.server.conftest import G22, H41, Client, Network, make_network

SIZE = 3_000_000
"""Well past what a store keeps in memory and in the message's own transaction."""


def _large(network: Network) -> bytes:
    attachment = edxml.Attachment("so-lieu.bin", os.urandom(SIZE), content_type="application/octet-stream")
    return network.sign(network.document(recipients=(NGHE_AN,), attachments=(attachment,)))


def _leftovers(network: Network) -> list[Path]:
    return list(network.settings.data.rglob(".tmp-*"))


async def test_a_large_package_is_spooled_kept_and_served_whole(network: Network, session: aiohttp.ClientSession) -> None:
    sender_token, recipient_token = network.endpoint("vpcp", [G22]), network.endpoint("nghe-an", [H41])
    data = _large(network)
    axis = await start(network.settings)
    try:
        sender, recipient = Client(session, axis.url, sender_token), Client(session, axis.url, recipient_token)
        status, body = await sender.submit(data)
        assert status == 202, body
        assert _leftovers(network) == []
        headers = {"Authorization": f"Bearer {recipient_token}"}
        async with session.get(f"{axis.url}/v1/messages/{body['message_id']}", headers=headers) as response:
            assert response.status == 200 and response.headers["Content-Type"].startswith("application/xml")
            assert response.headers["X-Axis-Sha256"] == hashlib.sha256(data).hexdigest()
            fetched = b"".join([piece async for piece in response.content.iter_chunked(1 << 16)])
        assert fetched == data
        status, again = await sender.submit(data)  # the same package again: its acceptance, nothing new
        assert status == 200 and again["message_id"] == body["message_id"]
        assert _leftovers(network) == []
        status, acked, _ = await recipient.request("POST", f"/v1/messages/{body['message_id']}/ack")
        assert status == 200 and acked["acknowledged"] == [H41]
    finally:
        await axis.stop()


async def test_a_refused_large_package_leaves_nothing(network: Network, session: aiohttp.ClientSession) -> None:
    sender_token = network.endpoint("vpcp", [G22])
    data = bytearray(_large(network))
    middle = data.index(b"<ContentTransferEncoded>") + len(b"<ContentTransferEncoded>") + SIZE // 2
    data[middle] = ord("A") if data[middle] != ord("A") else ord("B")  # one base64 letter of the attachment
    axis = await start(network.settings)
    try:
        status, body = await Client(session, axis.url, sender_token).submit(bytes(data))
        assert status == 422 and body["code"] == "signature.digest_mismatch", body
        assert _leftovers(network) == []
        assert axis.axis.store.delivery_counts() == {}
    finally:
        await axis.stop()


async def test_an_upload_cut_off_past_the_limit_leaves_nothing(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    network = make_network(tmp_path, {"server": {"max_package": 1_000_000}})
    sender_token = network.endpoint("vpcp", [G22])

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: refused only once the limit is passed
        for _ in range(30):
            yield b"<" * 100_000

    axis = await start(network.settings)
    try:
        headers = {"Authorization": f"Bearer {sender_token}", "Content-Type": "application/xml"}
        async with session.post(f"{axis.url}/v1/messages", data=chunks(), headers=headers) as response:
            body = await response.json()
        assert response.status == 413 and body["code"] == "request.too_large", body
        assert _leftovers(network) == []
    finally:
        await axis.stop()
