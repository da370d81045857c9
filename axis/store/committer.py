"""Group commit: one writer thread, many callers, one durable commit per batch.

Callers hand the committer an operation (a function of the write connection). The writer thread
takes every operation waiting, runs them in one ``BEGIN IMMEDIATE`` transaction, each inside its
own SAVEPOINT so a failing operation is rolled back alone, then COMMITs with
``synchronous=FULL`` (the WAL is fsync'd). Only after the COMMIT returns does any caller hear its
result: nobody is told "committed" before the data is on disk. If the COMMIT itself fails, every
caller in the batch gets the error and nothing of the batch is visible.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from axis.errors import AxisError, StoreError

T = TypeVar("T")
Operation = Callable[[sqlite3.Connection], Any]
MAX_BATCH = 1024


class Connection(sqlite3.Connection):
    """A connection that remembers the event chain's head while it is the writer's."""

    chain_head: str | None = None


def connect(path: Path, *, readonly: bool = False) -> Connection:
    """A connection with the store's settings: WAL, synchronous=FULL, foreign keys, busy timeout."""
    connection = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=30, factory=Connection
    )
    connection.row_factory = sqlite3.Row
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA foreign_keys=ON")
    # Every commit invalidates each reader's page cache; reading pages through a memory map
    # instead of read() calls keeps the many short lookups on the request path cheap.
    connection.execute("PRAGMA mmap_size=1073741824")
    if readonly:
        connection.execute("PRAGMA query_only=ON")
    return connection


@dataclass
class _Pending:
    operation: Operation
    future: Future[Any]


_STOP = object()


class GroupCommitter:
    def __init__(self, path: Path, max_batch: int = MAX_BATCH) -> None:
        self._connection = connect(path)
        self._queue: queue.SimpleQueue[_Pending | object] = queue.SimpleQueue()
        self._max_batch = max_batch
        self._closed = False
        self.commits = 0
        """Durable commits made so far (for benchmarks: operations per commit)."""
        self._thread = threading.Thread(target=self._run, name="axis-group-commit", daemon=True)
        self._thread.start()

    def submit(self, operation: Callable[[sqlite3.Connection], T]) -> Future[T]:
        """Queue ``operation``; its future resolves after the commit that contains it."""
        if self._closed:
            raise StoreError("store.closed", "the store is shut down")
        future: Future[T] = Future()
        self._queue.put(_Pending(operation, future))
        return future

    def run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``operation`` in the next group commit and return its result once it is durable."""
        return self.submit(operation).result()

    def close(self) -> None:
        """Finish every queued operation, then stop the writer thread and close the connection."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join()
        self._connection.close()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch: list[_Pending] = [first]  # type: ignore[list-item]
            stop = False
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)  # type: ignore[arg-type]
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[_Pending]) -> None:
        """Run the batch in one transaction. Optimistically without savepoints; if any operation
        fails, roll the whole batch back and run it again with one savepoint per operation, so the
        failure is that caller's alone. Operations only touch the database, so a re-run is exact."""
        connection = self._connection
        try:
            try:
                self._begin()
                results: list[tuple[bool, Any]] = [(True, p.operation(connection)) for p in batch]
            except Exception:
                connection.execute("ROLLBACK")
                self._begin()
                results = [self._isolated(p.operation) for p in batch]
            connection.execute("COMMIT")
            self.commits += 1
        except Exception as error:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            connection.chain_head = None
            failure = _translate(error)
            for pending in batch:
                pending.future.set_exception(failure)
            return
        for pending, (ok, value) in zip(batch, results, strict=True):  # only now, after the fsync
            if ok:
                pending.future.set_result(value)
            else:
                pending.future.set_exception(value)

    def _begin(self) -> None:
        """Take the write lock. Another process (an admin command) may have appended events since
        our last batch, so the cached chain head is re-read once per transaction."""
        self._connection.execute("BEGIN IMMEDIATE")
        self._connection.chain_head = None

    def _isolated(self, operation: Operation) -> tuple[bool, Any]:
        connection = self._connection
        connection.execute("SAVEPOINT operation")
        try:
            result = operation(connection)
        except Exception as error:  # each caller gets its own failure; the batch goes on
            connection.execute("ROLLBACK TO operation")
            connection.execute("RELEASE operation")
            connection.chain_head = None
            return False, _translate(error)
        connection.execute("RELEASE operation")
        return True, result


def _translate(error: Exception) -> Exception:
    if isinstance(error, AxisError):
        return error
    if isinstance(error, sqlite3.IntegrityError):
        return StoreError("store.conflict", f"the change conflicts with what is stored: {error}")
    if isinstance(error, sqlite3.OperationalError) and error.sqlite_errorcode == sqlite3.SQLITE_FULL:
        return StoreError("store.disk_full", "the disk of the database is full; nothing was stored")
    if isinstance(error, sqlite3.OperationalError):
        return StoreError("store.unavailable", f"the database refused the change: {error}")
    return error
