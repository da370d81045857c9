"""The folder layout that legacy agency software reads and writes, one tree per agency served:

    DIR/<OrganId>/outbox/     the software drops *.edxml (signed or not) or *.json + attachments
    DIR/<OrganId>/sent/       what went, each with <name>.receipt.xml (the axis's signed receipt)
    DIR/<OrganId>/error/      what the axis (or the bridge) refused, each with <name>.reason
    DIR/<OrganId>/inbox/      documents received and verified: <message id>.edxml
    DIR/<OrganId>/status/     statuses received and verified: <message id>.edxml
    DIR/<OrganId>/receipts/   delivered/failed receipts: <message id>.<kind>.<recipient>.xml
    DIR/.axis/                the adapter's own state (dedupe, files in flight); not for the software

A platform serving many agencies (a province's platform and its departments) gets one tree per
OrganId, so each department's software reads only its own folders.

A file appears in a folder the software reads only by a rename of a complete, fsync'd file, and
each received package appears exactly once: it is written under ``.axis/incoming/``, remembered in
the dedupe, then renamed into place; ``recover`` finishes or discards what a crash left halfway.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterable
from pathlib import Path

from adapters.client import Received
from adapters.seen import Seen
from axis.errors import AdapterError, AxisError
from axis.identifiers import organ_id
from axis.keystore import fsync_directory, write_public

FOLDERS = ("outbox", "sent", "error", "inbox", "status", "receipts")
SAFE_NAME = re.compile(r"[A-Za-z0-9._+-]{1,200}")
RECEIVED_INTO = {"document": "inbox", "status": "status", "receipt": "receipts"}


def move(source: Path, folder: Path, suffix: str) -> Path:
    """Rename ``source`` into ``folder`` under its own name, or ``name~suffix`` (``~suffix-2``, ...)
    when that is taken: nothing already there is overwritten."""
    target, n = folder / source.name, 1
    while target.exists() or target.is_symlink():
        target = folder / f"{source.stem}~{suffix}{f'-{n}' if n > 1 else ''}{source.suffix}"
        n += 1
    os.replace(source, target)
    fsync_directory(folder)
    return target


def place(folder: Path, name: str, data: bytes, suffix: str) -> Path:
    """Write ``data`` as ``folder/name``, or ``name~suffix`` when another file has that name; a
    file already there with these very bytes is left as it is (the step ran before a crash)."""
    path = folder / name
    if path.exists() and path.read_bytes() != data:
        stem, dot, extension = name.partition(".")
        path = folder / f"{stem}~{suffix}{dot}{extension}"
    if not path.exists() or path.read_bytes() != data:
        write_public(path, data)
    return path


def safe_name(name: str) -> str:
    """A name that comes from outside (a message id, an OrganId) used as a file name: it must stay
    one file name in its folder."""
    if not SAFE_NAME.fullmatch(name) or name.startswith("."):
        raise AdapterError("adapter.bad_push", f"{name[:80]!r} cannot name a file")
    return name


class Layout:
    def __init__(self, root: Path, agencies: Iterable[str]) -> None:
        self.root = root
        self.agencies = tuple(agencies)
        if not self.agencies:
            raise AdapterError("adapter.no_agency", "name at least one agency to serve (--agency ORGANID)")
        for agency in self.agencies:
            organ_id(agency)  # a folder name: only a valid OrganId
        self.state = root / ".axis"
        self.state.mkdir(parents=True, exist_ok=True)
        self._lock = os.open(self.state / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock)
            raise AdapterError("adapter.folder_in_use", f"another adapter is already running on {root}; run one per folder tree") from None
        self.incoming = self.state / "incoming"
        self.sending = self.state / "sending"
        for agency in self.agencies:
            for name in FOLDERS:
                (root / agency / name).mkdir(parents=True, exist_ok=True)
            (self.incoming / agency).mkdir(parents=True, exist_ok=True)
            (self.sending / agency).mkdir(parents=True, exist_ok=True)
        self.seen = Seen(self.state / "seen.sqlite3")

    def folder(self, agency: str, name: str) -> Path:
        if agency not in self.agencies:
            raise AdapterError("adapter.not_served", f"this adapter does not serve {agency}")
        return self.root / agency / name

    def _target(self, received: Received) -> Path:
        entry = received.entry
        if received.receipt is not None:
            r = received.receipt.receipt
            name = f"{r.message_id}.{r.kind}.{'+'.join(r.recipients) or 'all'}.xml"
        else:
            name = f"{entry.message_id}.edxml"
        return self.folder(entry.recipient, RECEIVED_INTO[entry.kind]) / safe_name(name)

    def hand(self, received: Received) -> Path | None:
        """Put a verified package where the agency's software reads it, once. Returns its path,
        or None when it was handed before."""
        entry = received.entry
        target = self._target(received)
        if self.seen.has(entry.message_id, entry.recipient):
            return None
        staged = self.incoming / target.relative_to(self.root)
        staged.parent.mkdir(parents=True, exist_ok=True)
        write_public(staged, received.data)
        self.seen.add(entry.message_id, entry.recipient, entry.kind, str(target.relative_to(self.root)))
        os.replace(staged, target)
        fsync_directory(target.parent)
        return target

    def reject(self, agency: str, message_id: str, data: bytes, error: AxisError) -> None:
        """A package that failed verification here: kept in ``error/`` with the reason, for a person."""
        folder = self.folder(agency, "error")
        message_id = safe_name(message_id)
        write_public(folder / f"{message_id}.edxml", data)
        write_public(folder / f"{message_id}.edxml.reason", f"{error.code}\n{error.message}\n".encode())

    def recover(self) -> None:
        """Finish what a crash interrupted: a staged file the dedupe remembers goes into place, any
        other is discarded (the axis has not been acknowledged, so it will come again)."""
        handed = set(self.seen.outcomes().values())
        for staged in sorted(self.incoming.rglob("*")):
            if not staged.is_file():
                continue
            relative = staged.relative_to(self.incoming)
            if staged.name.startswith(".") or str(relative) not in handed:
                staged.unlink()
            else:
                os.replace(staged, self.root / relative)
                fsync_directory((self.root / relative).parent)
