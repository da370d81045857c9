"""Rows of the store as values. Registry times are ISO 8601 text; queue times are Unix seconds."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Agency:
    organ_id: str
    form: str
    """``qcvn102`` or ``qd20``: the identifier form as given, never rewritten."""
    name: str
    created_at: str
    parent: str | None = None
    status: str = "active"


@dataclass(frozen=True)
class CertificateRecord:
    fingerprint: str
    organ_id: str
    pem: str
    subject: str
    not_before: str
    not_after: str
    added_at: str
    status: str = "active"
    revoked_at: str | None = None


@dataclass(frozen=True)
class Endpoint:
    name: str
    mode: str
    """``push`` (the axis POSTs to ``push_url``) or ``pull`` (the endpoint polls its inbox)."""
    agencies: tuple[str, ...]
    created_at: str
    push_url: str | None = None
    client_cert_fingerprint: str | None = None
    status: str = "active"
    id: int | None = None


@dataclass(frozen=True)
class NewMessage:
    id: str
    kind: str
    sender: str
    document_id: str
    sha256: str
    size: int
    recipients: tuple[str, ...]
    accepted_at: str
    priority: int = 0
    signed_digest: str | None = None
    """The signature's DigestValue: the same signed content re-serialised is the same package."""
    due_date: str | None = None
    """DueDate (``yyyy/MM/dd``) of a document, for the overdue report."""
    revision: bool = False
    """A revoke/update/replace (BussinessDocType 1-3): may reuse a DocumentId with other bytes."""
    receipt: bytes | None = None
    """The signed ``accepted`` receipt, stored in the same transaction as the message."""
    status_code: str | None = None
    """For a status package: the code recorded, in the same transaction, as the latest status of
    the document ``document_id`` of ``status_for`` at each agency of ``status_of``."""
    status_of: tuple[str, ...] = ()
    status_for: str | None = None
    """For a status package: the sender of the document it answers."""
    data: bytes | None = field(default=None, repr=False)
    """The package bytes when they are stored in the same transaction (``blobs.INLINE_MAX``);
    None when they are in the blob directory already."""


@dataclass(frozen=True)
class IssuedReceipt:
    """A signed ``delivered`` or ``failed`` receipt about ``message_id``, with (``forward``) its copy
    queued for the sender as a message of kind ``receipt``, whose bytes are ``xml`` (stored once,
    with the receipt)."""

    message_id: str
    kind: str
    recipient: str
    xml: bytes
    at: str
    forward: NewMessage
    expires_at: float
    """When the forwarded copy's delivery expires."""


@dataclass(frozen=True)
class Message:
    """A stored package (document, status) or an axis receipt travelling to a sender."""

    id: str
    kind: str
    sender: str
    document_id: str
    sha256: str
    size: int
    priority: int
    accepted_at: str
    signed_digest: str | None = None
    due_date: str | None = None


@dataclass(frozen=True)
class InboxItem:
    delivery: Delivery
    message: Message


@dataclass(frozen=True)
class Delivery:
    id: int
    message_id: str
    recipient: str
    state: str
    priority: int
    attempts: int
    created_at: float
    due_at: float
    expires_at: float
    lease_deadline: float | None = None
    leased_by: int | None = None
    """The endpoint the delivery is leased for."""
    leased_node: str | None = None
    """The axis node holding the lease (``[server] node``): only it releases the lease early."""
    delivered_at: float | None = None
    ack_sha256: str | None = None
    last_error: str | None = None


@dataclass(frozen=True)
class VxpCredential:
    """A VXP system id of an endpoint (adapters/vxp): its shared HMAC secret, sealed with the key
    store's secrets key (never stored in clear), its role (``endpoint`` or ``admin``) and the
    networks it may call from (empty: any)."""

    system_id: str
    sealed_secret: bytes
    role: str = "endpoint"
    sources: tuple[str, ...] = ()
