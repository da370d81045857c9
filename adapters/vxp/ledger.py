"""The signing gateway's durable memory: one SQLite file in its state directory (WAL,
synchronous=FULL), so that a SIGKILL at any point loses nothing the SDK was told and serves
nothing twice as new.

- ``systems``: the system ids the gateway issued to the agency's software, each with its
  secret sealed under ``secrets.key`` (0600, beside the database) and the agencies it acts for.
- ``outgoing``: each package the SDK sent, keyed by the SHA-256 of its content (its exclusive
  c14n without any signature, ``gateway.Gateway.sign``). The signed
  package is written **before** it is submitted, so a resend of the same file (or of one that
  differs only in its placeholder) after a crash submits the very same signed bytes (the axis answers a resubmission with the original
  receipt), and the axis's message id and signed receipt are written before the SDK hears OK.
- ``incoming``: each package pulled for one of the gateway's agencies, verified, with its bytes.
  ``decision`` is what the SDK said (``done``/``fail``), written before the axis is told;
  ``told`` once the axis has it. A decided package is never listed as new again; one decided and
  not yet told is told again by the pull loop.
- ``receipts``: the axis's signed receipts that arrived for the gateway's agencies.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from axis import keystore
from axis.errors import StoreError

SCHEMA = """
CREATE TABLE IF NOT EXISTS systems (
    system_id     TEXT PRIMARY KEY,
    sealed_secret BLOB NOT NULL,
    agencies      TEXT NOT NULL,
    created_at    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outgoing (
    content_sha256  TEXT PRIMARY KEY,
    system_id       TEXT NOT NULL,
    sender          TEXT NOT NULL,
    kind            TEXT NOT NULL,
    document_id     TEXT NOT NULL,
    signed          BLOB NOT NULL,
    created_at      TEXT NOT NULL,
    message_id      TEXT UNIQUE,
    receipt         BLOB,
    sent_at         TEXT
);
CREATE TABLE IF NOT EXISTS incoming (
    message_id  TEXT NOT NULL,
    recipient   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    sender      TEXT NOT NULL,
    accepted_at TEXT NOT NULL,
    data        BLOB NOT NULL,
    pulled_at   TEXT NOT NULL,
    decision    TEXT CHECK (decision IN ('done', 'fail')),
    told        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (message_id, recipient)
);
CREATE INDEX IF NOT EXISTS incoming_waiting ON incoming(recipient, decision, pulled_at);
CREATE TABLE IF NOT EXISTS receipts (
    message_id TEXT NOT NULL,
    kind       TEXT NOT NULL,
    recipient  TEXT NOT NULL,
    xml        BLOB NOT NULL,
    at         TEXT NOT NULL,
    PRIMARY KEY (message_id, kind, recipient)
);
"""


@dataclass(frozen=True)
class Outgoing:
    content_sha256: str
    system_id: str
    sender: str
    kind: str
    document_id: str
    signed: bytes
    created_at: str
    message_id: str | None = None
    receipt: bytes | None = None
    sent_at: str | None = None


@dataclass(frozen=True)
class Incoming:
    message_id: str
    recipient: str
    kind: str
    sender: str
    accepted_at: str
    data: bytes
    pulled_at: str
    decision: str | None = None
    told: int = 0


def _now() -> str:
    return datetime.now(UTC).isoformat()


class Ledger:
    """Every method commits durably before it returns; safe to call from several threads."""

    def __init__(self, directory: Path) -> None:
        """Open (or create, readable by its owner only) the state in ``directory``: it holds the
        documents received and the packages signed."""
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        self.directory = directory
        self.box = keystore.SecretBox.at(directory / "secrets.key")
        self._lock = threading.Lock()
        self._db = sqlite3.connect(directory / "gateway.sqlite3", isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _rows(self, sql: str, parameters: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, parameters).fetchall()

    def _write(self, sql: str, parameters: Sequence[Any] = ()) -> int:
        with self._lock:
            return self._db.execute(sql, parameters).rowcount

    # ------------------------------------------------------------ systems

    def add_system(self, system_id: str, agencies: Sequence[str], secret: str) -> None:
        if not system_id.strip() or len(system_id) > 100 or not system_id.isascii():
            raise StoreError("store.bad_endpoint", "a VXP system id is 1 to 100 ASCII characters")
        try:
            self._write(
                "INSERT INTO systems (system_id, sealed_secret, agencies, created_at) VALUES (?, ?, ?, ?)",
                (system_id, self.box.seal(secret.encode(), system_id), json.dumps(list(agencies)), _now()),
            )
        except sqlite3.IntegrityError:
            raise StoreError("store.duplicate", f"VXP system id {system_id!r} already exists") from None

    def system(self, system_id: str) -> tuple[bytes, tuple[str, ...], str] | None:
        """The system's secret (opened), its agencies and when it was issued."""
        rows = self._rows("SELECT * FROM systems WHERE system_id = ?", (system_id,))
        if not rows:
            return None
        row = rows[0]
        return self.box.open(bytes(row["sealed_secret"]), system_id), tuple(json.loads(row["agencies"])), row["created_at"]

    def systems(self) -> list[tuple[str, tuple[str, ...], str]]:
        return [
            (r["system_id"], tuple(json.loads(r["agencies"])), r["created_at"])
            for r in self._rows("SELECT system_id, agencies, created_at FROM systems ORDER BY system_id")
        ]

    # ------------------------------------------------------------ outgoing

    def outgoing(self, content_sha256: str) -> Outgoing | None:
        rows = self._rows("SELECT * FROM outgoing WHERE content_sha256 = ?", (content_sha256,))
        return Outgoing(**dict(rows[0])) if rows else None

    def sent_message(self, message_id: str) -> Outgoing | None:
        rows = self._rows("SELECT * FROM outgoing WHERE message_id = ?", (message_id,))
        return Outgoing(**dict(rows[0])) if rows else None

    def prepare(self, outgoing: Outgoing) -> Outgoing:
        """Write the signed package before it is submitted; an earlier one for the same file wins."""
        self._write(
            "INSERT OR IGNORE INTO outgoing (content_sha256, system_id, sender, kind, document_id, signed, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (outgoing.content_sha256, outgoing.system_id, outgoing.sender, outgoing.kind, outgoing.document_id,
             outgoing.signed, outgoing.created_at),
        )
        found = self.outgoing(outgoing.content_sha256)
        assert found is not None
        return found

    def forget(self, content_sha256: str) -> None:
        """The axis refused the package: nothing of it is kept, so a corrected file starts afresh."""
        self._write("DELETE FROM outgoing WHERE content_sha256 = ? AND message_id IS NULL", (content_sha256,))

    def sent(self, content_sha256: str, message_id: str, receipt: bytes) -> None:
        self._write(
            "UPDATE outgoing SET message_id = ?, receipt = ?, sent_at = ? WHERE content_sha256 = ?",
            (message_id, receipt, _now(), content_sha256),
        )

    def sent_list(self, limit: int = 100) -> list[Outgoing]:
        rows = self._rows(
            "SELECT * FROM outgoing WHERE message_id IS NOT NULL ORDER BY sent_at DESC LIMIT ?", (limit,)
        )
        return [Outgoing(**dict(r)) for r in rows]

    # ------------------------------------------------------------ incoming

    def receive(self, incoming: Incoming) -> bool:
        """Keep a verified package until the SDK decides; False if it was kept already."""
        return bool(
            self._write(
                "INSERT OR IGNORE INTO incoming (message_id, recipient, kind, sender, accepted_at, data, pulled_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (incoming.message_id, incoming.recipient, incoming.kind, incoming.sender, incoming.accepted_at,
                 incoming.data, incoming.pulled_at),
            )
        )

    def incoming(self, message_id: str, recipients: Sequence[str]) -> list[Incoming]:
        marks = ", ".join("?" * len(recipients))
        rows = self._rows(
            f"SELECT * FROM incoming WHERE message_id = ? AND recipient IN ({marks})",  # noqa: S608 (placeholders)
            (message_id, *recipients),
        )
        return [Incoming(**dict(r)) for r in rows]

    def waiting(self, recipients: Sequence[str], kinds: Sequence[str], limit: int) -> list[Incoming]:
        """Packages the SDK has not decided on, oldest first."""
        marks, kind_marks = ", ".join("?" * len(recipients)), ", ".join("?" * len(kinds))
        rows = self._rows(
            f"SELECT * FROM incoming WHERE decision IS NULL AND recipient IN ({marks}) AND kind IN ({kind_marks})"  # noqa: S608
            " ORDER BY pulled_at, message_id LIMIT ?",
            (*recipients, *kinds, limit),
        )
        return [Incoming(**dict(r)) for r in rows]

    def decide(self, message_id: str, recipient: str, decision: str) -> None:
        """The SDK's ``done`` or ``fail``: from now on the package is not new; a second, different
        decision is refused."""
        with self._lock:
            row = self._db.execute(
                "SELECT decision FROM incoming WHERE message_id = ? AND recipient = ?", (message_id, recipient)
            ).fetchone()
            if row is not None and row["decision"] not in (None, decision):
                raise StoreError(
                    "store.invalid_transition",
                    f"{message_id} was already marked {row['decision']} for {recipient}; it cannot be {decision} now",
                )
            self._db.execute(
                "UPDATE incoming SET decision = ? WHERE message_id = ? AND recipient = ? AND decision IS NULL",
                (decision, message_id, recipient),
            )

    def reopen(self, message_id: str, recipient: str) -> None:
        """A package refused (``fail``) and requeued at the axis by an administrator: new again."""
        self._write("UPDATE incoming SET decision = NULL, told = 0 WHERE message_id = ? AND recipient = ?", (message_id, recipient))

    def told(self, message_id: str, recipient: str) -> None:
        self._write("UPDATE incoming SET told = 1 WHERE message_id = ? AND recipient = ?", (message_id, recipient))

    def untold(self) -> list[Incoming]:
        """Decisions the axis has not heard yet (the gateway stopped between the two)."""
        return [Incoming(**dict(r)) for r in self._rows("SELECT * FROM incoming WHERE decision IS NOT NULL AND told = 0")]

    # ------------------------------------------------------------ receipts

    def add_receipt(self, message_id: str, kind: str, recipient: str, xml: bytes) -> None:
        self._write(
            "INSERT OR IGNORE INTO receipts (message_id, kind, recipient, xml, at) VALUES (?, ?, ?, ?, ?)",
            (message_id, kind, recipient, xml, _now()),
        )

    def receipts(self, message_id: str | None = None) -> list[dict[str, Any]]:
        if message_id is None:
            rows = self._rows("SELECT message_id, kind, recipient, at FROM receipts ORDER BY at")
        else:
            rows = self._rows("SELECT message_id, kind, recipient, at FROM receipts WHERE message_id = ?", (message_id,))
        return [dict(r) for r in rows]

    # ------------------------------------------------------------ the status page

    def report(self, limit: int = 100) -> dict[str, Any]:
        """What ``axis adapter vxp-gateway status`` prints: counts of what was received, and the
        last packages sent with the receipts kept for each (the ``accepted`` one came with the send)."""
        counts = dict.fromkeys(("waiting", "done", "failed", "untold"), 0)
        for decision, told, number in self._rows(
            "SELECT decision, told, count(*) FROM incoming GROUP BY decision, told"
        ):
            counts[{None: "waiting", "done": "done", "fail": "failed"}[decision]] += number
            if decision is not None and not told:
                counts["untold"] += number
        sent = []
        for outgoing in self.sent_list(limit):
            kept = [{"kind": "accepted", "recipient": ""}] + [
                {"kind": r["kind"], "recipient": r["recipient"]} for r in self.receipts(outgoing.message_id)
            ]
            sent.append({
                "message_id": outgoing.message_id, "kind": outgoing.kind, "sender": outgoing.sender,
                "document_id": outgoing.document_id, "sent_at": outgoing.sent_at, "receipts": kept,
            })
        return {**counts, "sent": sent}
