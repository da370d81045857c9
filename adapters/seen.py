"""The adapters' memory of what they have handed on: one small SQLite file per adapter.

The axis delivers at least once (a crash between its push and its commit repeats the push; a
pulled package stays in the inbox until it is acknowledged). An adapter records each (message,
recipient) it has handed to the agency's software and hands nothing twice. Commits are durable
(WAL, synchronous=FULL) before anything is acknowledged to the axis.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path


class Seen:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS seen (message_id TEXT NOT NULL, recipient TEXT NOT NULL,"
            " kind TEXT NOT NULL, outcome TEXT NOT NULL, at TEXT NOT NULL, PRIMARY KEY (message_id, recipient))"
        )

    def has(self, message_id: str, recipient: str) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM seen WHERE message_id = ? AND recipient = ?", (message_id, recipient)
            ).fetchone()
        return row is not None

    def add(self, message_id: str, recipient: str, kind: str, outcome: str) -> None:
        """Remember (durably) that this package was handed on, or why it was not."""
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO seen VALUES (?, ?, ?, ?, ?)",
                (message_id, recipient, kind, outcome, datetime.now(UTC).isoformat()),
            )

    def outcomes(self) -> dict[tuple[str, str], str]:
        with self._lock:
            rows = self._db.execute("SELECT message_id, recipient, outcome FROM seen").fetchall()
        return {(m, r): o for m, r, o in rows}

    def close(self) -> None:
        with self._lock:
            self._db.close()
