"""The PostgreSQL store: the same rules and statements as the SQLite store, on a database that
several axis nodes share (``[store] url = "postgresql://..."``).

The store's statements are written once, in ``SQLiteStore``; this class runs them on PostgreSQL
through ``PgConnection``, which rewrites the few places where the two dialects differ (``?``
placeholders, ``INSERT OR IGNORE``, SQLite's JSON and boolean sums, the ids an insert returns).
What differs in kind is here:

- **Transactions.** Writes are group-committed as on SQLite (axis/store/committer.py): one
  writer connection per node runs each batch in one transaction that first takes one advisory
  lock, so writes are serialised across every node, as SQLite's single writer serialises them in
  one, and the event chain (each event carries the hash of the one before it) never forks; one
  commit makes the whole batch durable. Reads run on pooled connections, in autocommit.
- **Package bytes** live in the database, every size (the nodes share no file system): up to
  ``INLINE_MAX`` in ``packages``, in the message's own transaction; larger ones in
  ``package_chunks``, a MiB a row, written by ``blobs.keep`` before the transaction that names
  them, as the SQLite store writes a large one to its blob directory first.
- **The registry cache** is the SQLite store's own: it compares ``registry_version``, which the
  database's triggers bump on every registry write, whichever node makes it.
- **Errors** of the driver become the store's codes at this boundary: a unique violation is
  ``store.conflict``, a full disk ``store.disk_full``, anything else ``store.unavailable``.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg
from psycopg_pool import ConnectionPool

from axis.errors import StoreError
from axis.spool import Incoming, Spool
from axis.store import events as chain
from axis.store.blobs import INLINE_MAX, check_digest, checked
from axis.store.committer import GroupCommitter
from axis.store.sqlite import SQLiteStore

T = TypeVar("T")
WRITE_LOCK = 0x61786973  # "axis": the advisory lock every writing transaction takes
RETURNS_ID = ("INSERT INTO deliveries", "INSERT INTO endpoints")
"""Inserts whose new id the statements read (``lastrowid``)."""
SQLITE_ONLY = {
    # A sequence is not transactional: a write rolled back would leave a gap in the chain's
    # numbering. The next number is taken inside the (serialised) transaction instead.
    "INSERT INTO events (content, previous, hash) VALUES (?, ?, ?)":
        "INSERT INTO events (seq, content, previous, hash) VALUES ((SELECT coalesce(max(seq), 0) + 1 FROM events), ?, ?, ?)",
    "json_extract(content, '$.subject')": "(content::jsonb ->> 'subject')",
    "json_extract(content, '$.kind')": "(content::jsonb ->> 'kind')",
    "sum(d.state = 'delivered')": "sum((d.state = 'delivered')::int)",
    "sum(d.state = 'expired')": "sum((d.state = 'expired')::int)",
    "sum(d.state IN ('queued', 'leased'))": "sum((d.state IN ('queued', 'leased'))::int)",
}


@lru_cache(maxsize=512)
def translate(sql: str) -> str:
    """A statement of the SQLite store, in PostgreSQL's dialect."""
    for sqlite, postgres in SQLITE_ONLY.items():
        sql = sql.replace(sqlite, postgres)
    if sql.startswith("INSERT OR IGNORE INTO"):
        sql = "INSERT INTO" + sql.removeprefix("INSERT OR IGNORE INTO") + " ON CONFLICT DO NOTHING"
    if sql.startswith(RETURNS_ID):
        sql += " RETURNING id"
    return sql.replace("?", "%s")


class Row(tuple):  # type: ignore[type-arg]
    """A row read by name or by position, and turned into a dict, as ``sqlite3.Row`` is."""

    names: tuple[str, ...] = ()

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self.names.index(key))
        return tuple.__getitem__(self, key)

    def keys(self) -> tuple[str, ...]:
        return self.names


def _rows_of(cursor: psycopg.Cursor[Any]) -> Callable[[Sequence[Any]], Row]:
    names = tuple(c.name for c in cursor.description or ())
    kind = type("Row", (Row,), {"names": names})
    return lambda values: kind(values)


class PgCursor:
    def __init__(self, cursor: psycopg.Cursor[Any], returns_id: bool) -> None:
        self.cursor = cursor
        self.lastrowid: int | None = None
        if returns_id:
            row = cursor.fetchone()
            self.lastrowid = int(row[0]) if row else None

    @property
    def rowcount(self) -> int:
        return self.cursor.rowcount

    def fetchone(self) -> Row | None:
        return self.cursor.fetchone()

    def fetchall(self) -> list[Row]:
        return self.cursor.fetchall()

    def __iter__(self) -> Iterator[Row]:
        return iter(self.cursor)


class PgConnection:
    """What the SQLite store's statements are given in place of a ``sqlite3.Connection``."""

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self.connection = connection

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> PgCursor:
        statement = translate(sql)
        cursor = self.connection.cursor(row_factory=_rows_of)
        cursor.execute(statement, tuple(parameters))
        return PgCursor(cursor, statement.endswith(" RETURNING id"))

    def executemany(self, sql: str, parameters: Sequence[Sequence[Any]]) -> None:
        with self.connection.cursor() as cursor:
            cursor.executemany(translate(sql), [tuple(p) for p in parameters])


def _translate(error: psycopg.Error) -> StoreError:
    if isinstance(error, pg.UniqueViolation):
        return StoreError("store.conflict", f"the change conflicts with what is stored: {error}")
    if isinstance(error, pg.DiskFull):
        return StoreError("store.disk_full", "the disk of the database is full; nothing was stored")
    return StoreError("store.unavailable", f"the database refused the change: {error}")


class PgWriter:
    """The PostgreSQL store's write connection, for the group committer (``committer.Writer``): a
    batch is one transaction that first takes the advisory lock, so writes are serialised across
    every node and each commit (one WAL flush) makes a whole batch durable. A connection that
    broke is opened again for the next batch."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._open()

    def _open(self) -> None:
        self.raw = psycopg.connect(self.url, autocommit=True)  # transactions are begun explicitly
        self.connection = PgConnection(self.raw)

    def begin(self) -> None:
        if self.raw.closed or self.raw.broken:
            self._open()
        self.raw.execute("BEGIN")
        self.raw.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))

    def commit(self) -> None:
        self.raw.execute("COMMIT")

    def rollback(self) -> None:
        if not self.raw.closed and self.raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self.raw.execute("ROLLBACK")

    def savepoint(self) -> None:
        self.raw.execute("SAVEPOINT operation")

    def release(self) -> None:
        self.raw.execute("RELEASE SAVEPOINT operation")

    def rollback_to(self) -> None:
        self.raw.execute("ROLLBACK TO SAVEPOINT operation")
        self.raw.execute("RELEASE SAVEPOINT operation")

    def translate(self, error: Exception) -> Exception:
        if isinstance(error, psycopg.Error):
            return _translate(error)
        return error

    def close(self) -> None:
        self.raw.close()


CHUNK = 1 << 20
"""Bytes per row of a large package in ``package_chunks``: it is written and read a row at a time."""


class PackageRows:
    """Package bytes in the database, by SHA-256, checked on every read: up to ``INLINE_MAX`` in
    ``packages`` (written in the message's own transaction), larger ones in ``package_chunks``,
    a MiB a row, written in one transaction before the message's and read a row at a time, so a
    50 MB package never sits whole in a node's memory. Uploads past ``INLINE_MAX`` are spooled to
    ``scratch`` (this node's own disk) while they arrive."""

    def __init__(self, store: PostgresStore, scratch: Path) -> None:
        self.store = store
        self.scratch = scratch
        scratch.mkdir(mode=0o700, parents=True, exist_ok=True)
        stale = time.time() - 3600  # uploads a crash interrupted (not those of a node sharing the directory)
        for leftover in scratch.glob(".tmp-*"):
            with contextlib.suppress(OSError):
                if leftover.stat().st_mtime < stale:
                    leftover.unlink()

    def spool(self) -> Spool:
        return Spool(self.scratch, INLINE_MAX)

    def keep(self, package: Incoming) -> bytes | None:
        if package.size <= INLINE_MAX:
            return package.read()
        if self._chunks(package.sha256):
            return None

        def write(c: Any) -> None:
            for n, piece in enumerate(_pieces(package)):
                c.execute(
                    "INSERT OR IGNORE INTO package_chunks (sha256, n, data) VALUES (?, ?, ?)", (package.sha256, n, piece)
                )

        self.store.committer.run(write)
        return None

    def get(self, digest: str) -> bytes:
        rows = self.store._rows("SELECT data FROM packages WHERE sha256 = ?", (check_digest(digest),))
        if rows:
            return checked(digest, bytes(rows[0][0]))
        count = self._chunks(digest)
        return checked(digest, b"".join(self._read(digest, count)) if count else None)

    def open(self, digest: str) -> bytes | Path | Iterator[bytes]:
        rows = self.store._rows("SELECT data FROM packages WHERE sha256 = ?", (check_digest(digest),))
        if rows:
            return checked(digest, bytes(rows[0][0]))
        count = self._chunks(digest)
        if not count:
            raise StoreError("store.blob_missing", f"package {digest} is referenced but its bytes are missing")
        whole = hashlib.sha256()
        for piece in self._read(digest, count):  # checked whole first: damage is never half sent
            whole.update(piece)
        if whole.hexdigest() != digest:
            raise StoreError("store.blob_corrupt", f"the stored bytes of package {digest} do not match their SHA-256")
        return self._read(digest, count)

    def _chunks(self, digest: str) -> int:
        return int(self.store._rows("SELECT count(*) FROM package_chunks WHERE sha256 = ?", (digest,))[0][0])

    def _read(self, digest: str, count: int) -> Iterator[bytes]:
        for n in range(count):
            rows = self.store._rows("SELECT data FROM package_chunks WHERE sha256 = ? AND n = ?", (digest, n))
            if not rows:
                raise StoreError("store.blob_missing", f"a piece of package {digest} is missing")
            yield bytes(rows[0][0])


def _pieces(package: Incoming) -> Iterator[bytes]:
    if package.data is not None:
        for start in range(0, len(package.data), CHUNK):
            yield package.data[start : start + CHUNK]
        return
    assert package.path is not None
    with package.path.open("rb") as handle:
        while piece := handle.read(CHUNK):
            yield piece


class PostgresStore(SQLiteStore):
    """``axis.store.Store`` on PostgreSQL (see the module's docstring)."""

    shared = True
    """Several nodes write to the database at once."""

    def __init__(self, url: str, node: str = "axis", scratch: Path | None = None) -> None:  # noqa: D107 - the parent's setup is SQLite's
        """``node``: this node's name, written on the leases it takes (unique among the nodes);
        ``scratch``: where it spools uploads (default: ``axis-spool`` in the temporary directory)."""
        self.url = url
        self.node = node
        self.pool: ConnectionPool[Any] = ConnectionPool(url, min_size=1, max_size=16, open=True, kwargs={"autocommit": True})
        self._migrate()
        self.committer = GroupCommitter(PgWriter(url), name="axis-pg-commit")
        self.blobs = PackageRows(self, scratch or Path(tempfile.gettempdir()) / "axis-spool")  # type: ignore[assignment]
        self._empty_registry_cache()

    def _migrate(self) -> None:
        from axis.store import postgres_schema

        try:
            with self.pool.connection() as connection, connection.transaction():
                connection.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
                postgres_schema.migrate(connection)
        except psycopg.Error as error:
            raise _translate(error) from None

    def release_own_leases(self, now: float) -> list[int]:
        """This node's leases only: another node's live leases are never taken (a dead node's
        return when their deadline passes, ``release_stale_leases``)."""
        return self._release("leased_node = ?", (self.node,), now)

    def listen(self, queued: Callable[[list[str]], None], stop: threading.Event) -> None:
        """Call ``queued(agencies)`` whenever any node commits deliveries for them, until ``stop``:
        other nodes' long-polls and dispatchers wake as this node's do. A dropped connection is
        opened again (a wake-up missed meanwhile is caught by the next poll)."""
        from axis.store.postgres_schema import CHANNEL

        def run() -> None:
            while not stop.is_set():
                try:
                    with psycopg.connect(self.url, autocommit=True) as connection:
                        connection.execute(f"LISTEN {CHANNEL}")
                        while not stop.is_set():
                            agencies = [n.payload for n in connection.notifies(timeout=1.0)]
                            if agencies:
                                queued(sorted(set(agencies)))
                except psycopg.Error:
                    stop.wait(1.0)

        thread = threading.Thread(target=run, name="axis-pg-listen", daemon=True)
        thread.start()

    def close(self) -> None:
        self.committer.close()
        self.pool.close()

    def _rows(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        try:
            with self.pool.connection() as connection:
                return PgConnection(connection).execute(sql, parameters).fetchall()
        except psycopg.Error as error:
            raise StoreError("store.unavailable", f"the database cannot be read now ({error}); retry shortly") from None

    def _inline_package(self, digest: str) -> bytes | None:
        return self.blobs.get(digest)

    def events(self, first: int = 1) -> Iterator[chain.Event]:
        """A page of 10 000 at a time: a long log is read in bounded memory."""
        while True:
            rows = self._rows(
                "SELECT seq, content, previous, hash FROM events WHERE seq >= ? ORDER BY seq LIMIT 10000", (first,)
            )
            for row in rows:
                yield chain.Event(row[0], row[1], row[2], row[3])
            if len(rows) < 10000:
                return
            first = rows[-1][0] + 1

