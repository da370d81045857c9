"""Run by test_crash.py: enqueue through the group committer from several threads until killed.

A line ``committed <message id>`` is printed only after the store returned, i.e. after the
fsync'd commit. The parent kills this process with SIGKILL at a random moment.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from pathlib import Path

from axis.store import NewMessage, SQLiteStore

RECIPIENTS = ("000.00.00.H41", "000.00.00.H14", "000.00.00.G17")


def main() -> None:
    store = SQLiteStore(Path(sys.argv[1]))
    lock = threading.Lock()

    def writer(worker: int) -> None:
        sequence = 0
        while True:
            sequence += 1
            message_id = str(uuid.uuid4())
            body = f"<edXML>{message_id}</edXML>".encode()
            digest = store.blobs.put(body)
            count = 1 + sequence % len(RECIPIENTS)
            store.enqueue(
                NewMessage(
                    id=message_id,
                    kind="document",
                    sender="000.00.00.G22",
                    document_id=f"000.00.00.G22,2026/11/21,{worker}-{sequence}-{message_id[:8]}/VPCP",
                    sha256=digest,
                    size=len(body),
                    recipients=RECIPIENTS[:count],
                    accepted_at="2026-11-21T09:00:00Z",
                ),
                now=time.time(),
                expires_at=time.time() + 3600,
            )
            with lock:
                sys.stdout.write(f"committed {message_id} {count}\n")
                sys.stdout.flush()

    threads = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(8)]
    for thread in threads:
        thread.start()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main()
