"""The queue's schedule under an injected clock and random source."""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from axis.errors import StoreError
from axis.queue import Queue, QueuePolicy
from axis.spool import Incoming
from axis.store import Agency, NewMessage, SQLiteStore
from axis.store.blobs import INLINE_MAX


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[Queue]:
    store = SQLiteStore(tmp_path / "data")
    for organ_id in ("000.00.00.G22", "000.00.00.H41"):
        store.add_agency(Agency(organ_id, "qcvn102", organ_id, "2026-11-21T09:00:00Z"))
    yield Queue(store, QueuePolicy(ttl=3600, lease=30), Clock(), random.Random(7))
    store.close()


def _message() -> tuple[NewMessage, Incoming]:
    data = f"<edXML>{uuid.uuid4()}</edXML>".encode()
    message = NewMessage(
        id=str(uuid.uuid4()),
        kind="document",
        sender="000.00.00.G22",
        document_id=f"000.00.00.G22,2026/11/21,{uuid.uuid4().hex[:6]}/VPCP",
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        recipients=("000.00.00.H41",),
        accepted_at="2026-11-21T09:00:00Z",
    )
    return message, Incoming.of(data)


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    queue = Queue(
        store=None, policy=QueuePolicy(backoff_initial=1, backoff_max=900, jitter=0.2), rng=random.Random(1)
    )  # type: ignore[arg-type]
    delays = [queue.backoff(n) for n in range(1, 15)]
    for attempt, delay in enumerate(delays, start=1):
        base = min(900, 2 ** (attempt - 1))
        assert 0.8 * base <= delay <= 1.2 * base
    assert max(delays) <= 1080
    assert len({round(d, 6) for d in delays[-4:]}) == 4  # jitter spreads capped retries


@pytest.mark.parametrize("attempts", [1_025, 10_000, 10**9])
def test_backoff_stays_capped_after_thousands_of_failed_attempts(attempts: int) -> None:
    """A push endpoint down for weeks: the doubling must not overflow (``2.0 ** 1024``)."""
    policy = QueuePolicy(backoff_initial=1, backoff_max=900, jitter=0.2)
    queue = Queue(store=None, policy=policy, rng=random.Random(1))  # type: ignore[arg-type]
    assert 0.8 * 900 <= queue.backoff(attempts) <= 1.2 * 900


def test_a_failed_delivery_is_retried_when_due_then_expires(queue: Queue) -> None:
    clock: Clock = queue.clock  # type: ignore[assignment]
    (delivery_id,) = queue.enqueue(*_message())
    (leased,) = queue.lease(["000.00.00.H41"], endpoint_id=1)
    assert queue.fail(leased, "connection refused") == "queued"
    assert queue.lease(["000.00.00.H41"], endpoint_id=1) == []
    clock.now += 2
    (again,) = queue.lease(["000.00.00.H41"], endpoint_id=1)
    assert again.attempts == 2
    clock.now += 3600
    released, expired = queue.housekeeping()
    assert expired == [delivery_id]
    queue.requeue(delivery_id, by="admin")
    (third,) = queue.lease(["000.00.00.H41"], endpoint_id=1)
    assert queue.ack(third.id) is True and queue.ack(third.id) is False


def test_housekeeping_releases_stale_leases(queue: Queue) -> None:
    clock: Clock = queue.clock  # type: ignore[assignment]
    (delivery_id,) = queue.enqueue(*_message())
    queue.lease(["000.00.00.H41"], endpoint_id=1)
    clock.now += 31
    released, expired = queue.housekeeping()
    assert (released, expired) == ([delivery_id], [])
    assert [d.id for d in queue.lease(["000.00.00.H41"], endpoint_id=2)] == [delivery_id]


def test_enqueue_stores_the_bytes_before_the_message(queue: Queue) -> None:
    message, package = _message()
    queue.enqueue(message, package)
    assert queue.store.blobs.get(message.sha256) == package.data
    wrong, _ = _message()
    with pytest.raises(StoreError) as refused:
        queue.enqueue(wrong, package)
    assert refused.value.code == "store.bad_digest"
    assert queue.store.deliveries(limit=10)[-1].message_id == message.id  # nothing of the refused one


def test_small_packages_are_stored_in_the_transaction_large_ones_as_blobs(queue: Queue) -> None:
    small, package = _message()
    queue.enqueue(small, package)
    assert not queue.store.blobs.path(small.sha256).exists()  # in the database, committed with the message
    assert queue.store.blobs.get(small.sha256) == package.data
    large_data = package.read() + b" " * INLINE_MAX
    large = replace(small, id="m-large", document_id="large", sha256=hashlib.sha256(large_data).hexdigest())
    queue.enqueue(large, Incoming.of(large_data))
    assert queue.store.blobs.path(large.sha256).read_bytes() == large_data
    assert queue.store.blobs.get(large.sha256) == large_data
    assert queue.store.blobs.open(large.sha256) == queue.store.blobs.path(large.sha256)  # streamed from its file


def test_a_spooled_upload_becomes_its_blob_without_a_copy(queue: Queue) -> None:
    small, _ = _message()
    spool = queue.store.blobs.spool()
    pieces = [b"<edXML>", b"x" * INLINE_MAX, b"</edXML>"]
    for piece in pieces:
        spool.write(piece)
    package = spool.finish()
    assert package.data is None and package.path is not None and package.size == sum(map(len, pieces))
    spooled = package.path.stat().st_ino
    large = replace(small, sha256=package.sha256, size=package.size)
    queue.enqueue(large, package)
    blob = queue.store.blobs.path(package.sha256)
    assert blob.stat().st_ino == spooled and not package.path.exists()  # renamed into place
    assert blob.read_bytes() == b"".join(pieces)


def test_a_changed_blob_is_not_served(queue: Queue) -> None:
    small, package = _message()
    data = package.read() + b" " * INLINE_MAX
    large = replace(small, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    queue.enqueue(large, Incoming.of(data))
    queue.store.blobs.path(large.sha256).write_bytes(data.replace(b"edXML", b"edXMM", 1))
    with pytest.raises(StoreError) as refused:
        queue.store.blobs.open(large.sha256)
    assert refused.value.code == "store.blob_corrupt"


def test_receipts_and_latest_status_are_kept(queue: Queue) -> None:
    message, package = _message()
    queue.enqueue(message, package)
    store = queue.store
    store.add_receipt(message.id, "accepted", None, b"<Receipt/>", "2026-11-21T09:00:01Z")
    store.add_receipt(message.id, "delivered", "000.00.00.H41", b"<Receipt d/>", "2026-11-21T09:00:02Z")
    assert [(k, r) for k, r, _ in store.receipts(message.id)] == [
        ("accepted", None),
        ("delivered", "000.00.00.H41"),
    ]
    for code in ("01", "03", "04"):
        store.record_status(message.sender, message.document_id, "000.00.00.H41", code, message.id, "2026-11-21T10:00:00Z")
    assert store.status(message.sender, message.document_id, "000.00.00.H41") == "04"
    assert store.status(message.sender, message.document_id, "000.00.00.H14") is None
    assert store.verify_chain().events > 5
