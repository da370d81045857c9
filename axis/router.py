"""Steps 4-8 of the path of a package: authorise, persist, acknowledge, route, and receipts.

The router receives a package that the verification pool already checked (``checking.Checked``,
read from the signed content only) and decides whether the registry lets it through:

- the sender is registered and active, the endpoint may act for it, and the signing certificate
  is registered to it (fingerprint binding) and not revoked in the registry;
- a document's recipients are registered and active; a revoke/update/replace (BussinessDocType
  1-3) changes a document this axis carried from the same sender to (at least) these recipients;
- a status answers a document the axis carried between the same two agencies: from a recipient
  back to the original sender, or (13, take-back) from the original sender to its recipients.

Then it signs the ``accepted`` receipt (``admit``) and persists bytes, message, deliveries,
receipt and status in one durable transaction (``persist``, a future of the group commit), and
only then acknowledges (``accepted``). A package already accepted returns its original receipt.
The server runs ``admit`` on its event loop and awaits the commit there, without a thread.
Delivery outcomes become signed ``delivered`` and ``failed`` receipts that are stored and queued
for the sender like any package: ``acknowledge`` returns a future of its commit (the push
dispatcher awaits it on the loop); ``delivered``, ``attempt_failed`` and the housekeeping block
and are called from threads.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from cryptography import x509

from axis import pki, receipts
from axis.checking import Checked
from axis.errors import RequestRefused, RoutingRefused, StoreError
from axis.queue import Queue
from axis.spool import Incoming
from axis.store import Delivery, Endpoint, IssuedReceipt, Message, NewMessage, Store

AXIS_SENDER = "axis"
"""The sender of receipts in inboxes: the axis itself, not an agency."""
BACKLOG_FRESH = 1.0
"""Seconds a recipient's counted backlog is reused."""


def new_message_id(now: float) -> str:
    """A UUID version 7 (RFC 9562): the Unix time in milliseconds, then 74 random bits. Ids made
    later sort later, so every index keyed by message id (messages, deliveries, receipts, the
    trail) grows at its end; random (version 4) ids put each insert on a page of its own, and
    each such page is written to the WAL at the next commit."""
    value = (int(now * 1000) & (1 << 48) - 1) << 80 | secrets.randbits(80)
    value = value & ~(0xF << 76) | 0x7 << 76  # version
    value = value & ~(0x3 << 62) | 0x2 << 62  # variant (RFC 9562)
    return str(uuid.UUID(int=value))


@dataclass(frozen=True)
class Acceptance:
    message_id: str
    document_id: str
    recipients: tuple[str, ...]
    receipt: bytes
    created: bool
    """False when the package had been accepted before (an identical resubmission)."""

    def as_json(self) -> dict[str, object]:
        return {
            "message_id": self.message_id,
            "document_id": self.document_id,
            "recipients": list(self.recipients),
            "receipt": self.receipt.decode(),
        }


@dataclass(frozen=True)
class Admission:
    """A package the registry lets through, with its signed ``accepted`` receipt, not yet stored."""

    message: NewMessage
    package: Incoming


@dataclass
class Router:
    queue: Queue
    key: pki.PrivateKey
    certificate: x509.Certificate
    """The axis's receipt-signing certificate."""
    backlog_cap: int = 100_000
    """Deliveries that may wait for one recipient before new packages to it are refused (429)."""
    on_queued: Callable[[Iterable[str]], None] = lambda agencies: None
    """Told which agencies have something new (wakes long-polls and the push dispatcher)."""
    _backlog: dict[str, tuple[float, int]] = field(default_factory=dict)
    """Per recipient: (when counted, deliveries waiting) for the backlog cap."""

    @property
    def store(self) -> Store:
        return self.queue.store

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.queue.clock(), UTC)

    # ------------------------------------------------------------ accept

    def admit(self, checked: Checked, package: Incoming, endpoint: Endpoint) -> Admission | Acceptance:
        """Authorise and route one verified package and sign its ``accepted`` receipt; or, for a
        package accepted before, its original acceptance. Nothing is written yet.

        Cheap enough for the event loop: registry reads come from the store's cache, and the only
        other reads are indexed lookups of this sender's DocumentId (and, once a second per
        recipient, its backlog count)."""
        self._authorise_sender(checked, endpoint)
        earlier = self._earlier(checked)
        if earlier is not None:
            return earlier
        status_for = None
        if checked.kind == "status":
            recipients, status_of, status_for = self._route_status(checked)
        else:
            recipients, status_of = self._route_document(checked), ()
        self._check_backlog(recipients)
        now = self.queue.clock()
        message_id, accepted_at = new_message_id(now), datetime.fromtimestamp(now, UTC).isoformat()
        receipt = receipts.sign(
            receipts.Receipt(
                kind="accepted",
                message_id=message_id,
                package_kind=checked.kind,
                document_id=checked.document_id,
                package_sha256=checked.sha256,
                sender=checked.sender,
                recipients=recipients,
                time=accepted_at,
            ),
            self.key,
            self.certificate,
        )
        return Admission(
            NewMessage(
                id=message_id,
                kind=checked.kind,
                sender=checked.sender,
                document_id=checked.document_id,
                sha256=checked.sha256,
                size=checked.size,
                recipients=recipients,
                accepted_at=accepted_at,
                priority=max(0, min(4, checked.priority)),
                signed_digest=checked.signed_digest,
                due_date=checked.due_date,
                revision=checked.revision_of is not None,
                receipt=receipt,
                status_code=checked.status_code,
                status_of=status_of,
                status_for=status_for,
            ),
            package,
        )

    async def persist(self, admission: Admission) -> Acceptance:
        """Store the admitted package durably and return its acknowledgement. A duplicate that only
        the transaction caught (two identical submissions at once) gets the original's acceptance.
        The store runs to the end even if the caller is cancelled, and the recipients' listeners
        are told as soon as it is durable, whether anyone still waits or not."""
        message = admission.message
        storing = asyncio.ensure_future(self.queue.submit(message, admission.package))

        def tell(done: asyncio.Future[list[int]]) -> None:
            if not done.cancelled() and done.exception() is None:
                self.on_queued(message.recipients)

        storing.add_done_callback(tell)
        try:
            await asyncio.shield(storing)
        except StoreError as error:
            if error.code != "store.duplicate":
                raise
            original = error.fields["message_id"]
            return await asyncio.to_thread(lambda: self._acceptance(self.store.message(original)))
        for organ_id in message.recipients:
            counted_at, waiting = self._backlog.get(organ_id, (-BACKLOG_FRESH, 0))
            self._backlog[organ_id] = (counted_at, waiting + 1)
        assert message.receipt is not None
        return Acceptance(message.id, message.document_id, message.recipients, message.receipt, created=True)

    def _authorise_sender(self, checked: Checked, endpoint: Endpoint) -> None:
        sender = self.store.agency(checked.sender)
        if sender is None:
            raise RoutingRefused("sender.not_registered", f"the sender {checked.sender} is not a registered agency")
        if sender.status != "active":
            raise RoutingRefused("sender.suspended", f"the sender {checked.sender} is suspended")
        if checked.sender not in endpoint.agencies:
            raise RoutingRefused(
                "sender.not_granted",
                f"endpoint {endpoint.name!r} may not send for {checked.sender}"
                f" (it acts for {', '.join(endpoint.agencies)})",
            )
        record = self.store.certificate(checked.fingerprint)
        if record is None or record.organ_id != checked.sender:
            raise RoutingRefused(
                "sender.certificate_not_registered",
                f"the signing certificate {checked.fingerprint} is not registered to {checked.sender};"
                " an administrator registers it with `axis cert add`",
            )
        if record.status != "active":
            raise RoutingRefused(
                "sender.certificate_revoked",
                f"the signing certificate {checked.fingerprint} was revoked in the registry at {record.revoked_at}",
            )

    def _earlier(self, checked: Checked) -> Acceptance | None:
        """The acceptance of this same package, if it was accepted before (nothing is stored again)."""
        for message in self.store.messages(checked.sender, checked.document_id, checked.kind):
            if checked.sha256 == message.sha256 or checked.signed_digest == message.signed_digest:
                return self._acceptance(message)
        return None

    def _acceptance(self, message: Message | None) -> Acceptance:
        assert message is not None
        receipt = next(xml for kind, _, xml in self.store.receipts(message.id) if kind == "accepted")
        recipients = tuple(d.recipient for d in self.store.deliveries_of(message.id))
        return Acceptance(message.id, message.document_id, recipients, receipt, created=False)

    def _check_recipients(self, recipients: Iterable[str]) -> None:
        for organ_id in recipients:
            agency = self.store.agency(organ_id)
            if agency is None:
                raise RoutingRefused(
                    "recipient.not_registered", f"the recipient {organ_id} is not a registered agency"
                )
            if agency.status != "active":
                raise RoutingRefused("recipient.suspended", f"the recipient {organ_id} is suspended")

    def _carried(self, sender: str, document_id: str) -> set[str]:
        """Recipients of the documents ``sender`` sent through this axis under ``document_id``."""
        return {
            d.recipient
            for m in self.store.messages(sender, document_id)
            for d in self.store.deliveries_of(m.id)
        }

    def _route_document(self, checked: Checked) -> tuple[str, ...]:
        self._check_recipients(checked.recipients)
        if checked.revision_of is not None:
            carried = self._carried(checked.sender, checked.revision_of)
            if not carried or not set(checked.recipients) <= carried:
                raise RoutingRefused(
                    "message.unknown_reference",
                    f"this revoke/update/replace changes {checked.revision_of}, which this axis did not"
                    f" carry from {checked.sender} to {', '.join(sorted(set(checked.recipients) - carried))}",
                )
        return checked.recipients

    def _route_status(self, checked: Checked) -> tuple[tuple[str, ...], tuple[str, ...], str]:
        """(agencies the status travels to, agencies whose latest status it records, the sender of
        the document it answers). A status is matched only to a document this axis carried between
        the same two agencies: a DocumentId names a document of one sender, not of every agency
        that ever used the same text."""
        if checked.status_code == "13":  # the original sender takes the document back
            carried = tuple(sorted(self._carried(checked.sender, checked.document_id)))
            if not carried:
                raise RoutingRefused(
                    "status.unknown_document",
                    f"{checked.sender} sent no document {checked.document_id} through this axis",
                )
            return carried, carried, checked.sender
        original_sender = checked.answers or checked.document_id.split(",", 1)[0]
        if checked.sender not in self._carried(original_sender, checked.document_id):
            raise RoutingRefused(
                "status.unknown_document",
                f"this axis carried no document {checked.document_id} from {original_sender} to {checked.sender}",
            )
        self._check_recipients((original_sender,))
        return (original_sender,), (checked.sender,), original_sender

    def _check_backlog(self, recipients: Iterable[str]) -> None:
        """Counting a recipient's queue costs time in proportion to it, so the count is taken at most
        once a second per recipient and bumped by what this axis queues meanwhile: a soft cap."""
        now = self.queue.clock()
        for organ_id in recipients:
            counted_at, waiting = self._backlog.get(organ_id, (-BACKLOG_FRESH, 0))
            if now - counted_at >= BACKLOG_FRESH:
                waiting = self.store.backlog(organ_id)
                self._backlog[organ_id] = (now, waiting)
            if waiting >= self.backlog_cap:
                raise RequestRefused(
                    "request.recipient_busy",
                    f"{waiting} packages already wait for {organ_id}; send again later",
                    retry_after=60,
                    recipient=organ_id,
                )

    # ------------------------------------------------------------ outcomes

    def delivered(self, delivery: Delivery, acknowledgement: bytes = b"", message: Message | None = None) -> bool:
        """The recipient has the package: ``delivered`` once, and in the same transaction the signed
        receipt for the sender (signed beforehand, dropped if the delivery was acknowledged already).
        ``message`` (the delivery's) saves reading it again when the caller has it. From a thread;
        ``acknowledge`` on an event loop."""
        receipt = self._delivered_receipt(delivery, acknowledgement, message)
        first = self.queue.ack(delivery.id, hashlib.sha256(acknowledgement).hexdigest(), receipt)
        if first and receipt is not None:
            self.on_queued(receipt.forward.recipients)
        return first

    async def acknowledge(
        self, delivery: Delivery, acknowledgement: bytes, message: Message | None, signed: receipts.Signed | None = None
    ) -> bool:
        """``delivered``, on an event loop (the push dispatcher), with the receipt ``signed`` already
        by the push process: True the first time, once it is committed. Reads nothing when
        ``message`` is given."""
        receipt = self._delivered_receipt(delivery, acknowledgement, message, signed)
        first = await self.queue.submit_ack(delivery.id, hashlib.sha256(acknowledgement).hexdigest(), receipt)
        if first and receipt is not None:
            self.on_queued(receipt.forward.recipients)
        return first

    def _delivered_receipt(
        self, delivery: Delivery, acknowledgement: bytes, message: Message | None, signed: receipts.Signed | None = None
    ) -> IssuedReceipt | None:
        message = message or self.store.message(delivery.message_id)
        outcome = replace(delivery, state="delivered", ack_sha256=hashlib.sha256(acknowledgement).hexdigest())
        return self._receipt(message, outcome, signed) if message is not None else None

    def attempt_failed(self, delivery: Delivery, error: str) -> str:
        """A push attempt failed: retry later, or (past the TTL) a dead letter with a ``failed`` receipt."""
        state = self.queue.fail(delivery, error)
        if state == "expired":
            self.issue_receipt(delivery.id)
        return state

    def housekeeping(self) -> tuple[list[int], list[int]]:
        """Stale leases back to the queue; expired deliveries become dead letters with receipts."""
        released, expired = self.queue.housekeeping()
        if expired:
            self.issue_missing_receipts()
        return released, expired

    def issue_missing_receipts(self) -> int:
        """Receipts owed for deliveries that ended while the axis was stopping or crashing."""
        count = 0
        while batch := self.store.missing_receipts():
            for delivery in batch:
                self.issue_receipt(delivery.id)
                count += 1
        return count

    def issue_receipt(self, delivery_id: int) -> None:
        """Sign the ``delivered`` or ``failed`` receipt of one delivery, store it and queue it for the
        sender (receipts about receipts are not made)."""
        delivery = self.store.delivery(delivery_id)
        message = self.store.message(delivery.message_id) if delivery else None
        if delivery is None or message is None:
            return
        receipt = self._receipt(message, delivery)
        if receipt is None:
            return
        self.store.add_receipt(
            receipt.message_id, receipt.kind, receipt.recipient, receipt.xml, receipt.at, receipt.forward,
            self.queue.clock(), receipt.expires_at,
        )
        self.on_queued((message.sender,))

    def delivered_receipt(self, message: Message, recipient: str) -> receipts.Receipt | None:
        """The ``delivered`` receipt a push to ``recipient`` will owe, unsigned, its time and
        acknowledgement digest left for the push process to fill in when the endpoint answers 2xx
        (None for a receipt: no receipts about receipts)."""
        if message.kind == "receipt":
            return None
        return self._content(message, "delivered", recipient, "", None, None)

    @staticmethod
    def _content(
        message: Message, kind: str, recipient: str, time: str, acknowledgement: str | None, reason: str | None
    ) -> receipts.Receipt:
        return receipts.Receipt(
            kind=kind,
            message_id=message.id,
            package_kind=message.kind,
            document_id=message.document_id,
            package_sha256=message.sha256,
            sender=message.sender,
            recipients=(recipient,),
            time=time,
            acknowledgement_sha256=acknowledgement,
            reason=reason,
        )

    def _receipt(
        self, message: Message, delivery: Delivery, signed: receipts.Signed | None = None
    ) -> IssuedReceipt | None:
        """The signed receipt a delivery's outcome owes the sender, with its copy for the sender's
        inbox; None while the delivery has no outcome, and for receipts (no receipts about receipts).
        ``signed``: the receipt and its time, signed already (by the push process)."""
        kind = {"delivered": "delivered", "expired": "failed"}.get(delivery.state)
        if kind is None or message.kind == "receipt":
            return None
        if signed is None:
            at = self._now().isoformat()
            acknowledgement = delivery.ack_sha256 if kind == "delivered" else None
            reason = (delivery.last_error or "time-to-live passed") if kind == "failed" else None
            content = self._content(message, kind, delivery.recipient, at, acknowledgement, reason)
            xml = receipts.sign(content, self.key, self.certificate)
        else:
            xml, at = signed
        forward = NewMessage(
            id=new_message_id(self.queue.clock()),
            kind="receipt",
            sender=AXIS_SENDER,
            document_id=message.document_id,
            sha256=hashlib.sha256(xml).hexdigest(),
            size=len(xml),
            recipients=(message.sender,),
            accepted_at=at,
        )  # no ``data``: its bytes are the receipt's, which the store keeps with the receipt
        expires_at = self.queue.clock() + self.queue.policy.ttl
        return IssuedReceipt(message.id, kind, delivery.recipient, xml, at, forward, expires_at)
