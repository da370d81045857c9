"""The push process: the POSTs to push endpoints, and the ``delivered`` receipts they earn.

Pushing one delivery costs the server process an HTTP request and, once the endpoint answers
2xx, a signature over the ``delivered`` receipt; with the store's work for the lease and the
acknowledgement, that kept the server's process at one core, its event loop and the group
committer's thread handing the GIL to each other. Both now run in one child process with its own
event loop and HTTP client, so the server's process keeps only the store's work. The child
signs with the axis key it reads itself (the same file, the same passphrase variable).

One socket pair joins the two. The server sends an attempt as two frames (the attempt, then the
package bytes, sent raw); a package the child already holds is named by its SHA-256 and not sent
again, which is what makes a package to a hundred recipients cheap. The server decides what the
child keeps (the last ``HELD_BYTES`` of packages) and tells it what to drop, so both ends always
agree. The child answers each attempt with one frame: the endpoint's status and answer and, for
a 2xx, the receipt signed over the answer's SHA-256 and stamped with the child's clock; or what
went wrong (refused connection, timeout). Frames are a 4-byte length and a pickle.

If the child dies, every attempt in flight fails (a failed attempt: the queue retries it) and the
next attempt starts a new child. It is started with ``spawn`` for the same reason as the
verification workers, watches the axis and exits when it is gone, and ignores SIGINT.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import itertools
import multiprocessing
import os
import pickle
import signal
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import aiohttp

from axis import keystore, receipts
from axis.delivery import Answer
from axis.workers import watch_parent

HELD_BYTES = 32 * 1024 * 1024
"""Package bytes the child keeps for repeated sends; a package over an eighth of it is never kept."""
ANSWER_BYTES = 64 * 1024
"""The part of an endpoint's answer read, returned and digested."""
ANSWER_GRACE = 10.0
"""Seconds past the push timeout after which the server stops waiting for the child's answer."""
READY = "ready"
_LENGTH = struct.Struct("!I")


@dataclass(frozen=True)
class Attempt:
    """What the server sends for one push (the package bytes follow it when ``carried``)."""

    number: int
    url: str
    headers: dict[str, str]
    sha256: str
    carried: bool
    keep: bool
    forget: tuple[str, ...]
    receipt: receipts.Receipt | None
    """The ``delivered`` receipt to sign after a 2xx; its time and acknowledgement are filled in."""


async def _frame(reader: asyncio.StreamReader) -> bytes:
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    return await reader.readexactly(length)


def _write(writer: asyncio.StreamWriter, *frames: bytes) -> None:
    for frame in frames:
        writer.write(_LENGTH.pack(len(frame)))
        writer.write(frame)


# ------------------------------------------------------------ the child


def serve(channel: socket.socket, keys: keystore.KeyStore, timeout: float, parent: int) -> None:
    """The push process: make the attempts read from ``channel`` until it closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch_parent(parent)
    asyncio.run(_serve(channel, keys, timeout))


async def _serve(channel: socket.socket, keys: keystore.KeyStore, timeout: float) -> None:
    key, certificate = keys.axis_signer()
    reader, writer = await asyncio.open_connection(sock=channel)
    held: dict[str, bytes] = {}
    running: dict[int, asyncio.Task[None]] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:

        async def post_and_sign(
            url: str, headers: dict[str, str], body: bytes, receipt: receipts.Receipt | None
        ) -> Answer:
            async with session.post(url, data=body, headers=headers, allow_redirects=False) as response:
                status, answer = response.status, await response.content.read(ANSWER_BYTES)
            if not 200 <= status < 300 or receipt is None:
                return status, answer, None
            at = datetime.now(UTC).isoformat()
            filled = replace(receipt, time=at, acknowledgement_sha256=hashlib.sha256(answer).hexdigest())
            return status, answer, (receipts.sign(filled, key, certificate), at)

        async def attempt(
            number: int, url: str, headers: dict[str, str], body: bytes, receipt: receipts.Receipt | None
        ) -> None:
            try:
                reply: tuple[Any, ...] = (number, "answer", await post_and_sign(url, headers, body, receipt))
            except TimeoutError as error:  # before OSError, its base class
                reply = (number, "timeout", str(error) or f"no answer within {timeout:g} s")
            except (aiohttp.ClientError, OSError) as error:
                reply = (number, "error", str(error))
            except Exception as error:  # anything else is answered too: an attempt must never wait forever
                reply = (number, "error", f"{type(error).__name__}: {error}")
            finally:
                running.pop(number, None)
            _write(writer, pickle.dumps(reply))

        _write(writer, pickle.dumps(READY))
        while True:
            try:
                message = pickle.loads(await _frame(reader))  # noqa: S301 (our own server, over our own socket)
            except (asyncio.IncompleteReadError, ConnectionError):
                break  # the server closed its end: stop
            if isinstance(message, int):  # a cancelled attempt
                if (task := running.pop(message, None)) is not None:
                    task.cancel()
                continue
            push: Attempt = message
            for digest in push.forget:
                held.pop(digest, None)
            if push.carried:
                body = await _frame(reader)
                if push.keep:
                    held[push.sha256] = body
            else:
                body = held[push.sha256]
            running[push.number] = asyncio.create_task(
                attempt(push.number, push.url, push.headers, body, push.receipt)
            )
        for task in list(running.values()):
            task.cancel()
    writer.close()


# ------------------------------------------------------------ the server's end


@dataclass
class _Child:
    process: multiprocessing.process.BaseProcess
    writer: asyncio.StreamWriter
    ready: asyncio.Future[None]
    held: collections.OrderedDict[str, int] = field(default_factory=collections.OrderedDict)
    """What the child keeps: SHA-256 → size, oldest first."""
    held_size: int = 0
    reading: asyncio.Task[None] | None = None
    gone: bool = False


@dataclass
class Pusher:
    """The server's end of the push process: ``post`` is the dispatcher's ``Post``."""

    keys: keystore.KeyStore
    timeout: float
    started: int = 0
    """Push processes started so far (a restart after a crash counts)."""
    _child: asyncio.Future[_Child] | None = None
    _waiting: dict[int, asyncio.Future[tuple[str, Any]]] = field(default_factory=dict)
    _numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    async def start(self) -> None:
        """Start the child and wait until it is ready (its imports done), so the first push is not slow."""
        await self._running()

    async def _running(self) -> _Child:
        starting = self._child
        if starting is None or (
            starting.done() and (starting.exception() is not None or starting.result().gone)
        ):  # one start, whichever attempts wait for it
            starting = self._child = asyncio.ensure_future(self._start())
        return await asyncio.shield(starting)

    async def _start(self) -> _Child:
        ours, theirs = socket.socketpair()
        process = multiprocessing.get_context("spawn").Process(
            target=serve, args=(theirs, self.keys, self.timeout, os.getpid()), name="axis-push", daemon=True
        )
        process.start()
        theirs.close()
        self.started += 1
        reader, writer = await asyncio.open_connection(sock=ours)
        child = _Child(process, writer, asyncio.get_running_loop().create_future())
        child.reading = asyncio.create_task(self._read(child, reader), name="push process answers")
        await child.ready
        return child

    async def post(
        self, url: str, body: bytes, headers: dict[str, str], receipt: receipts.Receipt | None
    ) -> Answer:
        """One attempt in the push process: (status, answer, signed receipt); raises OSError or
        TimeoutError for an attempt that got no HTTP answer."""
        child = await self._running()
        if child.gone:  # it died between its start and this attempt
            raise OSError("the push process stopped before the attempt was handed to it")
        sha256 = headers["X-Axis-Sha256"]
        number = next(self._numbers)
        future: asyncio.Future[tuple[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[number] = future
        carried = sha256 not in child.held
        keep = carried and len(body) <= HELD_BYTES // 8
        forget = []
        if keep:
            child.held[sha256] = len(body)
            child.held_size += len(body)
            while child.held_size > HELD_BYTES:
                digest, size = child.held.popitem(last=False)
                child.held_size -= size
                forget.append(digest)
        elif not carried:
            child.held.move_to_end(sha256)
        attempt = Attempt(number, url, headers, sha256, carried, keep, tuple(forget), receipt)
        try:
            _write(child.writer, pickle.dumps(attempt), *([body] if carried else []))
            await child.writer.drain()
            if child.gone:
                raise ConnectionError("it exited")
            async with asyncio.timeout(self.timeout + ANSWER_GRACE):  # a stuck child fails the attempt too
                kind, value = await future
        except (asyncio.CancelledError, TimeoutError) as stopped:
            if self._waiting.pop(number, None) is not None and not child.writer.is_closing():
                _write(child.writer, pickle.dumps(number))  # the child cancels its POST too
            if isinstance(stopped, TimeoutError):
                raise TimeoutError(
                    f"the push process did not answer within {self.timeout + ANSWER_GRACE:g} s"
                ) from None
            raise
        except ConnectionError as error:
            self._waiting.pop(number, None)
            raise OSError(f"the push process stopped: {error}") from None
        if kind == "answer":
            return value  # type: ignore[no-any-return]
        raise TimeoutError(value) if kind == "timeout" else OSError(value)

    async def _read(self, child: _Child, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                message = pickle.loads(await _frame(reader))  # noqa: S301 (our own child, over our own socket)
                if message == READY:
                    child.ready.set_result(None)
                    continue
                number, kind, value = message
                future = self._waiting.pop(number, None)
                if future is not None and not future.done():
                    future.set_result((kind, value))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:  # the child is gone: what it had in flight failed; the next attempt starts another
            child.gone = True
            if not child.ready.done():
                child.ready.set_exception(OSError("the push process exited before it was ready"))
            child.writer.close()
            stopped = OSError("the push process stopped before the endpoint answered")
            for number in list(self._waiting):
                future = self._waiting.pop(number)
                if not future.done():
                    future.set_exception(stopped)
            await asyncio.to_thread(child.process.join, 5)

    async def close(self) -> None:
        """Stop the child: closing its socket ends it; one that does not end is killed."""
        starting, self._child = self._child, None
        if starting is None:
            return
        try:
            child = await starting
        except OSError:
            return
        child.writer.close()
        await asyncio.to_thread(child.process.join, 5)
        if child.process.is_alive():
            child.process.kill()
            await asyncio.to_thread(child.process.join, 5)
        if child.reading is not None:
            await asyncio.gather(child.reading, return_exceptions=True)
