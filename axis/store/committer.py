"""Group commit: one writer thread, many callers, one durable commit per batch.

Callers hand the committer an operation (a function of the write connection). The writer thread
takes every operation waiting and runs them in one transaction (a failing operation is rolled
back alone, see ``_commit``), then commits durably: SQLite with ``synchronous=FULL`` (the WAL is
fsync'd), PostgreSQL with its WAL flushed. Only after the commit returns does any caller hear its
result: nobody is told "committed" before the data is on disk. If the commit itself fails, every
caller in the batch gets the error and nothing of the batch is visible.

The committer is the same for both engines; a ``Writer`` is one engine's write connection: how a
transaction begins (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: ``BEGIN`` and the advisory lock that
serialises writers across nodes), savepoints, and how its errors become the store's codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

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


async def durable(future: Future[T]) -> T:
    """Wait on the event loop for an operation handed to a committer. Cancelling the waiter (a
    client went away) does not cancel the operation: it commits, and its outcome is retrieved."""
    return await asyncio.shield(asyncio.wrap_future(future))


class Writer(Protocol):
    """One engine's write connection, as the group committer drives it."""

    connection: Any
    """What operations are given (a ``sqlite3.Connection``, or what stands in for one)."""

    def begin(self) -> None: ...
    def commit(self) -> None: ...
    def rollback(self) -> None:
        """Roll back the transaction, if one is open."""
        ...

    def savepoint(self) -> None: ...
    def release(self) -> None: ...
    def rollback_to(self) -> None: ...
    def translate(self, error: Exception) -> Exception:
        """The store's error for one the engine raised (``AxisError``s pass through)."""
        ...

    def close(self) -> None: ...


class SQLiteWriter:
    """The SQLite store's write connection."""

    def __init__(self, path: Path) -> None:
        self.connection = connect(path)

    def begin(self) -> None:
        """Take the write lock. Another process (an admin command) may have appended events since
        the last batch, so the cached chain head is re-read once per transaction."""
        self.connection.execute("BEGIN IMMEDIATE")
        self.connection.chain_head = None

    def commit(self) -> None:
        self.connection.execute("COMMIT")

    def rollback(self) -> None:
        if self.connection.in_transaction:
            self.connection.execute("ROLLBACK")
        self.connection.chain_head = None

    def savepoint(self) -> None:
        self.connection.execute("SAVEPOINT operation")

    def release(self) -> None:
        self.connection.execute("RELEASE operation")

    def rollback_to(self) -> None:
        self.connection.execute("ROLLBACK TO operation")
        self.connection.execute("RELEASE operation")
        self.connection.chain_head = None

    def translate(self, error: Exception) -> Exception:
        if isinstance(error, AxisError):
            return error
        if isinstance(error, sqlite3.IntegrityError):
            return StoreError("store.conflict", f"the change conflicts with what is stored: {error}")
        if isinstance(error, sqlite3.OperationalError) and error.sqlite_errorcode == sqlite3.SQLITE_FULL:
            return StoreError("store.disk_full", "the disk of the database is full; nothing was stored")
        if isinstance(error, sqlite3.OperationalError):
            return StoreError("store.unavailable", f"the database refused the change: {error}")
        return error

    def close(self) -> None:
        self.connection.close()


@dataclass
class _Pending:
    operation: Operation
    future: Future[Any]


_STOP = object()


class GroupCommitter:
    def __init__(self, writer: Writer, max_batch: int = MAX_BATCH, name: str = "axis-group-commit") -> None:
        self._writer = writer
        self._queue: queue.SimpleQueue[_Pending | object] = queue.SimpleQueue()
        self._max_batch = max_batch
        self._closed = False
        self.commits = 0
        """Durable commits made so far (for benchmarks: operations per commit)."""
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, operation: Callable[[Any], T]) -> Future[T]:
        """Queue ``operation``; its future resolves after the commit that contains it."""
        if self._closed:
            raise StoreError("store.closed", "the store is closed: nothing more is written")
        future: Future[T] = Future()
        self._queue.put(_Pending(operation, future))
        return future

    def run(self, operation: Callable[[Any], T]) -> T:
        """Run ``operation`` in the next group commit and return its result once it is durable."""
        return self.submit(operation).result()

    def close(self) -> None:
        """Finish every queued operation, then stop the writer thread and close the connection."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join()
        self._writer.close()

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
        writer = self._writer
        try:
            try:
                writer.begin()
                results: list[tuple[bool, Any]] = [(True, p.operation(writer.connection)) for p in batch]
            except Exception:
                writer.rollback()
                writer.begin()
                results = [self._isolated(p.operation) for p in batch]
            writer.commit()
            self.commits += 1
        except Exception as error:
            with contextlib.suppress(Exception):  # the connection is gone: the writer opens another
                writer.rollback()
            failure = writer.translate(error)
            for pending in batch:
                pending.future.set_exception(failure)
            return
        for pending, (ok, value) in zip(batch, results, strict=True):  # only now, after the commit
            if ok:
                pending.future.set_result(value)
            else:
                pending.future.set_exception(value)

    def _isolated(self, operation: Operation) -> tuple[bool, Any]:
        writer = self._writer
        writer.savepoint()
        try:
            result = operation(writer.connection)
        except Exception as error:  # each caller gets its own failure; the batch goes on
            writer.rollback_to()
            return False, writer.translate(error)
        writer.release()
        return True, result
