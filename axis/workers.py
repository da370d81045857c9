"""The verification pool: CPU-bound checks in worker processes, each with a hard timeout.

Parsing and verifying a package holds the GIL, so it runs in separate processes (one per core
by default), which also keeps a hostile package from stalling the event loop. A package that
takes longer than the timeout is refused (``request.verify_timeout``) and its worker is killed:
the whole pool is replaced, because a stuck process cannot be interrupted any other way.
Checks that were in flight in the killed pool are run once more in the new one.

Workers are started with ``spawn`` (a fresh interpreter): forking the server itself, which runs
threads (the group committer, aiohttp's executor), could copy a held lock into the child. Each
worker watches the axis process and exits when it is gone, so a SIGKILLed axis leaves no orphans.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from pathlib import Path

from axis import checking
from axis.errors import RequestRefused


def _watch_parent(pid: int, every: float = 1.0) -> None:
    """Worker initializer: exit as soon as the axis process ``pid`` no longer exists."""

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


class VerifierPool:
    def __init__(self, trust_directory: Path, *, workers: int | None = None, timeout: float = 10.0) -> None:
        self.trust_directory = trust_directory
        self.workers = workers or os.cpu_count() or 1
        self.timeout = timeout
        self.replaced = 0
        """Pools replaced after a timeout or a crashed worker (exported as a metric)."""
        self._lock = threading.Lock()
        self._slots: asyncio.Semaphore | None = None
        self._executor = self._start()

    def _start(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_watch_parent,
            initargs=(os.getpid(),),
        )

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._executor is not broken:
                return  # another caller already replaced it
            # The executor has no API to kill a stuck worker: terminate its processes directly.
            for process in list(getattr(broken, "_processes", {}).values()):
                process.kill()
            broken.shutdown(wait=False, cancel_futures=True)
            self._executor = self._start()
            self.replaced += 1

    def warm_up(self) -> None:
        """Start every worker now (imports included) rather than on the first submissions."""
        futures = [self._executor.submit(os.getpid) for _ in range(self.workers * 2)]
        for future in futures:
            future.result()

    async def check(self, data: bytes, at: datetime) -> checking.Checked:
        """Verify in a worker. Waiting for a free worker is not timed; only the work is."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.workers)
        async with self._slots:
            return await self._check(data, at)

    async def _check(self, data: bytes, at: datetime) -> checking.Checked:
        loop = asyncio.get_running_loop()
        for _ in range(2):
            executor = self._executor
            try:
                future = loop.run_in_executor(executor, checking.check, data, self.trust_directory, at)
                return await asyncio.wait_for(future, self.timeout)
            except TimeoutError:
                self._replace(executor)
                raise RequestRefused(
                    "request.verify_timeout",
                    f"verifying the package took longer than {self.timeout:g} s; it was abandoned",
                ) from None
            except (BrokenProcessPool, RuntimeError):
                # Killed beside a stuck package, or submitted while the pool was being replaced.
                self._replace(executor)
        raise RequestRefused(
            "request.unavailable", "the verification workers are restarting; send the package again"
        )

    def close(self) -> None:
        with self._lock:
            self._executor.shutdown(wait=True, cancel_futures=True)
