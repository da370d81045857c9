"""Crash consistency: SIGKILL a writer at random moments; nothing it reported committed is lost.

After each kill the store is reopened and checked: every message the writer reported is
there with exactly its deliveries and its bytes, no message is half-written (a message row
without all its deliveries, or deliveries without a message), and the event chain verifies.
"""

from __future__ import annotations

import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from axis.store import Agency, SQLiteStore
from tests.conftest import REPO

KILLS = 50


def _collect(process: subprocess.Popen[bytes], seconds: float) -> list[bytes]:
    """Read the writer's output for ``seconds``; return complete lines only."""
    assert process.stdout is not None
    buffer = b""
    deadline = time.monotonic() + seconds
    fd = process.stdout.fileno()
    while (remaining := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buffer += chunk
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    while chunk := os.read(fd, 65536):  # what was written before the kill
        buffer += chunk
    return buffer.split(b"\n")[:-1]


def test_sigkill_loses_nothing_reported_committed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    setup = SQLiteStore(data)
    for organ_id in ("000.00.00.G22", "000.00.00.H41", "000.00.00.H14", "000.00.00.G17"):
        setup.add_agency(Agency(organ_id, "qcvn102", organ_id, "2026-11-21T09:00:00Z"))
    setup.close()
    reported: dict[str, int] = {}
    rng = random.Random(20261121)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for _ in range(KILLS):
        writer = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("crash_writer.py")), str(data)],
            stdout=subprocess.PIPE,
            env=env,
        )
        for line in _collect(writer, rng.uniform(0.25, 0.6)):
            if line.startswith(b"committed "):
                _, message_id, count = line.decode().split()
                reported[message_id] = int(count)

        store = SQLiteStore(data)  # reopening also sweeps temporary blob files
        try:
            db = sqlite3.connect(store.path)
            counts = dict(
                db.execute(
                    "SELECT m.id, count(d.id) FROM messages m LEFT JOIN deliveries d ON d.message_id = m.id GROUP BY m.id"
                ).fetchall()
            )
            orphans = db.execute(
                "SELECT count(*) FROM deliveries WHERE message_id NOT IN (SELECT id FROM messages)"
            ).fetchone()[0]
            missing = [m for m in reported if m not in counts]
            assert missing == [], f"{len(missing)} messages reported committed are gone"
            assert all(counts[m] == n for m, n in reported.items()), "a reported message lost deliveries"
            assert orphans == 0
            for message_id, sha256 in db.execute("SELECT id, sha256 FROM messages"):
                assert message_id.encode() in store.blobs.get(sha256)  # bytes present and intact
            assert 0 < counts.get(next(iter(counts)), 0) <= 3
            report = store.verify_chain()
            assert report.events >= len(counts)
            assert not list(store.blobs.root.glob("*/.tmp-*"))
            db.close()
        finally:
            store.close()
    assert len(reported) > KILLS  # the writer really committed between kills
