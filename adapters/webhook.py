"""The push receiver: the axis POSTs each package to a push endpoint's URL; this answers it.
``axis adapter webhook --listen HOST:PORT --dir D --agency ID ...``.

Each push is checked before anything is kept. The axis's headers come first (a UUID message
id, a known kind, a recipient this receiver serves), then the body's SHA-256 against
``X-Axis-Sha256``. The axis does not sign its pushes, so the receiver then asks the axis, with
its own endpoint token, what it holds under that message id. The bytes, the kind and the sender
must match, and the signature is checked at the acceptance time the axis gives. Last, the verified
package must be addressed to that recipient.

A package is handed once, to the folder layout (exactly once, ``Layout.hand``) or to a callback
(remembered in the dedupe after the callback returns), and only then answered 200. A repeat push
is answered 200 without handing it again. A package the axis confirms but whose signature does
not verify here is answered 200 too, with outcome ``rejected``, and kept in ``error/``: the
transport delivered it, and the axis would only push it again. The answer's body goes into the
sender's ``delivered`` receipt as its SHA-256. When the axis or the trust directory cannot be
reached the answer is 503, and the axis pushes again later.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from aiohttp import web

from adapters.client import AxisClient, Entry, Received
from adapters.layout import Layout
from adapters.seen import Seen
from axis import edxml
from axis.errors import AdapterError, AxisError, Refused

log = logging.getLogger("axis.adapter.webhook")
KINDS = ("document", "status", "receipt")
HEADERS = {
    "message_id": "X-Axis-Message-Id",
    "kind": "X-Axis-Kind",
    "sender": "X-Axis-Sender",
    "recipient": "X-Axis-Recipient",
    "sha256": "X-Axis-Sha256",
}
MESSAGE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
"""The axis names messages with UUIDs; a header that is anything else never becomes a file name."""
Handler = Callable[[Received], Awaitable[None]]


def _problem(code: str, status: int, detail: str) -> web.Response:
    return web.json_response({"code": code, "title": code, "detail": detail}, status=status, content_type="application/problem+json")


class Webhook:
    """Hand pushed packages to ``layout`` or to ``handler`` (with ``seen`` for the dedupe).
    ``client`` verifies (its trust directory, and the axis certificate for receipts)."""

    def __init__(
        self,
        client: AxisClient,
        agencies: tuple[str, ...],
        *,
        layout: Layout | None = None,
        handler: Handler | None = None,
        seen: Seen | None = None,
        max_package: int = 64 * 1024 * 1024,
    ) -> None:
        if (layout is None) == (handler is None):
            raise ValueError("give a layout or a handler")
        self.client = client
        self.agencies = agencies
        self.layout = layout
        self.handler = handler
        self.seen = layout.seen if layout is not None else seen
        if self.seen is None:
            raise ValueError("a handler needs a dedupe (seen)")
        self.max_package = max_package
        self._busy = asyncio.Semaphore(8)
        """Bodies held in memory at once (each up to ``max_package``)."""
        self._locks = [asyncio.Lock() for _ in range(64)]
        """Striped by (message, recipient): two pushes of one package are handed one after the other."""

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_package)
        app.router.add_post("/{tail:.*}", self.receive)
        app.router.add_get("/healthz", self.healthz)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    def _headers(self, request: web.Request) -> dict[str, str] | web.Response:
        """The axis's headers, checked before the body is read."""
        values: dict[str, str] = {}
        for name, header in HEADERS.items():
            value = request.headers.get(header)
            if not value:
                return _problem("adapter.bad_push", 400, f"the request has no {header} header: is this the axis?")
            values[name] = value
        if not MESSAGE_ID.fullmatch(values["message_id"]):
            return _problem("adapter.bad_push", 400, f"{HEADERS['message_id']} is not a message id of the axis")
        if values["kind"] not in KINDS:
            return _problem("adapter.bad_push", 400, f"unknown {HEADERS['kind']} {values['kind']!r}")
        if values["recipient"] not in self.agencies:
            return _problem("adapter.not_served", 403, f"this receiver does not serve {values['recipient']}")
        return values

    async def receive(self, request: web.Request) -> web.Response:
        claimed = self._headers(request)
        if isinstance(claimed, web.Response):
            return claimed
        async with self._busy:
            data = await request.read()
            if hashlib.sha256(data).hexdigest() != claimed["sha256"]:
                return _problem("adapter.corrupt_download", 400, "the body's SHA-256 differs from X-Axis-Sha256")
            async with self._locks[hash((claimed["message_id"], claimed["recipient"])) % len(self._locks)]:
                answer = await self._hand(claimed, data)
        if isinstance(answer, web.Response):
            return answer
        outcome, code = answer
        body: dict[str, Any] = {"message_id": claimed["message_id"], "recipient": claimed["recipient"], "outcome": outcome}
        if code:
            body["code"] = code
        return web.Response(body=json.dumps(body).encode(), content_type="application/json")

    async def _confirm(self, claimed: dict[str, str]) -> Entry | web.Response:
        """Ask the axis what it holds under this message id for this endpoint: a push is believed
        only when the axis confirms the bytes, the kind and the sender."""
        try:
            held = await self.client.describe(claimed["message_id"])
        except Refused as refused:
            if refused.transient:
                raise web.HTTPServiceUnavailable(headers={"Retry-After": "30"}) from None
            return _problem("adapter.bad_push", 400, f"the axis does not confirm this push ({refused.code})")
        except AdapterError:
            raise web.HTTPServiceUnavailable(headers={"Retry-After": "30"}) from None
        if (held.sha256, held.kind, held.sender) != (claimed["sha256"], claimed["kind"], claimed["sender"]):
            return _problem("adapter.bad_push", 400, "the axis holds other bytes, kind or sender under this message id")
        return replace(held, recipient=claimed["recipient"])

    async def _hand(self, claimed: dict[str, str], data: bytes) -> tuple[str, str | None] | web.Response:
        assert self.seen is not None
        if await asyncio.to_thread(self.seen.has, claimed["message_id"], claimed["recipient"]):
            return "duplicate", None
        entry = await self._confirm(claimed)
        if isinstance(entry, web.Response):
            return entry
        try:
            received = await self.client.verify(entry, data)
        except (AdapterError, Refused) as error:  # the trust directory or the axis certificate, not the package
            log.warning("cannot verify %s now: %s", entry.message_id, error)
            raise web.HTTPServiceUnavailable(headers={"Retry-After": "30"}) from None
        except AxisError as error:
            log.warning("rejected %s for %s: %s", entry.message_id, entry.recipient, error)
            if self.layout is not None:
                await asyncio.to_thread(self.layout.reject, entry.recipient, entry.message_id, data, error)
            await asyncio.to_thread(self.seen.add, entry.message_id, entry.recipient, entry.kind, error.code)
            return "rejected", error.code
        if entry.recipient not in addressees(received):
            return _problem("adapter.bad_push", 400, f"the package is not addressed to {entry.recipient}")
        if self.layout is not None:
            await asyncio.to_thread(self.layout.hand, received)
        else:
            assert self.handler is not None
            await self.handler(received)
            await asyncio.to_thread(self.seen.add, entry.message_id, entry.recipient, entry.kind, "handed")
        log.info("received %s %s for %s", entry.kind, entry.message_id, entry.recipient)
        return "stored", None


def addressees(received: Received) -> set[str]:
    """Who a verified package is for: a document's recipients; a status's original sender (a
    take-back, 13, goes to the document's recipients, which the status does not name: anyone);
    a receipt's sender."""
    if received.receipt is not None:
        return {received.receipt.receipt.sender}
    assert received.package is not None
    package = received.package.package
    if isinstance(package, edxml.DocumentPackage):
        return {r.organ_id for r in package.recipients}
    if package.status_code == "13":
        return {received.entry.recipient}
    return {package.response_for.organ_id or ""}
