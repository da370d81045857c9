"""The signing gateway: an agency runs it next to its document software, which keeps its VXP SDK
and changes only its endpoint URL, system id and secret (X-Road's security-server model).

Agency software writes packages with placeholder signatures (an ``edXML:Signature`` element,
rsa-sha1 stubs with empty values, or none); its real signature, when there is one, is on the
attached PDF. The axis signs nothing on an agency's behalf, so the agency's key lives here:

- **Out.** A package from the SDK is read as the axis will read it (shape, ``edxml.*`` codes),
  its From must be one of the gateway's agencies and of the calling system's, its placeholder
  signatures are removed and it is signed with that agency's key, then submitted through the
  axis's own API. The SDK hears the axis's message id as ``DocId`` once the axis's signed
  receipt has been checked and kept (``adapters.vxp.ledger``).
- **In.** A pull loop takes what waits for the gateway's agencies, verifies each package against
  the trust directory at its acceptance time, keeps it (once per message and recipient) and
  serves it to the SDK. ``updateStatus done`` acknowledges it to the axis (``delivered``),
  ``fail`` refuses it (a dead letter and a ``failed`` receipt for the sender). The axis's own
  receipts are verified, kept and acknowledged here.

The same VXP methods (``adapters.vxp.service``) answer the SDK as the axis's facade does; only
this backend differs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TypeVar

from aiohttp import web
from lxml import etree

from adapters.client import AxisClient, Entry, Signer
from adapters.vxp.ledger import Incoming, Ledger, Outgoing
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
from axis import edxml, signing
from axis.config import Vxp
from axis.errors import AdapterError, AxisError, Refused, RequestRefused, RoutingRefused
from axis.store import Endpoint

log = logging.getLogger("axis.adapter.vxp_gateway")
T = TypeVar("T")
IDLE = 2.0
"""Seconds between looks at the axis's inbox while everything it lists waits for the SDK."""


@dataclass
class Gateway:
    """What the gateway holds: its ledger, its connection to the axis (as its agencies' endpoint,
    verifying against the trust directory) and a signer per agency."""

    ledger: Ledger
    client: AxisClient
    signers: dict[str, Signer]

    @property
    def agencies(self) -> tuple[str, ...]:
        return tuple(self.signers)

    # ------------------------------------------------------------ out

    def read(self, system: System, data: bytes) -> tuple[str, edxml.Package, etree._Element]:
        """The package the SDK sent, placeholders removed and read as the axis will read it, and
        the SHA-256 of its content: its exclusive c14n without any signature, the same for two
        files that differ only in their placeholders or serialisation (the same signed content,
        which the axis takes for the same package). Its From must be an agency this gateway
        signs for, on behalf of this system."""
        root = signing.unsigned_tree(data, replace=True)
        content = hashlib.sha256(etree.tostring(root, method="c14n", exclusive=True, with_comments=False)).hexdigest()
        package = edxml.read(root)
        sender = package.sender.organ_id
        if sender not in system.endpoint.agencies or sender not in self.signers:
            raise RoutingRefused(
                "sender.not_granted",
                f"the package is sent by {sender}, but this gateway signs only for"
                f" {', '.join(a for a in system.endpoint.agencies if a in self.signers) or 'no agency of this system'}",
            )
        return content, package, root

    def sign(self, package: edxml.Package, root: etree._Element) -> bytes:
        """Sign with the sender's key (its certificate names that agency: checked at start)."""
        signer = self.signers[package.sender.organ_id]
        return signing.sign_tree(root, signer.key, signer.certificate)

    async def send(self, system: System, data: bytes) -> str:
        digest, package, root = await asyncio.to_thread(self.read, system, data)
        known = await asyncio.to_thread(self.ledger.outgoing, digest)
        if known is None:  # signed once: a resend of the same content submits the same bytes
            signed = await asyncio.to_thread(self.sign, package, root)
            kind = "status" if isinstance(package, edxml.StatusPackage) else "document"
            document_id = (
                package.document_id if isinstance(package, edxml.DocumentPackage) else package.response_for.document_id or ""
            )
            prepared = Outgoing(digest, system.system_id, package.sender.organ_id, kind, document_id, signed,
                                datetime.now(UTC).isoformat())
            known = await asyncio.to_thread(self.ledger.prepare, prepared)
        if known.message_id is not None:
            return known.message_id  # sent before: the SDK did not hear the answer
        try:
            sent = await self.client.send(known.signed)
        except Refused as refusal:
            if not refusal.transient:
                await asyncio.to_thread(self.ledger.forget, digest)
            raise
        await asyncio.to_thread(self.ledger.sent, digest, sent.message_id, sent.receipt)
        return sent.message_id

    # ------------------------------------------------------------ in

    async def tell(self, incoming: Incoming) -> None:
        """Tell the axis the SDK's decision; kept as told when the axis answers, whatever it says."""
        try:
            if incoming.decision == "done":
                await self.client.ack(incoming.message_id, agency=incoming.recipient)
            else:
                reason = f"the software behind the gateway of {incoming.recipient} reported it could not take the package"
                await self.client.refuse(incoming.message_id, agency=incoming.recipient, reason=reason)
        except Refused as refusal:
            if refusal.transient:
                raise
            log.warning("the axis did not take %s of %s for %s: %s", incoming.decision, incoming.message_id,
                        incoming.recipient, refusal)
        await asyncio.to_thread(self.ledger.told, incoming.message_id, incoming.recipient)

    async def take(self, entry: Entry) -> bool:
        """Keep one package listed by the axis; False when there was nothing new to keep."""
        kept = await asyncio.to_thread(self.ledger.incoming, entry.message_id, [entry.recipient])
        if kept:
            held = kept[0]
            if held.decision is None:
                return False  # waits for the software
            if held.told and held.decision == "fail":
                # refused, then requeued by an administrator: the software sees it again as new
                await asyncio.to_thread(self.ledger.reopen, held.message_id, held.recipient)
                return True
            await self.tell(held)  # not told yet, or acknowledged and listed again: (again) done
            return False
        data = await self.client.fetch(entry.message_id)
        try:
            received = await self.client.verify(entry, data)
        except (AdapterError, Refused):
            raise  # the trust directory or the axis certificate could not be read: not the package's fault
        except AxisError as error:
            log.warning("refusing %s for %s: it does not verify here (%s)", entry.message_id, entry.recipient, error)
            reason = f"the recipient's gateway could not verify the package: {error}"
            await self.client.refuse(entry.message_id, agency=entry.recipient, reason=reason)
            return True
        if received.receipt is not None:
            checked = received.receipt.receipt
            recipient = ", ".join(checked.recipients) if checked.kind != "accepted" else ""
            await asyncio.to_thread(self.ledger.add_receipt, checked.message_id, checked.kind, recipient, data)
            await self.client.ack(entry.message_id, agency=entry.recipient)
            return True
        incoming = Incoming(entry.message_id, entry.recipient, entry.kind, entry.sender, entry.accepted_at, data,
                            datetime.now(UTC).isoformat())
        return await asyncio.to_thread(self.ledger.receive, incoming)

    async def _take_one(self, entry: Entry) -> bool:
        """``take``, with a refusal about this one package logged and left for the next round
        (the next entries are not held up by it); a fault of the connection stops the round."""
        try:
            return await self.take(entry)
        except (AdapterError, Refused) as error:
            if isinstance(error, Refused) and not error.transient:
                log.warning("%s for %s is left for now: %s", entry.message_id, entry.recipient, error)
                return False
            raise

    async def pull(self, stop: asyncio.Event, wait: float = 20.0) -> None:
        """The pull loop, until ``stop``: decisions the axis has not heard, then what waits."""
        delay = 1.0
        while not stop.is_set():
            try:
                for incoming in await asyncio.to_thread(self.ledger.untold):
                    await self.tell(incoming)
                entries = await _unless_stopped(stop, self.client.inbox(self.agencies, wait=wait))
                if entries is None:
                    return
                fresh = [await self._take_one(entry) for entry in entries]
                delay = 1.0
                if entries and not any(fresh):  # all of it waits for the SDK: do not spin on it
                    await _sleep(stop, IDLE)
            except (AdapterError, Refused) as error:
                log.warning("pulling from the axis failed (%s); again in %.0f s", error, delay)
                await _sleep(stop, delay)
                delay = min(delay * 2, 60.0)


async def _unless_stopped(stop: asyncio.Event, call: Awaitable[T]) -> T | None:
    """``call``'s result, or None as soon as ``stop`` is set (a long-poll is not waited out)."""
    work, stopping = asyncio.ensure_future(call), asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((work, stopping), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if not work.done():
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work
        return None
    return work.result()


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


class GatewayBackend(Backend):
    """The VXP methods at the gateway, for the system ids it issued."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.ledger = gateway.ledger

    async def system(self, system_id: str) -> System | None:
        found = await asyncio.to_thread(self.ledger.system, system_id)
        if found is None:
            return None
        secret, agencies, issued_at = found
        return System(system_id, Endpoint(system_id, "pull", agencies, issued_at), secret)

    async def send(self, system: System, package: bytes) -> str:
        return await self.gateway.send(system, package)

    async def received(self, system: System, kinds: tuple[str, ...], limit: int) -> list[Received]:
        waiting = await asyncio.to_thread(self.ledger.waiting, system.endpoint.agencies, kinds, limit)
        return [Received(i.message_id, i.kind, i.sender, i.recipient, datetime.fromisoformat(i.accepted_at)) for i in waiting]

    async def count(self, system: System, kind: str) -> int:
        return len(await self.received(system, (kind,), 10_000))

    async def package(self, system: System, doc_id: str) -> bytes:
        kept = await asyncio.to_thread(self.ledger.incoming, doc_id, system.endpoint.agencies)
        if kept:
            return kept[0].data
        sent = await asyncio.to_thread(self.ledger.sent_message, doc_id)
        if sent is not None and sent.sender in system.endpoint.agencies:
            return sent.signed
        raise RoutingRefused("message.not_found", f"no message {doc_id} is held here for this system's agencies")

    async def update(self, system: System, doc_id: str, status: str) -> None:
        kept = await asyncio.to_thread(self.ledger.incoming, doc_id, system.endpoint.agencies)
        if not kept:
            raise RoutingRefused("message.not_found", f"no message {doc_id} was received here for this system's agencies")
        if status == "processing":
            return
        decision = "done" if status == "done" else "fail"
        for incoming in kept:
            await asyncio.to_thread(self.ledger.decide, incoming.message_id, incoming.recipient, decision)
        for incoming in kept:  # durable here first: if the axis cannot be told now, the pull loop tells it
            try:
                await self.gateway.tell(replace(incoming, decision=decision))
            except (AdapterError, Refused) as error:
                log.warning("the axis will hear %s of %s later: %s", decision, doc_id, error)

    async def sent(self, system: System, doc_id: str) -> list[Sent]:
        sent = await asyncio.to_thread(self.ledger.sent_message, doc_id)
        if sent is None or sent.sender not in system.endpoint.agencies:
            raise RoutingRefused("message.not_found", f"no message {doc_id} was sent here by this system's agencies")
        trail = await self.gateway.client.trail(doc_id)
        statuses = {s["recipient"]: s["status_code"] for s in trail["statuses"]}
        title, notation = title_and_notation(await asyncio.to_thread(edxml.parse, sent.signed))
        accepted = datetime.fromisoformat(trail["message"]["accepted_at"])
        return [
            Sent(
                doc_id=doc_id,
                kind=sent.kind,
                sender=sent.sender,
                recipient=d["recipient"],
                sent_at=accepted,
                send_status=d["state"],
                send_status_desc=d["last_error"] or STATE_TEXT.get(d["state"], d["state"]),
                title=title,
                notation=notation,
                received_at=datetime.fromisoformat(d["delivered_at"]) if d["delivered_at"] else None,
                receive_status=statuses.get(d["recipient"], ""),
                receive_status_desc=edxml.STATUS_CODES.get(statuses.get(d["recipient"], ""), ""),
            )
            for d in trail["deliveries"]
        ]

    async def units(self) -> list[Unit]:
        return [
            Unit(a["organ_id"], a["name"], a["form"], a["parent"], a["status"] == "active",
                 datetime.fromisoformat(a["created_at"]))
            for a in await self.gateway.client.agencies()
        ]

    async def register(self, agency: NewAgency) -> None:
        raise RequestRefused("auth.forbidden", "agencies are registered by the axis's administrators, not through a gateway")

    async def delete(self, code: str) -> None:
        raise RequestRefused("auth.forbidden", "agencies are registered by the axis's administrators, not through a gateway")


async def serve(
    gateway: Gateway,
    host: str,
    port: int,
    policy: Vxp,
    stop: asyncio.Event,
    announce: Callable[[str], None],
    *,
    max_package: int = 64 * 1024 * 1024,
    wait: float = 20.0,
) -> None:
    """Answer the SDK on ``host:port`` under ``policy.prefix`` and pull from the axis until
    ``stop``; ``announce`` is told the URL to give the SDK once it listens."""
    await gateway.client.axis_fingerprints()  # receipts are checked against it: fail now, not at the first send
    service = Service(GatewayBackend(gateway), policy, max_package)
    app = web.Application()
    prefix = policy.prefix.rstrip("/")
    service.add_routes(app, prefix)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound = runner.addresses[0]
        announce(f"http://{bound[0]}:{bound[1]}{prefix}")
        await gateway.pull(stop, wait)
    finally:
        await runner.cleanup()
        await gateway.client.close()
        await asyncio.to_thread(gateway.ledger.close)
