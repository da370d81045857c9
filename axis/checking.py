"""Step 3 of the path, run in worker processes: verify, validate, and summarise a package.

``check`` is what a verification worker does with one submission: the strict signature policy
(axis/verification.py), XSD validation of the signed content, and a small picklable summary of
what the signature covers: all the router needs to authorise and route. Attachment bytes never
leave the worker. Workers load the trust directory once and reload it when a file in it changes
(a new CRL imported by an administrator), checked with one ``stat`` per file per package.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from axis import edxml, keystore, pki
from axis.verification import verify_package


@dataclass(frozen=True)
class Checked:
    """What a verified package says, read from its signed content only."""

    kind: str
    """``document`` or ``status``."""
    sender: str
    document_id: str
    """The DocumentId of a document; for a status, the DocumentId of the document it answers."""
    sha256: str
    size: int
    fingerprint: str
    """SHA-256 of the signing certificate: how the registry binds it to the sender."""
    signed_digest: str
    recipients: tuple[str, ...] = ()
    """The To OrganIds of a document."""
    answers: str | None = None
    """A status's ResponseFor/OrganId: the agency that sent the document it answers."""
    status_code: str | None = None
    revision_of: str | None = None
    """For a revoke/update/replace (BussinessDocType 1-3): the DocumentId it changes."""
    due_date: str | None = None
    """The DueDate as ``yyyy/MM/dd`` (a ``dd/MM/yyyy`` one is rewritten), so that it compares as text."""
    priority: int = 0
    subject: str = ""


def summarise(package: edxml.Package, *, sha256: str, size: int, fingerprint: str, digest: str) -> Checked:
    common = {"sha256": sha256, "size": size, "fingerprint": fingerprint, "signed_digest": digest}
    if isinstance(package, edxml.StatusPackage):
        return Checked(
            kind="status",
            sender=package.sender.organ_id,
            document_id=package.response_for.document_id or "",
            answers=package.response_for.organ_id,
            status_code=package.status_code,
            **common,  # type: ignore[arg-type]
        )
    bussiness = package.bussiness
    revision = bussiness is not None and bussiness.bussiness_doc_type in (1, 2, 3)
    return Checked(
        kind="document",
        sender=package.sender.organ_id,
        document_id=package.document_id,
        recipients=tuple(r.organ_id for r in package.recipients),
        revision_of=((bussiness.document_id or package.document_id) if revision and bussiness else None),
        due_date=edxml.sortable_date(package.due_date),
        priority=(package.other_info.priority or 0) if package.other_info else 0,
        subject=package.subject,
        **common,  # type: ignore[arg-type]
    )


def check_with(source: bytes | Path, trust: pki.Trust, at: datetime) -> Checked:
    verified = verify_package(source, trust, at, attachments=False)  # XSD validation included (edxml.read)
    return summarise(
        verified.package,
        sha256=verified.sha256,
        size=verified.signature.size,
        fingerprint=verified.signature.fingerprint,
        digest=verified.signature.digest,
    )


_trust: dict[Path, tuple[tuple[tuple[str, int, int], ...], pki.Trust]] = {}


def _stamp(directory: Path) -> tuple[tuple[str, int, int], ...]:
    with os.scandir(directory) as entries:
        stats = [(e.name, e.stat()) for e in entries if e.is_file()]
    return tuple(sorted((name, stat.st_mtime_ns, stat.st_size) for name, stat in stats))


def trust_of(directory: Path) -> pki.Trust:
    """The trust directory's anchors and CRLs, re-read only when a file in it changed."""
    stamp = _stamp(directory)
    cached = _trust.get(directory)
    if cached is None or cached[0] != stamp:
        cached = (stamp, keystore.read_trust(directory))
        _trust[directory] = cached
    return cached[1]


def check(source: bytes | Path, trust_directory: Path, at: datetime) -> Checked:
    """The worker's entry point: the package's bytes, or the file they were spooled to."""
    return check_with(source, trust_of(trust_directory), at)
