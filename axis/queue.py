"""The store-and-forward queue: enqueue, lease, ack, fail with backoff, expire, requeue.

States (DESIGN.md): ``queued → leased → delivered``; ``leased → queued`` (attempt failed, retry
scheduled); ``queued|leased → expired`` (TTL passed); ``expired → queued`` (admin requeue). A
lease that outlives its deadline returns to ``queued``. The store enforces each transition in one
transaction; this module decides *when*: the retry schedule, the TTL, the lease length. The clock
and the random source are injected so every schedule is reproducible in tests.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from axis.errors import StoreError
from axis.spool import Incoming
from axis.store import Delivery, IssuedReceipt, NewMessage, Store

Clock = Callable[[], float]
MAX_DOUBLINGS = 1000
"""The backoff's exponent never exceeds this: ``2.0 ** 1000`` is still a finite float."""


@dataclass(frozen=True)
class QueuePolicy:
    """Delivery timing; defaults follow DESIGN.md's limits."""

    ttl: float = 7 * 24 * 3600.0
    """Seconds a delivery may wait before it becomes a dead letter."""
    backoff_initial: float = 1.0
    """Delay after the first failed attempt."""
    backoff_max: float = 15 * 60.0
    """Cap of the doubling delay."""
    jitter: float = 0.2
    """Each delay is spread by ±this fraction, so retries of many deliveries do not arrive together."""
    lease: float = 30.0
    """Seconds a leased delivery stays claimed before it returns to the queue."""


@dataclass
class Queue:
    store: Store
    policy: QueuePolicy = field(default_factory=QueuePolicy)
    clock: Clock = time.time
    rng: random.Random = field(default_factory=random.Random)

    def enqueue(self, message: NewMessage, package: Incoming) -> list[int]:
        """Store the package bytes and the message for all its recipients durably; returns delivery
        ids. For a caller in a thread; ``submit`` on an event loop."""
        now = self.clock()
        return self.store.enqueue(self._with_bytes(message, package), now, now + self.policy.ttl)

    async def submit(self, message: NewMessage, package: Incoming) -> list[int]:
        """``enqueue``, on an event loop: returns once the commit is durable. A package the store
        keeps apart is made durable first, in a thread (its spool file is fsync'd and renamed)."""
        if package.path is not None:
            message = await asyncio.to_thread(self._with_bytes, message, package)
        else:
            message = self._with_bytes(message, package)
        now = self.clock()
        return await self.store.submit(message, now, now + self.policy.ttl)

    def _with_bytes(self, message: NewMessage, package: Incoming) -> NewMessage:
        """The store keeps small packages in the message's own transaction and makes larger ones
        durable first. Either way a committed message always has its bytes on disk."""
        if package.sha256 != message.sha256:  # hashed as it arrived vs what the worker verified
            raise StoreError("store.bad_digest", f"message {message.id} names a SHA-256 its bytes do not have")
        inline = self.store.blobs.keep(package)
        return replace(message, data=inline) if inline is not None else message

    def lease(self, recipients: Sequence[str], endpoint_id: int, limit: int = 100) -> list[Delivery]:
        """Claim due deliveries for these agencies, highest priority first, then oldest."""
        now = self.clock()
        return self.store.lease(recipients, now, now + self.policy.lease, limit, endpoint_id)

    async def submit_lease(self, recipients: Sequence[str], endpoint_id: int, limit: int = 100) -> list[Delivery]:
        """``lease``, on an event loop."""
        now = self.clock()
        return await self.store.submit_lease(recipients, now, now + self.policy.lease, limit, endpoint_id)

    def ack(self, delivery_id: int, ack_sha256: str | None = None, receipt: IssuedReceipt | None = None) -> bool:
        """``delivered`` exactly once: True the first time, False for a repeated acknowledgement.
        ``receipt`` is stored with the first one, in the same transaction."""
        return self.store.ack(delivery_id, self.clock(), ack_sha256, receipt)

    async def submit_ack(
        self, delivery_id: int, ack_sha256: str | None = None, receipt: IssuedReceipt | None = None
    ) -> bool:
        """``ack``, on an event loop."""
        return await self.store.submit_ack(delivery_id, self.clock(), ack_sha256, receipt)

    def backoff(self, attempts: int) -> float:
        """Delay before the next attempt after ``attempts`` failures: doubling, capped, with jitter.
        The doublings stop at ``MAX_DOUBLINGS`` (far past any cap): ``2.0 ** 1024`` raises
        OverflowError, and a delivery that keeps failing (requeued, a long TTL) gets there."""
        doublings = min(max(0, attempts - 1), MAX_DOUBLINGS)
        base = min(self.policy.backoff_max, self.policy.backoff_initial * 2.0**doublings)
        spread = base * self.policy.jitter
        return max(0.0, base + self.rng.uniform(-spread, spread))

    def fail(self, delivery: Delivery, error: str) -> str:
        """Schedule a retry of a failed attempt; returns ``queued``, or ``expired`` past the TTL."""
        now = self.clock()
        return self.store.fail(delivery.id, now, now + self.backoff(delivery.attempts), error)

    def housekeeping(self) -> tuple[list[int], list[int]]:
        """Return stale leases to the queue and expire what outlived its TTL: (released, expired)."""
        now = self.clock()
        return self.store.release_stale_leases(now), self.store.expire(now)

    def requeue(self, delivery_id: int, by: str) -> None:
        """An administrator's second chance for a dead letter, with a fresh TTL."""
        now = self.clock()
        self.store.requeue(delivery_id, now, now + self.policy.ttl, by)
