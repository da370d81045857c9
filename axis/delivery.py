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
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from axis.errors import AxisError, StoreError
from axis.router import Router
from axis.store import Delivery, Endpoint

log = logging.getLogger("axis.delivery")

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
        assert endpoint.id is not None and endpoint.push_url is not None
        queue = self.router.queue
        wake = self._wake.setdefault(endpoint.name, asyncio.Event())
        while not self._stopping:
            wake.clear()
            leased = await asyncio.to_thread(queue.lease, endpoint.agencies, endpoint.id, self.concurrency)
            if not leased:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self.poll)
                continue
            await asyncio.gather(*(self._send(endpoint, d) for d in leased))

    async def _send(self, endpoint: Endpoint, delivery: Delivery) -> None:
        store = self.router.store
        message = await asyncio.to_thread(store.message, delivery.message_id)
        assert message is not None and endpoint.push_url is not None
        headers = {
            "Content-Type": "application/xml",
            "X-Axis-Message-Id": message.id,
            "X-Axis-Kind": message.kind,
            "X-Axis-Sender": message.sender,
            "X-Axis-Recipient": delivery.recipient,
            "X-Axis-Sha256": message.sha256,
            "X-Axis-Accepted-At": message.accepted_at,
        }
        try:
            data = await asyncio.to_thread(store.blobs.get, message.sha256)
            status, body = await self.post(endpoint.push_url, data, headers)
            error = None if 200 <= status < 300 else f"the endpoint answered HTTP {status}: {body[:200]!r}"
        except (OSError, TimeoutError, AxisError) as failure:
            error, body = f"{type(failure).__name__}: {failure}", b""
        except Exception as failure:  # an unexpected client error is one failed attempt, not a crash
            log.exception("push to %s failed", endpoint.name)
            error, body = f"{type(failure).__name__}: {failure}", b""
        try:
            if error is None:
                await asyncio.to_thread(self.router.delivered, delivery, body)
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
