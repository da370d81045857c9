"""The PostgreSQL store against the SQLite store and against raw psycopg, in the same run.

- committed enqueues/s of one-recipient 10 KB messages (bytes in the transaction), 32 callers;
- the floor: the same rows (package, message, delivery, chained event) inserted with raw psycopg,
  one transaction each, 32 threads, serialised by the same advisory lock (one chain);
- lease + ack per second.

Needs a server: ``python bench/postgres.py postgresql://postgres@127.0.0.1:5432/postgres`` (or
``$AXIS_TEST_POSTGRES``); a database is created and dropped. Figures, not assertions.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from axis.store import Agency, NewMessage, SQLiteStore, Store  # noqa: E402
from axis.store.postgres import WRITE_LOCK, PostgresStore  # noqa: E402

SENDER, RECIPIENT = "000.00.00.G22", "000.00.00.H41"
AT = "2026-11-21T09:00:00Z"
COUNT, CALLERS = 2000, 32
PACKAGE = os.urandom(10_000)


def message(n: int) -> NewMessage:
    data = PACKAGE[:-8] + n.to_bytes(8, "big")
    return NewMessage(
        id=str(uuid.uuid4()), kind="document", sender=SENDER, document_id=f"{SENDER},2026/11/21,{n}/BENCH",
        sha256=hashlib.sha256(data).hexdigest(), size=len(data), recipients=(RECIPIENT,), accepted_at=AT, data=data,
    )


def in_threads(work: Callable[[int], None]) -> float:
    """Seconds for COUNT calls of ``work`` spread over CALLERS threads."""
    numbers = iter(range(COUNT))
    lock = threading.Lock()

    def caller() -> None:
        while True:
            with lock:
                n = next(numbers, None)
            if n is None:
                return
            work(n)

    started = time.perf_counter()
    threads = [threading.Thread(target=caller) for _ in range(CALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def enqueues(store: Store) -> float:
    for organ_id in (SENDER, RECIPIENT):
        store.add_agency(Agency(organ_id, "qcvn102", organ_id, AT))
    return COUNT / in_threads(lambda n: store.enqueue(message(n), 1.0, 1e12))


def leases_and_acks(store: Store) -> float:
    started = time.perf_counter()
    done = 0
    while leased := store.lease([RECIPIENT], 2.0, 100.0, 50, 1):
        for delivery in leased:
            store.ack(delivery.id, 3.0, "ab")
            done += 1
    return done / (time.perf_counter() - started)


def floor(url: str) -> float:
    local = threading.local()

    def insert(n: int) -> None:
        connection = getattr(local, "c", None) or psycopg.connect(url, autocommit=True)
        local.c = connection
        m = message(n)
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            connection.execute("INSERT INTO packages (sha256, data) VALUES (%s, %s) ON CONFLICT DO NOTHING", (m.sha256, m.data))
            connection.execute(
                "INSERT INTO messages (id, kind, sender, document_id, sha256, size, priority, accepted_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, 0, %s)",
                (m.id, m.kind, m.sender, m.document_id, m.sha256, m.size, m.accepted_at),
            )
            connection.execute(
                "INSERT INTO deliveries (message_id, recipient, state, created_at, due_at, expires_at)"
                " VALUES (%s, %s, 'queued', 1, 1, 1e12)",
                (m.id, RECIPIENT),
            )
            head = connection.execute("SELECT hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
            previous = head[0] if head else "0" * 64
            connection.execute(
                "INSERT INTO events (seq, content, previous, hash) VALUES"
                " ((SELECT coalesce(max(seq), 0) + 1 FROM events), %s, %s, %s)",
                ("{}", previous, hashlib.sha256(previous.encode() + b"{}").hexdigest()),
            )

    return COUNT / in_threads(insert)


@contextmanager
def database(server: str) -> Iterator[str]:
    """A new database on ``server`` for one measurement (dropped after), as a connection string."""
    name = f"axis_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield make_conninfo(server, dbname=name)
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def main() -> None:
    server = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("AXIS_TEST_POSTGRES", "")
    if not server:
        sys.exit("give a PostgreSQL server's URL (or set AXIS_TEST_POSTGRES)")
    with tempfile.TemporaryDirectory() as directory:
        sqlite = SQLiteStore(Path(directory))
        sqlite_rate, sqlite_leases = enqueues(sqlite), leases_and_acks(sqlite)
        sqlite.close()
    with database(server) as url:
        postgres = PostgresStore(url)
        postgres_rate, postgres_leases = enqueues(postgres), leases_and_acks(postgres)
        postgres.close()
    with database(server) as url:
        PostgresStore(url).close()  # the schema, empty
        floor_rate = floor(url)
    print(f"{COUNT} enqueues of 10 KB, one recipient, {CALLERS} callers; then lease + ack")
    print(f"  SQLite store (group commit)      {sqlite_rate:8.0f} enqueues/s   {sqlite_leases:8.0f} lease+ack/s")
    print(f"  PostgreSQL store                 {postgres_rate:8.0f} enqueues/s   {postgres_leases:8.0f} lease+ack/s")
    print(f"  raw psycopg, same rows and lock  {floor_rate:8.0f} inserts/s    PostgreSQL/floor {postgres_rate / floor_rate:.0%}")


if __name__ == "__main__":
    main()
