"""The VXP facade of the axis: software built on the operator's Java SDK connects to the axis by
changing its endpoint URL, system id and secret (docs/vxp.md).

Mounted by ``axis serve`` under ``[vxp] prefix`` (``/vxp``). Each method is the axis's own
operation, with the same checks as the HTTP API:

- ``sendEdoc`` is ``POST /v1/messages`` (verification, authorisation, storage, signed receipt);
  ``DocId`` is the message id, the same one for a resubmission of the same package.
- ``getReceivedEdocList``, the counts, ``getEdoc``/``downloadEdoc`` and ``updateStatus`` are the
  inbox, fetch and acknowledgement: ``done`` is delivered; ``fail`` ends the delivery (a dead
  letter an administrator may requeue) and the sender's signed ``failed`` receipt says so;
  ``processing`` changes nothing.
- ``getSentEdocList`` reports each recipient's delivery and latest business status.
- The agency lists come from the registry; ``registerAgency``/``deleteAgency`` (which suspends:
  the registry keeps history) need a system id with the admin role.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from aiohttp import web

from adapters.vxp.service import (
    STATE_TEXT,
    Backend,
    NewAgency,
    Received,
    Sent,
    Service,
    System,
    Unit,
    title_and_notation,
)
from axis import edxml, exchange, keystore
from axis.errors import RequestRefused, RoutingRefused
from axis.server.http import AXIS, SELF_AUTHENTICATED
from axis.server.runtime import Axis

log = logging.getLogger("axis.vxp")


class AxisBackend(Backend):
    """The VXP methods over the axis's own operations, for the system ids registered with it."""

    def __init__(self, axis: Axis, box: keystore.SecretBox) -> None:
        self.axis, self.box = axis, box

    async def system(self, system_id: str) -> System | None:
        if self.axis.draining:
            raise RequestRefused("request.shutting_down", "the axis is shutting down; retry shortly", retry_after=5)
        found = await asyncio.to_thread(self.axis.store.vxp_credential, system_id)
        if found is None:
            return None
        endpoint, credential = found
        secret = self.box.open(credential.sealed_secret, system_id)
        return System(system_id, endpoint, secret, credential.role, credential.sources)

    async def send(self, system: System, package: bytes) -> str:
        body, _ = await exchange.submit(self.axis, system.endpoint, await exchange.spooled(self.axis, package))
        return str(body["message_id"])

    async def received(self, system: System, kinds: tuple[str, ...], limit: int) -> list[Received]:
        """Documents and statuses waiting. The axis's receipts are for its own API's clients: VXP
        has no way to show them, so they are acknowledged here (they stay readable at
        ``/v1/messages/{id}/receipts``) instead of waiting, counted in the agency's backlog, until
        they expire as dead letters."""
        await self._settle_receipts(system)
        items = await asyncio.to_thread(self.axis.store.inbox, system.endpoint.agencies, limit, kinds)
        return [
            Received(i.message.id, i.message.kind, i.message.sender, i.delivery.recipient, _at(i.message.accepted_at))
            for i in items
        ]

    async def _settle_receipts(self, system: System) -> None:
        waiting = await asyncio.to_thread(self.axis.store.inbox, system.endpoint.agencies, 1000, ("receipt",))
        for item in waiting:
            await asyncio.to_thread(self.axis.router.delivered, item.delivery, b"", item.message)

    async def count(self, system: System, kind: str) -> int:
        return len(await self.received(system, (kind,), 10_000))

    async def package(self, system: System, doc_id: str) -> bytes:
        message, _ = await exchange.visible(self.axis, doc_id, system.endpoint)
        return await asyncio.to_thread(self.axis.store.blobs.get, message.sha256)

    async def update(self, system: System, doc_id: str, status: str) -> None:
        agencies = set(system.endpoint.agencies)
        if status == "done":
            await exchange.acknowledge(self.axis, system.endpoint, doc_id, agencies)
        elif status == "fail":
            reason = f"the receiving system {system.system_id!r} reported it could not take the package"
            await exchange.refuse(self.axis, system.endpoint, doc_id, agencies, reason)
        else:  # processing: nothing changes, but only for what was addressed to the system
            await exchange.addressed_to(self.axis, doc_id, system.endpoint, agencies)

    async def sent(self, system: System, doc_id: str) -> list[Sent]:
        message, deliveries = await exchange.visible(self.axis, doc_id, system.endpoint)
        if message.sender not in system.endpoint.agencies:
            raise RoutingRefused("message.not_found", f"message {message.id} was not sent by this system's agencies")
        statuses = {s["recipient"]: s["status_code"] for s in await asyncio.to_thread(self.axis.store.statuses, message.sender, message.document_id)}
        package = await asyncio.to_thread(lambda: edxml.parse(self.axis.store.blobs.get(message.sha256)))
        title, notation = title_and_notation(package)
        return [
            Sent(
                doc_id=message.id,
                kind=message.kind,
                sender=message.sender,
                recipient=d.recipient,
                sent_at=_at(message.accepted_at),
                send_status=d.state,
                send_status_desc=d.last_error or STATE_TEXT.get(d.state, d.state),
                title=title,
                notation=notation,
                received_at=datetime.fromtimestamp(d.delivered_at, UTC) if d.delivered_at else None,
                receive_status=statuses.get(d.recipient, ""),
                receive_status_desc=edxml.STATUS_CODES.get(statuses.get(d.recipient, ""), ""),
            )
            for d in deliveries
        ]

    async def units(self) -> list[Unit]:
        return [
            Unit(a.organ_id, a.name, a.form, a.parent, a.status == "active", _at(a.created_at))
            for a in await asyncio.to_thread(self.axis.store.agencies)
        ]

    async def register(self, agency: NewAgency) -> None:
        await asyncio.to_thread(self.axis.registry.add_agency, agency.code, agency.name, agency.parent)

    async def delete(self, code: str) -> None:
        await asyncio.to_thread(self.axis.registry.set_status, code, "suspended")


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def mount(app: web.Application) -> None:
    """Add the facade to the API under ``[vxp] prefix`` (nothing when it is empty)."""
    axis = app[AXIS]
    settings = axis.settings
    prefix = settings.vxp.prefix.rstrip("/")
    if not prefix:
        return
    loopback = settings.server.host in ("127.0.0.1", "::1", "localhost")
    if settings.server.tls_certificate is None and not loopback and not settings.vxp.allow_plain_http:
        log.warning(
            "VXP at %s answers plain HTTP only on a loopback listener; configure TLS, or set [vxp] allow_plain_http"
            " behind a TLS-terminating proxy",
            prefix,
        )
    # Loaded once: VXP calls do not read the file. Created when missing (no secret is sealed yet, so
    # nothing is lost); a replaced key makes every call FAIL with keystore.secret_unreadable.
    box = keystore.SecretBox.at(keystore.KeyStore(settings.keys).secrets)
    service = Service(
        AxisBackend(axis, box),
        settings.vxp,
        settings.server.max_package,
        settings.server.inbox_page,
        lambda code: axis.metrics.count("axis_vxp_refusals_total", "VXP calls answered FAIL, by code.", code=code),
    )
    app[SELF_AUTHENTICATED] = (*app[SELF_AUTHENTICATED], prefix + "/")
    service.add_routes(app, prefix)
