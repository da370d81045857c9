"""The SQLite store: every write goes through the group committer and appends to the event chain.

Reads use one read-only connection per thread (WAL lets them run beside the writer). Times are
passed in by the caller: registry times as ISO 8601 text, queue times as Unix seconds (floats),
so nothing here reads a clock.

The registry reads of the request path (an endpoint by its token, an agency, a certificate) are
served from memory. Each read first compares one counter, ``registry_version``, which triggers
bump on every registry write, whoever makes it (this process or the ``axis`` CLI writing the
database directly); any change empties the cache. So the cache is never staler than the read of
the counter that preceded it: a revoked certificate or suspended agency is refused at once.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlite_utils import Database

from axis.errors import RoutingRefused, StoreError
from axis.store import events as chain
from axis.store import schema
from axis.store.blobs import BlobStore
from axis.store.committer import Connection, GroupCommitter, SQLiteWriter, connect, durable
from axis.store.model import (
    Agency,
    CertificateRecord,
    Delivery,
    Endpoint,
    InboxItem,
    IssuedReceipt,
    Message,
    NewMessage,
    VxpCredential,
)

MESSAGE_ONLY = ("kind", "sender", "document_id", "sha256", "size", "accepted_at", "signed_digest", "due_date")
MESSAGE_COLUMNS = "id, priority, " + ", ".join(MESSAGE_ONLY)
INBOX_SQL = (
    "SELECT d.*, m.kind, m.sender, m.document_id, m.sha256, m.size, m.accepted_at,"
    " m.signed_digest, m.due_date FROM deliveries d JOIN messages m ON m.id = d.message_id"
    " WHERE d.recipient = ? AND d.state IN ('queued', 'leased') AND m.kind IN ({kinds})"
    " ORDER BY d.priority DESC, d.due_at, d.id LIMIT ?"
)
"""``{kinds}`` takes placeholders only (``?, ?``)."""
REGISTRY_CACHE_MAX = 100_000
"""Registry entries kept in memory at most (misses are never cached, so unknown tokens cannot grow it)."""
T = TypeVar("T")


def append_event(
    connection: sqlite3.Connection, kind: str, subject: str, at: str | float, **details: Any
) -> str:
    """Append one event to the chain inside the caller's transaction; return its hash.

    ``at`` is written as ISO 8601 text; the queue's Unix seconds are turned into UTC, so one trail
    reads in one time format (events written before as numbers keep them: they are hashed).

    On the group committer's connection the head is read once per transaction and then carried
    along (``Connection.chain_head``; the committer forgets it at every BEGIN and rollback)."""
    previous = connection.chain_head if isinstance(connection, Connection) else None
    if previous is None:
        row = connection.execute("SELECT hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        previous = row[0] if row else chain.GENESIS
    if not isinstance(at, str):
        at = datetime.fromtimestamp(at, UTC).isoformat()
    content = chain.canonical({"kind": kind, "subject": subject, "at": at, **details})
    digest = chain.chain_hash(previous, content)
    connection.execute(
        "INSERT INTO events (content, previous, hash) VALUES (?, ?, ?)", (content, previous, digest)
    )
    if isinstance(connection, Connection):
        connection.chain_head = digest
    return digest


class SQLiteStore:
    """``axis.store.Store`` on one SQLite file plus a blob directory."""

    shared = False
    """One node per SQLite store: nothing else writes to it."""

    def __init__(self, directory: Path, node: str = "axis") -> None:
        """``node``: this axis node's name, written on the leases it takes."""
        self.node = node
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "axis.sqlite3"
        self.blobs = BlobStore(directory / "blobs", inline=self._inline_package)
        self.blobs.sweep()
        setup = connect(self.path)
        try:
            schema.migrate(Database(setup))
        finally:
            setup.close()
        self.committer = GroupCommitter(SQLiteWriter(self.path))
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._empty_registry_cache()

    def _empty_registry_cache(self) -> None:
        self._registry_lock = threading.Lock()
        self._registry_cache: dict[tuple[str, str], Any] = {}
        self._registry_version = -1

    def close(self) -> None:
        """Finish queued writes, then close the writer and every reader connection."""
        self.committer.close()
        with self._readers_lock:
            for reader in self._readers:
                reader.close()
            self._readers.clear()

    def _reader(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = connect(self.path, readonly=True)
            self._local.connection = connection
            with self._readers_lock:
                self._readers.append(connection)
        return connection

    def _rows(self, sql: str, parameters: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """A read. SQLite's own failures (a connection it cannot open when the process is out of
        file descriptors, a locked or damaged file) become ``store.unavailable``: a 503 to retry,
        never a 500 with SQLite's words."""
        try:
            return self._reader().execute(sql, parameters).fetchall()
        except sqlite3.Error as error:
            raise StoreError("store.unavailable", f"the database cannot be read now ({error}); retry shortly") from None

    def _registry(self, key: tuple[str, str], load: Callable[[], T | None]) -> T | None:
        """``load()``, or what it returned before if no registry write was committed since."""
        version = self._rows("SELECT version FROM registry_version")[0][0]
        with self._registry_lock:
            if version != self._registry_version or len(self._registry_cache) >= REGISTRY_CACHE_MAX:
                self._registry_cache.clear()
                self._registry_version = version
            if key in self._registry_cache:
                return self._registry_cache[key]  # type: ignore[no-any-return]
        value = load()  # read after the counter: never older than the version it is filed under
        if value is not None:
            with self._registry_lock:
                if self._registry_version == version:
                    self._registry_cache[key] = value
        return value

    def _inline_package(self, digest: str) -> bytes | None:
        rows = self._rows("SELECT data FROM packages WHERE sha256 = ?", (digest,))
        return bytes(rows[0][0]) if rows else None

    # ------------------------------------------------------------ agencies

    def add_agency(self, agency: Agency) -> None:
        self.committer.run(lambda c: self._insert_agency(c, agency))

    @staticmethod
    def _insert_agency(c: sqlite3.Connection, agency: Agency) -> None:
        if (
            agency.parent is not None
            and not c.execute("SELECT 1 FROM agencies WHERE organ_id = ?", (agency.parent,)).fetchone()
        ):
            raise StoreError("store.unknown_agency", f"parent agency {agency.parent} is not registered")
        if c.execute("SELECT 1 FROM agencies WHERE organ_id = ?", (agency.organ_id,)).fetchone():
            raise StoreError("store.duplicate", f"agency {agency.organ_id} is already registered")
        c.execute(
            "INSERT INTO agencies (organ_id, form, name, parent, status, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (agency.organ_id, agency.form, agency.name, agency.parent, agency.status, agency.created_at),
        )
        append_event(
            c, "agency.added", agency.organ_id, agency.created_at, name=agency.name, parent=agency.parent
        )

    def add_agencies(self, agencies: Sequence[Agency]) -> None:
        """Register several agencies in one transaction (parents before children): all or none."""

        def operation(c: sqlite3.Connection) -> None:
            for agency in agencies:
                self._insert_agency(c, agency)

        self.committer.run(operation)

    def agency(self, organ_id: str) -> Agency | None:
        def load() -> Agency | None:
            rows = self._rows("SELECT * FROM agencies WHERE organ_id = ?", (organ_id,))
            return Agency(**dict(rows[0])) if rows else None

        return self._registry(("agency", organ_id), load)

    def agencies(self) -> list[Agency]:
        return [Agency(**dict(r)) for r in self._rows("SELECT * FROM agencies ORDER BY organ_id")]

    def set_agency_status(self, organ_id: str, status: str, at: str) -> None:
        def operation(c: sqlite3.Connection) -> None:
            changed = c.execute(
                "UPDATE agencies SET status = ? WHERE organ_id = ?", (status, organ_id)
            ).rowcount
            if not changed:
                raise StoreError("store.unknown_agency", f"agency {organ_id} is not registered")
            append_event(c, f"agency.{status}", organ_id, at)

        self.committer.run(operation)

    # ------------------------------------------------------------ certificates

    def add_certificate(self, record: CertificateRecord) -> None:
        def operation(c: sqlite3.Connection) -> None:
            if not c.execute("SELECT 1 FROM agencies WHERE organ_id = ?", (record.organ_id,)).fetchone():
                raise StoreError("store.unknown_agency", f"agency {record.organ_id} is not registered")
            if c.execute(
                "SELECT 1 FROM certificates WHERE fingerprint = ?", (record.fingerprint,)
            ).fetchone():
                raise StoreError("store.duplicate", f"certificate {record.fingerprint} is already registered")
            c.execute(
                "INSERT INTO certificates (fingerprint, organ_id, pem, subject, not_before, not_after, status,"
                " added_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.fingerprint,
                    record.organ_id,
                    record.pem,
                    record.subject,
                    record.not_before,
                    record.not_after,
                    record.status,
                    record.added_at,
                    record.revoked_at,
                ),
            )
            append_event(
                c, "certificate.added", record.organ_id, record.added_at, fingerprint=record.fingerprint
            )

        self.committer.run(operation)

    def certificate(self, fingerprint: str) -> CertificateRecord | None:
        def load() -> CertificateRecord | None:
            rows = self._rows("SELECT * FROM certificates WHERE fingerprint = ?", (fingerprint,))
            return CertificateRecord(**dict(rows[0])) if rows else None

        return self._registry(("certificate", fingerprint), load)

    def certificates(self, organ_id: str | None = None) -> list[CertificateRecord]:
        if organ_id is None:
            rows = self._rows("SELECT * FROM certificates ORDER BY organ_id, added_at")
        else:
            rows = self._rows("SELECT * FROM certificates WHERE organ_id = ? ORDER BY added_at", (organ_id,))
        return [CertificateRecord(**dict(r)) for r in rows]

    def revoke_certificate(self, fingerprint: str, at: str) -> None:
        def operation(c: sqlite3.Connection) -> None:
            row = c.execute(
                "SELECT organ_id, status FROM certificates WHERE fingerprint = ?", (fingerprint,)
            ).fetchone()
            if row is None:
                raise StoreError("store.unknown_certificate", f"certificate {fingerprint} is not registered")
            if row["status"] == "revoked":
                return
            c.execute(
                "UPDATE certificates SET status = 'revoked', revoked_at = ? WHERE fingerprint = ?",
                (at, fingerprint),
            )
            append_event(c, "certificate.revoked", row["organ_id"], at, fingerprint=fingerprint)

        self.committer.run(operation)

    # ------------------------------------------------------------ endpoints and role tokens

    def add_endpoint(self, endpoint: Endpoint, token_hash: str, vxp: VxpCredential | None = None) -> int:
        def operation(c: sqlite3.Connection) -> int:
            if vxp is not None and c.execute(
                "SELECT 1 FROM vxp_credentials WHERE system_id = ?", (vxp.system_id,)
            ).fetchone():
                raise StoreError("store.duplicate", f"VXP system id {vxp.system_id!r} already exists")
            if c.execute("SELECT 1 FROM endpoints WHERE name = ?", (endpoint.name,)).fetchone():
                raise StoreError("store.duplicate", f"endpoint {endpoint.name!r} already exists")
            for organ_id in endpoint.agencies:
                if not c.execute("SELECT 1 FROM agencies WHERE organ_id = ?", (organ_id,)).fetchone():
                    raise StoreError("store.unknown_agency", f"agency {organ_id} is not registered")
            cursor = c.execute(
                "INSERT INTO endpoints (name, mode, push_url, token_hash, client_cert_fingerprint, status, created_at)"
                " VALUES (?, ?, ?, ?, ?, 'active', ?)",
                (
                    endpoint.name,
                    endpoint.mode,
                    endpoint.push_url,
                    token_hash,
                    endpoint.client_cert_fingerprint,
                    endpoint.created_at,
                ),
            )
            endpoint_id = int(cursor.lastrowid or 0)
            c.executemany(
                "INSERT INTO endpoint_agencies (endpoint_id, organ_id) VALUES (?, ?)",
                [(endpoint_id, organ_id) for organ_id in endpoint.agencies],
            )
            if vxp is not None:
                c.execute(
                    "INSERT INTO vxp_credentials (system_id, endpoint_id, sealed_secret, role, sources)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (
                        vxp.system_id,
                        endpoint_id,
                        vxp.sealed_secret,
                        vxp.role,
                        json.dumps(list(vxp.sources)) if vxp.sources else None,
                    ),
                )
            append_event(
                c,
                "endpoint.added",
                endpoint.name,
                endpoint.created_at,
                mode=endpoint.mode,
                agencies=list(endpoint.agencies),
            )
            return endpoint_id

        return self.committer.run(operation)

    def _endpoint(self, row: sqlite3.Row | dict[str, Any]) -> Endpoint:
        agencies = tuple(
            r[0]
            for r in self._rows(
                "SELECT organ_id FROM endpoint_agencies WHERE endpoint_id = ? ORDER BY organ_id", (row["id"],)
            )
        )
        values = {k: row[k] for k in row.keys() if k != "token_hash"}  # noqa: SIM118 (sqlite3.Row)
        return Endpoint(agencies=agencies, **values)

    def endpoint(self, name: str) -> Endpoint | None:
        rows = self._rows("SELECT * FROM endpoints WHERE name = ?", (name,))
        return self._endpoint(rows[0]) if rows else None

    def endpoint_by_token(self, token_hash: str) -> Endpoint | None:
        def load() -> Endpoint | None:
            rows = self._rows("SELECT * FROM endpoints WHERE token_hash = ? AND status = 'active'", (token_hash,))
            return self._endpoint(rows[0]) if rows else None

        return self._registry(("endpoint", token_hash), load)

    def endpoints(self) -> list[Endpoint]:
        return [self._endpoint(r) for r in self._rows("SELECT * FROM endpoints ORDER BY name")]

    def revoke_endpoint(self, name: str, at: str) -> None:
        def operation(c: sqlite3.Connection) -> None:
            if not c.execute("UPDATE endpoints SET status = 'revoked' WHERE name = ?", (name,)).rowcount:
                raise StoreError("store.unknown_endpoint", f"endpoint {name!r} does not exist")
            append_event(c, "endpoint.revoked", name, at)

        self.committer.run(operation)

    def vxp_credential(self, system_id: str) -> tuple[Endpoint, VxpCredential] | None:
        """The active endpoint behind a VXP system id, with its credential."""
        rows = self._rows(
            "SELECT e.*, v.sealed_secret, v.role AS vxp_role, v.sources AS vxp_sources FROM vxp_credentials v"
            " JOIN endpoints e ON e.id = v.endpoint_id WHERE v.system_id = ? AND e.status = 'active'",
            (system_id,),
        )
        if not rows:
            return None
        row = dict(rows[0])
        sources = tuple(json.loads(row.pop("vxp_sources") or "[]"))
        credential = VxpCredential(system_id, bytes(row.pop("sealed_secret")), row.pop("vxp_role"), sources)
        return self._endpoint(row), credential

    def add_role_token(self, token_hash: str, role: str, name: str, at: str) -> None:
        def operation(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO role_tokens (token_hash, role, name, created_at) VALUES (?, ?, ?, ?)",
                (token_hash, role, name, at),
            )
            append_event(c, "token.added", name, at, role=role)

        self.committer.run(operation)

    def role_by_token(self, token_hash: str) -> str | None:
        def load() -> str | None:
            rows = self._rows(
                "SELECT role FROM role_tokens WHERE token_hash = ? AND revoked_at IS NULL", (token_hash,)
            )
            return str(rows[0][0]) if rows else None

        return self._registry(("role", token_hash), load)

    def role_tokens(self) -> list[dict[str, Any]]:
        """Every role token, oldest first: ``id``, ``name``, ``role``, ``created_at`` and
        ``revoked_at`` (None while it works). Never the token's hash: a listing is safe to show.

        ``id`` is the row's rowid; ``role_tokens`` has no INTEGER PRIMARY KEY, so a VACUUM may
        renumber it (nothing here runs one): read ids from a fresh listing before revoking."""
        rows = self._rows(
            "SELECT rowid AS id, name, role, created_at, revoked_at FROM role_tokens ORDER BY rowid"
        )
        return [dict(r) for r in rows]

    def revoke_role_tokens(self, which: str, at: str) -> list[dict[str, Any]]:
        """Revoke the role token with id ``which`` (digits only), else every token named
        ``which``; return the tokens matched, as ``role_tokens`` lists them.

        A revoked token stops working at the next request: the UPDATE bumps ``registry_version``,
        which empties every process's registry cache. Revoking again changes nothing and appends
        no event; ``store.unknown_token`` when nothing matches."""
        column = "rowid" if which.isdigit() else "name"
        select = f"SELECT rowid AS id, name, role, created_at, revoked_at FROM role_tokens WHERE {column} = ?"  # noqa: S608 (a constant)

        def operation(c: sqlite3.Connection) -> list[dict[str, Any]]:
            matched = [dict(r) for r in c.execute(select + " ORDER BY rowid", (which,))]
            if not matched:
                raise StoreError("store.unknown_token", f"no role token has the id or name {which!r}")
            for token in matched:
                if token["revoked_at"] is None:
                    c.execute("UPDATE role_tokens SET revoked_at = ? WHERE rowid = ?", (at, token["id"]))
                    append_event(c, "token.revoked", token["name"], at, role=token["role"], id=token["id"])
                    token["revoked_at"] = at
            return matched

        return self.committer.run(operation)

    # ------------------------------------------------------------ messages and deliveries

    def enqueue(self, message: NewMessage, now: float, expires_at: float) -> list[int]:
        """``submit``, from a thread."""
        return self.committer.run(self._submitting(message, now, expires_at))

    async def submit(self, message: NewMessage, now: float, expires_at: float) -> list[int]:
        return await durable(self.committer.submit(self._submitting(message, now, expires_at)))

    def _submitting(self, message: NewMessage, now: float, expires_at: float) -> Callable[[sqlite3.Connection], list[int]]:
        """The message row, one queued delivery per recipient, the ``accepted`` receipt and the event,
        in one transaction; returns the delivery ids.

        Checked inside the same transaction, so two concurrent submissions cannot both pass:
        the same package again (same sender, DocumentId and SHA-256 or signed digest) raises
        ``store.duplicate`` naming the stored message; another document with a DocumentId the
        sender already used raises ``message.conflict`` unless it is a revision.
        """

        def operation(c: sqlite3.Connection) -> list[int]:
            if message.kind != "receipt":
                self._check_new(c, message)
            return self._insert_message(c, message, now, expires_at)

        return operation

    def _insert_message(self, c: sqlite3.Connection, message: NewMessage, now: float, expires_at: float) -> list[int]:
        c.execute(
            "INSERT INTO messages (id, kind, sender, document_id, sha256, size, priority, accepted_at,"
            " signed_digest, due_date) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                message.id,
                message.kind,
                message.sender,
                message.document_id,
                message.sha256,
                message.size,
                message.priority,
                message.accepted_at,
                message.signed_digest,
                message.due_date,
            ),
        )
        if message.data is not None:
            c.execute("INSERT OR IGNORE INTO packages (sha256, data) VALUES (?, ?)", (message.sha256, message.data))
        ids = []
        for recipient in message.recipients:
            cursor = c.execute(
                "INSERT INTO deliveries (message_id, recipient, state, priority, created_at, due_at, expires_at)"
                " VALUES (?, ?, 'queued', ?, ?, ?, ?)",
                (message.id, recipient, message.priority, now, now, expires_at),
            )
            ids.append(int(cursor.lastrowid or 0))
        issuer = message.document_id.split(",", 1)[0]
        flags = {"document_id_issuer": issuer} if message.kind == "document" and issuer != message.sender else {}
        append_event(
            c,
            "message.accepted",
            message.id,
            message.accepted_at,
            package=message.kind,
            sender=message.sender,
            document_id=message.document_id,
            **flags,  # a DocumentId naming another agency than the sender: accepted, and said in the trail
            sha256=message.sha256,
            recipients=list(message.recipients),
            deliveries=ids,
        )
        if message.receipt is not None:
            self._insert_receipt(c, message.id, "accepted", None, message.receipt, message.accepted_at)
        for agency in message.status_of:
            self._upsert_status(
                c, message.status_for or "", message.document_id, agency, message.status_code or "", message.id,
                message.accepted_at,
            )
        return ids

    @staticmethod
    def _check_new(c: sqlite3.Connection, message: NewMessage) -> None:
        stored = c.execute(
            "SELECT id, sha256, signed_digest FROM messages WHERE sender = ? AND document_id = ? AND kind = ?",
            (message.sender, message.document_id, message.kind),
        ).fetchall()
        for row in stored:
            if row["sha256"] == message.sha256 or (
                message.signed_digest is not None and row["signed_digest"] == message.signed_digest
            ):
                raise StoreError(
                    "store.duplicate",
                    f"this package was already accepted as message {row['id']}",
                    message_id=row["id"],
                )
        if stored and message.kind == "document" and not message.revision:
            raise RoutingRefused(
                "message.conflict",
                f"{message.sender} already sent a different package with DocumentId {message.document_id}"
                f" (message {stored[0]['id']}); a new document needs a new DocumentId, a change to it"
                " must be a revoke, update or replace (BussinessDocType 1-3)",
                message_id=stored[0]["id"],
            )

    def message(self, message_id: str) -> Message | None:
        rows = self._rows(f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message_id,))  # noqa: S608
        return Message(**dict(rows[0])) if rows else None

    def messages(self, sender: str, document_id: str, kind: str = "document") -> list[Message]:
        """What ``sender`` sent under ``document_id``, oldest first."""
        rows = self._rows(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE sender = ? AND document_id = ? AND kind = ?"  # noqa: S608
            " ORDER BY accepted_at, rowid",
            (sender, document_id, kind),
        )
        return [Message(**dict(r)) for r in rows]

    def deliveries_of(self, message_id: str) -> list[Delivery]:
        rows = self._rows("SELECT * FROM deliveries WHERE message_id = ? ORDER BY id", (message_id,))
        return [Delivery(**dict(r)) for r in rows]

    def delivery_counts(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self._rows("SELECT state, count(*) FROM deliveries GROUP BY state")}

    def backlog(self, recipient: str) -> int:
        """Deliveries waiting for one agency (queued or leased): what the per-recipient cap bounds."""
        return int(
            self._rows(
                "SELECT count(*) FROM deliveries WHERE recipient = ? AND state IN ('queued', 'leased')",
                (recipient,),
            )[0][0]
        )

    def delivery(self, delivery_id: int) -> Delivery | None:
        rows = self._rows("SELECT * FROM deliveries WHERE id = ?", (delivery_id,))
        return Delivery(**dict(rows[0])) if rows else None

    def deliveries(self, state: str | None = None, limit: int = 100) -> list[Delivery]:
        if state is None:
            rows = self._rows("SELECT * FROM deliveries ORDER BY id LIMIT ?", (limit,))
        else:
            rows = self._rows("SELECT * FROM deliveries WHERE state = ? ORDER BY id LIMIT ?", (state, limit))
        return [Delivery(**dict(r)) for r in rows]

    def inbox(
        self, recipients: Sequence[str], limit: int, kinds: Sequence[str] = ("document", "status", "receipt")
    ) -> list[InboxItem]:
        """Queued and leased deliveries of these kinds for these agencies with their messages, best
        first (an index range per agency)."""
        found: list[InboxItem] = []
        kind_list = ", ".join("?" * len(kinds))
        sql = INBOX_SQL.format(kinds=kind_list)
        for recipient in recipients:
            rows = self._rows(sql, (recipient, *kinds, limit))
            for r in rows:
                values = dict(r)
                message = Message(
                    id=values["message_id"],
                    priority=values["priority"],
                    **{k: values.pop(k) for k in MESSAGE_ONLY},
                )
                found.append(InboxItem(Delivery(**values), message))
        found.sort(key=lambda i: (-i.delivery.priority, i.delivery.due_at, i.delivery.id))
        return found[:limit]

    def lease(
        self, recipients: Sequence[str], now: float, deadline: float, limit: int, leased_by: int
    ) -> list[Delivery]:
        """Claim up to ``limit`` due, queued deliveries of these agencies, priority first then age."""
        return self.committer.run(self._leasing(recipients, now, deadline, limit, leased_by))

    async def submit_lease(
        self, recipients: Sequence[str], now: float, deadline: float, limit: int, leased_by: int
    ) -> list[Delivery]:
        return await durable(self.committer.submit(self._leasing(recipients, now, deadline, limit, leased_by)))

    def _leasing(
        self, recipients: Sequence[str], now: float, deadline: float, limit: int, leased_by: int
    ) -> Callable[[sqlite3.Connection], list[Delivery]]:
        def operation(c: sqlite3.Connection) -> list[Delivery]:
            candidates: list[sqlite3.Row] = []
            for recipient in recipients:
                candidates += c.execute(
                    "SELECT * FROM deliveries WHERE recipient = ? AND state = 'queued' AND due_at <= ?"
                    " ORDER BY priority DESC, due_at, id LIMIT ?",
                    (recipient, now, limit),
                ).fetchall()
            candidates.sort(key=lambda r: (-r["priority"], r["due_at"], r["id"]))
            chosen = candidates[:limit]
            if chosen:  # read in this transaction, so every one is still queued: one statement for all
                placeholders = ", ".join("?" * len(chosen))
                sql = f"UPDATE deliveries SET state = 'leased', lease_deadline = ?, leased_by = ?, leased_node = ?, attempts = attempts + 1 WHERE id IN ({placeholders})"  # noqa: S608, E501
                c.execute(sql, (deadline, leased_by, self.node, *(row["id"] for row in chosen)))
            leased = []
            for row in chosen:
                append_event(
                    c, "delivery.leased", str(row["id"]), now, endpoint=leased_by, node=self.node, deadline=deadline
                )
                leased.append(
                    Delivery(
                        **{
                            **dict(row),
                            "state": "leased",
                            "lease_deadline": deadline,
                            "leased_by": leased_by,
                            "leased_node": self.node,
                            "attempts": row["attempts"] + 1,
                        }
                    )
                )
            return leased

        return operation

    def _current(self, c: sqlite3.Connection, delivery_id: int) -> sqlite3.Row:
        row = c.execute("SELECT * FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
        if row is None:
            raise StoreError("store.unknown_delivery", f"delivery {delivery_id} does not exist")
        return row  # type: ignore[no-any-return]

    def ack(
        self, delivery_id: int, now: float, ack_sha256: str | None = None, receipt: IssuedReceipt | None = None
    ) -> bool:
        """Mark delivered; True the first time, False when it already was (acks are idempotent).
        With ``receipt``, the ``delivered`` receipt and its copy for the sender are stored in the same
        transaction, and only by the first ack: one commit per delivery, not two."""
        return self.committer.run(self._acknowledging(delivery_id, now, ack_sha256, receipt))

    async def submit_ack(
        self, delivery_id: int, now: float, ack_sha256: str | None = None, receipt: IssuedReceipt | None = None
    ) -> bool:
        return await durable(self.committer.submit(self._acknowledging(delivery_id, now, ack_sha256, receipt)))

    def _acknowledging(
        self, delivery_id: int, now: float, ack_sha256: str | None, receipt: IssuedReceipt | None
    ) -> Callable[[sqlite3.Connection], bool]:
        def operation(c: sqlite3.Connection) -> bool:
            updated = c.execute(
                "UPDATE deliveries SET state = 'delivered', delivered_at = ?, ack_sha256 = ?, lease_deadline = NULL"
                " WHERE id = ? AND state IN ('queued', 'leased')",
                (now, ack_sha256, delivery_id),
            ).rowcount
            if not updated:  # one statement on the common path; find out why only when it did nothing
                if self._current(c, delivery_id)["state"] == "delivered":
                    return False
                raise StoreError(
                    "store.invalid_transition",
                    f"delivery {delivery_id} expired; an administrator must requeue it",
                )
            append_event(c, "delivery.delivered", str(delivery_id), now, ack_sha256=ack_sha256)
            if receipt is not None:
                self._store_receipt(c, receipt, now)
            return True

        return operation

    def fail(self, delivery_id: int, now: float, retry_at: float, error: str) -> str:
        """A leased attempt failed: back to ``queued`` due at ``retry_at``, or ``expired`` past the TTL."""

        def operation(c: sqlite3.Connection) -> str:
            row = self._current(c, delivery_id)
            if row["state"] != "leased":
                raise StoreError(
                    "store.invalid_transition",
                    f"delivery {delivery_id} is {row['state']}, not leased: nothing to fail",
                )
            state = "expired" if retry_at >= row["expires_at"] else "queued"
            c.execute(
                "UPDATE deliveries SET state = ?, due_at = ?, last_error = ?, lease_deadline = NULL, leased_by = NULL, leased_node = NULL"
                " WHERE id = ?",
                (state, retry_at, error[:500], delivery_id),
            )
            append_event(
                c,
                f"delivery.{'expired' if state == 'expired' else 'retry'}",
                str(delivery_id),
                now,
                retry_at=retry_at,
                error=error[:500],
            )
            return state

        return str(self.committer.run(operation))

    def expire(self, now: float) -> list[int]:
        """Every queued or leased delivery past its time-to-live becomes ``expired`` (a dead letter)."""

        def operation(c: sqlite3.Connection) -> list[int]:
            ids = [
                r[0]
                for r in c.execute(
                    "SELECT id FROM deliveries WHERE state IN ('queued', 'leased') AND expires_at <= ?",
                    (now,),
                )
            ]
            for delivery_id in ids:
                c.execute(
                    "UPDATE deliveries SET state = 'expired', lease_deadline = NULL, leased_by = NULL, leased_node = NULL WHERE id = ?",
                    (delivery_id,),
                )
                append_event(c, "delivery.expired", str(delivery_id), now)
            return ids

        return list(self.committer.run(operation))

    def give_up(self, delivery_id: int, now: float, error: str) -> bool:
        """The recipient reported it cannot take the package: ``queued|leased → expired`` now (a
        dead letter an administrator may requeue). False if it was no longer waiting."""

        def operation(c: sqlite3.Connection) -> bool:
            row = self._current(c, delivery_id)
            if row["state"] not in ("queued", "leased"):
                return False
            c.execute(
                "UPDATE deliveries SET state = 'expired', last_error = ?, lease_deadline = NULL, leased_by = NULL, leased_node = NULL"
                " WHERE id = ?",
                (error[:500], delivery_id),
            )
            append_event(c, "delivery.expired", str(delivery_id), now, error=error[:500])
            return True

        return bool(self.committer.run(operation))

    def listen(self, queued: Callable[[list[str]], None], stop: threading.Event) -> None:
        """Nothing to listen to: this node's own commits are the only ones (see ``PostgresStore``)."""

    def release_stale_leases(self, now: float) -> list[int]:
        """Leases whose deadline has passed (a crashed or stuck node or worker) return to ``queued``,
        due now."""
        return self._release("lease_deadline <= ?", (now,), now)

    def release_own_leases(self, now: float) -> list[int]:
        """This node's leases return to ``queued`` now (it stops, or starts again after a crash). One
        node per SQLite store: every lease in it was taken by this node, under whatever name."""
        return self._release("1 = 1", (), now)

    def _release(self, which: str, parameters: tuple[Any, ...], now: float) -> list[int]:
        def operation(c: sqlite3.Connection) -> list[int]:
            ids = [
                r[0]
                for r in c.execute(f"SELECT id FROM deliveries WHERE state = 'leased' AND {which}", parameters)  # noqa: S608
            ]
            for delivery_id in ids:
                c.execute(
                    "UPDATE deliveries SET state = 'queued', due_at = ?, lease_deadline = NULL, leased_by = NULL,"
                    " leased_node = NULL WHERE id = ?",
                    (now, delivery_id),
                )
                append_event(c, "delivery.lease_released", str(delivery_id), now)
            return ids

        return list(self.committer.run(operation))

    def requeue(self, delivery_id: int, now: float, expires_at: float, by: str) -> None:
        """An administrator sends a dead letter again: ``expired`` back to ``queued`` with a fresh TTL."""

        def operation(c: sqlite3.Connection) -> None:
            row = self._current(c, delivery_id)
            if row["state"] != "expired":
                raise StoreError(
                    "store.invalid_transition",
                    f"delivery {delivery_id} is {row['state']}; only expired ones are requeued",
                )
            c.execute(
                "UPDATE deliveries SET state = 'queued', due_at = ?, expires_at = ?, last_error = NULL WHERE id = ?",
                (now, expires_at, delivery_id),
            )
            append_event(c, "delivery.requeued", str(delivery_id), now, by=by)

        self.committer.run(operation)

    # ------------------------------------------------------------ receipts and statuses

    def add_receipt(
        self,
        message_id: str,
        kind: str,
        recipient: str | None,
        xml: bytes,
        at: str,
        forward: NewMessage | None = None,
        now: float = 0.0,
        expires_at: float = 0.0,
    ) -> None:
        """Store a receipt about ``message_id``; with ``forward``, also queue it (as a message of kind
        ``receipt`` whose bytes are ``xml``) for the sender, in the same transaction."""

        def operation(c: sqlite3.Connection) -> None:
            if kind != "accepted" and self._has_receipt(c, message_id, kind, recipient):
                return  # issued already (two paths raced): one receipt per delivery outcome
            self._insert_receipt(c, message_id, kind, recipient, xml, at)
            if forward is not None:
                self._insert_message(c, forward, now, expires_at)

        self.committer.run(operation)

    def _store_receipt(self, c: sqlite3.Connection, receipt: IssuedReceipt, now: float) -> None:
        if self._has_receipt(c, receipt.message_id, receipt.kind, receipt.recipient):
            return
        self._insert_receipt(c, receipt.message_id, receipt.kind, receipt.recipient, receipt.xml, receipt.at)
        self._insert_message(c, receipt.forward, now, receipt.expires_at)

    @staticmethod
    def _has_receipt(c: sqlite3.Connection, message_id: str, kind: str, recipient: str | None) -> bool:
        return bool(
            c.execute(
                "SELECT 1 FROM receipts WHERE message_id = ? AND recipient = ? AND kind = ?",
                (message_id, recipient, kind),
            ).fetchone()
        )

    @staticmethod
    def _insert_receipt(
        c: sqlite3.Connection, message_id: str, kind: str, recipient: str | None, xml: bytes, at: str
    ) -> None:
        digest = hashlib.sha256(xml).hexdigest()
        c.execute("INSERT OR IGNORE INTO packages (sha256, data) VALUES (?, ?)", (digest, xml))
        c.execute(
            "INSERT INTO receipts (message_id, kind, recipient, sha256, created_at) VALUES (?, ?, ?, ?, ?)",
            (message_id, kind, recipient, digest, at),
        )
        append_event(c, f"receipt.{kind}", message_id, at, recipient=recipient, sha256=digest)

    def receipts(self, message_id: str) -> list[tuple[str, str | None, bytes]]:
        """(kind, recipient, signed XML) of a message's receipts, oldest first."""
        rows = self._rows(
            "SELECT r.kind, r.recipient, p.data FROM receipts r JOIN packages p ON p.sha256 = r.sha256"
            " WHERE r.message_id = ? ORDER BY r.id",
            (message_id,),
        )
        return [(r[0], r[1], bytes(r[2])) for r in rows]

    def record_status(
        self, sender: str, document_id: str, recipient: str, status_code: str, message_id: str, at: str
    ) -> None:
        """Keep the latest business status (01-06, 13, 15, 16) of ``sender``'s document at one recipient."""

        self.committer.run(lambda c: self._upsert_status(c, sender, document_id, recipient, status_code, message_id, at))

    @staticmethod
    def _upsert_status(
        c: sqlite3.Connection, sender: str, document_id: str, recipient: str, status_code: str, message_id: str, at: str
    ) -> None:
        c.execute(
            "INSERT INTO statuses (sender, document_id, recipient, status_code, message_id, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (sender, document_id, recipient) DO UPDATE SET"
            " status_code = excluded.status_code, message_id = excluded.message_id, updated_at = excluded.updated_at",
            (sender, document_id, recipient, status_code, message_id, at),
        )
        append_event(
            c, "status.recorded", document_id, at, sender=sender, recipient=recipient, status_code=status_code
        )

    def status(self, sender: str, document_id: str, recipient: str) -> str | None:
        rows = self._rows(
            "SELECT status_code FROM statuses WHERE sender = ? AND document_id = ? AND recipient = ?",
            (sender, document_id, recipient),
        )
        return str(rows[0][0]) if rows else None

    def missing_receipts(self, limit: int = 1000) -> list[Delivery]:
        """Delivered or expired deliveries of packages whose ``delivered``/``failed`` receipt is not
        stored yet (the axis stopped between the two): the router issues them on start."""
        rows = self._rows(
            "SELECT d.* FROM deliveries d JOIN messages m ON m.id = d.message_id"
            " WHERE m.kind != 'receipt' AND d.state IN ('delivered', 'expired') AND NOT EXISTS ("
            "  SELECT 1 FROM receipts r WHERE r.message_id = d.message_id AND r.recipient = d.recipient"
            "  AND r.kind = CASE d.state WHEN 'delivered' THEN 'delivered' ELSE 'failed' END)"
            " ORDER BY d.id LIMIT ?",
            (limit,),
        )
        return [Delivery(**dict(r)) for r in rows]

    def statuses(self, sender: str, document_id: str) -> list[dict[str, Any]]:
        """The latest business status of ``sender``'s document at each recipient."""
        rows = self._rows(
            "SELECT recipient, status_code, message_id, updated_at FROM statuses WHERE sender = ? AND document_id = ?"
            " ORDER BY recipient",
            (sender, document_id),
        )
        return [dict(r) for r in rows]

    def trail(self, message_id: str) -> list[dict[str, Any]]:
        """Every event about a message and its deliveries, in chain order, with its place in the chain."""
        return [
            {"seq": e.seq, "previous": e.previous, "hash": e.hash, **json.loads(e.content)}
            for e in self.message_events(message_id)
        ]

    def message_events(self, message_id: str) -> list[chain.Event]:
        subjects = [message_id, *(str(d.id) for d in self.deliveries_of(message_id))]
        placeholders = ", ".join("?" * len(subjects))
        sql = f"SELECT seq, content, previous, hash FROM events WHERE json_extract(content, '$.subject') IN ({placeholders})"  # noqa: S608
        return [chain.Event(r[0], r[1], r[2], r[3]) for r in self._rows(sql + " ORDER BY seq", subjects)]

    def accepted_between(
        self, start: str, end: str, agency: str | None = None, after: str = "", limit: int = 1000
    ) -> list[Message]:
        sql = (
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE accepted_at >= ? AND accepted_at < ? AND id > ?"  # noqa: S608
            " AND kind != 'receipt'"
        )
        parameters: list[Any] = [start, end, after]
        if agency is not None:
            sql += " AND (sender = ? OR id IN (SELECT message_id FROM deliveries WHERE recipient = ?))"
            parameters += [agency, agency]
        rows = self._rows(sql + " ORDER BY id LIMIT ?", (*parameters, limit))
        return [Message(**dict(r)) for r in rows]

    def stats(self, start: str, end: str, period: int, today: str) -> list[dict[str, Any]]:
        """Per agency and period (the first ``period`` characters of the acceptance time, 0 = the
        whole range): documents sent, received, delivered, failed (expired), still pending; and per
        agency the documents past their DueDate (``today`` as ``yyyy/MM/dd``) not completed (06)."""
        table: dict[tuple[str, str], dict[str, Any]] = {}

        def row(agency: str, when: str) -> dict[str, Any]:
            return table.setdefault(
                (agency, when),
                {"agency": agency, "period": when or f"{start}/{end}", "sent": 0, "received": 0, "statuses": 0,
                 "delivered": 0, "failed": 0, "pending": 0, "overdue": 0},
            )

        for r in self._rows(
            "SELECT sender, substr(accepted_at, 1, ?) AS p, kind, count(*) FROM messages"
            " WHERE kind IN ('document', 'status') AND accepted_at >= ? AND accepted_at < ? GROUP BY sender, p, kind",
            (period, start, end),
        ):
            row(r[0], r[1])["sent" if r[2] == "document" else "statuses"] = r[3]
        for r in self._rows(
            "SELECT d.recipient, substr(m.accepted_at, 1, ?) AS p, count(*),"
            " sum(d.state = 'delivered'), sum(d.state = 'expired'), sum(d.state IN ('queued', 'leased'))"
            " FROM deliveries d JOIN messages m ON m.id = d.message_id"
            " WHERE m.kind = 'document' AND m.accepted_at >= ? AND m.accepted_at < ? GROUP BY d.recipient, p",
            (period, start, end),
        ):
            row(r[0], r[1]).update(received=r[2], delivered=r[3], failed=r[4], pending=r[5])
        for r in self._rows(
            "SELECT d.recipient, count(DISTINCT m.document_id) FROM deliveries d"
            " JOIN messages m ON m.id = d.message_id"
            " LEFT JOIN statuses s ON s.sender = m.sender AND s.document_id = m.document_id"
            " AND s.recipient = d.recipient"
            " WHERE m.kind = 'document' AND m.due_date IS NOT NULL AND m.due_date < ?"
            " AND coalesce(s.status_code, '') != '06' AND m.accepted_at >= ? AND m.accepted_at < ?"
            " GROUP BY d.recipient",
            (today, start, end),
        ):
            matching = [v for (agency, _), v in table.items() if agency == r[0]]
            (matching[-1] if matching else row(r[0], ""))["overdue"] = r[1]
        return sorted(table.values(), key=lambda v: (v["agency"], v["period"]))

    def delivery_times(self, start: str, end: str) -> dict[str, list[float]]:
        rows = self._rows(
            "SELECT d.recipient, d.delivered_at - d.created_at FROM deliveries d JOIN messages m ON m.id = d.message_id"
            " WHERE m.kind = 'document' AND d.state = 'delivered' AND m.accepted_at >= ? AND m.accepted_at < ?",
            (start, end),
        )
        times: dict[str, list[float]] = {}
        for recipient, seconds in rows:
            times.setdefault(recipient, []).append(float(seconds))
        for values in times.values():
            values.sort()
        return times

    def events(self, first: int = 1) -> Iterator[chain.Event]:
        for row in self._reader().execute(
            "SELECT seq, content, previous, hash FROM events WHERE seq >= ? ORDER BY seq", (first,)
        ):
            yield chain.Event(row[0], row[1], row[2], row[3])

    _CHECKPOINTS = (  # the kind too: an endpoint or token may be named like a checkpoint's subject
        "SELECT seq, content, previous, hash FROM events"
        " WHERE json_extract(content, '$.subject') > ? AND json_extract(content, '$.subject') < ?"
        " AND json_extract(content, '$.kind') = 'audit.checkpoint'"
    )

    def checkpoints(self, after: int = 0, limit: int = 1000) -> list[chain.Event]:
        rows = self._rows(
            self._CHECKPOINTS + " ORDER BY seq LIMIT ?", (chain.checkpoint_subject(after), chain.CHECKPOINTS_END, limit)
        )
        return [chain.Event(r[0], r[1], r[2], r[3]) for r in rows]

    def latest_checkpoint(self) -> chain.Event | None:
        rows = self._rows(
            self._CHECKPOINTS + " ORDER BY seq DESC LIMIT 1", (chain.checkpoint_subject(0), chain.CHECKPOINTS_END)
        )
        return chain.Event(rows[0][0], rows[0][1], rows[0][2], rows[0][3]) if rows else None

    def add_checkpoint(self, number: int, after: int, at: str, details: dict[str, Any]) -> int:
        def operation(c: sqlite3.Connection) -> int:
            latest = c.execute(
                self._CHECKPOINTS + " ORDER BY seq DESC LIMIT 1", (chain.checkpoint_subject(0), chain.CHECKPOINTS_END)
            ).fetchone()
            covered = json.loads(latest[1])["checkpoint"]["last"] if latest else 0
            if covered != after:
                raise StoreError(
                    "store.conflict",
                    f"a checkpoint covering events up to {covered} was added meanwhile; this one starts after {after}",
                )
            append_event(c, chain.CHECKPOINT, chain.checkpoint_subject(number), at, **details)
            return int(c.execute("SELECT max(seq) FROM events").fetchone()[0])

        return int(self.committer.run(operation))

    def verify_chain(self) -> chain.ChainReport:
        return chain.verify_chain(self.events())
