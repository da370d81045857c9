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
import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from aiohttp import web

from axis import exchange, keystore
from axis import report as report_format
from axis.errors import AxisError, RequestRefused
from axis.registry import token_hash
from axis.server import admin, console
from axis.server.connections import LOW_HEADROOM, descriptor_limit, open_descriptors
from axis.server.http import (
    AXIS,
    BODY_TIMEOUT,
    PRINCIPAL,
    SELF_AUTHENTICATED,
    Handler,
    Principal,
    delivery_json,
    json_response,
    node,
    principal,
    read_body,
    read_json,
    read_package,
    require,
)
from axis.server.metrics import CONTENT_TYPE, Gauge
from axis.server.problems import problem
from axis.store import Delivery, Endpoint, Message

if TYPE_CHECKING:
    from axis.server.runtime import Axis

XML_TYPES = ("application/xml", "text/xml")
Extension = Callable[[web.Application], None]
"""Adds routes to the API (the VXP facade is one)."""
OPEN_PATHS = ("/healthz", "/readyz", "/metrics", "/v1/axis/certificate", "/v1/openapi.json")
ACCESS_LOG = logging.getLogger("axis.access")
"""One INFO line per request (``middleware``), JSON: never a token, a query string or a body."""
ACCESS_PATH_MAX = 256
"""Characters of the path logged: a long path must not flood the log."""


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
    store = node(request).store
    # Served from the registry cache after one indexed read of its version: no thread hop.
    endpoint = store.endpoint_by_token(digest)
    if endpoint is not None:
        if endpoint.client_cert_fingerprint and endpoint.client_cert_fingerprint != _peer_fingerprint(request):
            raise RequestRefused(
                "auth.client_certificate",
                f"endpoint {endpoint.name!r} must connect with its registered TLS client certificate",
            )
        node(request).contacts[endpoint.name] = time.time()
        return Principal("endpoint", endpoint.name, endpoint)
    role = store.role_by_token(digest)
    if role is None:
        raise RequestRefused("auth.invalid", "the token is unknown or revoked")
    return Principal(role, role)


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Draining, authentication, problem+json for every refusal, metrics, and one access-log
    line per request: an operator can tell who was refused and why without a debugger. The line
    holds the method, the path (no query string: a token could be put there), the status, the
    refusal code, the caller's endpoint or role and the time taken; never a header or a body."""
    axis = node(request)
    started = time.perf_counter()
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    code: str | None = None
    try:
        own = request.path.startswith(request.app[SELF_AUTHENTICATED])  # prefixes end in "/": whole segments
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


def _require_xml(request: web.Request) -> None:
    if request.content_type not in XML_TYPES:
        raise RequestRefused(
            "request.unsupported_media_type",
            f"send the edXML package as Content-Type: application/xml (not {request.content_type or 'nothing'})",
        )


@require("endpoint")
async def submit(request: web.Request) -> web.Response:
    axis = node(request)
    _require_xml(request)
    package = await read_package(request, axis.settings.server.max_package, axis.store.blobs.spool())
    endpoint = principal(request).endpoint
    assert endpoint is not None
    body, created = await exchange.submit(axis, endpoint, package)
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
    axis = node(request)
    endpoint = principal(request).endpoint
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


async def _visible_message(request: web.Request) -> tuple[Message, list[Delivery]]:
    return await exchange.visible(node(request), request.match_info["message_id"], principal(request).endpoint)


@require("endpoint", "admin", "auditor")
async def fetch(request: web.Request) -> web.StreamResponse:
    axis = node(request)
    message, _ = await _visible_message(request)
    stored = await asyncio.to_thread(axis.store.blobs.open, message.sha256)  # checked against its digest
    headers = {
        "X-Axis-Sha256": message.sha256,
        "X-Axis-Kind": message.kind,
        "X-Axis-Sender": message.sender,
        "X-Axis-Accepted-At": message.accepted_at,
    }
    if isinstance(stored, bytes):
        return web.Response(body=stored, content_type="application/xml", headers=headers)
    if isinstance(stored, Path):  # a large package streams from its file (sendfile), never read whole
        return web.FileResponse(stored, headers={**headers, "Content-Type": "application/xml"})
    response = web.StreamResponse(headers={**headers, "Content-Type": "application/xml"})  # ... or its pieces
    await response.prepare(request)
    while piece := await asyncio.to_thread(next, stored, b""):
        await response.write(piece)
    await response.write_eof()
    return response


@require("endpoint")
async def ack(request: web.Request) -> web.Response:
    axis = node(request)
    endpoint = principal(request).endpoint
    assert endpoint is not None
    data = await read_body(request, axis.settings.server.max_package)
    if data:
        _require_xml(request)
    message_id, agencies = request.match_info["message_id"], set(_agencies(request, endpoint))
    message, acknowledged, status = await exchange.acknowledge(axis, endpoint, message_id, agencies, data)
    return json_response({"message_id": message.id, "acknowledged": acknowledged, "status": status})


@require("endpoint")
async def refuse_message(request: web.Request) -> web.Response:
    """The recipient's software cannot take the package (``{"reason": "..."}``, optional)."""
    axis = node(request)
    endpoint = principal(request).endpoint
    assert endpoint is not None
    given = await read_json(request, 64 * 1024) or {}
    if not isinstance(given.get("reason", ""), str):
        raise RequestRefused("request.invalid", 'the body must be a JSON object {"reason": "..."}')
    reason = given.get("reason") or f"the recipient's endpoint {endpoint.name!r} refused the package"
    message_id, agencies = request.match_info["message_id"], set(_agencies(request, endpoint))
    refused = await exchange.refuse(axis, endpoint, message_id, agencies, reason)
    return json_response({"message_id": message_id, "refused": refused})


def _own_view(request: web.Request, message: Message) -> set[str] | None:
    """The agencies whose deliveries this caller may see: all (None) for the sender's endpoint,
    admins and auditors; only its own for a recipient's endpoint (not the other recipients')."""
    endpoint = principal(request).endpoint
    if endpoint is None or message.sender in endpoint.agencies:
        return None
    return set(endpoint.agencies)


@require("endpoint", "admin", "auditor")
async def message_receipts(request: web.Request) -> web.Response:
    axis = node(request)
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


@require("endpoint", "admin", "auditor")
async def trail(request: web.Request) -> web.Response:
    axis = node(request)
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
            "deliveries": [delivery_json(d) for d in deliveries],
            "statuses": statuses,
            "events": events,
        }
    )


# ---------------------------------------------------------------- open endpoints


async def certificate(request: web.Request) -> web.Response:
    return web.Response(body=node(request).certificate_pem, content_type="application/x-pem-file")


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready: not draining, the database answers, disk and file descriptors have headroom."""
    axis = node(request)
    if axis.draining:
        raise RequestRefused("request.shutting_down", "the axis is shutting down", retry_after=5)
    await asyncio.to_thread(axis.store.agency, "")  # the database answers
    exchange.check_disk(axis, 0)
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
    axis = node(request)
    gauges = await axis.metrics.scraped(lambda: asyncio.to_thread(_scraped, axis))
    return web.Response(body=axis.metrics.render(gauges), headers={"Content-Type": CONTENT_TYPE})


def _scraped(axis: Axis) -> list[Gauge]:
    """The gauges read at each scrape (from a thread: the store and the trust directory are read)."""
    counts = axis.store.delivery_counts()
    expiry: dict[tuple[str, ...], float] = {}
    for record in axis.store.certificates():
        if record.revoked_at is None:
            at = datetime.fromisoformat(record.not_after).timestamp()
            expiry[(record.organ_id,)] = max(expiry.get((record.organ_id,), 0.0), at)
    crls: dict[tuple[str, ...], float] = {}
    with contextlib.suppress(AxisError, OSError, ValueError):
        for crl in keystore.read_trust(axis.settings.trust).crls:
            if crl.next_update_utc is not None:
                crls[(crl.issuer.rfc4514_string(),)] = crl.next_update_utc.timestamp()
    pool = axis.pool
    gauges = [
        Gauge("axis_queue_deliveries", "Deliveries by state (queued and leased: the backlog; expired: dead letters).",
              ("state",), {(s,): float(n) for s, n in counts.items()}),
        Gauge("axis_verifier_workers", "Verification worker processes.", (), {(): float(pool.live_workers())}),
        Gauge("axis_verifier_waiting", "Packages waiting for a verification worker.", (), {(): float(pool.waiting())}),
        Gauge("axis_verifier_replaced", "Verification workers replaced after a timeout, a crash or the memory cap, since start.",
              (), {(): float(pool.replaced)}),
        Gauge("axis_draining", "1 while the axis shuts down.", (), {(): float(axis.draining)}),
        Gauge("axis_certificate_expiry_timestamp_seconds", "When each agency's last valid signing certificate expires.",
              ("organ_id",), expiry),
        Gauge("axis_crl_next_update_timestamp_seconds", "When each trusted CA's CRL is due to be replaced.", ("issuer",), crls),
        Gauge("axis_data_free_bytes", "Free space of the data directory.", (), {(): float(shutil.disk_usage(axis.settings.data).free)}),
    ]
    if axis.dispatcher is not None:
        gauges.append(Gauge(
            "axis_push_attempts", "Push attempts since start, by outcome.", ("outcome",),
            {("delivered",): float(axis.dispatcher.delivered), ("failed",): float(axis.dispatcher.failed_attempts)},
        ))
    return gauges


@require("endpoint", "admin", "auditor")
async def agencies(request: web.Request) -> web.Response:
    """The registry's agencies (the directory agency software addresses documents from)."""
    rows = await asyncio.to_thread(node(request).store.agencies)
    return json_response({"items": [asdict(a) for a in rows]})


@cache
def _openapi() -> bytes:
    text = resources.files("axis.server").joinpath("openapi.yaml").read_text(encoding="utf-8")
    return json.dumps(yaml.safe_load(text), ensure_ascii=False).encode()


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=_openapi(), content_type="application/json")


# ---------------------------------------------------------------- statistics


def _day(request: web.Request, name: str, default: date | None) -> date | None:
    text = request.query.get(name)
    try:
        return datetime.strptime(text, "%Y-%m-%d").date() if text else default  # noqa: DTZ007 (a date)
    except ValueError:
        raise RequestRefused("request.invalid", f"{name} must be a date YYYY-MM-DD, not {text!r}") from None


@require("admin", "auditor")
async def stats(request: web.Request) -> web.Response:
    axis = node(request)
    today = datetime.now(UTC).date()
    start, end = _day(request, "from", today - timedelta(days=30)), _day(request, "to", today + timedelta(days=1))
    assert start is not None and end is not None
    period = request.query.get("period", "all")
    rows = await exchange.stats(axis, start, end, period)
    latest = await exchange.latest_checkpoint(axis)
    checkpoint = latest.checkpoint.summary() if latest else None
    return json_response(
        {"from": start.isoformat(), "to": end.isoformat(), "period": period, "items": rows, "checkpoint": checkpoint}
    )


@require("admin", "auditor")
async def periodic_report(request: web.Request) -> web.Response:
    """The periodic exchange report (``period``: 2026-11, 2026-Q3, 2026-H1, 2026; ``agency``;
    ``format``: json, csv, xlsx)."""
    chosen = request.query.get("format", "json")
    if chosen not in report_format.MEDIA_TYPES:
        raise RequestRefused("request.invalid", "format must be json, csv or xlsx")
    made = await exchange.report(node(request), request.query.get("period", ""), request.query.get("agency") or None)
    body = await asyncio.to_thread(report_format.render, made, chosen)
    headers = {"Content-Type": report_format.MEDIA_TYPES[chosen]}
    if chosen != "json":
        headers["Content-Disposition"] = f'attachment; filename="bao-cao-{made.period.label}.{chosen}"'
    return web.Response(body=body, headers=headers)


# ---------------------------------------------------------------- audit checkpoints


@require("endpoint", "admin", "auditor")
async def list_checkpoints(request: web.Request) -> web.Response:
    """The signed checkpoints of the audit log, for witnesses to keep: any registered party may
    copy them (they say how many events the axis logged, nothing about any message)."""
    try:
        after = max(0, int(request.query.get("after", "0")))
        limit = min(1000, max(1, int(request.query.get("limit", "1000"))))
    except ValueError:
        raise RequestRefused("request.invalid", "after and limit must be whole numbers") from None
    found = await exchange.published_checkpoints(node(request), after, limit)
    return json_response({"items": [c.as_json() for c in found]})


@require("admin", "auditor")
async def make_checkpoint(request: web.Request) -> web.Response:
    """A checkpoint now, covering everything logged so far (an auditor about to export or pull)."""
    made = await exchange.checkpoint(node(request), force=True)
    return json_response({"checkpoint": made.as_json() if made else None}, 201 if made else 200)


@require("admin", "auditor")
async def export_bundle(request: web.Request) -> web.StreamResponse:
    """The evidence bundle (a ZIP, see axis/bundles.py) of ``message_id``, or of the period ``from``
    to ``to`` (exclusive) for ``agency`` or all. Written to a file of the data directory first,
    then streamed: memory stays bounded whatever the period."""
    axis = node(request)
    message_id = request.query.get("message_id")
    start, end = _day(request, "from", None), _day(request, "to", None)
    exchange.check_disk(axis, 0)
    if EXPORTING.locked():
        raise RequestRefused("request.overloaded", "an export is being written on this node; ask again shortly", retry_after=30)
    async with EXPORTING:
        return await _export_bundle(request, axis, message_id, start, end)


EXPORTING = asyncio.Lock()
"""One export at a time per node: each reads the whole period and writes its ZIP to disk."""


async def _export_bundle(
    request: web.Request, axis: Axis, message_id: str | None, start: date | None, end: date | None
) -> web.StreamResponse:
    fd, name = tempfile.mkstemp(dir=axis.settings.data, prefix=".tmp-export-", suffix=".zip")
    os.close(fd)
    path = Path(name)
    try:
        await exchange.export(axis, path, message_id=message_id, start=start, end=end, agency=request.query.get("agency"))
        handle = path.open("rb")
    finally:
        path.unlink(missing_ok=True)  # the open handle keeps its bytes until they are sent
    label = message_id or f"{start}-{end}"
    response = web.StreamResponse(
        headers={"Content-Type": "application/zip", "Content-Disposition": f'attachment; filename="axis-bundle-{label}.zip"'}
    )
    with handle:
        await response.prepare(request)
        while piece := await asyncio.to_thread(handle.read, 1 << 20):
            await response.write(piece)
    await response.write_eof()
    return response


@web.middleware
async def _in_flight(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count the requests being answered: SIGTERM lets them finish (``Running.stop``)."""
    axis = node(request)
    axis.in_flight += 1
    try:
        return await handler(request)
    finally:
        axis.in_flight -= 1


def build_app(axis: Axis, extensions: Sequence[Extension] = ()) -> web.Application:
    """The API; each extension (adapters such as the VXP facade) adds its routes to it."""
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
    app.router.add_get("/v1/reports", periodic_report)
    app.router.add_get("/v1/audit/checkpoints", list_checkpoints)
    app.router.add_post("/v1/audit/checkpoints", make_checkpoint)
    app.router.add_get("/v1/audit/export", export_bundle)
    app.router.add_get("/v1/openapi.json", openapi)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    admin.add_routes(app)
    if axis.settings.console.prefix:
        console.add_routes(app, axis.settings.console.prefix.rstrip("/"), axis.settings.console.session_timeout)
    for extend in extensions:
        extend(app)
    return app
