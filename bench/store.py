"""The store's throughput, against the floor of raw sqlite3 in the same run (synchronous=FULL, WAL).

- committed enqueues/s of one-recipient messages: group commit with 32 concurrent callers, and
  one commit per operation (the same calls from one caller, each waiting for its commit);
- the floor: the same rows (message, delivery, chained event) inserted with raw sqlite3 by one
  thread, committing in transactions as large as the group committer's average batch (the same
  number of fsyncs), and, for reference, in 1 024-row transactions;
- lease + ack per second;
- lease and inbox listing with 10 000 and with 1 000 000 messages stored (should not grow).

Prints a table and writes bench/results/store.json. Figures, not assertions.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from axis.store import Agency, NewMessage, SQLiteStore  # noqa: E402
from axis.store import events as chain  # noqa: E402
from axis.store.committer import connect  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SENDER, RECIPIENT = "000.00.00.G22", "000.00.00.H41"
AT = "2026-11-21T09:00:00Z"


def new_store(directory: Path) -> SQLiteStore:
    store = SQLiteStore(directory)
    for organ_id in (SENDER, RECIPIENT):
        store.add_agency(Agency(organ_id, "qcvn102", organ_id, AT))
    return store


def message(n: int) -> NewMessage:
    return NewMessage(
        id=str(uuid.uuid4()),
        kind="document",
        sender=SENDER,
        document_id=f"{SENDER},2026/11/21,{n}/VPCP",
        sha256="ab" * 32,
        size=10_000,
        recipients=(RECIPIENT,),
        accepted_at=AT,
    )


def group_commit(directory: Path, total: int, callers: int = 32) -> tuple[float, float]:
    store = new_store(directory)
    per_caller = total // callers
    start_commits = store.committer.commits

    def caller(offset: int) -> None:
        for n in range(per_caller):
            store.enqueue(message(offset + n), time.time(), time.time() + 3600)

    threads = [threading.Thread(target=caller, args=(i * per_caller,)) for i in range(callers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    batch = per_caller * callers / max(1, store.committer.commits - start_commits)
    store.close()
    return per_caller * callers / elapsed, batch


def one_commit_each(directory: Path, total: int) -> float:
    store = new_store(directory)
    started = time.perf_counter()
    for n in range(total):
        store.enqueue(message(n), time.time(), time.time() + 3600)
    elapsed = time.perf_counter() - started
    store.close()
    return total / elapsed


def raw_floor(directory: Path, total: int, batch: int) -> float:
    SQLiteStore(directory).close()  # same schema
    connection = connect(directory / "axis.sqlite3")
    previous = chain.GENESIS
    started = time.perf_counter()
    for first in range(0, total, batch):
        connection.execute("BEGIN IMMEDIATE")
        for n in range(first, min(total, first + batch)):
            m = message(n)
            connection.execute(
                "INSERT INTO messages (id, kind, sender, document_id, sha256, size, priority, accepted_at)"
                " VALUES (?, ?, ?, ?, ?, ?, 0, ?)",
                (m.id, m.kind, m.sender, m.document_id, m.sha256, m.size, m.accepted_at),
            )
            connection.execute(
                "INSERT INTO deliveries (message_id, recipient, state, priority, created_at, due_at, expires_at)"
                " VALUES (?, ?, 'queued', 0, ?, ?, ?)",
                (m.id, RECIPIENT, 0.0, 0.0, 3600.0),
            )
            content = chain.canonical({"kind": "message.accepted", "subject": m.id, "at": AT})
            digest = chain.chain_hash(previous, content)
            connection.execute(
                "INSERT INTO events (content, previous, hash) VALUES (?, ?, ?)", (content, previous, digest)
            )
            previous = digest
        connection.execute("COMMIT")
    elapsed = time.perf_counter() - started
    connection.close()
    return total / elapsed


def lease_ack(directory: Path, total: int) -> float:
    store = new_store(directory)
    share = total // 16

    def producer(offset: int) -> None:
        for n in range(share):
            store.enqueue(message(offset + n), 0.0, 1e12)

    threads = [threading.Thread(target=producer, args=(o * share,)) for o in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    started = time.perf_counter()
    done = 0
    while batch := store.lease([RECIPIENT], 1.0, 31.0, 100, leased_by=1):
        for delivery in batch:
            store.ack(delivery.id, 2.0)
        done += len(batch)
    elapsed = time.perf_counter() - started
    store.close()
    return done / elapsed


def fill(directory: Path, count: int) -> None:
    """Bulk-load ``count`` delivered messages (history) plus 100 queued ones, bypassing the API for speed."""
    store = new_store(directory)
    store.close()
    connection = connect(directory / "axis.sqlite3")
    connection.execute("BEGIN")
    for n in range(count):
        message_id = f"m{n:08d}"
        connection.execute(
            "INSERT INTO messages (id, kind, sender, document_id, sha256, size, priority, accepted_at)"
            " VALUES (?, 'document', ?, ?, ?, 10000, 0, ?)",
            (message_id, SENDER, f"{SENDER},2026/11/21,{n}/VPCP", "ab" * 32, AT),
        )
        state = "queued" if n >= count - 100 else "delivered"
        connection.execute(
            "INSERT INTO deliveries (message_id, recipient, state, priority, created_at, due_at, expires_at)"
            " VALUES (?, ?, ?, 0, ?, ?, 1e12)",
            (
                message_id,
                RECIPIENT if n % 10 == 0 or state == "queued" else f"000.00.{n % 90:02d}.H41",
                state,
                float(n),
                float(n),
            ),
        )
    connection.execute("COMMIT")
    connection.close()


def lease_and_list(directory: Path) -> tuple[float, float]:
    store = SQLiteStore(directory)
    listing = []
    for _ in range(50):
        started = time.perf_counter()
        store.inbox([RECIPIENT], 100)
        listing.append(time.perf_counter() - started)
    leasing = []
    for _ in range(20):
        started = time.perf_counter()
        leased = store.lease([RECIPIENT], 1e10, 1e10 + 30, 5, leased_by=1)
        leasing.append(time.perf_counter() - started)
        for delivery in leased:  # put them back so every round leases from the same queue
            store.fail(delivery.id, 1e10, 1e10, "bench")
    store.close()
    return statistics.median(leasing) * 1e3, statistics.median(listing) * 1e3


def main() -> None:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        grouped, batch = group_commit(root / "group", total)
        single = one_commit_each(root / "single", min(total, 2_000))
        floor = raw_floor(root / "floor", total, max(1, round(batch)))
        big_floor = raw_floor(root / "big-floor", total, 1024)
        acked = lease_ack(root / "lease", min(total, 10_000))
        fill(root / "small", 10_000)
        small = lease_and_list(root / "small")
        fill(root / "large", 1_000_000)
        large = lease_and_list(root / "large")
    rows = {
        "enqueue_group_commit_per_s": grouped,
        "operations_per_commit": batch,
        "enqueue_one_commit_each_per_s": single,
        "floor_raw_sqlite3_per_s": floor,
        "group_over_floor": grouped / floor,
        "floor_raw_sqlite3_1024_rows_per_commit_per_s": big_floor,
        "lease_ack_per_s": acked,
        "lease_ms_10k": small[0],
        "inbox_ms_10k": small[1],
        "lease_ms_1m": large[0],
        "inbox_ms_1m": large[1],
    }
    print(f"{'measure':<44} {'value':>12}")
    print(f"{'enqueues/s, group commit (32 callers)':<44} {grouped:>12.0f}")
    print(f"{'  operations per durable commit':<44} {batch:>12.1f}")
    print(f"{'enqueues/s, one commit per operation':<44} {single:>12.0f}")
    print(f"{'floor: raw sqlite3, same rows and batches':<44} {floor:>12.0f}")
    print(f"{'group commit / floor':<44} {grouped / floor:>11.0%}")
    print(f"{'raw sqlite3, 1 024 rows per commit':<44} {big_floor:>12.0f}")
    print(f"{'lease + ack per second':<44} {acked:>12.0f}")
    print(f"{'lease 5, 10 000 stored (ms)':<44} {small[0]:>12.2f}")
    print(f"{'lease 5, 1 000 000 stored (ms)':<44} {large[0]:>12.2f}")
    print(f"{'list inbox 100, 10 000 stored (ms)':<44} {small[1]:>12.2f}")
    print(f"{'list inbox 100, 1 000 000 stored (ms)':<44} {large[1]:>12.2f}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "store.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
