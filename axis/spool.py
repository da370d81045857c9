"""A package as it arrives: hashed while it is read, held in memory while small, spooled to a
file past that, so a 50 MB upload never sits whole in the server's memory.

The store decides where the line is (``store.blobs.spool()``: packages it keeps in the database stay
in memory; the rest go to a file it can take over by renaming, without copying), the verification
workers read a spooled package from its file, and the file is removed once the package is stored
or refused (``Incoming.discard``; a crash leaves it to the store's sweep of temporary files).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Incoming:
    """A whole package: its SHA-256 and length, and its bytes in memory (``data``) or in a spool
    file (``path``), exactly one of the two."""

    sha256: str
    size: int
    data: bytes | None = None
    path: Path | None = None

    @classmethod
    def of(cls, data: bytes) -> Incoming:
        """Bytes held in memory already, kept in memory whatever their size (front ends go through
        ``exchange.spooled`` instead, which spools what the store keeps apart)."""
        return cls(hashlib.sha256(data).hexdigest(), len(data), data=data)

    def read(self) -> bytes:
        """The bytes, read from the spool file if that is where they are."""
        if self.data is not None:
            return self.data
        assert self.path is not None
        return self.path.read_bytes()

    def discard(self) -> None:
        """Remove the spool file, if it is still there (a store that took it over renamed it)."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class Spool:
    """Receives a package piece by piece. Up to ``in_memory`` bytes stay in memory; the first piece
    past that moves everything to a new file in ``directory`` (named ``.tmp-*``)."""

    def __init__(self, directory: Path, in_memory: int) -> None:
        self.directory = directory
        self.in_memory = in_memory
        self.size = 0
        self._hash = hashlib.sha256()
        self._pieces: list[bytes] = []
        self._file: int | None = None
        self._path: Path | None = None

    @property
    def spilled(self) -> bool:
        """Whether the bytes go to a file (writes then touch the disk: callers on an event loop
        may hand them to a thread)."""
        return self._file is not None

    def write(self, piece: bytes) -> None:
        self._hash.update(piece)
        self.size += len(piece)
        if self._file is None and self.size > self.in_memory:
            fd, name = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
            self._file, self._path = fd, Path(name)
            pieces, self._pieces = self._pieces, []
            for earlier in pieces:
                self._write(earlier)
        if self._file is None:
            self._pieces.append(piece)
        else:
            self._write(piece)

    def _write(self, piece: bytes) -> None:
        assert self._file is not None
        view = memoryview(piece)
        while view:
            view = view[os.write(self._file, view) :]

    def finish(self) -> Incoming:
        """The package, whole. The file is not fsync'd here: the store does that when it keeps it."""
        digest = self._hash.hexdigest()
        if self._file is None:
            return Incoming(digest, self.size, data=b"".join(self._pieces))
        os.close(self._file)
        self._file = None
        return Incoming(digest, self.size, path=self._path)

    def discard(self) -> None:
        """Give up on a package that did not arrive whole."""
        if self._file is not None:
            os.close(self._file)
            self._file = None
        if self._path is not None:
            self._path.unlink(missing_ok=True)
        self._pieces = []
