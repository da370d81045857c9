"""The axis as a real process: SIGTERM stops it cleanly, SIGKILL loses nothing acknowledged.

The crash test runs ``axis serve`` as a subprocess under a load of 500 submissions (some of them
forged), kills it with SIGKILL in the middle, restarts it on the same port and the same data,
and resubmits every package whose answer was lost. Then every package whose ``accepted`` receipt
reached the client is delivered to the receiving application, which sees each message exactly
once after deduplicating by message id (delivery is at-least-once, DESIGN.md); no forged package
is ever delivered; and the store shows each delivery ``delivered`` exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import Counter
from pathlib import Path

import aiohttp

from adapters.demo import CAO_BANG
from axis.server.runtime import start
from axis.store import open_store
from tests.conftest import REPO
from tests.server.conftest import G22, H14, Client, Network, Receiver, eventually, free_port, make_network

TOTAL = 500
FORGED_EVERY = 25  # one package in 25 is altered after signing: it must be refused, never delivered


async def launch(config: Path, *options: str, log: Path | None = None) -> tuple[asyncio.subprocess.Process, str]:
    """``axis serve [options]`` as its own process; its URL once it listens."""
    log = log or config.parent / "serve.log"
    with log.open("ab") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "from cli import main; main()", "--config", str(config), "serve", *options,
            cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=stderr,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 60)
    assert line.startswith(b"{"), f"axis serve did not start: {log.read_text()[-3000:]}"
    event = json.loads(line)
    assert event["event"] == "listening", line
    return process, event["url"]


async def finish(process: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> tuple[int, str]:
    """Signal the axis, wait for it to end, and drain its output (bounded)."""
    if process.returncode is None:
        process.send_signal(sig)
    code = await asyncio.wait_for(process.wait(), 60)
    # After SIGKILL, orphaned verification workers may hold the pipe open for a moment: read what is there.
    try:
        output = await asyncio.wait_for(process.stdout.read(), 10 if code == 0 else 0.5)  # type: ignore[union-attr]
    except TimeoutError:
        output = b""
    process._transport.close()  # type: ignore[attr-defined]
    return code, output.decode()


async def test_sigterm_finishes_work_and_a_restart_recovers_the_queue(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    port = free_port()
    network = make_network(tmp_path, {"server": {"port": port}})
    receiver = Receiver(free_port())
    token = network.endpoint("vpcp", [G22])
    network.endpoint("cao-bang", [H14], receiver.url)
    process, url = await launch(network.settings.path)
    client = Client(session, url, token)
    accepted = []
    for _ in range(5):
        status, body = await client.submit(network.sign(network.document(recipients=(CAO_BANG,))))
        assert status == 202
        accepted.append(body["message_id"])
    code, output = await finish(process)
    assert code == 0 and '"event": "stopped"' in output
    store = open_store(network.settings)
    try:
        states = Counter(d.state for m in accepted for d in store.deliveries_of(m))
    finally:
        store.close()
    assert states == {"queued": 5}  # the receiver was down: nothing delivered, nothing left leased

    await receiver.start()
    process, url = await launch(network.settings.path)
    try:
        await eventually(lambda: sorted(receiver.message_ids()) == sorted(accepted), timeout=30)
    finally:
        await finish(process)
        await receiver.stop()


async def test_draining_axis_answers_503(network: Network, session: aiohttp.ClientSession) -> None:
    token = network.endpoint("vpcp", [G22])
    axis = await start(network.settings)
    try:
        axis.axis.draining = True
        status, body = await Client(session, axis.url, token).submit(network.sign(network.document()))
        assert (status, body["code"]) == (503, "request.shutting_down")
        async with session.get(axis.url + "/readyz") as response:
            assert response.status == 503 and response.headers["Retry-After"]
        async with session.get(axis.url + "/healthz") as response:
            assert response.status == 200
    finally:
        await axis.stop()


async def test_sigkill_under_load_loses_nothing_acknowledged(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    port = free_port()
    network = make_network(tmp_path, {"server": {"port": port, "verify_workers": 2}})
    receiver = Receiver(free_port(), delay=0.1)  # slow: pushes (and their leases) are in flight at the kill
    await receiver.start()
    token = network.endpoint("vpcp", [G22])
    network.endpoint("cao-bang", [H14], receiver.url)
    packages = []
    for n in range(TOTAL):
        data = network.sign(network.document(recipients=(CAO_BANG,)))
        if n % FORGED_EVERY == 0:
            data = data.replace(b"<Subject>V/v ", b"<Subject>W/v ")
        packages.append(data)
    forged = {p for n, p in enumerate(packages) if n % FORGED_EVERY == 0}

    receipts: dict[int, str] = {}  # package index -> message id of its accepted receipt
    refused: dict[int, str] = {}
    unanswered: set[int] = set()

    async def submit_all(indexes: list[int], url: str, kill_after: int | None, process: asyncio.subprocess.Process | None) -> None:
        client = Client(session, url, token)
        pending = list(indexes)

        async def worker() -> None:
            while pending:
                n = pending.pop(0)
                try:
                    status, body = await client.submit(packages[n])
                except (TimeoutError, aiohttp.ClientError):
                    unanswered.add(n)
                    continue
                if status in (200, 202):
                    receipts[n] = body["message_id"]
                    unanswered.discard(n)
                elif status >= 500 or status == 429:
                    unanswered.add(n)
                else:
                    refused[n] = body["code"]
                    unanswered.discard(n)
                if (
                    kill_after is not None
                    and process is not None
                    and len(receipts) >= kill_after
                    and receiver.in_flight  # a push is being answered: its lease is committed
                    and process.returncode is None
                ):
                    process.kill()  # SIGKILL mid-load: requests and pushes in flight get no answer

        await asyncio.gather(*(worker() for _ in range(32)))

    process, url = await launch(network.settings.path)
    await submit_all(list(range(TOTAL)), url, kill_after=TOTAL // 3, process=process)
    assert (await finish(process))[0] == -signal.SIGKILL
    assert unanswered, "the kill should have cut some requests off"
    accepted_before_kill = dict(receipts)
    store = open_store(network.settings)
    try:
        counts_at_kill = store.delivery_counts()
        leased_at_kill = counts_at_kill.get("leased", 0)
    finally:
        store.close()

    process, url = await launch(network.settings.path)
    try:
        await submit_all(sorted(unanswered), url, kill_after=None, process=None)
        assert not unanswered
        # what was acknowledged before the kill is still acknowledged, with the same message id
        assert all(receipts[n] == m for n, m in accepted_before_kill.items())
        assert set(refused) == {n for n in range(TOTAL) if n % FORGED_EVERY == 0}
        assert set(refused.values()) == {"signature.digest_mismatch"}
        expected = set(receipts.values())
        assert len(expected) == TOTAL - len(forged)
        await eventually(lambda: expected <= set(receiver.message_ids()), timeout=90)
    finally:
        await finish(process)
        await receiver.stop()

    delivered = Counter(receiver.message_ids())
    assert set(delivered) == expected  # nothing else reached the application
    assert not forged & {body for _, body in receiver.received}
    store = open_store(network.settings)
    try:
        deliveries = [d for m in expected for d in store.deliveries_of(m)]
        assert len(deliveries) == len(expected) and all(d.state == "delivered" for d in deliveries)
        events = Counter(
            e.content and json.loads(e.content)["subject"] for e in store.events() if '"delivery.delivered"' in e.content
        )
        assert all(events[str(d.id)] == 1 for d in deliveries)
        assert store.verify_chain().events > 0
    finally:
        store.close()
    assert leased_at_kill > 0, f"the kill should have left leased deliveries to recover: {counts_at_kill}"
    print(
        f"crash test: {len(expected)} accepted, {leased_at_kill} leased at the kill, "
        f"{sum(delivered.values()) - len(delivered)} duplicate pushes deduplicated by message id"
    )
