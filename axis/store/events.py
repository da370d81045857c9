"""The audit trail as a hash chain: each event stores the previous event's hash and its own.

``hash = SHA-256(previous hash || "\\n" || canonical content)``, where the canonical content is
the event's JSON with sorted keys, no insignificant whitespace and UTF-8 text. Changing,
removing or reordering any event breaks every hash after it; ``verify_chain`` finds the first
break. The first event follows ``GENESIS``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from axis.errors import StoreError

GENESIS = "0" * 64
CHECKPOINT = "audit.checkpoint"
"""The kind of the events that hold signed checkpoints (axis/checkpoints.py)."""


def checkpoint_subject(number: int) -> str:
    """A checkpoint event's subject: ordered as its number, so that a range of the subject index
    finds checkpoints after a given one."""
    return f"checkpoint/{number:012d}"


CHECKPOINTS_END = "checkpoint/~"
"""Above every checkpoint subject."""


def canonical(content: Mapping[str, Any]) -> str:
    # allow_nan=False: an infinite time would be written as the non-JSON ``Infinity``.
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def chain_hash(previous: str, canonical_content: str) -> str:
    return hashlib.sha256(f"{previous}\n{canonical_content}".encode()).hexdigest()


@dataclass(frozen=True)
class Event:
    seq: int
    content: str
    """Canonical JSON: kind, subject, time and details of one state change."""
    previous: str
    hash: str


@dataclass(frozen=True)
class ChainReport:
    events: int
    head: str
    """Hash of the last event (GENESIS for an empty log): what the axis signs periodically."""


def verify_chain(events: Iterable[Event]) -> ChainReport:
    """Recompute the chain; raise ``store.chain_broken`` naming the first event that does not fit."""
    previous, count, expected_seq = GENESIS, 0, None
    for event in events:
        if expected_seq is not None and event.seq != expected_seq:
            raise StoreError(
                "store.chain_broken",
                f"event {expected_seq} is missing (found {event.seq} next)",
                seq=event.seq,
            )
        if event.previous != previous:
            raise StoreError(
                "store.chain_broken", f"event {event.seq} does not follow the event before it", seq=event.seq
            )
        if chain_hash(previous, event.content) != event.hash:
            raise StoreError(
                "store.chain_broken",
                f"event {event.seq} was altered: its hash does not match its content",
                seq=event.seq,
            )
        previous, count, expected_seq = event.hash, count + 1, event.seq + 1
    return ChainReport(count, previous)
