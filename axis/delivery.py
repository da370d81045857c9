"""Step 7 of the path for push endpoints: the dispatcher that POSTs packages to them.

One task per active push endpoint leases due deliveries for the agencies it serves (at most
``concurrency`` at a time, DESIGN.md's per-endpoint push concurrency) and POSTs the original
bytes to its URL. A 2xx answer is the recipient's acknowledgement: the delivery becomes
``delivered`` and the sender's ``delivered`` receipt is issued (its digest is the SHA-256 of the
answer's body). Anything else, a refused connection or a timeout, is a failed attempt: the queue
schedules a retry with capped exponential backoff and jitter, and past the time-to-live the
delivery is a dead letter with a ``failed`` receipt.

The HTTP client is handed in (``post``), so nothing here imports aiohttp: the server supplies its
push process (``axis.server.pusher``), which also signs the ``delivered`` receipt a 2xx earns.
The lease and the acknowledgement are group-committed writes whose futures the loop awaits;
the message is one indexed read; package bytes not in memory and failed attempts (rare) are
handled in threads.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from axis.errors import AxisError, StoreError
from axis.receipts import Receipt, Signed
from axis.router import Router
from axis.store import Delivery, Endpoint, Message

log = logging.getLogger("axis.delivery")

RECENT_BYTES = 32 * 1024 * 1024
"""Package bytes kept in memory for repeated sends (a package to many recipients)."""
RECENT_MESSAGES = 1024
"""Messages (the rows, not the bytes) kept in memory for the same reason."""
Answer = tuple[int, bytes, Signed | None]
"""(status, response body, the given ``delivered`` receipt signed over the body's SHA-256 after a
2xx, or None to leave the signature to the router)."""
Post = Callable[[str, bytes, dict[str, str], Receipt | None], Awaitable[Answer]]
"""POST (url, body, headers) with the receipt a 2xx earns, and return the ``Answer``; raises
OSError/TimeoutError. The server's is ``axis.server.pusher.Pusher.post``."""


@dataclass
class _Lane:
    """One push endpoint as the dispatcher serves it."""

    endpoint: Endpoint
    posting: asyncio.Semaphore
    """Its POST slots (``concurrency``)."""
    wake: asyncio.Event
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    unposted: int = 0
    """Deliveries leased for it whose POST has not finished."""


@dataclass
class Dispatcher:
    router: Router
    post: Post
    concurrency: int = 4
    poll: float = 1.0
    """Seconds between looks for due retries and new push endpoints when nothing wakes the tasks."""
    delivered: int = 0
    failed_attempts: int = 0
    on_delivered: Callable[[float], None] = lambda seconds: None
    """Told each delivery's time from acceptance, in seconds (the delivery-time histogram)."""
    _wake: dict[str, asyncio.Event] = field(default_factory=dict)
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _recent: collections.OrderedDict[str, bytes] = field(default_factory=collections.OrderedDict)
    _recent_size: int = 0
    _messages: dict[str, Message] = field(default_factory=dict)
    _reading: dict[str, asyncio.Future[bytes]] = field(default_factory=dict)
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
        """Keep ``concurrency`` POSTs in flight. A POST slot is refilled as soon as one frees: the
        next deliveries are leased ahead (one round at most) and a finished POST's outcome is
        committed after its slot is free, so neither commit holds up the endpoint."""
        lane = _Lane(endpoint, asyncio.Semaphore(self.concurrency), self._wake.setdefault(endpoint.name, asyncio.Event()))
        try:
            await self._keep_posting(lane)
        except asyncio.CancelledError:  # the endpoint was revoked or changed: its sends go with it
            for task in lane.tasks:
                task.cancel()
            raise
        if lane.tasks:
            await asyncio.gather(*lane.tasks, return_exceptions=True)

    async def _keep_posting(self, lane: _Lane) -> None:
        endpoint = lane.endpoint
        assert endpoint.id is not None
        queue = self.router.queue
        while not self._stopping:
            lane.wake.clear()
            # Lease a round at a time (a lease reads every agency's queue): when at most one round
            # is left unposted, top up to two.
            free = 2 * self.concurrency - lane.unposted if lane.unposted <= self.concurrency else 0
            leased = await queue.submit_lease(endpoint.agencies, endpoint.id, free) if free > 0 else []
            for delivery in leased:
                lane.unposted += 1
                task = asyncio.create_task(self._send(lane, delivery))
                lane.tasks.add(task)
                task.add_done_callback(lane.tasks.discard)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll):  # no task per wait, unlike wait_for
                    await lane.wake.wait()

    async def _package(self, delivery: Delivery) -> tuple[Message, bytes]:
        """The delivery's message (one indexed read) and bytes. The bytes of the last few packages are
        kept, since a package to many recipients is sent many times over; others are read (and
        checked against their SHA-256) in a thread."""
        message = self._messages.get(delivery.message_id) or self.router.store.message(delivery.message_id)
        assert message is not None
        self._messages[message.id] = message  # a stored message never changes
        if len(self._messages) > RECENT_MESSAGES:
            self._messages.pop(next(iter(self._messages)))
        data = self._recent.get(message.sha256)
        if data is None:
            reading = self._reading.get(message.sha256)
            if reading is None:  # one read, however many deliveries of it start at once
                reading = asyncio.ensure_future(asyncio.to_thread(self.router.store.blobs.get, message.sha256))
                self._reading[message.sha256] = reading
                reading.add_done_callback(lambda _: self._reading.pop(message.sha256, None))
            data = await asyncio.shield(reading)
            if message.sha256 not in self._recent and len(data) <= RECENT_BYTES // 8:
                self._recent[message.sha256] = data
                self._recent_size += len(data)
                while self._recent_size > RECENT_BYTES:
                    self._recent_size -= len(self._recent.popitem(last=False)[1])
        return message, data

    async def _send(self, lane: _Lane, delivery: Delivery) -> None:
        """POST one leased delivery (in one of the endpoint's slots), then record its outcome. A
        delivery leased ahead that finds the dispatcher stopping is not sent (``stop`` releases it)."""
        try:
            async with lane.posting:
                if self._stopping:
                    return
                outcome = await self._post(lane.endpoint, delivery)
        finally:
            lane.unposted -= 1
            lane.wake.set()
        await self._record(lane.endpoint, delivery, *outcome)

    async def _post(
        self, endpoint: Endpoint, delivery: Delivery
    ) -> tuple[Message | None, str | None, bytes, Signed | None]:
        """(the message, None or what went wrong, the endpoint's answer, the receipt if signed)."""
        assert endpoint.push_url is not None
        message: Message | None = None
        signed = None
        try:
            package, data = await self._package(delivery)
            message = package
            headers = {
                "Content-Type": "application/xml",
                "X-Axis-Message-Id": package.id,
                "X-Axis-Kind": package.kind,
                "X-Axis-Sender": package.sender,
                "X-Axis-Recipient": delivery.recipient,
                "X-Axis-Sha256": package.sha256,
                "X-Axis-Accepted-At": package.accepted_at,
            }
            receipt = self.router.delivered_receipt(package, delivery.recipient)
            status, body, signed = await self.post(endpoint.push_url, data, headers, receipt)
            error = None if 200 <= status < 300 else f"the endpoint answered HTTP {status}: {body[:200]!r}"
        except (OSError, TimeoutError, AxisError) as failure:
            error, body = f"{type(failure).__name__}: {failure}", b""
        except Exception as failure:  # an unexpected client error is one failed attempt, not a crash
            log.exception("push to %s failed", endpoint.name)
            error, body = f"{type(failure).__name__}: {failure}", b""
        return message, error, body, signed

    async def _record(
        self,
        endpoint: Endpoint,
        delivery: Delivery,
        message: Message | None,
        error: str | None,
        body: bytes,
        signed: Signed | None,
    ) -> None:
        """Commit the attempt's outcome. It runs in a task nobody awaits, so nothing may escape it:
        when recording fails the delivery stays leased, and at its lease deadline housekeeping
        returns it to the queue and it is sent again (a push receiver dedupes by message id)."""
        try:
            if error is None:
                if await self.router.acknowledge(delivery, body, message, signed):
                    self.on_delivered(time.time() - delivery.created_at)
                self.delivered += 1
            else:
                self.failed_attempts += 1
                state = await asyncio.to_thread(self.router.attempt_failed, delivery, error)
                log.info("delivery %s to %s failed (%s): %s", delivery.id, endpoint.name, state, error)
        except StoreError as changed:
            # The delivery changed state while the push was in flight (acknowledged by a pull, given
            # up by the recipient, or expired past its TTL): record nothing more, keep serving.
            log.warning("delivery %s to %s: outcome not recorded: %s", delivery.id, endpoint.name, changed)
        except Exception:
            log.exception(
                "delivery %s to %s: outcome not recorded; it is sent again after its lease ends",
                delivery.id,
                endpoint.name,
            )

    async def stop(self) -> None:
        """Finish the attempts in flight (their outcome is recorded), then stop every task."""
        self._stopping = True
        self.wake()
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        # This node's deliveries leased ahead and not sent go back to the queue now, not at their deadline.
        await asyncio.to_thread(self.router.store.release_own_leases, self.router.queue.clock())
