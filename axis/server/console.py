"""The console: the administrators' and auditors' pages, served by ``axis serve`` under
``[console] prefix`` (``/console``), rendered on the server (Jinja2 templates in ``console/``),
with no JavaScript at all: plain links and forms.

Signing in exchanges an admin or auditor token for a session: a random id in a cookie (HttpOnly,
SameSite=Strict, Secure over HTTPS, path-scoped to the console); the token never reaches the
browser's storage, and the session keeps only its hash, checked again at every request, so a
revoked token ends its sessions at once. Sessions end after ``[console] session_timeout``
seconds without a request, and at sign-out. Every form carries the session's CSRF token, checked
before anything is done. Sessions live in the node's memory: behind a load balancer, route
``/console`` to one node per client (or sign in again on another).

Every page calls the same use cases as the API (axis/exchange.py, the registry, the report);
administrators' actions are refused to auditors on the server, whatever the page shows.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, quote

import aiohttp_jinja2
import jinja2
from aiohttp import web
from multidict import MultiDict

from axis import bundles, exchange, keystore, pki, receipts
from axis import report as reports
from axis.errors import AxisError
from axis.registry import token_hash
from axis.server.http import SELF_AUTHENTICATED, delivery_json, node, read_body

COOKIE = "axis_console"
SESSIONS: web.AppKey[Sessions] = web.AppKey("console_sessions")
PREFIX: web.AppKey[str] = web.AppKey("console_prefix", str)
FORM: web.RequestKey[MultiDict[str]] = web.RequestKey("console_form", MultiDict)
SEARCH_DAYS = 366
SEARCH_READ = 20_000
"""Messages one search reads at most (then it shows what it found: narrow the period)."""
STATES = {"queued": "Đang chờ", "leased": "Đang chuyển", "delivered": "Đã chuyển", "expired": "Thất bại"}


LIFETIME = 12 * 3600.0
"""However active, a session ends after this many seconds: sign in again."""


@dataclass
class Session:
    id: str
    role: str
    name: str
    token_hash: str
    csrf: str
    seen: float
    started: float = field(default_factory=time.monotonic)


@dataclass
class Sessions:
    timeout: float
    by_id: dict[str, Session] = field(default_factory=dict)

    def start(self, role: str, name: str, digest: str) -> Session:
        self._forget_stale()
        session = Session(secrets.token_urlsafe(32), role, name, digest, secrets.token_urlsafe(32), time.monotonic())
        self.by_id[session.id] = session
        return session

    def find(self, session_id: str | None) -> Session | None:
        session = self.by_id.get(session_id or "")
        if session is None:
            return None
        if time.monotonic() - session.seen > self.timeout or time.monotonic() - session.started > LIFETIME:
            del self.by_id[session.id]
            return None
        session.seen = time.monotonic()
        return session

    def end(self, session_id: str) -> None:
        self.by_id.pop(session_id, None)

    def _forget_stale(self) -> None:
        now = time.monotonic()
        for stale in [s.id for s in self.by_id.values() if now - s.seen > self.timeout]:
            del self.by_id[stale]


Page = Callable[[web.Request, Session], Awaitable[web.StreamResponse]]


class Refused(Exception):
    """A console action refused with a message for the person (shown on the page)."""


FORM_LIMIT = 64 * 1024
"""The largest form a console page posts; read like any body (``[server] body_timeout``)."""


async def _form(request: web.Request) -> MultiDict[str]:
    """The posted form (``application/x-www-form-urlencoded``), read with the API's limits."""
    if request.content_type != "application/x-www-form-urlencoded":
        raise Refused("Biểu mẫu phải được gửi dưới dạng application/x-www-form-urlencoded.")
    body = await read_body(request, FORM_LIMIT)
    try:
        return MultiDict(parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=1000))
    except (UnicodeDecodeError, ValueError):
        raise Refused("Biểu mẫu không đọc được.") from None


def _prefix(request: web.Request) -> str:
    return request.app[PREFIX]


def _see_other(location: str) -> web.Response:
    """After a form, the page to show (303: the browser GETs it)."""
    return web.Response(status=303, headers={"Location": location})


def _headers(response: web.StreamResponse) -> web.StreamResponse:
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


def _render(request: web.Request, template: str, session: Session | None, status: int = 200, **values: Any) -> web.StreamResponse:
    context = {"prefix": _prefix(request), "session": session, "states": STATES, **values}
    return _headers(aiohttp_jinja2.render_template(template, request, context, status=status))


def page(*roles: str) -> Callable[[Page], Callable[[web.Request], Awaitable[web.StreamResponse]]]:
    """A console page for these roles: the session is found (and its token checked again), a POST
    must carry the session's CSRF token, and a refusal is shown on the page."""

    def wrap(handler: Page) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def run(request: web.Request) -> web.StreamResponse:
            session = request.app[SESSIONS].find(request.cookies.get(COOKIE))
            if session is not None:
                role = await asyncio.to_thread(node(request).store.role_by_token, session.token_hash)
                if role != session.role:  # the token was revoked since: the session ends with it
                    request.app[SESSIONS].end(session.id)
                    session = None
            if session is None:
                if request.method == "POST":
                    return _render(request, "signin.html", None, 401, error="Phiên làm việc đã hết hạn. Hãy đăng nhập lại.")
                return _see_other(f"{_prefix(request)}/sign-in")
            if session.role not in roles:
                return _render(request, "error.html", session, 403, error="Chức năng này chỉ dành cho quản trị viên.")
            try:
                if request.method == "POST":
                    request[FORM] = form = await _form(request)
                    if not hmac.compare_digest(str(form.get("csrf", "")).encode(), session.csrf.encode()):
                        return _render(request, "error.html", session, 403, error="Yêu cầu không hợp lệ (thiếu mã chống giả mạo).")
                return await handler(request, session)
            except (AxisError, Refused) as error:
                text = f"{error.code}: {error.message}" if isinstance(error, AxisError) else str(error)
                return _render(request, "error.html", session, 400, error=text)

        return run

    return wrap


# ---------------------------------------------------------------- signing in and out


async def sign_in_form(request: web.Request) -> web.StreamResponse:
    return _render(request, "signin.html", None)


async def sign_in(request: web.Request) -> web.StreamResponse:
    try:
        form = await _form(request)
    except Refused as error:
        return _render(request, "signin.html", None, 400, error=str(error))
    token = str(form.get("token", "")).strip()
    digest = token_hash(token) if token and token.isascii() else ""
    role = await asyncio.to_thread(node(request).store.role_by_token, digest) if digest else None
    if role is None:
        return _render(request, "signin.html", None, 401, error="Mã truy cập không đúng, đã bị thu hồi, hoặc không phải mã quản trị/kiểm toán.")
    session = request.app[SESSIONS].start(role, role, digest)
    response = _see_other(f"{_prefix(request)}/")
    secure = request.secure or request.headers.get("X-Forwarded-Proto") == "https"  # HTTPS ended at a proxy
    response.set_cookie(COOKIE, session.id, httponly=True, samesite="Strict", secure=secure, path=_prefix(request))
    return response


@page("admin", "auditor")
async def sign_out(request: web.Request, session: Session) -> web.StreamResponse:
    request.app[SESSIONS].end(session.id)
    response = _see_other(f"{_prefix(request)}/sign-in")
    response.del_cookie(COOKIE, path=_prefix(request))
    return response


# ---------------------------------------------------------------- overview


def _chart(days: list[tuple[str, int, int]]) -> str:
    """An SVG bar chart of documents sent and delivered per day (drawn here: no script)."""
    width, height, gap = 720, 160, 2
    top = max([1, *(max(s, d) for _, s, d in days)])
    bar = (width - gap * len(days)) / max(1, len(days)) / 2
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height + 30}" role="img" aria-label="Lưu lượng 30 ngày">']
    for n, (day, sent, delivered) in enumerate(days):
        x = n * (2 * bar + gap)
        for offset, value, color in ((0, sent, "#2b6cb0"), (bar, delivered, "#38a169")):
            h = height * value / top
            parts.append(f'<rect x="{x + offset:.1f}" y="{height - h:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{color}"><title>{day}: {value}</title></rect>')
        if n % 5 == 0:
            parts.append(f'<text x="{x:.1f}" y="{height + 20}" font-size="10">{day[8:10]}/{day[5:7]}</text>')
    parts.append("</svg>")
    return "".join(parts)


@page("admin", "auditor")
async def overview(request: web.Request, session: Session) -> web.StreamResponse:
    axis = node(request)
    today = datetime.now(UTC).date()
    month = today.replace(day=1)
    tomorrow = today + timedelta(days=1)
    day_rows = await exchange.stats(axis, today, tomorrow, "all")
    month_rows = await exchange.stats(axis, month, tomorrow, "all")
    daily = await exchange.stats(axis, today - timedelta(days=29), tomorrow, "day")
    counts = await asyncio.to_thread(axis.store.delivery_counts)
    oldest = await asyncio.to_thread(axis.store.deliveries, "queued", 1)

    def total(rows: list[dict[str, Any]], column: str) -> int:
        return sum(int(r[column]) for r in rows)

    per_day = {(today - timedelta(days=29 - n)).isoformat(): [0, 0] for n in range(30)}
    for row in daily:
        if row["period"] in per_day:
            per_day[row["period"]][0] += int(row["sent"])
            per_day[row["period"]][1] += int(row["delivered"])
    backlog = sorted(((r["agency"], int(r["pending"])) for r in month_rows if r["pending"]), key=lambda r: -r[1])
    refusals = sorted(
        ((s.labels.get("code", ""), int(s.value)) for m in axis.metrics.registry.collect() if m.name == "axis_refusals"
         for s in m.samples if s.name.endswith("_total")),
        key=lambda r: -r[1],
    )
    return _render(
        request, "overview.html", session,
        today_sent=total(day_rows, "sent"), today_delivered=total(day_rows, "delivered"), today_failed=total(day_rows, "failed"),
        month_sent=total(month_rows, "sent"), month_delivered=total(month_rows, "delivered"), month_failed=total(month_rows, "failed"),
        dead=counts.get("expired", 0), waiting=counts.get("queued", 0) + counts.get("leased", 0),
        oldest=delivery_json(oldest[0]) if oldest else None, backlog=backlog[:20], refusals=refusals[:20],
        chart=_chart([(day, sent, delivered) for day, (sent, delivered) in per_day.items()]),
    )


# ---------------------------------------------------------------- agencies, certificates, endpoints


@page("admin", "auditor")
async def agencies(request: web.Request, session: Session) -> web.StreamResponse:
    axis = node(request)
    query = request.query.get("q", "").strip().lower()
    rows = [
        a for a in await asyncio.to_thread(axis.store.agencies)
        if not query or query in a.organ_id.lower() or query in a.name.lower()
    ]
    certificates = await asyncio.to_thread(axis.store.certificates)
    soon = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    endpoints = await asyncio.to_thread(axis.store.endpoints)
    return _render(
        request, "agencies.html", session, agencies=rows, q=request.query.get("q", ""),
        certificates=[c for c in certificates if not query or any(c.organ_id == a.organ_id for a in rows)],
        soon=soon, now=datetime.now(UTC).isoformat(), endpoints=endpoints,
        contacts={name: datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds") for name, at in axis.contacts.items()},
    )


def _text(form: Any, name: str) -> str | None:
    return str(form.get(name, "")).strip() or None


def _required(form: Any, name: str) -> str:
    value = _text(form, name)
    if value is None:
        raise Refused(f"Thiếu trường bắt buộc: {name}")
    return value


@page("admin")
async def add_agency(request: web.Request, session: Session) -> web.StreamResponse:
    form = request[FORM]
    organ_id, name = _required(form, "organ_id"), _required(form, "name")
    await asyncio.to_thread(node(request).registry.add_agency, organ_id, name, _text(form, "parent"))
    return _see_other(f"{_prefix(request)}/agencies?q={quote(organ_id)}")


@page("admin")
async def agency_status(request: web.Request, session: Session) -> web.StreamResponse:
    status = {"suspend": "suspended", "resume": "active"}[request.match_info["action"]]
    organ_id = request.match_info["organ_id"]
    await asyncio.to_thread(node(request).registry.set_status, organ_id, status)
    return _see_other(f"{_prefix(request)}/agencies?q={quote(organ_id)}")


@page("admin")
async def add_endpoint(request: web.Request, session: Session) -> web.StreamResponse:
    form = request[FORM]
    axis = node(request)
    endpoint, token = await asyncio.to_thread(
        axis.registry.add_endpoint, _required(form, "name"),
        [a.strip() for a in _required(form, "agencies").split(",") if a.strip()], _text(form, "push_url"),
    )
    if axis.dispatcher is not None:
        axis.dispatcher.wake()
    return _render(request, "issued.html", session, endpoint=endpoint, token=token)


@page("admin")
async def revoke_endpoint(request: web.Request, session: Session) -> web.StreamResponse:
    axis = node(request)
    await asyncio.to_thread(axis.registry.store.revoke_endpoint, request.match_info["name"], axis.registry.clock().isoformat())
    return _see_other(f"{_prefix(request)}/agencies")


# ---------------------------------------------------------------- messages


def _day(text: str | None, default: date) -> date:
    try:
        return date.fromisoformat(text) if text else default
    except ValueError:
        raise Refused(f"Ngày không hợp lệ: {text!r} (YYYY-MM-DD)") from None


@page("admin", "auditor")
async def messages(request: web.Request, session: Session) -> web.StreamResponse:
    axis = node(request)
    q = request.query
    today = datetime.now(UTC).date()
    start, end = _day(q.get("from"), today - timedelta(days=30)), _day(q.get("to"), today + timedelta(days=1))
    if (end - start).days > SEARCH_DAYS:
        raise Refused(f"Khoảng thời gian tra cứu tối đa {SEARCH_DAYS} ngày.")
    document_id, agency, state = q.get("document_id", "").strip(), q.get("agency", "").strip() or None, q.get("state", "")

    def search() -> list[dict[str, Any]]:
        found = []
        selected, _ = bundles.select(axis.store, None, start, end, agency)
        for message in itertools.islice(selected, SEARCH_READ):
            if document_id and document_id not in message.document_id:
                continue
            deliveries = axis.store.deliveries_of(message.id)
            if state and not any(d.state == state for d in deliveries):
                continue
            found.append({"message": message, "deliveries": deliveries})
            if len(found) >= 200:
                break
        return found

    found = await asyncio.to_thread(search) if q else []
    return _render(
        request, "messages.html", session, found=found, searched=bool(q), start=start.isoformat(), end=end.isoformat(),
        document_id=document_id, agency=agency or "", state=state,
    )


@page("admin", "auditor")
async def message(request: web.Request, session: Session) -> web.StreamResponse:
    axis = node(request)
    found, deliveries = await exchange.visible(axis, request.match_info["message_id"], None)
    events = await asyncio.to_thread(axis.store.trail, found.id)
    statuses = await asyncio.to_thread(axis.store.statuses, found.sender, found.document_id) if found.kind == "document" else []
    stored = await asyncio.to_thread(axis.store.receipts, found.id)
    trust = await asyncio.to_thread(keystore.read_trust, axis.settings.trust)
    axis_fingerprint = frozenset({pki.fingerprint(axis.router.certificate)})
    checked = []
    for kind, recipient, xml in stored:
        try:
            verified = await asyncio.to_thread(receipts.verify, xml, trust, axis_fingerprint)
            checked.append({"kind": kind, "recipient": recipient, "valid": True, "time": verified.receipt.time})
        except AxisError as error:
            checked.append({"kind": kind, "recipient": recipient, "valid": False, "time": error.message})
    return _render(
        request, "message.html", session, message=found, deliveries=[delivery_json(d) for d in deliveries],
        events=events, statuses=statuses, receipts=checked,
    )


# ---------------------------------------------------------------- dead letters


@page("admin", "auditor")
async def dead_letters(request: web.Request, session: Session) -> web.StreamResponse:
    rows = await asyncio.to_thread(node(request).store.deliveries, "expired", 500)
    return _render(request, "dead.html", session, rows=[delivery_json(d) for d in rows])


@page("admin")
async def requeue(request: web.Request, session: Session) -> web.StreamResponse:
    form = request[FORM]
    chosen = [str(v) for v in form.getall("delivery", [])]
    if not chosen:
        raise Refused("Chưa chọn thư nào để gửi lại.")
    for value in chosen:
        if not value.isdigit():
            raise Refused(f"Mã giao nhận không hợp lệ: {value!r}")
        await exchange.requeue(node(request), int(value), f"console:{session.name}")
    return _see_other(f"{_prefix(request)}/dead-letters")


# ---------------------------------------------------------------- reports


@page("admin", "auditor")
async def report_form(request: web.Request, session: Session) -> web.StreamResponse:
    now = datetime.now(UTC)
    return _render(request, "reports.html", session, period=f"{now:%Y}-Q{(now.month - 1) // 3 + 1}")


@page("admin", "auditor")
async def report_download(request: web.Request, session: Session) -> web.StreamResponse:
    chosen = request.query.get("format", "xlsx")
    if chosen not in reports.MEDIA_TYPES:
        raise Refused("Định dạng phải là xlsx, csv hoặc json.")
    made = await exchange.report(node(request), request.query.get("period", ""), request.query.get("agency") or None)
    body = await asyncio.to_thread(reports.render, made, chosen)
    return _headers(web.Response(body=body, headers={
        "Content-Type": reports.MEDIA_TYPES[chosen],
        "Content-Disposition": f'attachment; filename="bao-cao-{made.period.label}.{chosen}"',
    }))


async def home(request: web.Request) -> web.StreamResponse:
    return _see_other(f"{_prefix(request)}/overview")


def add_routes(app: web.Application, prefix: str, timeout: float) -> None:
    """Mount the console under ``prefix`` (it authenticates with its own sessions)."""
    environment = aiohttp_jinja2.setup(
        app, loader=jinja2.PackageLoader("axis.server", "console"), autoescape=jinja2.select_autoescape(["html"]),
        app_key=aiohttp_jinja2.APP_KEY,
    )
    environment.filters["segment"] = lambda text: quote(str(text), safe="")  # one path segment, whatever it holds
    app[SESSIONS] = Sessions(timeout)
    app[PREFIX] = prefix
    app[SELF_AUTHENTICATED] = (*app[SELF_AUTHENTICATED], prefix + "/")
    r = app.router
    r.add_get(prefix + "/", home)
    r.add_get(prefix + "/sign-in", sign_in_form)
    r.add_post(prefix + "/sign-in", sign_in)
    r.add_post(prefix + "/sign-out", sign_out)
    r.add_get(prefix + "/overview", overview)
    r.add_get(prefix + "/agencies", agencies)
    r.add_post(prefix + "/agencies", add_agency)
    r.add_post(prefix + "/agencies/{organ_id}/{action:suspend|resume}", agency_status)
    r.add_post(prefix + "/endpoints", add_endpoint)
    r.add_post(prefix + "/endpoints/{name}/revoke", revoke_endpoint)
    r.add_get(prefix + "/messages", messages)
    r.add_get(prefix + "/messages/{message_id}", message)
    r.add_get(prefix + "/dead-letters", dead_letters)
    r.add_post(prefix + "/dead-letters/requeue", requeue)
    r.add_get(prefix + "/reports", report_form)
    r.add_get(prefix + "/reports/download", report_download)
    r.add_static(prefix + "/static", str(resources.files("axis.server").joinpath("console/static")))
