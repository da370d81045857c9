"""The push process, as a real child process POSTing over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from axis import receipts
from axis.server.pusher import HELD_BYTES, Pusher
from tests.conftest import PKI

RECEIPT = receipts.Receipt(
    kind="delivered",
    message_id="6f0c2b1e-8d1a-4f4e-9a57-0e2f6d1c3b5a",
    package_kind="document",
    document_id="000.00.00.G22,2026/11/21,7/VPCP",
    package_sha256="ab" * 32,
    sender="000.00.00.G22",
    recipients=("000.00.00.H41",),
    time="",
)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def endpoint(handle: Handler) -> AsyncIterator[str]:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/in", handle)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)  # to see a client go away
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/in"
    finally:
        await runner.cleanup()


def headers(body: bytes) -> dict[str, str]:
    return {"Content-Type": "application/xml", "X-Axis-Sha256": hashlib.sha256(body).hexdigest()}


def test_a_2xx_returns_the_answer_and_the_receipt_signed_over_its_digest(dev_pki: PKI) -> None:
    arrived: list[bytes] = []

    async def handle(request: web.Request) -> web.Response:
        arrived.append(await request.read())
        return web.Response(text=f"got {len(arrived)}")

    async def run() -> None:
        pusher = Pusher(dev_pki.store, timeout=10)
        try:
            async with endpoint(handle) as url:
                first, second = b"<edXML>one</edXML>" * 1000, b"<edXML>two</edXML>"
                answers = [await pusher.post(url, body, headers(body), RECEIPT) for body in (first, first, second)]
                unsigned = await pusher.post(url, second, headers(second), None)
        finally:
            await pusher.close()
        assert arrived == [first, first, second, second]  # the second send of a package is not carried again, yet arrives whole
        for n, (status, answer, signed) in enumerate(answers, start=1):
            assert (status, answer) == (200, f"got {n}".encode())
            assert signed is not None
            xml, at = signed
            verified = receipts.verify(xml, dev_pki.trust).receipt
            assert verified.time == at and verified.acknowledgement_sha256 == hashlib.sha256(answer).hexdigest()
            assert verified.message_id == RECEIPT.message_id and verified.recipients == RECEIPT.recipients
        assert unsigned == (200, b"got 4", None)
        assert pusher.started == 1

    asyncio.run(run())


def test_a_refusal_is_answered_without_a_receipt_and_failures_are_errors(dev_pki: PKI) -> None:
    async def refuse(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=503, text="busy")

    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response()

    async def run() -> None:
        pusher = Pusher(dev_pki.store, timeout=0.5)
        body = b"<edXML/>"
        try:
            async with endpoint(refuse) as url:
                assert await pusher.post(url, body, headers(body), RECEIPT) == (503, b"busy", None)
            async with endpoint(hang) as url:
                with pytest.raises(TimeoutError):
                    await pusher.post(url, body, headers(body), RECEIPT)
            with socket.socket() as unused:
                unused.bind(("127.0.0.1", 0))
                port = unused.getsockname()[1]
            with pytest.raises(OSError, match="Cannot connect"):
                await pusher.post(f"http://127.0.0.1:{port}/in", body, headers(body), RECEIPT)
        finally:
            await pusher.close()

    asyncio.run(run())


def test_an_attempt_that_fails_in_an_unexpected_way_is_still_answered(dev_pki: PKI) -> None:
    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    async def run() -> None:
        pusher = Pusher(dev_pki.store, timeout=10)
        body = b"<edXML/>"
        unsignable = dataclasses.replace(RECEIPT, document_id="not XML \x01")  # signing it raises ValueError
        try:
            async with endpoint(handle) as url:
                with pytest.raises(OSError, match="ValueError"):  # a failed attempt, retried later; not a hang
                    await asyncio.wait_for(pusher.post(url, body, headers(body), unsignable), 10)
                assert (await pusher.post(url, body, headers(body), RECEIPT))[2] is not None  # same child goes on
                assert pusher.started == 1
        finally:
            await pusher.close()

    asyncio.run(run())


def test_a_dead_push_process_fails_its_attempts_and_the_next_attempt_starts_another(dev_pki: PKI) -> None:
    started = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        if request.query.get("hang"):
            started.set()
            await asyncio.sleep(30)
        return web.Response(text="ok")

    async def run() -> None:
        pusher = Pusher(dev_pki.store, timeout=10)
        body = b"<edXML/>" * (HELD_BYTES // 64)  # kept by the first child; the new one must be sent it again
        try:
            async with endpoint(handle) as url:
                assert (await pusher.post(url, body, headers(body), None))[:2] == (200, b"ok")
                hanging = asyncio.create_task(pusher.post(url + "?hang=1", body, headers(body), None))
                await asyncio.wait_for(started.wait(), 10)
                child = await pusher._running()
                os.kill(child.process.pid, signal.SIGKILL)
                with pytest.raises(OSError, match="push process stopped"):
                    await asyncio.wait_for(hanging, 10)
                status, answer, signed = await pusher.post(url, body, headers(body), RECEIPT)
                assert (status, answer) == (200, b"ok") and signed is not None
                assert pusher.started == 2
        finally:
            await pusher.close()

    asyncio.run(run())


def test_a_cancelled_attempt_cancels_the_post_in_the_child(dev_pki: PKI) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:  # aiohttp cancels the handler when the client goes away
            cancelled.set()
            raise
        return web.Response()

    async def run() -> None:
        pusher = Pusher(dev_pki.store, timeout=60)
        body = b"<edXML/>"
        try:
            async with endpoint(handle) as url:
                attempt = asyncio.create_task(pusher.post(url, body, headers(body), None))
                await asyncio.wait_for(started.wait(), 10)
                attempt.cancel()
                await asyncio.wait_for(cancelled.wait(), 10)  # the child closed the connection
        finally:
            await pusher.close()

    asyncio.run(run())
