"""The HTTP API of DESIGN.md on aiohttp: routes, authentication, limits and error mapping.

Every caller sends ``Authorization: Bearer TOKEN``: an endpoint's token (it may send for, and read
the inboxes of, the agencies it was granted), or an ``admin`` or ``auditor`` role token. Admins
write the registry and requeue dead letters; auditors (and admins) read every message, receipt,
trail and the statistics. ``/v1/axis/certificate``, ``/v1/openapi.json``, ``/healthz``,
``/readyz`` and ``/metrics`` need no token. A message an endpoint may not see is answered 404, as
if it did not exist, so message ids cannot be probed.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any

import yaml
from aiohttp import web

from axis import receipts
from axis.checking import Checked
from axis.errors import AxisError, RequestRefused, RoutingRefused, StoreError
from axis.registry import token_hash
from axis.router import Admission
from axis.server.connections import LOW_HEADROOM, descriptor_limit, open_descriptors
from axis.server.metrics import Labels
from axis.server.problems import problem
from axis.server.runtime import Axis
from axis.store import Delivery, Endpoint, Message
from axis.store.blobs import INLINE_MAX

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
XML_TYPES = ("application/xml", "text/xml")
OPEN_PATHS = ("/healthz", "/readyz", "/metrics", "/v1/axis/certificate", "/v1/openapi.json")
AXIS: web.AppKey[Axis] = web.AppKey("axis", Axis)
BODY_TIMEOUT: web.AppKey[float] = web.AppKey("body_timeout", float)
"""Seconds a request body may stall (``[server] body_timeout``); apps without it wait this long:"""
DEFAULT_BODY_TIMEOUT = 60.0
SELF_AUTHENTICATED: web.AppKey[tuple[str, ...]] = web.AppKey("self_authenticated", tuple)
"""Path prefixes whose routes authenticate callers themselves (the VXP facade's HMAC)."""
Extension = Callable[[web.Application], None]
ACCESS_LOG = logging.getLogger("axis.access")
"""One INFO line per request (``middleware``), JSON: never a token, a query string or a body."""
ACCESS_PATH_MAX = 256
"""Characters of the path logged: a long path must not flood the log."""


@dataclass(frozen=True)
class Principal:
    role: str
    """``endpoint``, ``admin`` or ``auditor``."""
    name: str
    endpoint: Endpoint | None = None


PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body, ensure_ascii=False, default=str).encode(),
        content_type="application/json",
    )


def _axis(request: web.Request) -> Axis:
    return request.app[AXIS]


def _principal(request: web.Request) -> Principal:
    principal: Principal = request[PRINCIPAL]
    return principal


def _peer_fingerprint(request: web.Request) -> str | None:
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    return hashlib.sha256(der).hexdigest() if der else None


async def _authenticate(request: web.Request) -> Principal:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise RequestRefused("auth.missing", "send `Authorization: Bearer TOKEN` (an endpoint or role token)")
    if not token.isascii():
        raise RequestRefused("auth.invalid", "the token is unknown or revoked")
    digest = token_hash(token.strip())
    store = _axis(request).store
    # Served from the registry cache after one indexed read of its version: no thread hop.
    endpoint = store.endpoint_by_token(digest)
    if endpoint is not None:
        if endpoint.client_cert_fingerprint and endpoint.client_cert_fingerprint != _peer_fingerprint(request):
            raise RequestRefused(
                "auth.client_certificate",
                f"endpoint {endpoint.name!r} must connect with its registered TLS client certificate",
            )
        return Principal("endpoint", endpoint.name, endpoint)
    role = store.role_by_token(digest)
    if role is None:
        raise RequestRefused("auth.invalid", "the token is unknown or revoked")
    return Principal(role, role)


def require(*roles: str) -> Callable[[Handler], Handler]:
    """Only these roles may call the handler (403 for the others)."""

    def decorate(handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            principal = _principal(request)
            if principal.role not in roles:
                raise RequestRefused(
                    "auth.forbidden", f"this needs the {' or '.join(roles)} role; the token is {principal.role}'s"
                )
            return await handler(request)

        guarded.__name__ = handler.__name__
        return guarded

    return decorate


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Draining, authentication, problem+json for every refusal, metrics, and one access-log
    line per request: an operator can tell who was refused and why without a debugger. The line
    holds the method, the path (no query string: a token could be put there), the status, the
    refusal code, the caller's endpoint or role and the time taken; never a header or a body."""
    axis = _axis(request)
    started = time.perf_counter()
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    code: str | None = None
    try:
        own = request.path.startswith(request.app[SELF_AUTHENTICATED])  # answers its refusals its own way
        if axis.draining and request.path not in ("/healthz", "/metrics") and not own:
            raise RequestRefused("request.shutting_down", "the axis is shutting down; retry shortly", retry_after=5)
        if request.path not in OPEN_PATHS and not own:
            request[PRINCIPAL] = await _authenticate(request)
        response = await handler(request)
    except AxisError as error:
        code, response = error.code, problem(error)
        axis.metrics.count("axis_refusals_total", "Requests refused, by code.", code=error.code)
    except web.HTTPException as error:  # aiohttp's own refusals: unknown path, wrong method, body too big
        refusal = _http_refusal(error)
        code, response = refusal.code, problem(refusal)
        response.set_status(error.status)
    except BaseException as error:  # aiohttp answers 500 (or nothing, when cancelled) and logs the traceback
        _log_access(request, 499 if isinstance(error, asyncio.CancelledError) else 500, None, started)
        raise
    axis.metrics.observe(time.perf_counter() - started, route=route)
    axis.metrics.count(
        "axis_http_requests_total", "API requests, by route and status.", route=route, status=str(response.status)
    )
    _log_access(request, response.status, code or response.headers.get("X-Axis-Refusal"), started)  # the VXP facade's code
    return response


def _log_access(request: web.Request, status: int, code: str | None, started: float) -> None:
    if not ACCESS_LOG.isEnabledFor(logging.INFO):
        return
    principal = request.get(PRINCIPAL)
    fields = {
        "method": request.method,
        "path": request.path[:ACCESS_PATH_MAX],
        "status": status,
        "code": code,
        "role": principal.role if principal else None,
        "name": principal.name if principal else None,
        "ms": round((time.perf_counter() - started) * 1000, 1),
    }
    ACCESS_LOG.info("%s", json.dumps(fields, ensure_ascii=False), extra={"access": fields})


def _http_refusal(error: web.HTTPException) -> RequestRefused:
    if error.status == 404:
        return RequestRefused("request.not_found", f"no such path; see /v1/openapi.json ({error.reason})")
    if error.status == 405:
        return RequestRefused("request.method_not_allowed", "this path does not take that method")
    if error.status == 413:
        return RequestRefused("request.too_large", "the body is larger than the axis accepts")
    return RequestRefused("request.invalid", error.reason or "the request was refused")


# ---------------------------------------------------------------- submission


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, refused (413) as soon as it exceeds ``limit`` bytes. A client that closes
    the connection mid-body is refused ``request.incomplete``: nobody reads that answer, but the
    access log records it in one line, where an escaping ConnectionError would log a traceback."""
    if request.content_length is not None and request.content_length > limit:
        raise RequestRefused("request.too_large", f"the body is {request.content_length} bytes; the limit is {limit}")
    stall = request.app.get(BODY_TIMEOUT, DEFAULT_BODY_TIMEOUT)
    chunks, size = [], 0
    try:
        while True:
            async with asyncio.timeout(stall):  # a body that stops arriving does not hold its connection
                chunk = await request.content.read(1 << 20)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise RequestRefused("request.too_large", f"the body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
    except ConnectionError:
        raise RequestRefused(
            "request.incomplete", f"the client closed the connection after {size} bytes of the body"
        ) from None
    except TimeoutError:
        raise RequestRefused(
            "request.timeout", f"no byte of the body arrived for {stall:g} s (after {size} bytes); send it again"
        ) from None
    return b"".join(chunks)


def _require_xml(request: web.Request) -> None:
    if request.content_type not in XML_TYPES:
        raise RequestRefused(
            "request.unsupported_media_type",
            f"send the edXML package as Content-Type: application/xml (not {request.content_type or 'nothing'})",
        )


def _check_disk(axis: Axis, incoming: int) -> None:
    free = shutil.disk_usage(axis.settings.data).free
    if free - incoming < axis.settings.server.min_free_disk:
        raise RequestRefused(
            "request.disk_full",
            "the axis is nearly out of disk space and accepts no packages until an operator frees some",
            retry_after=300,
        )


async def submit_package(
    axis: Axis, endpoint: Endpoint, data: bytes, expect: Callable[[Checked], None] | None = None
) -> tuple[dict[str, Any], bool]:
    """Verify, authorise, persist and acknowledge one package: the one way in (the VXP facade uses
    it too). ``expect`` may refuse the verified package before anything is stored."""
    _check_disk(axis, len(data))
    at = datetime.now(UTC)
    checked = await axis.pool.check(data, at, endpoint.name)
    if expect is not None:
        expect(checked)
    try:
        admitted = axis.router.admit(checked, data, endpoint)
        if isinstance(admitted, Admission):
            if len(data) > INLINE_MAX:  # its blob is written and fsync'd first: not on the loop
                stored = await asyncio.to_thread(axis.router.persist, admitted)
            else:
                stored = axis.router.persist(admitted)
            waiting = asyncio.wrap_future(stored)
            await asyncio.wait([waiting])
            waiting.exception()  # retrieved here (accepted() raises it from stored): no "never retrieved" log
            admitted = axis.router.accepted(admitted, stored)
        acceptance = admitted
    except (OSError, StoreError) as error:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC or "disk is full" in str(error):
            raise RequestRefused("request.disk_full", "the axis ran out of disk space; nothing was stored") from None
        raise
    outcome = "accepted" if acceptance.created else "duplicate"
    axis.metrics.count("axis_submissions_total", "Packages accepted or resubmitted.", outcome=outcome, kind=checked.kind)
    return acceptance.as_json(), acceptance.created


@require("endpoint")
async def submit(request: web.Request) -> web.Response:
    axis = _axis(request)
    _require_xml(request)
    data = await read_body(request, axis.settings.server.max_package)
    endpoint = _principal(request).endpoint
    assert endpoint is not None
    body, created = await submit_package(axis, endpoint, data)
    return json_response(body, 202 if created else 200)


# ---------------------------------------------------------------- inbox, fetch, ack


def _agencies(request: web.Request, endpoint: Endpoint) -> tuple[str, ...]:
    wanted = request.query.getall("agency", [])
    if not wanted:
        return endpoint.agencies
    for agency in wanted:
        if agency not in endpoint.agencies:
            raise RequestRefused("auth.forbidden", f"endpoint {endpoint.name!r} does not act for {agency}")
    return tuple(dict.fromkeys(wanted))


def _number(request: web.Request, name: str, default: float, low: float, high: float) -> float:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise RequestRefused("request.invalid", f"{name} must be a number, not {text!r}") from None
    if not low <= value <= high:
        raise RequestRefused("request.invalid", f"{name} must be between {low:g} and {high:g}")
    return value


@require("endpoint")
async def inbox(request: web.Request) -> web.Response:
    axis = _axis(request)
    endpoint = _principal(request).endpoint
    assert endpoint is not None
    agencies = _agencies(request, endpoint)
    page = axis.settings.server.inbox_page
    limit = int(_number(request, "limit", page, 1, page))
    wait = _number(request, "wait", 0, 0, axis.settings.server.max_wait)
    deadline = time.monotonic() + wait
    while True:
        events = [axis.waiters.event(a) for a in agencies]  # before the query: no wake-up is missed
        items = await asyncio.to_thread(axis.store.inbox, agencies, limit)
        remaining = deadline - time.monotonic()
        if items or remaining <= 0 or axis.draining:
            break
        waits = [asyncio.ensure_future(e.wait()) for e in events]
        waits.append(asyncio.ensure_future(axis.waiters.closing.wait()))
        _, pending = await asyncio.wait(waits, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        for future in pending:
            future.cancel()
    return json_response(
        {
            "items": [
                {
                    "message_id": i.message.id,
                    "kind": i.message.kind,
                    "sender": i.message.sender,
                    "recipient": i.delivery.recipient,
                    "document_id": i.message.document_id,
                    "sha256": i.message.sha256,
                    "size": i.message.size,
                    "accepted_at": i.message.accepted_at,
                }
                for i in items
            ]
        }
    )


async def visible_message(axis: Axis, message_id: str, endpoint: Endpoint | None) -> tuple[Message, list[Delivery]]:
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
    axis: Axis, message_id: str, endpoint: Endpoint, agencies: set[str]
) -> tuple[Message, list[Delivery]]:
    """A visible message and its deliveries to ``agencies`` (what a recipient acknowledges);
    ``message.not_found`` when none is addressed to them."""
    message, deliveries = await visible_message(axis, message_id, endpoint)
    mine = [d for d in deliveries if d.recipient in agencies]
    if not mine:
        raise RoutingRefused("message.not_found", f"message {message_id} is not addressed to {', '.join(sorted(agencies))}")
    return message, mine


async def _visible_message(request: web.Request) -> tuple[Message, list[Delivery]]:
    return await visible_message(_axis(request), request.match_info["message_id"], _principal(request).endpoint)


@require("endpoint", "admin", "auditor")
async def fetch(request: web.Request) -> web.Response:
    axis = _axis(request)
    message, _ = await _visible_message(request)
    data = await asyncio.to_thread(axis.store.blobs.get, message.sha256)
    return web.Response(
        body=data,
        content_type="application/xml",
        headers={
            "X-Axis-Sha256": message.sha256,
            "X-Axis-Kind": message.kind,
            "X-Axis-Sender": message.sender,
            "X-Axis-Accepted-At": message.accepted_at,
        },
    )


async def acknowledge(
    axis: Axis, endpoint: Endpoint, message_id: str, agencies: set[str], status: bytes = b""
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

        accepted, _ = await submit_package(axis, endpoint, status, arrived)
    for delivery in mine:
        await asyncio.to_thread(axis.router.delivered, delivery, status)
    axis.metrics.count("axis_deliveries_total", "Delivery outcomes.", len(mine), outcome="delivered")
    return message, [d.recipient for d in mine], accepted


async def refuse(axis: Axis, endpoint: Endpoint, message_id: str, agencies: set[str], reason: str) -> list[str]:
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


@require("endpoint")
async def ack(request: web.Request) -> web.Response:
    axis = _axis(request)
    endpoint = _principal(request).endpoint
    assert endpoint is not None
    data = await read_body(request, axis.settings.server.max_package)
    if data:
        _require_xml(request)
    message_id, agencies = request.match_info["message_id"], set(_agencies(request, endpoint))
    message, acknowledged, status = await acknowledge(axis, endpoint, message_id, agencies, data)
    return json_response({"message_id": message.id, "acknowledged": acknowledged, "status": status})


@require("endpoint")
async def refuse_message(request: web.Request) -> web.Response:
    """The recipient's software cannot take the package (``{"reason": "..."}``, optional)."""
    axis = _axis(request)
    endpoint = _principal(request).endpoint
    assert endpoint is not None
    body = await read_body(request, 64 * 1024)
    reason = f"the recipient's endpoint {endpoint.name!r} refused the package"
    if body:
        try:
            given = json.loads(body)
        except (ValueError, RecursionError):
            given = None
        if not isinstance(given, dict) or not isinstance(given.get("reason", ""), str):
            raise RequestRefused("request.invalid", 'the body must be a JSON object {"reason": "..."}')
        reason = str(given.get("reason") or reason)
    message_id, agencies = request.match_info["message_id"], set(_agencies(request, endpoint))
    refused = await refuse(axis, endpoint, message_id, agencies, reason)
    return json_response({"message_id": message_id, "refused": refused})


def _own_view(request: web.Request, message: Message) -> set[str] | None:
    """The agencies whose deliveries this caller may see: all (None) for the sender's endpoint,
    admins and auditors; only its own for a recipient's endpoint (not the other recipients')."""
    endpoint = _principal(request).endpoint
    if endpoint is None or message.sender in endpoint.agencies:
        return None
    return set(endpoint.agencies)


@require("endpoint", "admin", "auditor")
async def message_receipts(request: web.Request) -> web.Response:
    axis = _axis(request)
    message, _ = await _visible_message(request)
    own = _own_view(request, message)
    rows = await asyncio.to_thread(axis.store.receipts, message.id)
    return json_response(
        {
            "items": [
                {"kind": k, "recipient": r, "xml": x.decode()}
                for k, r, x in rows
                if own is None or (r is not None and r in own)
            ]
        }
    )


def _delivery_json(d: Any) -> dict[str, Any]:
    row = asdict(d)
    for key in ("created_at", "due_at", "expires_at", "lease_deadline", "delivered_at"):
        if row[key] is not None:
            row[key] = datetime.fromtimestamp(row[key], UTC).isoformat()
    return row


@require("endpoint", "admin", "auditor")
async def trail(request: web.Request) -> web.Response:
    axis = _axis(request)
    message, deliveries = await _visible_message(request)
    own = _own_view(request, message)
    deliveries = [d for d in deliveries if own is None or d.recipient in own]
    subjects = {message.id, *(str(d.id) for d in deliveries)}
    events = [e for e in await asyncio.to_thread(axis.store.trail, message.id) if e.get("subject") in subjects]
    statuses = (
        await asyncio.to_thread(axis.store.statuses, message.sender, message.document_id)
        if message.kind == "document"
        else []
    )
    statuses = [s for s in statuses if own is None or s["recipient"] in own]
    return json_response(
        {
            "message": asdict(message),
            "deliveries": [_delivery_json(d) for d in deliveries],
            "statuses": statuses,
            "events": events,
        }
    )


# ---------------------------------------------------------------- open endpoints


async def certificate(request: web.Request) -> web.Response:
    return web.Response(body=_axis(request).certificate_pem, content_type="application/x-pem-file")


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready: not draining, the database answers, disk and file descriptors have headroom."""
    axis = _axis(request)
    if axis.draining:
        raise RequestRefused("request.shutting_down", "the axis is shutting down", retry_after=5)
    await asyncio.to_thread(axis.store.agency, "")  # the database answers
    _check_disk(axis, 0)
    limit, opened = descriptor_limit(), open_descriptors()
    connections = axis.connections
    held = {"open": connections.open, "cap": connections.cap, "refused": connections.refused} if connections else None
    if (opened is not None and opened > LOW_HEADROOM * limit) or (connections and connections.open >= connections.cap):
        raise RequestRefused(
            "request.overloaded",
            f"{opened} of {limit} file descriptors are open and {held} connections are held: little headroom is left",
            retry_after=5,
        )
    return json_response({"status": "ready", "descriptors": {"open": opened, "limit": limit}, "connections": held})


async def metrics(request: web.Request) -> web.Response:
    axis = _axis(request)
    counts = await asyncio.to_thread(axis.store.delivery_counts)
    gauges: dict[str, tuple[str, dict[Labels, float]]] = {
        "axis_deliveries": ("Deliveries by state.", {(("state", s),): float(n) for s, n in counts.items()}),
        "axis_verifier_pools_replaced": ("Verification workers replaced after a timeout or crash.", {(): float(axis.pool.replaced)}),
        "axis_draining": ("1 while the axis shuts down.", {(): float(axis.draining)}),
    }
    if axis.dispatcher is not None:
        gauges["axis_push_attempts"] = (
            "Push attempts since start, by outcome.",
            {
                (("outcome", "delivered"),): float(axis.dispatcher.delivered),
                (("outcome", "failed"),): float(axis.dispatcher.failed_attempts),
            },
        )
    return web.Response(text=axis.metrics.render(gauges), content_type="text/plain", charset="utf-8")


@require("endpoint", "admin", "auditor")
async def agencies(request: web.Request) -> web.Response:
    """The registry's agencies (the directory agency software addresses documents from)."""
    rows = await asyncio.to_thread(_axis(request).store.agencies)
    return json_response({"items": [asdict(a) for a in rows]})


@cache
def _openapi() -> bytes:
    text = resources.files("axis.server").joinpath("openapi.yaml").read_text(encoding="utf-8")
    return json.dumps(yaml.safe_load(text), ensure_ascii=False).encode()


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=_openapi(), content_type="application/json")


# ---------------------------------------------------------------- statistics


@require("admin", "auditor")
async def stats(request: web.Request) -> web.Response:
    axis = _axis(request)
    today = datetime.now(UTC).date()

    def day(name: str, default: Any) -> Any:
        text = request.query.get(name)
        try:
            return datetime.strptime(text, "%Y-%m-%d").date() if text else default  # noqa: DTZ007 (a date)
        except ValueError:
            raise RequestRefused("request.invalid", f"{name} must be a date YYYY-MM-DD, not {text!r}") from None

    start, end = day("from", today - timedelta(days=30)), day("to", today + timedelta(days=1))
    period = request.query.get("period", "all")
    widths = {"day": 10, "month": 7, "all": 0}
    if period not in widths:
        raise RequestRefused("request.invalid", "period must be day, month or all")
    rows = await asyncio.to_thread(
        axis.store.stats, start.isoformat(), end.isoformat(), widths[period], today.strftime("%Y/%m/%d")
    )
    return json_response({"from": start.isoformat(), "to": end.isoformat(), "period": period, "items": rows})


@web.middleware
async def _in_flight(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count the requests being answered: SIGTERM lets them finish (``Running.stop``)."""
    axis = _axis(request)
    axis.in_flight += 1
    try:
        return await handler(request)
    finally:
        axis.in_flight -= 1


def build_app(axis: Axis, extensions: Sequence[Extension] = ()) -> web.Application:
    """The API; each extension (adapters such as the VXP facade) adds its routes to it."""
    from axis.server import admin

    # The submit route reads its own body with the configured limit; other bodies are small.
    app = web.Application(middlewares=[_in_flight, middleware], client_max_size=axis.settings.server.max_package)
    app[AXIS] = axis
    app[BODY_TIMEOUT] = axis.settings.server.body_timeout
    app[SELF_AUTHENTICATED] = ()
    app.router.add_post("/v1/messages", submit)
    app.router.add_get("/v1/inbox", inbox)
    app.router.add_get("/v1/messages/{message_id}", fetch)
    app.router.add_post("/v1/messages/{message_id}/ack", ack)
    app.router.add_post("/v1/messages/{message_id}/refuse", refuse_message)
    app.router.add_get("/v1/agencies", agencies)
    app.router.add_get("/v1/messages/{message_id}/receipts", message_receipts)
    app.router.add_get("/v1/messages/{message_id}/trail", trail)
    app.router.add_get("/v1/axis/certificate", certificate)
    app.router.add_get("/v1/stats", stats)
    app.router.add_get("/v1/openapi.json", openapi)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    admin.add_routes(app)
    for extend in extensions:
        extend(app)
    return app
