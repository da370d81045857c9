"""Step 7 of the path for push endpoints: the dispatcher that POSTs packages to them.

One task per active push endpoint leases due deliveries for the agencies it serves (at most
``concurrency`` at a time, DESIGN.md's per-endpoint push concurrency) and POSTs the original
bytes to its URL. A 2xx answer is the recipient's acknowledgement: the delivery becomes
``delivered`` and the sender's ``delivered`` receipt is issued (its digest is the SHA-256 of the
answer's body). Anything else, a refused connection or a timeout, is a failed attempt: the queue
schedules a retry with capped exponential backoff and jitter, and past the time-to-live the
delivery is a dead letter with a ``failed`` receipt.

The HTTP client is handed in (``post``), so nothing here imports aiohttp: the server supplies it.
Store calls block, so they run in threads; the event loop only waits on the network.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from axis.errors import AxisError, StoreError
from axis.router import Router
from axis.store import Delivery, Endpoint, Message

log = logging.getLogger("axis.delivery")

RECENT_BYTES = 32 * 1024 * 1024
"""Package bytes kept in memory for repeated sends (a package to many recipients)."""
Post = Callable[[str, bytes, dict[str, str]], Awaitable[tuple[int, bytes]]]
"""POST (url, body, headers) and return (status, response body); raises OSError/TimeoutError."""


@dataclass
class Dispatcher:
    router: Router
    post: Post
    concurrency: int = 4
    poll: float = 1.0
    """Seconds between looks for due retries and new push endpoints when nothing wakes the tasks."""
    delivered: int = 0
    failed_attempts: int = 0
    _wake: dict[str, asyncio.Event] = field(default_factory=dict)
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _recent: collections.OrderedDict[str, bytes] = field(default_factory=collections.OrderedDict)
    _stopping: bool = False

    def wake(self, agencies: Iterable[str] = ()) -> None:
        """Something was queued: look now rather than at the next poll (call on the loop's thread)."""
        for event in self._wake.values():
            event.set()

    async def run(self) -> None:
        """Keep one task per active push endpoint until ``stop``."""
        store = self.router.store
        while not self._stopping:
            endpoints = await asyncio.to_thread(store.endpoints)
            active = {e.name: e for e in endpoints if e.mode == "push" and e.status == "active"}
            for name in list(self._tasks):
                if name not in active or self._tasks[name].done():
                    self._tasks.pop(name).cancel()
            for name, endpoint in active.items():
                if name not in self._tasks:
                    self._tasks[name] = asyncio.create_task(self._serve(endpoint), name=f"push {name}")
            await asyncio.sleep(self.poll * 5)

    async def _serve(self, endpoint: Endpoint) -> None:
        """Keep up to ``concurrency`` POSTs in flight: a slot that frees is refilled at once, rather
        than waiting for the slowest POST of a batch."""
        assert endpoint.id is not None and endpoint.push_url is not None
        queue = self.router.queue
        wake = self._wake.setdefault(endpoint.name, asyncio.Event())
        sending: set[asyncio.Task[None]] = set()

        def finished(task: asyncio.Task[None]) -> None:
            sending.discard(task)
            wake.set()

        while not self._stopping:
            wake.clear()
            free = self.concurrency - len(sending)
            leased = await asyncio.to_thread(queue.lease, endpoint.agencies, endpoint.id, free) if free else []
            for delivery in leased:
                task = asyncio.create_task(self._send(endpoint, delivery))
                sending.add(task)
                task.add_done_callback(finished)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self.poll)
        if sending:
            await asyncio.gather(*sending, return_exceptions=True)

    def _package(self, delivery: Delivery) -> tuple[Message, bytes]:
        """The delivery's message and bytes; the bytes of the last few packages are kept, since a
        package to many recipients is sent many times over."""
        message = self.router.store.message(delivery.message_id)
        assert message is not None
        data = self._recent.get(message.sha256)
        if data is None:
            data = self.router.store.blobs.get(message.sha256)
            if len(data) <= RECENT_BYTES // 8:
                self._recent[message.sha256] = data
                while sum(len(d) for d in self._recent.values()) > RECENT_BYTES:
                    self._recent.popitem(last=False)
        return message, data

    async def _send(self, endpoint: Endpoint, delivery: Delivery) -> None:
        assert endpoint.push_url is not None
        message: Message | None = None
        try:
            package, data = await asyncio.to_thread(self._package, delivery)
            message = package
            headers = {
                "Content-Type": "application/xml",
                "X-Axis-Message-Id": package.id,
                "X-Axis-Kind": package.kind,
                "X-Axis-Sender": package.sender,
                "X-Axis-Recipient": delivery.recipient,
                "X-Axis-Sha256": package.sha256,
            }
            status, body = await self.post(endpoint.push_url, data, headers)
            error = None if 200 <= status < 300 else f"the endpoint answered HTTP {status}: {body[:200]!r}"
        except (OSError, TimeoutError, AxisError) as failure:
            error, body = f"{type(failure).__name__}: {failure}", b""
        except Exception as failure:  # an unexpected client error is one failed attempt, not a crash
            log.exception("push to %s failed", endpoint.name)
            error, body = f"{type(failure).__name__}: {failure}", b""
        try:
            if error is None:
                await asyncio.to_thread(self.router.delivered, delivery, body, message)
                self.delivered += 1
            else:
                self.failed_attempts += 1
                state = await asyncio.to_thread(self.router.attempt_failed, delivery, error)
                log.info("delivery %s to %s failed (%s): %s", delivery.id, endpoint.name, state, error)
        except StoreError as changed:
            # The delivery changed state while the push was in flight (acknowledged by a pull, given
            # up by the recipient, or expired past its TTL): record nothing more, keep serving.
            log.warning("delivery %s to %s: outcome not recorded: %s", delivery.id, endpoint.name, changed)

    async def stop(self) -> None:
        """Finish the attempts in flight (their outcome is recorded), then stop every task."""
        self._stopping = True
        self.wake()
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
