"""The verification pool: CPU-bound checks in worker processes, each with a hard timeout.

Parsing and verifying a package holds the GIL, so it runs in separate processes (one per core
by default), which also keeps a hostile package from stalling the event loop.

Each worker is one process and one pipe, driven from the event loop without helper threads:
a check is one or two messages down the pipe (the acceptance time, then the raw bytes;
or, for a package the server spooled to a file, the time and the file's path, which the worker
reads itself: nothing is pickled on the way, and a large package's bytes never pass through the
server's memory or the pipe), and its small result comes back as one message that the loop
reads when the pipe is readable. A worker works on one check at a time while the next one
already waits in its pipe, so it does not sit idle while the busy loop gets round to reading
its result. A check's timer runs from when its worker starts on it (as far as the loop can tell:
when it was given, or when the one before it came back), so it measures that check alone.

Checks wait in one queue per endpoint, and a free worker takes the next check of the endpoint with
the fewest bytes in the workers (round robin among equals): one endpoint sending a stream of heavy
packages holds at most its share of the workers while others wait, and a package of ten
kilobytes does not wait behind megabytes of someone else's. A large package gets no
second check queued behind it in its worker's pipe. Each worker's address space is capped
(``memory``): a package needing more is refused (``request.too_complex``) and the worker replaced.

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
import resource
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
from axis.spool import Incoming

LARGE = 128 * 1024
"""Packages above this size are written to a worker's pipe from a thread, not the event loop: the
socket buffer (about 200 KB) holds one package this size waiting for a busy worker; a larger one
would block the loop until the worker starts reading."""
DEPTH = 2
"""Packages given to one worker at once: the one it works on and the next, waiting in its pipe."""
READY = b"ready"
TOO_COMPLEX = RequestRefused(
    "request.too_complex",
    "verifying the package needs more memory than a verification worker may use ([server] verify_memory);"
    " split its attachments across packages",
)


def _send(connection: Connection, header: bytes, data: bytes | None) -> None:
    connection.send_bytes(header)
    if data is not None:
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


def _peak_address_space() -> int:
    """The most address space this process has held (VmPeak), in bytes; 0 where /proc is not there."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmPeak:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def serve(connection: Connection, trust_directory: Path, parent: int, memory: int = 0) -> None:
    """A worker process: check packages from the pipe until it closes. With ``memory``, its address
    space is capped there; a check that runs out of it is refused and the worker ends (the pool
    starts another): a process that has seen MemoryError is not trusted further."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if memory > 0:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    watch_parent(parent)
    connection.send_bytes(READY)
    while True:
        try:
            stamp, _, spooled = connection.recv_bytes().decode().partition("\n")
            at = datetime.fromisoformat(stamp)
            data: bytes | Path = Path(spooled) if spooled else connection.recv_bytes()
        except (EOFError, OSError):
            return
        exhausted = False
        try:
            answer: tuple[bool, Any] = (True, checking.check(data, trust_directory, at))
        except Exception as error:  # the refusal (or failure) travels back to the request
            # libxml2 reports an allocation it could not make in its own words ("unknown error"):
            # a refusal while the process's address space reached the cap is the cap's doing.
            exhausted = isinstance(error, MemoryError) or (memory > 0 and _peak_address_space() > 0.9 * memory)
            answer = (False, TOO_COMPLEX if exhausted else error)
        del data
        try:
            message = pickle.dumps(answer)
        except Exception:
            message = pickle.dumps((False, RuntimeError(f"verification failed: {answer[1]!r}")))
        connection.send_bytes(message)
        if exhausted:
            return


@dataclass
class _Check:
    at: datetime
    package: Incoming
    future: asyncio.Future[checking.Checked]
    owner: str = ""
    """Who sent it (an endpoint's name): checks are shared out fairly between senders."""
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
    memory: int = 0
    """Address space each worker may use, in bytes; 0 = not capped."""
    replaced: int = 0
    """Workers replaced after a timeout or a crash (exported as a metric)."""
    _context: Any = field(default_factory=lambda: multiprocessing.get_context("spawn"))
    _pool: list[_Worker] = field(default_factory=list)
    _waiting: dict[str, collections.deque[_Check]] = field(default_factory=dict)
    """Checks not yet given to a worker, per owner, the owner served longest ago first."""
    _running: collections.Counter[str] = field(default_factory=collections.Counter)
    """Bytes of the checks in the workers, per owner."""
    _loop: asyncio.AbstractEventLoop | None = None
    _closing: bool = False

    def __post_init__(self) -> None:
        self._pool = [self._start() for _ in range(self.workers or os.cpu_count() or 1)]

    def _start(self) -> _Worker:
        ours, theirs = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=serve, args=(theirs, self.trust_directory, os.getpid(), self.memory), name="axis-verify", daemon=True
        )
        process.start()
        theirs.close()
        return _Worker(process, ours)

    def live_workers(self) -> int:
        return sum(not worker.gone for worker in self._pool)

    def waiting(self) -> int:
        """Checks waiting for a worker."""
        return sum(len(queue) for queue in self._waiting.values())

    def warm_up(self) -> None:
        """Wait until every worker has started (imports included) rather than on the first submissions."""
        for worker in self._pool:
            if not worker.watched and not worker.ready:
                if worker.connection.recv_bytes() != READY:
                    raise RuntimeError("a verification worker did not start")
                worker.ready = True

    async def check(self, package: Incoming, at: datetime, owner: str = "") -> checking.Checked:
        """Verify in a worker (a spooled package is read by the worker from its file). Waiting for a
        free worker is not timed; only the work is. ``owner`` (who sent it) decides its turn: the
        sender with the fewest bytes in the workers goes next."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first use, or a new event loop (tests): watch the pipes from this one
            if self._loop is not None and not self._loop.is_closed():
                self._unwatch()
            for worker in self._pool:
                worker.watched = False
            self._loop = loop
        for worker in self._pool:
            self._watch(worker)
        check = _Check(at, package, loop.create_future(), owner)
        self._wait(check)
        self._dispatch()
        return await check.future

    # ------------------------------------------------------------ on the event loop

    def _watch(self, worker: _Worker) -> None:
        if not worker.watched and self._loop is not None:
            worker.watched = True
            self._loop.add_reader(worker.connection.fileno(), self._readable, worker)

    def _wait(self, check: _Check, first: bool = False) -> None:
        """Queue a check with its owner's (``first``: at the head, for one that was already given)."""
        queue = self._waiting.setdefault(check.owner, collections.deque())
        if first:
            queue.appendleft(check)
        else:
            queue.append(check)

    def _next(self) -> _Check | None:
        """The next check to give: its owner has the fewest bytes in the workers; among equals, the
        one served longest ago. Checks whose request went away are dropped here."""
        while self._waiting:
            owner = min(self._waiting, key=self._running.__getitem__)  # dict order: served longest ago first
            queue = self._waiting.pop(owner)
            check = queue.popleft()
            if queue:
                self._waiting[owner] = queue  # back of the line
            if not check.future.done():
                return check
        return None

    def _dispatch(self) -> None:
        """Give waiting packages to workers: first one to every idle worker, then a second one each,
        queued in its pipe, so it starts on it without waiting for the loop to read its result (but
        not behind a large one, which would hold it up for as long as it takes)."""
        for depth in range(1, DEPTH + 1):
            for worker in self._pool:
                while (
                    len(worker.checks) < depth and worker.ready and not worker.sending and not worker.gone and self._waiting
                    and not (worker.checks and worker.checks[-1].package.size > LARGE)
                ):
                    check = self._next()
                    if check is None:
                        return
                    self._give(worker, check)

    def _given_back(self, check: _Check) -> None:
        """A check left its worker (answered, timed out, or its worker died)."""
        self._running[check.owner] -= check.package.size
        if self._running[check.owner] <= 0:
            del self._running[check.owner]

    def _give(self, worker: _Worker, check: _Check) -> None:
        assert self._loop is not None
        self._running[check.owner] += check.package.size
        worker.checks.append(check)
        if len(worker.checks) == 1:
            self._start_timer(worker)
        package = check.package
        header = check.at.isoformat() + (f"\n{package.path}" if package.path is not None else "")
        if package.data is not None and package.size > LARGE:
            worker.sending = True
            sending = self._loop.run_in_executor(None, _send, worker.connection, header.encode(), package.data)
            sending.add_done_callback(lambda done: self._sent(worker, done))
            return
        try:
            _send(worker.connection, header.encode(), package.data)
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
        self._given_back(check)
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
        self._given_back(check)
        queued = list(worker.checks)  # not started: they go to another worker, no attempt counted
        worker.checks.clear()
        for waiting in reversed(queued):
            self._given_back(waiting)
            if not waiting.future.done():
                self._wait(waiting, first=True)
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
            self._given_back(check)
            if check.future.done():
                continue
            if check.attempts < 2:
                self._wait(check, first=True)
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
