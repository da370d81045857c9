"""The running axis: every component opened from the configuration, and its lifecycle.

``Axis.open`` builds store, registry, queue, verification pool, router and push dispatcher;
``serve`` runs the HTTP API until SIGTERM/SIGINT, then stops in this order: refuse new requests
(503, ``/readyz`` fails), finish requests and push attempts in flight (up to ``shutdown_grace``),
stop the workers, close the store. A restart recovers everything: leases held when the process
died return to the queue, and receipts owed for deliveries that ended are issued.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import ssl
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from axis import config, exchange, keystore, pki
from axis.delivery import Dispatcher
from axis.errors import StoreError
from axis.queue import Queue, QueuePolicy
from axis.registry import Registry
from axis.router import Router
from axis.server.app import build_app
from axis.server.connections import (
    QUIET_BAD_REQUESTS,
    RESERVE,
    CappedSite,
    Connections,
    QuietLoopErrors,
    derived_cap,
    descriptor_limit,
)
from axis.server.metrics import Metrics
from axis.server.pusher import Pusher
from axis.store import Store, open_store
from axis.workers import VerifierPool

log = logging.getLogger("axis.server")


class Waiters:
    """Long-polls waiting for an agency's inbox; woken when the router queues something for it."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self.closing = asyncio.Event()

    def event(self, agency: str) -> asyncio.Event:
        return self._events.setdefault(agency, asyncio.Event())

    def notify(self, agencies: Iterable[str]) -> None:
        for agency in agencies:
            event = self._events.pop(agency, None)
            if event is not None:
                event.set()


@dataclass
class Axis:
    settings: config.Config
    store: Store
    registry: Registry
    queue: Queue
    router: Router
    pool: VerifierPool
    certificate_pem: bytes
    metrics: Metrics = field(default_factory=Metrics)
    waiters: Waiters = field(default_factory=Waiters)
    dispatcher: Dispatcher | None = None
    connections: Connections | None = None
    """The listener's connections (``/readyz`` reports them)."""
    in_flight: int = 0
    """Requests being answered now: SIGTERM lets them finish while new ones are refused (503)."""
    draining: bool = False
    contacts: dict[str, float] = field(default_factory=dict)
    """When each endpoint last made a request to this node (Unix time; the console shows it)."""
    _loop: asyncio.AbstractEventLoop | None = None
    _woken: set[str] = field(default_factory=set)
    _woken_lock: threading.Lock = field(default_factory=threading.Lock)
    _listening: threading.Event = field(default_factory=threading.Event)
    """Set when the axis closes: the store's listener stops."""

    @classmethod
    def open(cls, settings: config.Config) -> Axis:
        store = open_store(settings)
        key, certificate = keystore.KeyStore(settings.keys).axis_signer()
        d = settings.delivery
        queue = Queue(
            store,
            QueuePolicy(
                ttl=d.ttl, backoff_initial=d.backoff_initial, backoff_max=d.backoff_max, jitter=d.jitter, lease=d.lease
            ),
        )
        router = Router(queue, key, certificate, backlog_cap=settings.server.recipient_backlog)
        pool = VerifierPool(
            settings.trust,
            workers=settings.server.verify_workers or None,
            timeout=settings.server.verify_timeout,
            memory=settings.server.verify_memory,
        )
        axis = cls(
            settings=settings,
            store=store,
            registry=Registry(store, lambda: keystore.read_trust(settings.trust)),
            queue=queue,
            router=router,
            pool=pool,
            certificate_pem=pki.certificate_pem(certificate),
        )
        router.on_queued = axis.queued
        return axis

    def queued(self, agencies: Iterable[str]) -> None:
        """Called by the router from any thread (the committer, right after a commit): wake long-polls
        and the dispatcher on the loop. Calls arriving before the loop runs the wake-up join it, so a
        commit of many packages costs the loop one wake-up, not one per package."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with self._woken_lock:
            first = not self._woken
            self._woken.update(agencies)
        if first:
            loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        with self._woken_lock:
            names, self._woken = tuple(self._woken), set()
        self.waiters.notify(names)
        if self.dispatcher is not None:
            self.dispatcher.wake(names)

    def recover(self) -> None:
        """Leases this node left when it stopped or crashed return now (for a store of one node,
        every lease); another node's only when their deadline has passed."""
        now = self.queue.clock()
        released = self.store.release_own_leases(now) + self.store.release_stale_leases(now)
        issued = self.router.issue_missing_receipts()
        if released or issued:
            log.info("recovered %d leased deliveries, issued %d owed receipts", len(released), issued)

    async def housekeeping(self) -> None:
        """Stale leases, expiries; and about once a minute, receipts still owed (an ack committed
        but its receipt not stored: a full disk, a cancelled request)."""
        every = max(1, round(60 / self.settings.delivery.housekeeping))
        for sweep in itertools.count(1):
            await asyncio.sleep(self.settings.delivery.housekeeping)
            try:
                released, expired = await asyncio.to_thread(self.router.housekeeping)
                if sweep % every == 0:
                    await asyncio.to_thread(self.router.issue_missing_receipts)
            except Exception:
                log.exception("housekeeping failed")
                continue
            if expired:
                self.metrics.count("axis_deliveries_total", "Delivery outcomes.", len(expired), outcome="expired")
            if released:
                self.metrics.count("axis_leases_released_total", "Leases that outlived their deadline.", len(released))

    async def checkpointing(self) -> None:
        """A signed checkpoint of the audit log every ``[audit] checkpoint_interval`` seconds when
        something was logged (on several nodes, whichever gets there first makes it)."""
        interval = self.settings.audit.checkpoint_interval
        while interval > 0:
            await asyncio.sleep(interval)
            try:
                await exchange.checkpoint(self)
            except StoreError as error:
                if error.code != "store.conflict":  # another node's came first: nothing to do
                    log.warning("no checkpoint of the audit log this time: %s", error)
            except Exception:
                log.exception("making a checkpoint of the audit log failed")

    def listen(self) -> None:
        """On a shared store, wake this node's long-polls and dispatcher when another node queues
        something (the store's notifications)."""
        self.store.listen(self.queued, self._listening)

    def close(self) -> None:
        self._listening.set()
        self.pool.close()
        self.store.close()


def _ssl_context(server: config.Server) -> ssl.SSLContext | None:
    if server.tls_certificate is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(server.tls_certificate, server.tls_key)
    if server.client_ca is not None:
        context.load_verify_locations(server.client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


@dataclass
class Running:
    """A started axis: its URL, and ``stop`` for the orderly shutdown."""

    axis: Axis
    url: str
    runner: web.AppRunner
    pusher: Pusher
    background: list[asyncio.Task[None]]

    async def stop(self) -> None:
        """Refuse new work, finish what is in flight, release the rest, close everything."""
        axis = self.axis
        axis.draining = True
        axis.waiters.closing.set()
        # The listener stays open meanwhile: a new request is answered 503 request.shutting_down
        # (a load balancer moves on) instead of finding the port closed.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + axis.settings.server.shutdown_grace
        while axis.in_flight > 0 and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if axis.dispatcher is not None:
            await axis.dispatcher.stop()
        await self.runner.cleanup()
        for task in self.background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.pusher.close()
        await asyncio.to_thread(axis.close)


async def start(
    settings: config.Config, host: str | None = None, port: int | None = None, extensions: Sequence[Any] = ()
) -> Running:
    """Open the axis from its configuration, recover, and start listening and delivering.
    ``extensions`` add routes to the API (``axis serve`` passes the VXP facade)."""
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(64, "axis-io"))  # store calls block; let commits group
    loop.set_exception_handler(QuietLoopErrors(loop.default_exception_handler))
    logging.getLogger("aiohttp.server").addFilter(QUIET_BAD_REQUESTS)
    axis = await asyncio.to_thread(Axis.open, settings)
    axis._loop = loop
    axis.listen()
    limit = descriptor_limit()
    axis.connections = Connections(derived_cap(settings.server.max_connections, limit))
    if axis.connections.cap + RESERVE > limit:
        log.warning(
            "the descriptor limit (%d) leaves less than %d over the connection cap (%d): raise it (ulimit -n)",
            limit, RESERVE, axis.connections.cap,
        )
    log.info("descriptor limit %d, at most %d connections", limit, axis.connections.cap)
    pusher = Pusher(keystore.KeyStore(settings.keys), settings.delivery.push_timeout)
    runner = web.AppRunner(
        build_app(axis, extensions),
        shutdown_timeout=settings.server.shutdown_grace,
        keepalive_timeout=settings.server.idle_timeout,
        access_log=None,
    )
    try:
        await asyncio.gather(asyncio.to_thread(axis.pool.warm_up), pusher.start())
        await asyncio.to_thread(axis.recover)
        axis.dispatcher = Dispatcher(
            axis.router, pusher.post, concurrency=settings.delivery.push_concurrency, on_delivered=axis.metrics.delivered
        )
        await runner.setup()
        context = _ssl_context(settings.server)
        site = CappedSite(
            runner, axis.connections, host or settings.server.host, settings.server.port if port is None else port,
            ssl_context=context,
        )
        await site.start()
    except BaseException:  # the port is taken, TLS files are missing, ...: release what was opened
        await runner.cleanup()
        await pusher.close()
        await asyncio.to_thread(axis.close)
        raise
    address = runner.addresses[0]
    background = [
        asyncio.create_task(axis.dispatcher.run(), name="dispatcher"),
        asyncio.create_task(axis.housekeeping(), name="housekeeping"),
        asyncio.create_task(axis.checkpointing(), name="checkpoints"),
    ]
    url = f"{'https' if context else 'http'}://{address[0]}:{address[1]}"
    return Running(axis, url, runner, pusher, background)


async def serve(
    settings: config.Config, host: str | None = None, port: int | None = None, extensions: Sequence[Any] = ()
) -> None:
    """Run the axis until SIGTERM or SIGINT; one JSON line on stdout says where it listens."""
    running = await start(settings, host, port, extensions)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps({"event": "listening", "url": running.url, "pid": os.getpid()}), flush=True)
    await stop.wait()
    print(json.dumps({"event": "stopping", "at": datetime.now(UTC).isoformat()}), flush=True)
    await running.stop()
    print(json.dumps({"event": "stopped", "at": datetime.now(UTC).isoformat()}), flush=True)
