"""The push receiver: the axis POSTs each package to a push endpoint's URL; this answers it.
``axis adapter webhook --listen HOST:PORT --dir D --agency ID ...``.

Each request is checked before anything is kept: the headers the axis sends, the body's SHA-256
against ``X-Axis-Sha256``, the recipient among the agencies served, then the signature here
(an agency's at its acceptance time, the axis's on a receipt). A package is handed once, to the
folder layout (exactly once, ``Layout.hand``) or to a callback (remembered in the dedupe after the
callback returns), and only then answered 200; a repeat push is answered 200 without handing it
again. A package whose signature does not verify here is answered 200 too, with outcome
``rejected`` (and kept in ``error/``): the transport delivered it, and the axis would only push it
again. The answer's body goes into the sender's ``delivered`` receipt as its SHA-256.

The axis does not sign its pushes; what proves a package genuine is its signature, checked here.
Serve the receiver over TLS, or on a network only the axis reaches.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from adapters.client import AxisClient, Entry, Received
from adapters.layout import Layout
from adapters.seen import Seen
from axis.errors import AdapterError, AxisError, Refused

log = logging.getLogger("axis.adapter.webhook")
KINDS = ("document", "status", "receipt")
HEADERS = {
    "message_id": "X-Axis-Message-Id",
    "kind": "X-Axis-Kind",
    "sender": "X-Axis-Sender",
    "recipient": "X-Axis-Recipient",
    "sha256": "X-Axis-Sha256",
    "accepted_at": "X-Axis-Accepted-At",
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
        self._locks = [asyncio.Lock() for _ in range(64)]
        """Striped by (message, recipient): two pushes of one package are handed one after the other."""

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_package)
        app.router.add_post("/{tail:.*}", self.receive)
        app.router.add_get("/healthz", self.healthz)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    def _entry(self, request: web.Request, data: bytes) -> Entry | web.Response:
        values: dict[str, Any] = {}
        for name, header in HEADERS.items():
            value = request.headers.get(header)
            if not value:
                return _problem("adapter.bad_push", 400, f"the request has no {header} header: is this the axis?")
            values[name] = value
        if not MESSAGE_ID.fullmatch(values["message_id"]):
            return _problem("adapter.bad_push", 400, f"{HEADERS['message_id']} is not a message id of the axis")
        try:
            accepted = datetime.fromisoformat(values["accepted_at"])
        except ValueError:
            accepted = None
        if accepted is None or accepted.tzinfo is None:
            return _problem("adapter.bad_push", 400, f"{HEADERS['accepted_at']} must be an ISO 8601 time with its offset")
        if values["kind"] not in KINDS:
            return _problem("adapter.bad_push", 400, f"unknown {HEADERS['kind']} {values['kind']!r}")
        if values["recipient"] not in self.agencies:
            return _problem("adapter.not_served", 403, f"this receiver does not serve {values['recipient']}")
        if hashlib.sha256(data).hexdigest() != values["sha256"]:
            return _problem("adapter.corrupt_download", 400, "the body's SHA-256 differs from X-Axis-Sha256")
        return Entry(document_id="", size=len(data), **values)

    async def receive(self, request: web.Request) -> web.Response:
        data = await request.read()
        entry = self._entry(request, data)
        if isinstance(entry, web.Response):
            return entry
        assert self.seen is not None
        async with self._locks[hash((entry.message_id, entry.recipient)) % len(self._locks)]:
            outcome, code = await self._hand(entry, data)
        body: dict[str, Any] = {"message_id": entry.message_id, "recipient": entry.recipient, "outcome": outcome}
        if code:
            body["code"] = code
        return web.Response(body=json.dumps(body).encode(), content_type="application/json")

    async def _hand(self, entry: Entry, data: bytes) -> tuple[str, str | None]:
        assert self.seen is not None
        if await asyncio.to_thread(self.seen.has, entry.message_id, entry.recipient):
            return "duplicate", None
        try:
            received = await self.client.verify(entry, data)
        except (AdapterError, Refused) as error:  # the axis certificate could not be fetched: not the package's fault
            log.warning("cannot verify %s now: %s", entry.message_id, error)
            raise web.HTTPServiceUnavailable(headers={"Retry-After": "30"}) from None
        except AxisError as error:
            log.warning("rejected %s for %s: %s", entry.message_id, entry.recipient, error)
            if self.layout is not None:
                await asyncio.to_thread(self.layout.reject, entry.recipient, entry.message_id, data, error)
            await asyncio.to_thread(self.seen.add, entry.message_id, entry.recipient, entry.kind, error.code)
            return "rejected", error.code
        if self.layout is not None:
            await asyncio.to_thread(self.layout.hand, received)
        else:
            assert self.handler is not None
            await self.handler(received)
            await asyncio.to_thread(self.seen.add, entry.message_id, entry.recipient, entry.kind, "handed")
        log.info("received %s %s for %s", entry.kind, entry.message_id, entry.recipient)
        return "stored", None
