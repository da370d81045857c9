"""Every new event's time is ISO 8601 UTC text, whoever passes it (the queue passes Unix seconds);
events written earlier with a number keep it, and the chain over both still verifies."""

from __future__ import annotations

import hashlib
import random
import uuid
from datetime import datetime
from pathlib import Path

from axis.queue import Queue, QueuePolicy
from axis.spool import Incoming
from axis.store import Agency, NewMessage, SQLiteStore
from axis.store import events as chain
from axis.store.committer import connect

SENDER, RECIPIENT = "000.00.00.G22", "000.00.00.H41"
T0 = 1_800_000_000.0


def _old_float_event(store: SQLiteStore, subject: str) -> None:
    """An event as an older axis wrote it (``at`` a float), appended by hand to the chain."""
    writer = connect(store.path)
    try:
        previous = writer.execute("SELECT hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()[0]
        content = chain.canonical({"kind": "delivery.leased", "subject": subject, "at": T0 - 60, "endpoint": 1})
        writer.execute(
            "INSERT INTO events (content, previous, hash) VALUES (?, ?, ?)",
            (content, previous, chain.chain_hash(previous, content)),
        )
    finally:
        writer.close()


def test_a_trail_has_iso_times_for_every_new_event_and_keeps_old_ones(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "data")
    try:
        for organ_id in (SENDER, RECIPIENT):
            store.add_agency(Agency(organ_id, "qcvn102", organ_id, "2026-11-21T09:00:00Z"))
        clock = [T0]
        queue = Queue(store, QueuePolicy(ttl=3600, lease=30), lambda: clock[0], random.Random(7))
        data = b"<edXML>times</edXML>"
        message = NewMessage(
            id=str(uuid.uuid4()), kind="document", sender=SENDER, document_id=f"{SENDER},2026/11/21,1/VPCP",
            sha256=hashlib.sha256(data).hexdigest(), size=len(data), recipients=(RECIPIENT,),
            accepted_at="2026-11-21T09:00:00+00:00",
        )
        (delivery_id,) = queue.enqueue(message, Incoming.of(data))
        _old_float_event(store, str(delivery_id))
        (leased,) = queue.lease([RECIPIENT], endpoint_id=1)
        queue.fail(leased, "HTTP 503")  # delivery.retry
        clock[0] += 3600
        queue.housekeeping()  # delivery.expired
        queue.requeue(delivery_id, "admin")
        clock[0] += 1
        (leased,) = queue.lease([RECIPIENT], endpoint_id=1)
        queue.ack(leased.id)

        trail = store.trail(message.id)
        kinds = [e["kind"] for e in trail]
        assert kinds == [
            "message.accepted", "delivery.leased", "delivery.leased", "delivery.retry", "delivery.expired",
            "delivery.requeued", "delivery.leased", "delivery.delivered",
        ]
        old, new = trail[1], [e for i, e in enumerate(trail) if i != 1]
        assert old["at"] == T0 - 60  # as it was written: its hash covers it
        for event in new:
            assert isinstance(event["at"], str), event
            parsed = datetime.fromisoformat(event["at"])
            assert parsed.utcoffset() is not None and parsed.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
        assert trail[2]["at"] == "2027-01-15T08:00:00+00:00"  # the lease at T0
        assert store.verify_chain().events == len(list(store.events()))
    finally:
        store.close()
