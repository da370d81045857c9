"""The use cases every front end calls: the HTTP API, the VXP facade (and through it the
gateway's SDK), the CLI and the console to come.

Each takes the running axis's parts (``Node``: the store, the router, the verification pool, the
settings, the counters) and an endpoint (``None`` for an admin or auditor), and raises an
``AxisError`` to refuse; none knows HTTP. Visibility lives here once: an endpoint sees what its
agencies sent or received, and a message it may not see is ``message.not_found``, as if it did
not exist, so message ids cannot be probed.
"""

from __future__ import annotations

import asyncio
import errno
import shutil
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol

from axis import bundles, checkpoints, config, keystore, receipts
from axis import report as exchange_report
from axis.checking import Checked
from axis.errors import RequestRefused, RoutingRefused, StoreError
from axis.router import Admission, Router
from axis.spool import Incoming
from axis.store import Delivery, Endpoint, Message, Store
from axis.workers import VerifierPool


class Counters(Protocol):
    def count(self, name: str, help_text: str, amount: float = 1.0, **labels: str) -> None: ...
    def delivered(self, seconds: float) -> None:
        """One delivery, ``seconds`` after its package was accepted."""
        ...


class Node(Protocol):
    """What the use cases need of a running axis (``axis.server.runtime.Axis`` is one)."""

    @property
    def settings(self) -> config.Config: ...
    @property
    def store(self) -> Store: ...
    @property
    def router(self) -> Router: ...
    @property
    def pool(self) -> VerifierPool: ...
    @property
    def metrics(self) -> Counters: ...


def check_disk(axis: Node, incoming: int) -> None:
    """Refuse a package the data directory cannot take while keeping ``[server] min_free_disk``.
    A PostgreSQL store's disk is the database server's: a full one is ``store.disk_full`` there."""
    if axis.store.shared:
        return
    free = shutil.disk_usage(axis.settings.data).free
    if free - incoming < axis.settings.server.min_free_disk:
        raise RequestRefused(
            "request.disk_full",
            "the axis is nearly out of disk space and accepts no packages until an operator frees some",
            retry_after=300,
        )



async def submit(
    axis: Node, endpoint: Endpoint, package: Incoming, expect: Callable[[Checked], None] | None = None
) -> tuple[dict[str, Any], bool]:
    """Verify, authorise, persist and acknowledge one package from ``endpoint``: the one way in,
    for the HTTP API, the VXP facade and status bodies of acknowledgements alike. Returns the
    acceptance (as the API answers it) and whether it was new. ``expect`` may refuse the verified
    package before anything is stored. Its spool file, if any, is gone afterwards: kept by the
    store, or removed."""
    try:
        return await _submit(axis, endpoint, package, expect)
    finally:
        package.discard()


async def _submit(
    axis: Node, endpoint: Endpoint, package: Incoming, expect: Callable[[Checked], None] | None
) -> tuple[dict[str, Any], bool]:
    check_disk(axis, package.size)
    at = datetime.now(UTC)
    checked = await axis.pool.check(package, at, endpoint.name)
    if expect is not None:
        expect(checked)
    try:
        admitted = axis.router.admit(checked, package, endpoint)
        acceptance = await axis.router.persist(admitted) if isinstance(admitted, Admission) else admitted
    except (OSError, StoreError) as error:  # the store names a full disk store.disk_full; a blob write, ENOSPC
        if isinstance(error, OSError) and error.errno == errno.ENOSPC or getattr(error, "code", "") == "store.disk_full":
            raise RequestRefused("request.disk_full", "the axis ran out of disk space; nothing was stored") from None
        raise
    outcome = "accepted" if acceptance.created else "duplicate"
    axis.metrics.count("axis_submissions_total", "Packages accepted or resubmitted.", outcome=outcome, kind=checked.kind)
    return acceptance.as_json(), acceptance.created


async def spooled(axis: Node, data: bytes) -> Incoming:
    """Bytes a front end holds whole already (a VXP body, the status in an acknowledgement), made
    a package as an upload is: past what the store keeps in memory, written to its spool file."""
    spool = axis.store.blobs.spool()
    try:
        if len(data) > spool.in_memory:
            await asyncio.to_thread(spool.write, data)
        else:
            spool.write(data)
        return spool.finish()
    except BaseException:
        spool.discard()
        raise


async def visible(axis: Node, message_id: str, endpoint: Endpoint | None) -> tuple[Message, list[Delivery]]:
    """The message and its deliveries, if this caller may see it (else ``message.not_found``, as if
    it did not exist): an endpoint sees what its agencies sent or received; admins and auditors
    (None) see all."""
    message = await asyncio.to_thread(axis.store.message, message_id)
    deliveries = await asyncio.to_thread(axis.store.deliveries_of, message_id) if message is not None else []
    if message is not None and endpoint is not None:
        agencies = set(endpoint.agencies)
        if message.sender not in agencies and not {d.recipient for d in deliveries} & agencies:
            message = None
    if message is None:
        raise RoutingRefused("message.not_found", f"no message {message_id} is visible to this token")
    return message, deliveries


async def addressed_to(
    axis: Node, message_id: str, endpoint: Endpoint, agencies: set[str]
) -> tuple[Message, list[Delivery]]:
    """A visible message and its deliveries to ``agencies`` (what a recipient acknowledges);
    ``message.not_found`` when none is addressed to them."""
    message, deliveries = await visible(axis, message_id, endpoint)
    mine = [d for d in deliveries if d.recipient in agencies]
    if not mine:
        raise RoutingRefused("message.not_found", f"message {message_id} is not addressed to {', '.join(sorted(agencies))}")
    return message, mine



async def acknowledge(
    axis: Node, endpoint: Endpoint, message_id: str, agencies: set[str], status: bytes = b""
) -> tuple[Message, list[str], dict[str, Any] | None]:
    """The recipient has the package: its deliveries to ``agencies`` become ``delivered`` (again:
    no change) and the sender gets signed ``delivered`` receipts. ``status`` is an optional signed
    status 01 (arrived) about it, submitted like any status; its SHA-256 goes into the receipts.
    Returns the message, the recipients acknowledged and the status's acceptance."""
    message, mine = await addressed_to(axis, message_id, endpoint, agencies)
    for delivery in mine:
        if delivery.state == "expired":
            raise StoreError(
                "store.invalid_transition",
                f"the delivery of {message.id} to {delivery.recipient} expired; an administrator must requeue it",
            )
    accepted = None
    if status:
        recipients = {d.recipient for d in mine}

        def arrived(checked: Checked) -> None:
            if not (
                checked.kind == "status"
                and checked.status_code == "01"
                and checked.document_id == message.document_id
                and checked.sender in recipients
            ):
                raise RequestRefused(
                    "request.invalid",
                    "an acknowledgement's body must be the recipient's signed status 01 about this document",
                )

        accepted, _ = await submit(axis, endpoint, await spooled(axis, status), arrived)
    for delivery in mine:
        if await asyncio.to_thread(axis.router.delivered, delivery, status):
            axis.metrics.delivered(time.time() - delivery.created_at)
    axis.metrics.count("axis_deliveries_total", "Delivery outcomes.", len(mine), outcome="delivered")
    return message, [d.recipient for d in mine], accepted


async def refuse(axis: Node, endpoint: Endpoint, message_id: str, agencies: set[str], reason: str) -> list[str]:
    """The recipient cannot take the package: its waiting deliveries to ``agencies`` end now as
    dead letters (an administrator may requeue them) and the sender gets signed ``failed``
    receipts. A delivery acknowledged already cannot be refused; one that ended stays as it is.
    Returns the recipients refused now."""
    reason = receipts.xml_text(reason[:500])
    message, mine = await addressed_to(axis, message_id, endpoint, agencies)
    for delivery in mine:
        if delivery.state == "delivered":
            raise StoreError(
                "store.invalid_transition",
                f"{message.id} was already acknowledged for {delivery.recipient}; it cannot be refused now",
            )
    refused = []
    for delivery in mine:
        if await asyncio.to_thread(axis.store.give_up, delivery.id, time.time(), reason):
            await asyncio.to_thread(axis.router.issue_receipt, delivery.id)
            refused.append(delivery.recipient)
    axis.metrics.count("axis_deliveries_total", "Delivery outcomes.", len(refused), outcome="refused")
    return refused


async def requeue(axis: Node, delivery_id: int, by: str) -> Delivery:
    """An administrator's second chance for a dead letter: ``queued`` again with a fresh TTL
    (``store.invalid_transition`` unless it had expired), the recipient's listeners woken."""
    await asyncio.to_thread(axis.router.queue.requeue, delivery_id, by)
    delivery = await asyncio.to_thread(axis.store.delivery, delivery_id)
    assert delivery is not None
    axis.router.on_queued((delivery.recipient,))
    return delivery


PERIODS = {"day": 10, "month": 7, "all": 0}
"""How ``stats`` groups: by the first characters of the ISO acceptance time (0: not at all)."""


async def stats(axis: Node, start: date, end: date, period: str) -> list[dict[str, Any]]:
    """Per agency and ``period`` (``day``, ``month``, ``all``) from ``start`` to ``end``
    (exclusive): documents sent, received, delivered, failed, pending, and overdue (past their
    DueDate today and not finished)."""
    if period not in PERIODS:
        raise RequestRefused("request.invalid", f"period must be one of {', '.join(PERIODS)}, not {period!r}")
    today = datetime.now(UTC).strftime("%Y/%m/%d")
    return await asyncio.to_thread(axis.store.stats, start.isoformat(), end.isoformat(), PERIODS[period], today)


async def checkpoint(axis: Node, force: bool = False) -> checkpoints.Signed | None:
    """The next signed checkpoint of the audit log, appended to it (None: nothing new to cover;
    ``force``: cover even a lone previous checkpoint). ``store.conflict`` if another node made one
    meanwhile."""
    at = datetime.now(UTC)
    router = axis.router

    def make() -> checkpoints.Signed | None:
        earlier = keystore.KeyStore(axis.settings.keys).axis_certificates()
        return checkpoints.checkpoint(axis.store, router.key, router.certificate, at, force=force, earlier=earlier)

    return await asyncio.to_thread(make)


async def latest_checkpoint(axis: Node) -> checkpoints.Signed | None:
    """The latest signed checkpoint: its digest goes on every statistic and report, so that it
    lands on paper."""
    return await asyncio.to_thread(checkpoints.latest, axis.store)


async def published_checkpoints(axis: Node, after: int, limit: int) -> list[checkpoints.Signed]:
    """What witnesses copy: the signed checkpoints numbered above ``after``, oldest first."""
    return await asyncio.to_thread(checkpoints.published, axis.store, after, limit)


async def export(axis: Node, out: Path, *, message_id: str | None = None, start: date | None = None,
                 end: date | None = None, agency: str | None = None) -> bundles.Exported:
    """Write the evidence bundle of one message, or of every document and status accepted from
    ``start`` to ``end`` (exclusive) sent by or to ``agency`` (all agencies if None), to ``out``."""
    store, router = axis.store, axis.router

    def write() -> bundles.Exported:
        selected, query = bundles.select(store, message_id, start, end, agency)
        return bundles.export(store, selected, axis.settings.trust, router.key, router.certificate, out, query)

    return await asyncio.to_thread(write)


async def report(axis: Node, period: str, agency: str | None = None) -> exchange_report.Report:
    """The periodic exchange report (axis/report.py) of ``period`` (``2026-11``, ``2026-Q3``,
    ``2026-H1``, ``2026``) for every agency or for ``agency`` and its units, with the latest
    signed checkpoint of the audit log."""
    parsed = exchange_report.Period.parse(period)
    return await asyncio.to_thread(exchange_report.build, axis.store, parsed, agency)

