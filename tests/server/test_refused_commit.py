"""A package the group commit refuses (``message.conflict`` is decided inside the transaction) is
answered with its code, and asyncio reports no "Future exception was never retrieved": the
refusal was handled, so nothing may be logged as unhandled."""

from __future__ import annotations

import asyncio
import gc
from dataclasses import replace

import aiohttp

from axis.server.runtime import start
from tests.server.conftest import G22, Client, Network


async def test_a_refused_commit_is_not_reported_as_an_unretrieved_future(
    network: Network, session: aiohttp.ClientSession
) -> None:
    token = network.endpoint("vpcp", [G22])
    axis = await start(network.settings)
    unhandled: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: unhandled.append(context))
    try:
        client = Client(session, axis.url, token)
        document = network.document()
        assert (await client.submit(network.sign(document)))[0] == 202
        other = replace(document, subject=f"{document.subject} (bản khác)")  # same DocumentId, other bytes
        status, body = await client.submit(network.sign(other))
        assert (status, body["code"]) == (409, "message.conflict")
    finally:
        await axis.stop()
        gc.collect()  # an asyncio future holding an unretrieved exception reports it when collected
        await asyncio.sleep(0)
        loop.set_exception_handler(None)
    assert [c["message"] for c in unhandled] == []
