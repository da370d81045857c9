"""Signed checkpoints of the audit log: what makes it evidence against an insider.

The event log is a hash chain (axis/store/events.py): anyone who can write the database can
change an event and recompute every later hash, and the chain still verifies. A checkpoint is a
statement the axis signs with its receipt key: *the log had ``last`` events, the last one's hash
was ``head``, and the Merkle root (RFC 6962, axis/merkle.py) over the contents of events
``first`` to ``last`` is ``root``*, linked to the checkpoint before it by that one's digest. The axis makes
one every ``[audit] checkpoint_interval`` seconds when events were added, and on demand; each is
itself appended to the log (kind ``audit.checkpoint``), so the next one covers it.

A rewritten event no longer fits the signed root of the checkpoint that covers it, and the signer
must hold the axis key to sign a new one. Against the key holder, witnesses (agencies, auditors,
ministries) keep copies of the checkpoints (``axis audit pull --keep DIR``): a log rewritten and
re-signed no longer matches what they kept.

``verify_log`` checks a whole log: the chain, every checkpoint (signature, numbering, link,
head, root) and the copies a witness kept; it reports each fault found with the events it
concerns, streaming the log with memory bounded by one checkpoint's range.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from axis import merkle, pki
from axis.errors import StoreError
from axis.store import AuditLog
from axis.store.events import CHECKPOINT, GENESIS, Event, chain_hash

FORMAT = "axis-checkpoint/1"
MAX_RANGE = 65_536
"""Events one checkpoint covers at most: an inclusion proof's tree is built from them, so this
bounds an export's memory and time per checkpoint (a longer backlog takes several checkpoints)."""


@dataclass(frozen=True)
class Checkpoint:
    number: int
    """1 for the first checkpoint of the log, then one more each time."""
    first: int
    """The first event covered (one past the previous checkpoint's ``last``)."""
    last: int
    """The last event covered: the log had this many events."""
    head: str
    """The hash of event ``last`` (the chain's head then)."""
    root: str
    """Hex Merkle root over the hashes of events ``first`` to ``last``."""
    previous: str
    """``digest`` of the checkpoint before (GENESIS for the first)."""
    at: str
    axis: str
    """SHA-256 fingerprint of the certificate whose key signs it."""
    format: str = FORMAT

    def canonical(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    def digest(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()

    def summary(self) -> dict[str, Any]:
        """What a report prints of it: its number, the events it covers, its time and digest."""
        return {"number": self.number, "events": self.last, "at": self.at, "digest": self.digest()}


@dataclass(frozen=True)
class Signed:
    checkpoint: Checkpoint
    signature: str
    """Base64 of the signature over ``checkpoint.canonical()``: RSA PKCS#1 v1.5 or ECDSA (DER),
    with SHA-256."""

    def as_json(self) -> dict[str, Any]:
        return {"checkpoint": asdict(self.checkpoint), "signature": self.signature}

    @classmethod
    def of(cls, value: Mapping[str, Any]) -> Signed:
        """Read one from its JSON form; ``ValueError`` for anything else."""
        try:
            body = value["checkpoint"]
            checkpoint = Checkpoint(
                number=_int(body["number"]), first=_int(body["first"]), last=_int(body["last"]),
                head=_hex(body["head"]), root=_hex(body["root"]), previous=_hex(body["previous"]),
                at=str(body["at"]), axis=_hex(body["axis"]), format=str(body["format"]),
            )
            if set(body) != set(asdict(checkpoint)) or checkpoint.format != FORMAT:
                raise ValueError(f"not an {FORMAT} checkpoint")
            base64.b64decode(value["signature"], validate=True)
            return cls(checkpoint, str(value["signature"]))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not a signed checkpoint: {error}") from None


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{value!r} is not a count")
    return value


def _hex(value: Any) -> str:
    if not isinstance(value, str) or len(value) != 64 or value.strip("0123456789abcdef"):
        raise ValueError(f"{value!r} is not a hex SHA-256")
    return value


def leaf(content: str) -> bytes:
    """An event's leaf in the checkpoint's tree: its canonical content. The root binds what each
    event of the range says and its place; ``head`` binds the chain. A rewritten event then fails
    the root of the one checkpoint that covers it, not of every later one."""
    return merkle.leaf_hash(content.encode())


def sign(checkpoint: Checkpoint, key: pki.PrivateKey) -> Signed:
    return Signed(checkpoint, base64.b64encode(pki.sign_bytes(key, checkpoint.canonical())).decode())


def signed_by(signed: Signed, certificate: x509.Certificate) -> bool:
    """Whether ``certificate`` (the one the checkpoint names) made its signature."""
    if pki.fingerprint(certificate) != signed.checkpoint.axis:
        return False
    return pki.signed_bytes(certificate, base64.b64decode(signed.signature), signed.checkpoint.canonical())


def make(
    events: Iterable[Event], latest: Signed | None, key: pki.PrivateKey, certificate: x509.Certificate,
    at: datetime, *, latest_seq: int = 0, force: bool = False,
) -> Signed | None:
    """The next checkpoint over ``events`` (the log from one past ``latest``'s ``last``), or None
    when nothing happened since ``latest`` but its own event (``latest_seq``) and not ``force``."""
    seqs, leaves, head = [], [], GENESIS
    for event in events:
        seqs.append(event.seq)
        leaves.append(leaf(event.content))
        head = event.hash
    if not seqs or (not force and seqs[-1] <= latest_seq):
        return None
    first = latest.checkpoint.last + 1 if latest else 1
    if seqs[0] != first or seqs[-1] - first + 1 != len(seqs):
        raise ValueError(f"the events given are not the log from event {first} on")
    body = Checkpoint(
        number=latest.checkpoint.number + 1 if latest else 1,
        first=first,
        last=seqs[-1],
        head=head,
        root=merkle.root_of(leaves).hex(),
        previous=latest.checkpoint.digest() if latest else GENESIS,
        at=at.isoformat(),
        axis=pki.fingerprint(certificate),
    )
    return sign(body, key)


def checkpoint(
    store: AuditLog, key: pki.PrivateKey, certificate: x509.Certificate, at: datetime, *, force: bool = False,
    earlier: Iterable[x509.Certificate] = (),
) -> Signed | None:
    """Make the next checkpoint of ``store``'s log and append it; None when nothing was logged
    since the latest but that checkpoint itself (``force``: make one all the same, if anything
    at all is uncovered). ``store.conflict`` when another node appended one meanwhile. ``earlier``:
    the axis's previous certificates, whose checkpoints it may extend (after a renewal)."""
    known = {pki.fingerprint(c): c for c in (*earlier, certificate)}
    made = None
    while True:  # a backlog longer than MAX_RANGE events takes several checkpoints
        found = store.latest_checkpoint()
        latest = Signed.of(json.loads(found.content)) if found else None
        if latest is not None:
            _holds(store, latest, known)
        first = latest.checkpoint.last + 1 if latest else 1
        events = itertools.islice(store.events(first), MAX_RANGE)
        step = make(events, latest, key, certificate, at, latest_seq=found.seq if found else 0, force=force)
        if step is None:
            return made
        store.add_checkpoint(step.checkpoint.number, first - 1, at.isoformat(), step.as_json())
        made, force = step, False
        if step.checkpoint.last - step.checkpoint.first + 1 < MAX_RANGE:
            return made


def _holds(store: AuditLog, latest: Signed, known: Mapping[str, x509.Certificate]) -> None:
    """The axis extends only a log whose latest checkpoint it signed and which still holds the
    head that checkpoint signed: it never signs over a log rewritten behind its back."""
    head = next(store.events(latest.checkpoint.last), None)
    signer = known.get(latest.checkpoint.axis)
    if signer is None or not signed_by(latest, signer) or head is None or head.seq != latest.checkpoint.last or head.hash != latest.checkpoint.head:
        raise StoreError(
            "store.chain_broken",
            f"the log's latest checkpoint ({latest.checkpoint.number}) is not this axis's or no longer fits the log:"
            " no checkpoint is signed over it; run axis audit verify",
        )


def latest(store: AuditLog) -> Signed | None:
    """The latest signed checkpoint of the log (None before the first)."""
    found = store.latest_checkpoint()
    return Signed.of(json.loads(found.content)) if found else None


def published(store: AuditLog, after: int = 0, limit: int = 1000) -> list[Signed]:
    """The signed checkpoints numbered above ``after``, oldest first."""
    return [Signed.of(json.loads(e.content)) for e in store.checkpoints(after, limit)]


# ---------------------------------------------------------------- checking a whole log


@dataclass
class LogReport:
    events: int = 0
    head: str = GENESIS
    checkpoints: int = 0
    covered: int = 0
    """Events covered by a checkpoint (the rest came after the last one)."""
    kept: int = 0
    """Witness copies compared."""
    faults: list[dict[str, Any]] = field(default_factory=list)
    """Each: ``code``, ``message`` and the events it concerns (``first``, ``last``)."""

    @property
    def valid(self) -> bool:
        return not self.faults

    def fault(self, code: str, message: str, **where: Any) -> None:
        self.faults.append({"code": code, "message": message, **where})


def read_kept(directory: Path) -> dict[int, Signed]:
    """A witness's copies (``checkpoint-<number>.json``), by number; unreadable files raise ValueError."""
    kept = {}
    for path in sorted(directory.glob("checkpoint-*.json")):
        signed = Signed.of(json.loads(path.read_text(encoding="utf-8")))
        kept[signed.checkpoint.number] = signed
    return kept


def kept_name(signed: Signed) -> str:
    return f"checkpoint-{signed.checkpoint.number:08d}.json"


def verify_log(
    events: Iterable[Event], certificates: Iterable[x509.Certificate], kept: Mapping[int, Signed] | None = None
) -> LogReport:
    """Check the chain, every checkpoint in the log against the events it covers and against the
    axis ``certificates``, and each ``kept`` copy (a witness's) against the log's checkpoint of
    its number. Faults are collected, not raised: an auditor wants all of them."""
    by_fingerprint = {pki.fingerprint(c): c for c in certificates}
    kept = dict(kept or {})
    report = LogReport()
    previous_hash, expected_seq = GENESIS, 1
    pending: list[tuple[int, bytes, str]] = []  # (seq, leaf, hash) since the last checkpoint's ``last``
    latest: Signed | None = None
    broken = False
    for event in events:
        fits = event.seq == expected_seq and event.previous == previous_hash
        if not broken and not (fits and chain_hash(event.previous, event.content) == event.hash):
            report.fault(
                "audit.chain_broken",
                f"event {event.seq} does not follow the event before it or does not match its content",
                first=event.seq, last=event.seq,
            )
            broken = True  # every later hash is then suspect: the checkpoints still say which ranges hold
        previous_hash, expected_seq = event.hash, event.seq + 1
        report.events, report.head = report.events + 1, event.hash
        try:
            content = json.loads(event.content)
        except (ValueError, RecursionError):
            content = None
        if not isinstance(content, dict):
            report.fault("audit.event_malformed", f"event {event.seq} is not a JSON object", first=event.seq, last=event.seq)
            content = {}
        if content.get("kind") == CHECKPOINT:
            try:
                signed = Signed.of(content)
            except ValueError as error:
                report.fault("audit.checkpoint_malformed", f"event {event.seq}: {error}", first=event.seq, last=event.seq)
            else:
                _check_checkpoint(report, signed, latest, pending, event.seq, by_fingerprint)
                witness = kept.pop(signed.checkpoint.number, None)
                if witness is not None:
                    report.kept += 1
                    if witness.checkpoint != signed.checkpoint:
                        report.fault(
                            "audit.witness_mismatch",
                            f"checkpoint {signed.checkpoint.number} in the log is not the one a witness kept"
                            f" (kept: events {witness.checkpoint.first}..{witness.checkpoint.last}, root"
                            f" {witness.checkpoint.root[:16]}...): the log was rewritten and signed again",
                            first=witness.checkpoint.first, last=witness.checkpoint.last,
                        )
                last = signed.checkpoint.last
                pending = [p for p in pending if p[0] > last]
                latest = signed
        pending.append((event.seq, leaf(event.content), event.hash))
        if len(pending) > MAX_RANGE + 1:  # no checkpoint can cover more: report, and keep memory bounded
            report.fault(
                "audit.uncovered",
                f"events from {pending[0][0]} on are covered by no checkpoint within {MAX_RANGE} events",
                first=pending[0][0], last=event.seq,
            )
            pending = pending[-1:]
    for number, witness in sorted(kept.items()):
        report.kept += 1
        report.fault(
            "audit.witness_missing",
            f"a witness kept checkpoint {number} (events {witness.checkpoint.first}..{witness.checkpoint.last});"
            " the log has no such checkpoint",
            first=witness.checkpoint.first, last=witness.checkpoint.last,
        )
    return report


def _check_checkpoint(
    report: LogReport, signed: Signed, latest: Signed | None, pending: list[tuple[int, bytes, str]], seq: int,
    certificates: Mapping[str, x509.Certificate],
) -> None:
    checkpoint = signed.checkpoint
    report.checkpoints += 1
    where = {"first": checkpoint.first, "last": checkpoint.last, "checkpoint": checkpoint.number}
    certificate = certificates.get(checkpoint.axis)
    if certificate is None or not signed_by(signed, certificate):
        report.fault(
            "audit.checkpoint_signature",
            f"checkpoint {checkpoint.number} (event {seq}) is not signed by the axis certificate it names",
            **where,
        )
    expected_number = latest.checkpoint.number + 1 if latest else 1
    expected_first = latest.checkpoint.last + 1 if latest else 1
    expected_previous = latest.checkpoint.digest() if latest else GENESIS
    if (checkpoint.number, checkpoint.first, checkpoint.previous) != (expected_number, expected_first, expected_previous):
        report.fault(
            "audit.checkpoint_sequence",
            f"checkpoint {checkpoint.number} (event {seq}) does not follow the checkpoint before it in the log",
            **where,
        )
        return
    covered = [p for p in pending if p[0] <= checkpoint.last]
    if not covered or covered[0][0] != checkpoint.first or covered[-1][0] != checkpoint.last:
        report.fault("audit.checkpoint_range", f"checkpoint {checkpoint.number} covers events the log does not hold", **where)
        return
    if merkle.root_of(p[1] for p in covered).hex() != checkpoint.root:
        report.fault(
            "audit.rewritten",
            f"events {checkpoint.first}..{checkpoint.last} no longer match signed checkpoint {checkpoint.number}:"
            " at least one of them was changed, removed, inserted or moved after it was signed",
            **where,
        )
    elif covered[-1][2] != checkpoint.head:
        report.fault(
            "audit.chain_rewritten",
            f"events {checkpoint.first}..{checkpoint.last} still say what checkpoint {checkpoint.number} signed,"
            f" but the chain's hash at event {checkpoint.last} is not the signed head: the chain was recomputed"
            " after an earlier event was changed",
            **where,
        )
    else:
        report.covered += len(covered)
