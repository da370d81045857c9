"""Rows of the store as values. Registry times are ISO 8601 text; queue times are Unix seconds."""

from __future__ import annotations

from dataclasses import dataclass


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
    delivered_at: float | None = None
    ack_sha256: str | None = None
    last_error: str | None = None
