"""Package bytes, content-addressed by SHA-256: small ones in the database, the rest in a directory.

A package of at most ``INLINE_MAX`` bytes (and every receipt) is written into the same
transaction that records its message: the WAL commit that makes the message durable makes the
bytes durable too, so it costs no fsync of its own. ``get`` finds those through ``inline``.
Larger packages go to ``<root>/ab/<sha256>``, as follows.

A blob is written to a temporary file, fsync'd, renamed into place and its directory fsync'd
before any database commit references it, so a committed message always has its bytes. The
same bytes are stored once. The 256 fan-out directories are created (and the root fsync'd) when
the store opens, so writing a blob costs two fsyncs and never depends on a directory entry
that is not yet durable. A crash can leave only unreferenced temporary files, which ``sweep``
removes; it can never leave a half-written blob under its final name.

An upload larger than ``INLINE_MAX`` is spooled to a temporary file in the blob directory while it
arrives (``spool``); keeping it is an fsync and a rename of that file, never a copy. Reads for
the API (``open``) give the file to stream from, checked against its digest first.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from axis.errors import StoreError
from axis.keystore import fsync_directory
from axis.spool import Incoming, Spool

INLINE_MAX = 256 * 1024
"""Largest package stored in the database rather than as a file. Above it, a file's two fsyncs
cost less than writing the bytes twice (WAL, then checkpoint)."""


def check_digest(digest: str) -> str:
    """``digest`` if it is a lower-case hex SHA-256, else ``store.bad_digest`` (it names a file)."""
    if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
        raise StoreError("store.bad_digest", f"{digest!r} is not a lower-case hex SHA-256")
    return digest


def checked(digest: str, data: bytes | None) -> bytes:
    """The bytes read for ``digest``, if they are there and still match it: damage is reported,
    never passed on (every store serves package bytes through this)."""
    if data is None:
        raise StoreError("store.blob_missing", f"package {digest} is referenced but its bytes are missing")
    if hashlib.sha256(data).hexdigest() != digest:
        raise StoreError("store.blob_corrupt", f"the stored bytes of package {digest} do not match their SHA-256")
    return data


class Blobs(Protocol):
    """Where a store keeps package bytes, deciding itself what goes in the message's own
    transaction and what is written before it."""

    def spool(self) -> Spool:
        """Somewhere to receive an upload that this store can keep without copying it again."""
        ...

    def keep(self, package: Incoming) -> bytes | None:
        """Make ``package``'s bytes durable, or return them to be written in the transaction that
        records the message (then they are durable with it). A ``Incoming`` was hashed as it was
        read; the caller has matched that digest with the verified one."""
        ...

    def get(self, digest: str) -> bytes:
        """The bytes of ``digest``, checked: ``store.blob_missing``, ``store.blob_corrupt``."""
        ...

    def open(self, digest: str) -> bytes | Path | Iterator[bytes]:
        """``get``, or for a large package, what to stream it from: its file, or its pieces (each
        checked whole before it is handed over: damage is reported, never half sent)."""
        ...


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while piece := handle.read(1 << 20):
            digest.update(piece)
    return digest.hexdigest()


class BlobStore:
    def __init__(self, root: Path, inline: Callable[[str], bytes | None] = lambda digest: None) -> None:
        self.root = root
        self.inline = inline
        """Reads a package stored in the database (None when it is not there)."""
        root.mkdir(parents=True, exist_ok=True)
        missing = [root / f"{n:02x}" for n in range(256) if not (root / f"{n:02x}").is_dir()]
        for directory in missing:
            directory.mkdir(exist_ok=True)
        if missing:
            fsync_directory(root)

    def path(self, digest: str) -> Path:
        return self.root / check_digest(digest)[:2] / digest

    def spool(self) -> Spool:
        return Spool(self.root, INLINE_MAX)

    def keep(self, package: Incoming) -> bytes | None:
        if package.size <= INLINE_MAX:
            return package.read()
        final = self.path(package.sha256)
        if final.exists() and final.stat().st_size == package.size:
            return None
        if package.path is None:
            self.put(package.read())
            return None
        with package.path.open("rb") as handle:  # the spool file becomes the blob: synced, renamed
            os.fsync(handle.fileno())
        os.replace(package.path, final)
        fsync_directory(final.parent)
        return None

    def put(self, data: bytes) -> str:
        """Store ``data`` durably and return its SHA-256; a blob already present is not rewritten."""
        digest = hashlib.sha256(data).hexdigest()
        final = self.path(digest)
        if final.exists() and final.stat().st_size == len(data):
            return digest
        fd, temporary = tempfile.mkstemp(dir=final.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, final)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        fsync_directory(final.parent)
        return digest

    def open(self, digest: str) -> bytes | Path:
        path = self.path(digest)
        try:
            actual = _file_sha256(path)
        except FileNotFoundError:
            return self.get(digest)
        if actual != digest:
            raise StoreError("store.blob_corrupt", f"the stored bytes of package {digest} do not match their SHA-256")
        return path

    def get(self, digest: str) -> bytes:
        """The bytes of ``digest``, checked against it: damage on disk is reported, never passed on."""
        try:
            data: bytes | None = self.path(digest).read_bytes()
        except FileNotFoundError:
            data = self.inline(digest)
        return checked(digest, data)

    def sweep(self) -> int:
        """Remove temporary files a crash left behind; return how many."""
        removed = 0
        for leftover in [*self.root.glob(".tmp-*"), *self.root.glob("*/.tmp-*")]:  # spools, blobs being written
            leftover.unlink(missing_ok=True)
            removed += 1
        return removed
