"""Connections cannot exhaust the axis: idle and slowly-sent connections are closed, a cap below
the descriptor limit answers 503 instead of failing, SIGTERM keeps answering 503 while requests
in flight finish, and a flood of identical loop errors is logged once."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from axis.server.connections import REPEAT_WINDOW, QuietLoopErrors, derived_cap
from axis.server.runtime import start
from tests.conftest import REPO
from tests.server.conftest import G22, Client, Network, free_port, make_network


async def closed_by_the_server(reader: asyncio.StreamReader, within: float) -> bool:
    """True when the server closes the connection (EOF) before ``within`` seconds pass."""
    try:
        while await asyncio.wait_for(reader.read(65536), within):
            pass
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return True


async def test_idle_and_slowly_sent_connections_are_closed(tmp_path: Path) -> None:
    network = make_network(tmp_path, {"server": {"idle_timeout": 1}})
    axis = await start(network.settings)
    host, port = axis.url.removeprefix("http://").split(":")
    try:
        idle_reader, idle_writer = await asyncio.open_connection(host, int(port))
        slow_reader, slow_writer = await asyncio.open_connection(host, int(port))
        trickle = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40

        async def dribble() -> None:  # a byte every 0.2 s: never a whole request
            for byte in trickle:
                if slow_writer.is_closing():
                    return
                slow_writer.write(bytes([byte]))
                await asyncio.sleep(0.2)

        feeding = asyncio.ensure_future(dribble())
        assert await closed_by_the_server(idle_reader, 10)
        assert await closed_by_the_server(slow_reader, 10)
        feeding.cancel()
        for writer in (idle_writer, slow_writer):
            writer.close()
    finally:
        await axis.stop()


async def test_beyond_the_cap_a_connection_is_answered_503_and_service_resumes(tmp_path: Path) -> None:
    network = make_network(tmp_path, {"server": {"max_connections": 5, "idle_timeout": 2}})
    axis = await start(network.settings)
    host, port = axis.url.removeprefix("http://").split(":")
    held = []
    try:
        for _ in range(5):
            held.append(await asyncio.open_connection(host, int(port)))
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection(host, int(port))
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503") and json.loads(body)["code"] == "request.overloaded"
        assert axis.axis.connections is not None and axis.axis.connections.refused >= 1
        for _, held_writer in held:
            held_writer.close()
        async with aiohttp.ClientSession() as session:
            async def ready() -> int:
                async with session.get(axis.url + "/readyz") as response:
                    return response.status

            deadline = time.monotonic() + 10
            while await ready() != 200:
                assert time.monotonic() < deadline, "the axis did not take connections again"
                await asyncio.sleep(0.1)
    finally:
        await axis.stop()


def low_descriptor_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (320, 320))


async def test_a_server_with_few_descriptors_refuses_with_503_not_500(tmp_path: Path) -> None:
    """``axis serve`` under ``ulimit -n 320``: 400 idle connections cannot take its descriptors.
    Connections beyond its cap are answered 503, submissions keep working once the idle ones are
    closed, and its log stays small."""
    port = free_port()
    network = make_network(tmp_path, {"server": {"port": port, "idle_timeout": 3}})
    token = network.endpoint("vpcp", [G22])
    log = tmp_path / "serve.log"
    with log.open("ab") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "from cli import main; main()", "--config", str(network.settings.path), "serve",
            cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=stderr, preexec_fn=low_descriptor_limit,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 60)
    url = json.loads(line)["url"]
    cap = derived_cap(0, 320)
    held: list[Any] = []
    try:
        for _ in range(400):
            held.append(await asyncio.open_connection("127.0.0.1", port))
        answers = []
        for _, reader_writer in enumerate(held[cap + 5 : cap + 15]):
            answers.append(await asyncio.wait_for(reader_writer[0].read(), 10))
        assert answers and all(a.startswith(b"HTTP/1.1 503") and b"request.overloaded" in a for a in answers)
        async with aiohttp.ClientSession() as session:
            client = Client(session, url, token)
            statuses = []
            deadline = time.monotonic() + 30
            while True:  # the idle ones are closed after idle_timeout; then a submission goes through
                try:
                    status, _ = await client.submit(network.sign(network.document()))
                except aiohttp.ClientError:
                    status = 0
                statuses.append(status)
                if status == 202 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
        assert statuses[-1] == 202, statuses
        assert 500 not in statuses
    finally:
        for _, writer in held:
            writer.close()
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), 60)
        process._transport.close()  # type: ignore[attr-defined]
    assert log.stat().st_size < 200_000, "the log flooded"
    assert "Traceback" not in log.read_text(errors="replace")


async def test_sigterm_answers_503_while_requests_in_flight_finish(network: Network) -> None:
    token = network.endpoint("vpcp", [G22])
    axis = await start(network.settings)
    host, port = axis.url.removeprefix("http://").split(":")
    package = network.sign(network.document())
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"POST /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/xml\r\nContent-Length: {len(package)}\r\n\r\n".encode() + package[:100]
    )
    await writer.drain()
    await asyncio.sleep(0.3)  # the upload is in flight
    stopping = asyncio.ensure_future(axis.stop())
    try:
        await asyncio.sleep(0.3)
        async with aiohttp.ClientSession() as session:
            status, body = await Client(session, axis.url, token).submit(package)
        assert (status, body["code"]) == (503, "request.shutting_down")
        assert not stopping.done()
        writer.write(package[100:])
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        assert head.startswith(b"HTTP/1.1 202"), head  # the request in flight finished
    finally:
        writer.close()
        await asyncio.wait_for(stopping, 60)


def test_a_flood_of_the_same_loop_error_is_logged_once_per_window() -> None:
    logged: list[dict[str, Any]] = []
    quiet = QuietLoopErrors(logged.append)
    loop = asyncio.new_event_loop()
    try:
        error = {"message": "socket.accept() out of system resource", "exception": OSError(24, "Too many open files")}
        for _ in range(10_000):
            quiet(loop, error)
        quiet(loop, {"message": "another fault"})
        assert [c["message"] for c in logged] == ["socket.accept() out of system resource", "another fault"]
        quiet.seen[f"{error['message']}:OSError"] = (time.monotonic() - REPEAT_WINDOW - 1, 9_999)
        quiet(loop, error)
        assert logged[-1]["message"].startswith("socket.accept() out of system resource (9999 more like it")
    finally:
        loop.close()


async def test_malformed_http_is_one_info_line_not_a_traceback(network: Network, caplog: Any) -> None:
    axis = await start(network.settings)
    host, port = axis.url.removeprefix("http://").split(":")
    caplog.set_level(logging.DEBUG, logger="aiohttp.server")
    try:
        for raw in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
                    b"GET /\x00 HTTP/1.1\r\n\r\n"):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(raw)
            assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.0 400")
            writer.close()
    finally:
        await axis.stop()
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(records) == 3
    assert all(r.levelno == logging.INFO and r.exc_info is None and "answered 400" in r.getMessage() for r in records)


async def test_a_body_that_stops_arriving_is_refused_408(tmp_path: Path) -> None:
    network = make_network(tmp_path, {"server": {"body_timeout": 1, "idle_timeout": 30}})
    token = network.endpoint("vpcp", [G22])
    axis = await start(network.settings)
    host, port = axis.url.removeprefix("http://").split(":")
    try:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"POST /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/xml\r\nContent-Length: 100000\r\n\r\n<edXML>".encode()
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
        length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")).split(b":")[1])
        body = await asyncio.wait_for(reader.readexactly(length), 20)
        writer.close()
        assert head.startswith(b"HTTP/1.1 408") and json.loads(body)["code"] == "request.timeout"
        assert axis.axis.store.delivery_counts() == {}
    finally:
        await axis.stop()
