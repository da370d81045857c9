"""The drop-folder bridge: legacy agency software exchanges files in folders (``adapters.layout``),
the bridge talks to the axis. ``axis adapter folder --dir D --agency ID ...``.

Sending. A file in ``<OrganId>/outbox/`` is taken once it has not changed for ``settle`` seconds
(software should still write to a hidden or ``.part`` name and rename; those are ignored):

1. *Prepare*: ``*.edxml`` is sent as it is when signed, signed with the agency's key when not;
   ``*.json`` is a description (``adapters.description``) built into a package with its
   attachments and signed. The bytes to send are written to ``.axis/sending/`` (fsync'd) before
   anything goes out, so a restart sends the very same bytes.
2. *Send*: the axis answers a resubmission of the same bytes with the original receipt, so
   sending again after a crash duplicates nothing.
3. *Finish*: the receipt goes to ``sent/<name>.receipt.xml``, the file (and its attachments, and the
   signed package when the bridge signed it) into ``sent/``, then the prepared bytes are removed.
   A refusal moves the file to ``error/`` with ``<name>.reason`` (the code and what to do).
   Connection errors and "busy" answers leave the file where it is, to be tried again.

Receiving runs the pull loop of ``AxisClient.receive`` into the layout (exactly once, see
``Layout.hand``). A push endpoint uses ``adapters.webhook`` with the same layout instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import stat
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from adapters.client import AxisClient, Entry, Received, Sent, Signer
from adapters.description import Description
from adapters.layout import Layout, move, place
from axis import edxml, signing, xmlguard
from axis.errors import AdapterError, AxisError, Refused
from axis.keystore import write_public

log = logging.getLogger("axis.adapter.folder")
PACKAGE_SUFFIXES = (".edxml", ".json")


def signers_in(directory: Path | None, agencies: tuple[str, ...], passphrase: bytes | None = None) -> dict[str, Signer]:
    """``ORGANID.key`` + ``ORGANID.pem`` for each agency that has them in ``directory``."""
    found = {}
    for agency in agencies:
        key, certificate = (directory / f"{agency}.key", directory / f"{agency}.pem") if directory else (None, None)
        if key is not None and certificate is not None and key.is_file() and certificate.is_file():
            found[agency] = Signer.from_files(key, certificate, passphrase)
    return found


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def is_signed(data: bytes) -> bool:
    root = xmlguard.parse(data)
    return bool(root.findall(f".//{signing.ds('Signature')}"))


@dataclass
class Outgoing:
    agency: str
    source: Path
    prepared: Path

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def recorded(self) -> Path:
        """The SHA-256 of the source when it was prepared."""
        return self.prepared.with_suffix(".source")


class FolderBridge:
    def __init__(
        self, layout: Layout, client: AxisClient, signers: dict[str, Signer], *, settle: float = 1.0, poll: float = 1.0
    ) -> None:
        self.layout = layout
        self.client = client
        self.signers = signers
        self.settle = settle
        self.poll = poll
        self.retry_at: dict[Path, float] = {}
        self.last_seen: dict[Path, tuple[tuple[int, int], ...]] = {}
        """What each outbox file (and its attachments) looked like at the last look."""

    # ------------------------------------------------------------ sending

    def waiting(self) -> list[Outgoing]:
        """Prepared packages left by an earlier run first, then settled files in every outbox."""
        found: list[Outgoing] = []
        now = time.time()
        for agency in self.layout.agencies:
            outbox = self.layout.folder(agency, "outbox")
            sending = self.layout.sending / agency
            prepared = {p.name.removesuffix(".edxml") for p in sending.glob("*.edxml") if not p.name.startswith(".")}
            for name in sorted(prepared):
                found.append(Outgoing(agency, outbox / name, sending / f"{name}.edxml"))
            for source in sorted(outbox.iterdir()):
                wanted = source.suffix in PACKAGE_SUFFIXES and not source.name.startswith(".")
                if wanted and source.name not in prepared and self._settled(source, now):
                    found.append(Outgoing(agency, source, sending / f"{source.name}.edxml"))
        return [o for o in found if self.retry_at.get(o.prepared, 0) <= time.monotonic()]

    def _settled(self, source: Path, now: float) -> bool:
        """Unchanged (size and modification time, its attachments' too) since the last look and
        for ``settle`` seconds: software that copies without renaming has finished writing."""
        try:
            paths = [source, *self._companions(source)]
            stats = [p.lstat() for p in paths]
        except OSError:
            return False
        if not all(stat.S_ISREG(s.st_mode) for s in stats):  # symlinks and devices are not sent
            return False
        shape = tuple((s.st_size, s.st_mtime_ns) for s in stats)
        previous, self.last_seen[source] = self.last_seen.get(source), shape
        return previous == shape and now - max(s.st_mtime for s in stats) >= self.settle

    def _prepare(self, outgoing: Outgoing) -> bytes:
        if outgoing.prepared.exists():
            return outgoing.prepared.read_bytes()
        agency = outgoing.agency
        signer = self.signers.get(agency)
        if outgoing.source.suffix == ".json":
            unsigned = edxml.build(Description.load(outgoing.source).package(agency, datetime.now(UTC).astimezone()))
        else:
            unsigned = outgoing.source.read_bytes()
        package = unsigned
        if outgoing.source.suffix == ".json" or not is_signed(unsigned):
            if signer is None:
                raise AdapterError(
                    "adapter.no_key",
                    f"{outgoing.name} is not signed and the bridge has no key for {agency}; give --keys DIR with {agency}.key and {agency}.pem",
                )
            package = signer.sign(unsigned)
        sender = edxml.parse(package).sender.organ_id
        if sender != agency:
            raise AdapterError(
                "adapter.sender_mismatch", f"{outgoing.name} is sent by {sender}, but it was dropped in the outbox of {agency}"
            )
        write_public(outgoing.recorded, _digest(outgoing.source).encode())
        write_public(outgoing.prepared, package)  # its existence is the commit point
        return package

    @staticmethod
    def _companions(source: Path) -> list[Path]:
        """The attachments a description names (they travel with it to sent/ or error/)."""
        if source.suffix != ".json" or not source.exists():
            return []
        try:
            return Description.load(source).attachment_paths()
        except AxisError:
            return []

    @staticmethod
    def _ours(outgoing: Outgoing) -> bool:
        """The file in the outbox is the one that was prepared, not a new one under the same name."""
        try:
            return _digest(outgoing.source) == outgoing.recorded.read_text()
        except OSError:
            return False

    def _finish(self, outgoing: Outgoing, sent: Sent) -> None:
        """Every step can run again after a crash and leaves the same result."""
        folder = self.layout.folder(outgoing.agency, "sent")
        suffix = sent.message_id[:8]
        prepared = outgoing.prepared.read_bytes()
        ours = self._ours(outgoing)
        if outgoing.source.suffix == ".json" or (ours and outgoing.source.read_bytes() != prepared):
            place(folder, f"{outgoing.source.stem}.signed.edxml", prepared, suffix)
        if ours:
            for path in [*self._companions(outgoing.source), outgoing.source]:
                if path.exists():
                    move(path, folder, suffix)
        place(folder, f"{outgoing.name}.receipt.xml", sent.receipt, suffix)
        outgoing.prepared.unlink()
        outgoing.recorded.unlink(missing_ok=True)
        log.info("sent %s/%s as %s to %s", outgoing.agency, outgoing.name, sent.message_id, ", ".join(sent.recipients))

    def _fail(self, outgoing: Outgoing, error: AxisError) -> None:
        folder = self.layout.folder(outgoing.agency, "error")
        suffix = time.strftime("%Y%m%d%H%M%S")
        target = folder / outgoing.name
        if outgoing.source.exists() and (self._ours(outgoing) or not outgoing.prepared.exists()):
            for path in self._companions(outgoing.source):
                move(path, folder, suffix)
            target = move(outgoing.source, folder, suffix)
        write_public(target.with_name(f"{target.name}.reason"), f"{error.code}\n{error.message}\n".encode())
        outgoing.prepared.unlink(missing_ok=True)
        outgoing.recorded.unlink(missing_ok=True)
        log.warning("refused %s/%s: %s", outgoing.agency, outgoing.name, error)

    async def send_one(self, outgoing: Outgoing) -> Sent | None:
        """Send one file; a refusal of the package moves it to error/, trouble on this side or
        at the axis (down, busy, a revoked token, a missing attachment not yet copied) leaves it
        to be tried again."""
        try:
            data = await asyncio.to_thread(self._prepare, outgoing)
            sent = await self.client.send(data)
        except AxisError as error:
            if self._not_the_package(outgoing, error):
                self._later(outgoing, error)
            else:
                await asyncio.to_thread(self._fail, outgoing, error)
            return None
        except (ValueError, TypeError) as error:  # a description with values of the wrong type or characters
            refusal = AdapterError("adapter.invalid_description", f"{outgoing.name} does not make a package: {error}")
            await asyncio.to_thread(self._fail, outgoing, refusal)
            return None
        except OSError as error:  # the file went away, the disk is full: try again later
            self._later(outgoing, AdapterError("adapter.unreachable", f"{outgoing.name}: {error}"))
            return None
        await asyncio.to_thread(self._finish, outgoing, sent)
        return sent

    @staticmethod
    def _not_the_package(outgoing: Outgoing, error: AxisError) -> bool:
        if isinstance(error, Refused):
            return error.transient or error.code.startswith("auth.") or error.status in (404, 405, 407, 408)
        if error.code == "adapter.attachment_missing":  # still being copied, perhaps: give it 5 minutes
            return outgoing.source.exists() and time.time() - outgoing.source.stat().st_mtime < 300
        return error.code in ("adapter.unreachable", "adapter.no_trust", "adapter.receipt_mismatch")

    def _later(self, outgoing: Outgoing, error: AxisError) -> None:
        log.warning("will retry %s/%s: %s", outgoing.agency, outgoing.name, error)
        self.retry_at[outgoing.prepared] = time.monotonic() + self.poll * 5

    async def send_waiting(self) -> int:
        sent = 0
        for outgoing in self.waiting():
            sent += await self.send_one(outgoing) is not None
        return sent

    async def sending(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.send_waiting()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll)

    # ------------------------------------------------------------ receiving

    async def receiving(self, stop: asyncio.Event, wait: float = 20) -> None:
        async def hand(received: Received) -> None:
            path = await asyncio.to_thread(self.layout.hand, received)
            if path is not None:
                log.info("received %s", path.relative_to(self.layout.root))

        async def rejected(entry: Entry, data: bytes, error: AxisError) -> None:
            await asyncio.to_thread(self.layout.reject, entry.recipient, entry.message_id, data, error)
            log.warning("rejected %s for %s: %s", entry.message_id, entry.recipient, error)

        while not stop.is_set():
            try:
                await self.client.receive(hand, agency=self.layout.agencies, wait=wait, stop=stop, rejected=rejected)
            except (AdapterError, Refused, OSError) as error:
                if isinstance(error, Refused) and not error.transient:
                    raise  # a revoked token, say: stop loudly rather than spin
                log.warning("will retry receiving: %s", error)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll * 5)

    async def run(self, stop: asyncio.Event, *, receive: bool = True) -> None:
        """Send and (for a pull endpoint) receive until ``stop`` is set."""
        self.layout.recover()
        tasks = [asyncio.ensure_future(self.sending(stop))]
        if receive:
            tasks.append(asyncio.ensure_future(self.receiving(stop)))
        stopping = asyncio.ensure_future(stop.wait())
        try:
            done, _ = await asyncio.wait([*tasks, stopping], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopping:
                    task.result()  # a loop that died raises here
        finally:
            for task in [*tasks, stopping]:
                task.cancel()
            await asyncio.gather(*tasks, stopping, return_exceptions=True)
