"""Persistence behind a Protocol, split by concern: the registry, the outbox (messages and their
deliveries), the audit log, and the adapters' state.

``open_store(config)`` is the one constructor: ``SQLiteStore`` (one node: WAL, synchronous=FULL,
group commit, packages inline or as content-addressed blob files) or, with ``[store] url``,
``PostgresStore`` (several nodes on one database: the same statements, group commit under one
advisory lock, package bytes in the database, NOTIFY to wake the other nodes). Both keep the
hash-chained event log. tests/store/test_contract.py holds both to every rule written here.

Threads and loops: the methods block and are safe from any thread (callers on an event loop use
``asyncio.to_thread``), except the write path's coroutines ``submit``, ``submit_lease`` and
``submit_ack``, which wait for the group commit on the caller's loop without holding a thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from axis.config import Config
from axis.store.blobs import Blobs
from axis.store.events import ChainReport, Event
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
from axis.store.sqlite import SQLiteStore

__all__ = [
    "open_store",
    "Agency",
    "Blobs",
    "CertificateRecord",
    "Delivery",
    "Endpoint",
    "InboxItem",
    "IssuedReceipt",
    "Message",
    "NewMessage",
    "VxpCredential",
    "SQLiteStore",
    "Store",
]


def open_store(settings: Config) -> SQLiteStore:
    """The store the configuration names: the one way the axis, its CLI and its tools open one.
    PostgreSQL when ``[store] url`` names a database (several nodes share it), else SQLite in
    ``[axis] data`` (WAL, group commit, blobs beside it)."""
    if settings.store.url:
        from axis.store.postgres import PostgresStore  # the driver is needed only then

        return PostgresStore(settings.store.url, settings.server.node, scratch=settings.data / "spool")
    return SQLiteStore(settings.data, settings.server.node)


class Registry(Protocol):
    """Agencies, certificates, endpoints and role tokens. Every write appends its event to the
    audit log in the same transaction, and is seen at once by every reader of the same database,
    in any process (the registry cache is keyed on a version every write bumps)."""

    def add_agency(self, agency: Agency) -> None:
        """Register one agency. ``store.duplicate`` if its OrganId is registered; ``store.unknown_agency``
        if its parent is not."""
        ...

    def add_agencies(self, agencies: Sequence[Agency]) -> None:
        """Register several in one transaction, parents before children: all or none."""
        ...

    def agency(self, organ_id: str) -> Agency | None: ...
    def agencies(self) -> list[Agency]:
        """Every agency, by OrganId."""
        ...

    def set_agency_status(self, organ_id: str, status: str, at: str) -> None:
        """``active`` or ``suspended``; ``store.unknown_agency`` for an OrganId not registered."""
        ...

    def add_certificate(self, record: CertificateRecord) -> None:
        """Bind a certificate to its agency by fingerprint; ``store.duplicate`` if bound already."""
        ...

    def certificate(self, fingerprint: str) -> CertificateRecord | None: ...
    def certificates(self, organ_id: str | None = None) -> list[CertificateRecord]: ...
    def revoke_certificate(self, fingerprint: str, at: str) -> None:
        """From ``at`` on, packages signed with it are refused; ``store.unknown_certificate`` otherwise."""
        ...

    def add_endpoint(self, endpoint: Endpoint, token_hash: str, vxp: VxpCredential | None = None) -> int:
        """Create an endpoint acting for registered agencies (``store.unknown_agency``), by a unique
        name and, with ``vxp``, a unique VXP system id (``store.duplicate``); returns its id."""
        ...

    def endpoint(self, name: str) -> Endpoint | None: ...
    def endpoint_by_token(self, token_hash: str) -> Endpoint | None:
        """The active endpoint with this token hash; None once revoked (at the next request)."""
        ...

    def endpoints(self) -> list[Endpoint]: ...
    def revoke_endpoint(self, name: str, at: str) -> None:
        """Its token and VXP system id stop working; ``store.unknown_endpoint`` for an unknown name."""
        ...

    def add_role_token(self, token_hash: str, role: str, name: str, at: str) -> None: ...
    def role_by_token(self, token_hash: str) -> str | None:
        """``admin`` or ``auditor`` for a working role token; None otherwise."""
        ...

    def role_tokens(self) -> list[dict[str, Any]]:
        """Every role token (id, name, role, created_at, revoked_at), never its hash."""
        ...

    def revoke_role_tokens(self, which: str, at: str) -> list[dict[str, Any]]:
        """Revoke the token with id ``which`` (digits), else every token named ``which``; revoking
        again changes nothing; ``store.unknown_token`` when none matches."""
        ...


class Outbox(Protocol):
    """Messages and their deliveries: what the router accepts, the queue leases, endpoints pull and
    acknowledge. States: ``queued → leased → delivered``, ``leased → queued`` (a failed attempt),
    ``queued|leased → expired`` (past the TTL, or given up by the recipient), ``expired → queued``
    (an administrator's requeue). A delivery is never lost and never ``delivered`` twice. Every
    change appends its event in the same transaction; nothing is acknowledged before it is durable."""

    @property
    def blobs(self) -> Blobs:
        """The package bytes by SHA-256: where uploads are spooled, what is kept inline or apart,
        checked on every read (``store.blob_corrupt``)."""
        ...

    async def submit(self, message: NewMessage, now: float, expires_at: float) -> list[int]:
        """Store the message, one ``queued`` delivery per recipient, its ``accepted`` receipt, the
        latest status it records and its events in one durable transaction; returns the delivery
        ids once that is durable (it commits even if the caller is cancelled meanwhile). The same package again (same sender, DocumentId, and SHA-256 or signed digest)
        is ``store.duplicate``; other bytes under a DocumentId the sender used are
        ``message.conflict`` unless the message is a revision. Checked inside the transaction, so two
        concurrent submissions cannot both pass."""
        ...

    def enqueue(self, message: NewMessage, now: float, expires_at: float) -> list[int]:
        """``submit``, for a caller in a thread (the CLI, tests): blocks until it is durable."""
        ...

    def message(self, message_id: str) -> Message | None: ...
    def messages(self, sender: str, document_id: str, kind: str = "document") -> list[Message]:
        """What ``sender`` sent under ``document_id``, oldest first."""
        ...

    def accepted_between(
        self, start: str, end: str, agency: str | None = None, after: str = "", limit: int = 1000
    ) -> list[Message]:
        """Documents and statuses accepted from ``start`` (inclusive) to ``end`` (exclusive, ISO
        8601 prefixes), sent by or to ``agency`` if given, with ids above ``after``, by id (which
        is time-ordered): pages for an export."""
        ...

    def deliveries_of(self, message_id: str) -> list[Delivery]: ...
    def delivery(self, delivery_id: int) -> Delivery | None: ...
    def deliveries(self, state: str | None = None, limit: int = 100) -> list[Delivery]: ...
    def backlog(self, recipient: str) -> int:
        """Deliveries waiting (queued or leased) for one agency."""
        ...

    def delivery_counts(self) -> dict[str, int]:
        """Deliveries by state."""
        ...

    def inbox(
        self, recipients: Sequence[str], limit: int, kinds: Sequence[str] = ("document", "status", "receipt")
    ) -> list[InboxItem]:
        """Queued and leased deliveries of these kinds for these agencies, best first (priority,
        then due time, then age), at most ``limit``."""
        ...

    def lease(
        self, recipients: Sequence[str], now: float, deadline: float, limit: int, leased_by: int
    ) -> list[Delivery]:
        """Claim up to ``limit`` due, queued deliveries of these agencies until ``deadline``,
        priority first then age; a leased delivery is not leased again before it returns."""
        ...

    async def submit_lease(
        self, recipients: Sequence[str], now: float, deadline: float, limit: int, leased_by: int
    ) -> list[Delivery]:
        """``lease``, for a caller on an event loop."""
        ...

    def ack(
        self, delivery_id: int, now: float, ack_sha256: str | None = None, receipt: IssuedReceipt | None = None
    ) -> bool:
        """``delivered``: True the first time, False when it already was (nothing changes). With
        ``receipt``, the ``delivered`` receipt and its copy queued for the sender are stored by the
        first acknowledgement only, in the same transaction."""
        ...

    async def submit_ack(
        self, delivery_id: int, now: float, ack_sha256: str | None = None, receipt: IssuedReceipt | None = None
    ) -> bool:
        """``ack``, for a caller on an event loop."""
        ...

    def fail(self, delivery_id: int, now: float, retry_at: float, error: str) -> str:
        """A leased attempt failed: ``queued`` due at ``retry_at`` with ``error`` kept, or
        ``expired`` past the TTL; returns the new state."""
        ...

    def give_up(self, delivery_id: int, now: float, error: str) -> bool:
        """The recipient cannot take the package: ``queued|leased → expired`` now; False (nothing
        changes) when it was no longer waiting."""
        ...

    def expire(self, now: float) -> list[int]:
        """Every queued or leased delivery past its TTL becomes ``expired``; their ids."""
        ...

    def release_stale_leases(self, now: float) -> list[int]:
        """Leases whose deadline has passed, whichever node took them, return to ``queued``, due
        now; their ids."""
        ...

    def release_own_leases(self, now: float) -> list[int]:
        """The leases this node took (``Delivery.leased_node``) return to ``queued`` now: it stops, or
        starts again after a crash. Never another live node's."""
        ...

    def requeue(self, delivery_id: int, now: float, expires_at: float, by: str) -> None:
        """``expired → queued`` with a new TTL; ``store.invalid_transition`` from any other state."""
        ...

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
        """Keep a signed receipt about ``message_id``; with ``forward``, queue it for the sender as
        a message of kind ``receipt`` in the same transaction."""
        ...

    def missing_receipts(self, limit: int = 1000) -> list[Delivery]:
        """Delivered or expired deliveries whose receipt is not stored yet (the axis stopped between
        the two): issued on start and by housekeeping."""
        ...

    def receipts(self, message_id: str) -> list[tuple[str, str | None, bytes]]:
        """(kind, recipient, signed XML, byte for byte) of a message's receipts, oldest first."""
        ...

    def record_status(
        self, sender: str, document_id: str, recipient: str, status_code: str, message_id: str, at: str
    ) -> None:
        """Keep the latest business status of ``sender``'s document ``document_id`` at one recipient."""
        ...

    def status(self, sender: str, document_id: str, recipient: str) -> str | None: ...
    def statuses(self, sender: str, document_id: str) -> list[dict[str, Any]]:
        """The latest status of ``sender``'s document at each recipient (never another sender's
        under the same DocumentId)."""
        ...

    def stats(self, start: str, end: str, period: int, today: str) -> list[dict[str, Any]]:
        """Per agency and period: documents sent, received, statuses sent, delivered, failed,
        pending, and those past their DueDate (``today``) not completed (06)."""
        ...

    def delivery_times(self, start: str, end: str) -> dict[str, list[float]]:
        """Seconds from acceptance to delivery of each document delivered to an agency, for the
        documents accepted from ``start`` to ``end``, by recipient, sorted (for percentiles)."""
        ...


class AuditLog(Protocol):
    """The append-only, hash-chained log of every state change (each event carries the hash of
    the one before it)."""

    def trail(self, message_id: str) -> list[dict[str, Any]]:
        """Every event about a message and its deliveries, in chain order, with its place in it."""
        ...

    def message_events(self, message_id: str) -> list[Event]:
        """``trail``'s events as they are stored (what inclusion proofs are made of)."""
        ...

    def events(self, first: int = 1) -> Iterator[Event]:
        """The log from event ``first`` on, in order, read as it is consumed (bounded memory)."""
        ...

    def checkpoints(self, after: int = 0, limit: int = 1000) -> list[Event]:
        """The events holding signed checkpoints numbered above ``after``, oldest first, at most
        ``limit`` (axis/checkpoints.py reads them)."""
        ...

    def latest_checkpoint(self) -> Event | None: ...
    def add_checkpoint(self, number: int, after: int, at: str, details: dict[str, Any]) -> int:
        """Append checkpoint ``number`` (``details``: the signed checkpoint) as an event of kind
        ``audit.checkpoint``, provided the latest checkpoint in the log still ends at event
        ``after`` (0: none yet), else ``store.conflict`` (another node made one meanwhile);
        returns the new event's number."""
        ...

    def verify_chain(self) -> ChainReport:
        """Recompute the chain; ``store.chain_broken`` names the first event that does not fit."""
        ...


class AdapterState(Protocol):
    """What one front end keeps beside the core: the VXP facade's system ids."""

    def vxp_credential(self, system_id: str) -> tuple[Endpoint, VxpCredential] | None:
        """The active endpoint behind a VXP system id, with its sealed credential."""
        ...


class Store(Registry, Outbox, AuditLog, AdapterState, Protocol):
    """Everything the axis asks of persistence, by concern. ``open_store`` gives the one the
    configuration names; tests/store/test_contract.py holds every implementation to it."""

    shared: bool
    """Whether other axis nodes write to the same store (PostgreSQL) or this one alone (SQLite)."""
    node: str
    """This node's name (``[server] node``), written on the leases it takes."""

    def listen(self, queued: Callable[[list[str]], None], stop: threading.Event) -> None:
        """Until ``stop``, call ``queued(agencies)`` from a thread of the store's whenever another
        node commits deliveries for them; nothing to do for a store no other node writes to."""
        ...

    def close(self) -> None:
        """Finish what was submitted, then release everything."""
        ...
