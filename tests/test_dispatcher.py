"""The push dispatcher on a real store, with the endpoint's HTTP faked: slots, lease-ahead, stop and cancel."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from axis import keystore
from axis.delivery import Answer, Dispatcher
from axis.queue import Queue, QueuePolicy
from axis.receipts import Receipt
from axis.router import Router
from axis.spool import Incoming
from axis.store import Agency, Delivery, Endpoint, NewMessage, SQLiteStore
from tests.conftest import PKI

SENDER, RECIPIENT = "000.00.00.G22", "000.00.00.H41"


@pytest.fixture
def router(tmp_path: Path, dev_pki: PKI) -> Iterator[Router]:
    store = SQLiteStore(tmp_path / "data")
    for organ_id in (SENDER, RECIPIENT):
        store.add_agency(Agency(organ_id, "qcvn102", organ_id, "2026-11-21T09:00:00Z"))
    key = keystore.read_private_key(dev_pki.store.axis_key)
    certificate = keystore.read_certificates(dev_pki.store.axis_certificate)[0]
    yield Router(Queue(store, QueuePolicy(ttl=3600, lease=30)), key, certificate)
    store.close()


def _queue_packages(router: Router, count: int) -> None:
    for _ in range(count):
        data = f"<edXML>{uuid.uuid4()}</edXML>".encode()
        message = NewMessage(
            id=str(uuid.uuid4()), kind="document", sender=SENDER,
            document_id=f"{SENDER},2026/11/21,{uuid.uuid4().hex[:6]}/VPCP", sha256=hashlib.sha256(data).hexdigest(),
            size=len(data), recipients=(RECIPIENT,), accepted_at="2026-11-21T09:00:00Z",
        )
        router.queue.enqueue(message, Incoming.of(data))


def _states(router: Router) -> Counter[str]:
    return Counter(d.state for d in router.store.deliveries(limit=1000) if d.recipient == RECIPIENT)


def test_slots_lease_ahead_and_a_graceful_stop_leaves_nothing_leased(router: Router) -> None:
    _queue_packages(router, 12)
    in_flight, most = 0, 0
    release = asyncio.Event()

    async def post(url: str, body: bytes, headers: dict[str, str], receipt: Receipt | None) -> Answer:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await release.wait()
        in_flight -= 1
        return 200, b"ok", None  # the router signs the receipt

    async def run() -> None:
        dispatcher = Dispatcher(router, post, concurrency=4, poll=0.05)
        endpoint = Endpoint("push", "push", (RECIPIENT,), "2026-11-21T09:00:00Z", push_url="http://x/in", id=1)
        task = asyncio.create_task(dispatcher._serve(endpoint))
        for _ in range(100):
            await asyncio.sleep(0.01)
            if in_flight == 4 and _states(router)["leased"] == 8:
                break
        assert (in_flight, _states(router)["leased"]) == (4, 8)  # 4 POSTs at once, one round leased ahead
        release.set()
        await asyncio.sleep(0.05)
        stopping = asyncio.create_task(dispatcher.stop())
        await asyncio.wait_for(asyncio.gather(task, stopping), 10)

    asyncio.run(run())
    assert most == 4
    states = _states(router)
    assert states["leased"] == 0 and states["delivered"] >= 4 and sum(states.values()) == 12
    for delivery in router.store.deliveries(state="delivered"):  # each with its receipt, same transaction
        assert [k for k, _, _ in router.store.receipts(delivery.message_id)] == ["delivered"]


def test_cancelling_an_endpoint_cancels_its_posts(router: Router) -> None:
    _queue_packages(router, 6)
    started, cancelled = 0, 0

    async def post(url: str, body: bytes, headers: dict[str, str], receipt: Receipt | None) -> Answer:
        nonlocal started, cancelled
        started += 1
        try:
            await asyncio.sleep(3600)  # an endpoint that never answers
        except asyncio.CancelledError:
            cancelled += 1
            raise
        return 200, b"", None

    async def run() -> None:
        dispatcher = Dispatcher(router, post, concurrency=2, poll=0.05)
        endpoint = Endpoint("push", "push", (RECIPIENT,), "2026-11-21T09:00:00Z", push_url="http://x/in", id=1)
        task = asyncio.create_task(dispatcher._serve(endpoint))
        while started < 2:
            await asyncio.sleep(0.01)
        task.cancel()  # what run() does when the endpoint is revoked
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.05)
        assert (started, cancelled) == (2, 2)  # before asyncio.run would cancel leftovers itself

    asyncio.run(run())


def test_an_unexpected_error_recording_an_outcome_is_logged_and_the_lease_runs_out(
    router: Router, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Recording a failed attempt raises something that is not a StoreError: the dispatcher logs
    it and keeps serving, and the delivery returns to the queue when its lease ends."""
    _queue_packages(router, 2)
    recorded: list[int] = []
    broken: list[int] = []
    attempt_failed = router.attempt_failed

    def flaky(delivery: Delivery, error: str) -> str:
        if not broken:
            broken.append(delivery.id)
            raise RuntimeError("the disk controller hiccupped")
        recorded.append(delivery.id)
        return attempt_failed(delivery, error)

    monkeypatch.setattr(router, "attempt_failed", flaky)
    unhandled: list[dict[str, object]] = []

    async def post(url: str, body: bytes, headers: dict[str, str], receipt: Receipt | None) -> Answer:
        return 503, b"busy", None

    async def run() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, context: unhandled.append(context))
        dispatcher = Dispatcher(router, post, concurrency=2, poll=0.05)
        endpoint = Endpoint("push", "push", (RECIPIENT,), "2026-11-21T09:00:00Z", push_url="http://x/in", id=1)
        task = asyncio.create_task(dispatcher._serve(endpoint))
        for _ in range(200):
            await asyncio.sleep(0.01)
            if recorded:
                break
        assert not task.done()  # still serving
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gc.collect()  # a task whose exception nobody retrieved would be reported now
        await asyncio.sleep(0)

    with caplog.at_level(logging.INFO, logger="axis.delivery"):
        asyncio.run(run())
    assert unhandled == []
    (stuck,) = broken
    assert recorded and stuck not in recorded
    errors = [r for r in caplog.records if r.name == "axis.delivery" and r.levelno == logging.ERROR]
    assert [f"delivery {stuck} " in r.getMessage() and "not recorded" in r.getMessage() for r in errors] == [True]
    assert router.store.delivery(stuck).state == "leased"  # type: ignore[union-attr]
    deadline = router.store.delivery(stuck).lease_deadline  # type: ignore[union-attr]
    assert deadline is not None
    assert stuck in router.store.release_stale_leases(deadline)  # housekeeping at the deadline
    assert router.store.delivery(stuck).state == "queued"  # type: ignore[union-attr]
