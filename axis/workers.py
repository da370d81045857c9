"""The verification pool: CPU-bound checks in worker processes, each with a hard timeout.

Parsing and verifying a package holds the GIL, so it runs in separate processes (one per core
by default), which also keeps a hostile package from stalling the event loop.

Each worker is one process and one pipe, driven from the event loop without helper threads:
a check is two messages down the pipe (the acceptance time, then the raw bytes: nothing is
pickled on the way), and its small result comes back as one message that the loop
reads when the pipe is readable. A worker works on one check at a time while the next one
already waits in its pipe, so it does not sit idle while the busy loop gets round to reading
its result. A check's timer runs from when its worker starts on it (as far as the loop can tell:
when it was given, or when the one before it came back), so it measures that check alone.

A package that takes longer than the timeout is refused (``request.verify_timeout``) and its
worker is killed and replaced (a stuck process cannot be interrupted any other way); the other
workers and their checks are untouched, and the check that waited behind it goes to another. A
worker that dies on its own has its check run once more by another worker.

Workers are started with ``spawn`` (a fresh interpreter): forking the server itself, which runs
threads (the group committer, aiohttp's executor), could copy a held lock into the child. Each
worker watches the axis process and exits when it is gone, so a SIGKILLed axis leaves no
orphans; it ignores SIGINT, so only the axis decides when checks stop.
"""

from __future__ import annotations

import asyncio
import collections
import multiprocessing
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from axis import checking
from axis.errors import RequestRefused

LARGE = 128 * 1024
"""Packages above this size are written to a worker's pipe from a thread, not the event loop: the
socket buffer (about 200 KB) holds one package this size waiting for a busy worker; a larger one
would block the loop until the worker starts reading."""
DEPTH = 2
"""Packages given to one worker at once: the one it works on and the next, waiting in its pipe."""
READY = b"ready"


def _send(connection: Connection, header: bytes, data: bytes) -> None:
    connection.send_bytes(header)
    connection.send_bytes(data)


def watch_parent(pid: int, every: float = 1.0) -> None:
    """Exit as soon as the axis process ``pid`` no longer exists (even in the middle of a check)."""

    def watch() -> None:
        while True:
            time.sleep(every)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(0)
            except PermissionError:  # the pid was reused by a process we may not signal
                os._exit(0)

    threading.Thread(target=watch, name="axis-parent-watch", daemon=True).start()


def serve(connection: Connection, trust_directory: Path, parent: int) -> None:
    """A worker process: check packages from the pipe until it closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch_parent(parent)
    connection.send_bytes(READY)
    while True:
        try:
            at = datetime.fromisoformat(connection.recv_bytes().decode())
            data = connection.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            answer: tuple[bool, Any] = (True, checking.check(data, trust_directory, at))
        except Exception as error:  # the refusal (or failure) travels back to the request
            answer = (False, error)
        del data
        try:
            message = pickle.dumps(answer)
        except Exception:
            message = pickle.dumps((False, RuntimeError(f"verification failed: {answer[1]!r}")))
        connection.send_bytes(message)


@dataclass
class _Check:
    at: datetime
    data: bytes
    future: asyncio.Future[checking.Checked]
    attempts: int = 0


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    connection: Connection
    checks: collections.deque[_Check] = field(default_factory=collections.deque)
    """Given to it, oldest (the one it is working on) first; at most ``DEPTH``."""
    timer: asyncio.TimerHandle | None = None
    """The timeout of ``checks[0]``."""
    ready: bool = False
    """It has started (imports done) and waits for packages."""
    sending: bool = False
    """A large package is being written to its pipe from a thread: give it nothing else meanwhile."""
    watched: bool = False
    gone: bool = False


@dataclass
class VerifierPool:
    trust_directory: Path
    workers: int | None = None
    """Worker processes; None: one per core."""
    timeout: float = 10.0
    replaced: int = 0
    """Workers replaced after a timeout or a crash (exported as a metric)."""
    _context: Any = field(default_factory=lambda: multiprocessing.get_context("spawn"))
    _pool: list[_Worker] = field(default_factory=list)
    _waiting: collections.deque[_Check] = field(default_factory=collections.deque)
    _loop: asyncio.AbstractEventLoop | None = None
    _closing: bool = False

    def __post_init__(self) -> None:
        self._pool = [self._start() for _ in range(self.workers or os.cpu_count() or 1)]

    def _start(self) -> _Worker:
        ours, theirs = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=serve, args=(theirs, self.trust_directory, os.getpid()), name="axis-verify", daemon=True
        )
        process.start()
        theirs.close()
        return _Worker(process, ours)

    def warm_up(self) -> None:
        """Wait until every worker has started (imports included) rather than on the first submissions."""
        for worker in self._pool:
            if not worker.watched and not worker.ready:
                if worker.connection.recv_bytes() != READY:
                    raise RuntimeError("a verification worker did not start")
                worker.ready = True

    async def check(self, data: bytes, at: datetime) -> checking.Checked:
        """Verify in a worker. Waiting for a free worker is not timed; only the work is."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first use, or a new event loop (tests): watch the pipes from this one
            if self._loop is not None and not self._loop.is_closed():
                self._unwatch()
            for worker in self._pool:
                worker.watched = False
            self._loop = loop
        for worker in self._pool:
            self._watch(worker)
        check = _Check(at, data, loop.create_future())
        self._waiting.append(check)
        self._dispatch()
        return await check.future

    # ------------------------------------------------------------ on the event loop

    def _watch(self, worker: _Worker) -> None:
        if not worker.watched and self._loop is not None:
            worker.watched = True
            self._loop.add_reader(worker.connection.fileno(), self._readable, worker)

    def _dispatch(self) -> None:
        """Give waiting packages to workers: first one to every idle worker, then a second one each,
        queued in its pipe, so it starts on it without waiting for the loop to read its result."""
        for depth in range(1, DEPTH + 1):
            for worker in self._pool:
                while (
                    len(worker.checks) < depth and worker.ready and not worker.sending and not worker.gone and self._waiting
                ):
                    check = self._waiting.popleft()
                    if not check.future.done():  # else the request went away while it waited
                        self._give(worker, check)

    def _give(self, worker: _Worker, check: _Check) -> None:
        assert self._loop is not None
        worker.checks.append(check)
        if len(worker.checks) == 1:
            self._start_timer(worker)
        header = check.at.isoformat().encode()
        if len(check.data) > LARGE:
            worker.sending = True
            sending = self._loop.run_in_executor(None, _send, worker.connection, header, check.data)
            sending.add_done_callback(lambda done: self._sent(worker, done))
            return
        try:
            _send(worker.connection, header, check.data)
        except OSError:
            self._lost(worker)

    def _start_timer(self, worker: _Worker) -> None:
        """The timeout of the check the worker works on now: started when it starts on it (as far as
        the loop can tell: when it is given it, or when the one before it came back)."""
        assert self._loop is not None
        if worker.timer is not None:
            worker.timer.cancel()
        worker.timer = self._loop.call_later(self.timeout, self._timed_out, worker, worker.checks[0])

    def _sent(self, worker: _Worker, sending: asyncio.Future[None]) -> None:
        worker.sending = False
        if sending.cancelled() or sending.exception() is not None:
            self._lost(worker)
        else:
            self._dispatch()

    def _readable(self, worker: _Worker) -> None:
        try:
            message = worker.connection.recv_bytes()
        except (EOFError, OSError):
            self._lost(worker)
            return
        if message == READY:
            worker.ready = True
            self._dispatch()
            return
        if not worker.checks:
            return
        check = worker.checks.popleft()
        if worker.timer is not None:
            worker.timer.cancel()
            worker.timer = None
        if worker.checks:
            self._start_timer(worker)
        self._dispatch()
        if check.future.done():
            return
        ok, value = pickle.loads(message)  # noqa: S301 (our own worker, over our own pipe)
        if ok:
            check.future.set_result(value)
        else:
            check.future.set_exception(value)

    def _timed_out(self, worker: _Worker, check: _Check) -> None:
        if not worker.checks or worker.checks[0] is not check:
            return
        worker.checks.popleft()
        queued = list(worker.checks)  # not started: they go to another worker, no attempt counted
        worker.checks.clear()
        self._waiting.extendleft(reversed([c for c in queued if not c.future.done()]))
        self._replace(worker)
        if not check.future.done():
            check.future.set_exception(
                RequestRefused(
                    "request.verify_timeout",
                    f"verifying the package took longer than {self.timeout:g} s; it was abandoned",
                )
            )

    def _lost(self, worker: _Worker) -> None:
        """The worker died (or its pipe broke) on its own: its checks run once more elsewhere."""
        if worker.gone or self._closing:
            return
        lost = list(worker.checks)
        worker.checks.clear()
        if lost:
            lost[0].attempts += 1  # the one it was working on; the others had not started
        for check in reversed(lost):
            if check.future.done():
                continue
            if check.attempts < 2:
                self._waiting.appendleft(check)
            else:
                check.future.set_exception(
                    RequestRefused("request.unavailable", "the verification workers are restarting; send the package again")
                )
        self._replace(worker)

    def _replace(self, worker: _Worker) -> None:
        self._stop(worker)
        fresh = self._start()
        self._pool[self._pool.index(worker)] = fresh
        self._watch(fresh)
        self.replaced += 1
        self._dispatch()

    def _stop(self, worker: _Worker) -> None:
        worker.gone = True
        if worker.timer is not None:
            worker.timer.cancel()
        if worker.watched and self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(worker.connection.fileno())
        worker.process.kill()
        worker.connection.close()
        worker.process.join(1)  # on the loop: a killed process is reaped at once

    def close(self) -> None:
        """Stop every worker: closing its pipe ends its loop; one still busy is killed. Callable from
        any thread: the pipes leave the event loop (on its own thread) before they are closed, so a
        later pipe that reuses a descriptor number is watched afresh."""
        self._closing = True
        self._on_loop(self._unwatch)
        for worker in self._pool:
            worker.gone = True
            worker.connection.close()
        for worker in self._pool:
            worker.process.join(5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(5)

    def _unwatch(self) -> None:
        assert self._loop is not None
        for worker in self._pool:
            if worker.timer is not None:
                worker.timer.cancel()
            if worker.watched:
                worker.watched = False
                self._loop.remove_reader(worker.connection.fileno())

    def _on_loop(self, action: Callable[[], None]) -> None:
        """Run ``action`` on the pool's event loop and wait for it (directly when that is safe)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            here = asyncio.get_running_loop() is loop
        except RuntimeError:
            here = False
        if here or not loop.is_running():
            action()
            return
        done = threading.Event()

        def run() -> None:
            try:
                action()
            finally:
                done.set()

        try:
            loop.call_soon_threadsafe(run)
        except RuntimeError:  # closed meanwhile
            return
        done.wait(5)
