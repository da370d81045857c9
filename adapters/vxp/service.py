"""The VXP methods over HTTP (aiohttp), on top of any :class:`Backend`.

The same routes serve two places: the axis itself (``axis serve`` mounts them under ``/vxp`` over
the axis's own operations, adapters/vxp/facade.py) and the signing gateway an agency runs next to
its software. Each place supplies a backend: who a system id is, and what sending, listing,
fetching and acknowledging mean there. Everything the SDK can notice — the envelope, the keys
each method reads, FAIL answers, ``downloadEdoc``'s empty-bodied refusals — is decided here once.

Authentication, in order: the connection is HTTPS or loopback (or the operator allowed plain
HTTP), the system id is known, the caller's address is one the system may call from, the HMAC
matches, the signed parameters are well formed, the timestamp is within ``window`` when one is
set, and the system is within its call rate. There is no replay cache: the SDK's signature is a
constant of its service object and does not cover the method (docs/vxp.md says what stands in
its place).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from aiohttp import web

from adapters.vxp import protocol
from adapters.vxp.protocol import Params
from axis import edxml
from axis.config import Vxp
from axis.errors import AxisError, RequestRefused
from axis.server.http import read_body
from axis.server.problems import status_of
from axis.store import Endpoint

log = logging.getLogger("axis.vxp")
MAX_SMALL_BODY = 64 * 1024
"""Bodies other than sendEdoc's: ``{}``, or registerAgency's agency."""
KINDS = {"edoc": "document", "status": "status"}
"""VXP's message types and the axis's package kinds."""
STATUSES = ("done", "fail", "processing")
FETCHES = 2
"""Packages one system is sent at once; more calls wait their turn."""
STATE_TEXT = {
    "queued": "waiting to be taken by the recipient",
    "leased": "being delivered",
    "delivered": "delivered",
    "expired": "not delivered (dead letter)",
}
"""``sendStatusDesc`` of a delivery state, when the delivery has no error of its own."""


@dataclass(frozen=True)
class System:
    """A system id as its backend knows it: the secret opened for this request only."""

    system_id: str
    endpoint: Endpoint
    """The agencies it acts for (and, on the axis, the endpoint it is)."""
    secret: bytes = field(repr=False)
    role: str = "endpoint"
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class Received:
    """An item of ``getReceivedEdocList``: a document or status waiting for the system."""

    doc_id: str
    kind: str
    sender: str
    recipient: str
    created_at: datetime


@dataclass(frozen=True)
class Sent:
    """A row of ``getSentEdocList``: one recipient of a package the system sent."""

    doc_id: str
    kind: str
    sender: str
    recipient: str
    sent_at: datetime
    send_status: str
    send_status_desc: str
    title: str = ""
    notation: str = ""
    received_at: datetime | None = None
    receive_status: str = ""
    receive_status_desc: str = ""


@dataclass(frozen=True)
class Unit:
    """A registered agency as the agency lists show it."""

    code: str
    name: str
    form: str
    """``qcvn102`` or ``qd20``."""
    parent: str | None
    active: bool
    registered_at: datetime


@dataclass(frozen=True)
class NewAgency:
    """``registerAgency``'s body (the vendor example's fields)."""

    code: str
    name: str
    parent: str | None


class Backend(Protocol):
    """What a VXP method means in one place. Every method raises an :class:`AxisError` to refuse;
    none is called before the system is authenticated."""

    async def system(self, system_id: str) -> System | None: ...
    async def send(self, system: System, package: bytes) -> str:
        """Submit the signed package; its message id (the same one again for a resubmission)."""
        ...

    async def received(self, system: System, kinds: tuple[str, ...], limit: int) -> list[Received]: ...
    async def count(self, system: System, kind: str) -> int: ...
    async def package(self, system: System, doc_id: str) -> bytes:
        """The bytes of a message the system sent or received (``message.not_found`` otherwise)."""
        ...

    async def update(self, system: System, doc_id: str, status: str) -> None:
        """``done``, ``fail`` or ``processing`` for a message addressed to the system."""
        ...

    async def sent(self, system: System, doc_id: str) -> list[Sent]: ...
    async def units(self) -> list[Unit]: ...
    async def register(self, agency: NewAgency) -> None: ...
    async def delete(self, code: str) -> None: ...


@dataclass
class RateLimit:
    """A token bucket per system id: ``rate`` calls a second, ``burst`` at once."""

    rate: float
    burst: int
    buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def take(self, system_id: str, now: float) -> None:
        if self.rate <= 0:
            return
        tokens, last = self.buckets.get(system_id, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens < 1:
            raise RequestRefused(
                "request.rate_limited",
                f"system {system_id!r} calls more than {self.rate:g} times a second; slow down and retry",
                retry_after=max(1, round((1 - tokens) / self.rate)),
            )
        self.buckets[system_id] = (tokens - 1, now)


Handler = Callable[["Call"], Awaitable[Any]]


@dataclass
class SeenSignatures:
    """The signatures admin system ids used lately, with when each was first seen (this process)."""

    window: float
    first_seen: dict[str, float] = field(default_factory=dict)

    def note(self, signature: str, now: float) -> bool:
        """Remember ``signature``; True if it had been used before."""
        if len(self.first_seen) > 10_000 or (self.first_seen and next(iter(self.first_seen.values())) < now - self.window):
            self.first_seen = {s: t for s, t in self.first_seen.items() if t >= now - self.window}
        seen = signature in self.first_seen
        self.first_seen.setdefault(signature, now)
        return seen


@dataclass(frozen=True)
class Call:
    request: web.Request
    system: System
    params: Params
    service: Service
    reused: bool = False
    """An admin system's signature that was used before (see ``SeenSignatures``)."""

    @property
    def backend(self) -> Backend:
        return self.service.backend

    async def body(self, limit: int = MAX_SMALL_BODY) -> bytes:
        return await read_body(self.request, limit)


@dataclass
class Service:
    """The VXP routes over ``backend``, with the facade's settings (``[vxp]``)."""

    backend: Backend
    policy: Vxp
    max_package: int
    page: int = 100
    """Most items one ``getReceivedEdocList`` answer lists."""
    refused: Callable[[str], None] = lambda code: None
    """Told every refusal code (for metrics)."""
    limits: RateLimit = field(init=False)
    seen: SeenSignatures = field(init=False)
    _fetching: dict[str, asyncio.Semaphore] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.limits = RateLimit(self.policy.rate, self.policy.burst)
        self.seen = SeenSignatures(self.policy.admin_window)

    def fetching(self, system: System) -> asyncio.Semaphore:
        """Packages one system may be sent at once (getEdoc, downloadEdoc): each may be 64 MiB, and
        getEdoc's base64 of it a third larger again."""
        return self._fetching.setdefault(system.system_id, asyncio.Semaphore(FETCHES))

    def add_routes(self, app: web.Application, prefix: str) -> None:
        for name, (verb, _) in METHODS.items():
            app.router.add_route(verb, f"{prefix}/{name}", self._route(name))
        app.router.add_route("*", prefix + "/{tail:.*}", self._route(None))

    def _route(self, name: str | None) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def route(request: web.Request) -> web.Response:
            tail = (request.match_info.get("tail") or "").lstrip("/")  # the catch-all (and `//method`, from an endpoint URL ending in /)
            return await self.answer(request, name or (tail if tail in METHODS else None))

        return route

    async def answer(self, request: web.Request, name: str | None) -> web.Response:
        try:
            if name is None:
                raise RequestRefused("request.not_found", f"{request.path} is not a VXP method")
            verb, handler = METHODS[name]
            if request.method != verb:
                raise RequestRefused("request.method_not_allowed", f"{name} takes {verb}, not {request.method}")
            call = await self.authenticate(request)
            result = await handler(call)
        except AxisError as error:
            self.refused(error.code)
            return self._refusal(name, error)
        except Exception:  # an answer the SDK can read, never a bare 500
            log.exception("VXP %s failed", name)
            return self._refusal(name, RequestRefused("request.unavailable", "the call could not be completed; send it again"))
        if name == protocol.DOWNLOAD:
            return web.Response(body=result, content_type="application/octet-stream")
        return web.Response(body=protocol.answer(name, result), content_type="application/json", charset="utf-8")

    @staticmethod
    def _refusal(name: str | None, error: AxisError) -> web.Response:
        if name == protocol.DOWNLOAD:  # the SDK saves any non-empty body as the package
            detail = "".join(c if " " <= c <= "~" else "?" for c in error.message.encode("ascii", "backslashreplace").decode())
            return web.Response(
                status=status_of(error.code),
                headers={protocol.REFUSAL_HEADER: error.code, protocol.REFUSAL_DETAIL_HEADER: detail},
            )
        return web.Response(
            body=protocol.refusal(name, error.code, error.message), content_type="application/json", charset="utf-8"
        )

    async def authenticate(self, request: web.Request) -> Call:
        if not (self.policy.allow_plain_http or request.secure or _loopback_listener(request)):
            raise RequestRefused(
                "auth.vxp_https_required",
                "VXP is answered only over HTTPS (or on a loopback listener): its HMAC can be replayed by anyone"
                " who sees a request; use https:// in the endpoint URL",
            )
        signed = protocol.read_signature(request.headers)
        system = await self.backend.system(signed.system_id)
        if system is None:
            raise RequestRefused("auth.vxp_unknown_system", f"system id {signed.system_id!r} is not registered here")
        if system.sources and not _from(request.remote, system.sources):
            raise RequestRefused(
                "auth.vxp_source", f"system {system.system_id!r} may not call from {request.remote or 'this address'}"
            )
        params = protocol.verify(signed, system.secret)
        if self.policy.window > 0 and not _fresh(params, self.policy.window):
            raise RequestRefused(
                "auth.vxp_stale",
                f"the signed timestamp is more than {self.policy.window:g} s from this server's clock;"
                " build a new service object",
            )
        self.limits.take(system.system_id, time.monotonic())
        reused = system.role == "admin" and self.seen.note(signed.digest, time.monotonic())
        return Call(request, system, params, self, reused)


def _fresh(params: Params, window: float) -> bool:
    """The signed timestamp is within ``window`` seconds of this server's clock."""
    sent = protocol.parse_timestamp(params.require("timestamp"))
    return abs((datetime.now(UTC) - sent).total_seconds()) <= window


def _loopback_listener(request: web.Request) -> bool:
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if not sockname:
        return False
    try:
        return ipaddress.ip_address(sockname[0]).is_loopback
    except ValueError:
        return False


def _from(remote: str | None, sources: tuple[str, ...]) -> bool:
    try:
        address = ipaddress.ip_address(remote or "")
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(s) for s in sources)


def title_and_notation(package: edxml.Package) -> tuple[str, str]:
    """``getSentEdocList``'s ``title`` and ``notation`` (``number/notation``) of a package."""
    if isinstance(package, edxml.StatusPackage):
        return package.description or "", ""
    code = package.code
    notation = f"{code.code_number or ''}/{code.code_notation or ''}".strip("/") if code else ""
    return package.subject, notation


def _time(at: datetime) -> str:
    """Times as the operator's answers write them: Vietnam's local time, to the second."""
    return f"{at.astimezone(protocol.VIETNAM):%Y-%m-%d %H:%M:%S}"


def _kinds(call: Call) -> tuple[str, ...]:
    """``messagetype`` picks edoc or status; absent or unknown, both."""
    wanted = KINDS.get((call.params.get("messagetype") or "").lower())
    return (wanted,) if wanted else tuple(KINDS.values())


def _admin(call: Call) -> None:
    """registerAgency and deleteAgency: their body is not signed and the SDK's signature is a
    constant of its service object, so only a fresh signature never used before is accepted (a
    seen request cannot be sent again with another agency in it)."""
    if call.system.role != "admin":
        raise RequestRefused("auth.forbidden", "registerAgency and deleteAgency need a system id with the admin role")
    window = call.service.policy.admin_window
    if window <= 0:
        raise RequestRefused(
            "auth.forbidden", "registerAgency and deleteAgency are turned off here ([vxp] admin_window = 0); use the admin API"
        )
    if not _fresh(call.params, window):
        raise RequestRefused(
            "auth.vxp_stale",
            f"registerAgency and deleteAgency need a signature made within {window:g} s: build a new AgencyServiceImp"
            " for each of them",
        )
    if call.reused:
        raise RequestRefused(
            "auth.vxp_replay",
            "this signature was used before: the SDK signs once per service object, so build a new AgencyServiceImp"
            " for each registerAgency or deleteAgency",
        )


# ---------------------------------------------------------------- documents


async def send_edoc(call: Call) -> dict[str, Any]:
    body = await call.body(call.service.max_package + len(protocol.CRLF))
    package = protocol.sent_file(body, call.params.get("hash-file"))
    # `messagetype`, `from` and `to` are not compared with the package: they may be left from
    # earlier calls, and the signed package's kind, From and To are what decide its route.
    return {"DocId": await call.backend.send(call.system, package)}


async def received_list(call: Call) -> dict[str, Any]:
    items = await call.backend.received(call.system, _kinds(call), call.service.page)
    return {
        "data": [
            {
                "docId": i.doc_id,
                "serviceType": "eDoc",
                "messageType": "edoc" if i.kind == "document" else "status",
                "created_time": _time(i.created_at),
                "updated_time": _time(i.created_at),
                "from": i.sender,
                "to": i.recipient,
                "status": "initial",
                "status_desc": "New",
            }
            for i in items
        ]
    }


async def get_edoc(call: Call) -> dict[str, Any]:
    async with call.service.fetching(call.system):
        data = await call.backend.package(call.system, call.params.require("docId"))
        return {"data": await asyncio.to_thread(protocol.package_data, data)}


async def download_edoc(call: Call) -> bytes:
    async with call.service.fetching(call.system):
        return await call.backend.package(call.system, call.params.require("docId"))


async def update_status(call: Call) -> dict[str, Any]:
    status = call.params.require("status").lower()
    if status not in STATUSES:
        raise RequestRefused("request.invalid", f"status must be done, fail or processing, not {status!r}")
    await call.backend.update(call.system, call.params.require("docId"), status)
    return {}


async def sent_list(call: Call) -> dict[str, Any]:
    rows = await call.backend.sent(call.system, call.params.require("docId"))
    return {
        "data": [
            {
                "serviceType": "eDoc",
                "messageType": "edoc" if r.kind == "document" else "status",
                "senderDocId": r.doc_id,
                "receiverDocId": r.doc_id,
                "fromCode": r.sender,
                "toCode": r.recipient,
                "title": r.title,
                "notation": r.notation,
                "sentTime": _time(r.sent_at),
                "receivedTime": _time(r.received_at) if r.received_at else None,
                "sendStatus": r.send_status,
                "sendStatusDesc": r.send_status_desc,
                "receiveStatus": r.receive_status,
                "receiveStatusDesc": r.receive_status_desc,
            }
            for r in rows
        ]
    }


async def count_edoc(call: Call) -> dict[str, Any]:
    return {"count": await call.backend.count(call.system, "document")}


async def count_status(call: Call) -> dict[str, Any]:
    return {"count": await call.backend.count(call.system, "status")}


# ---------------------------------------------------------------- agencies


async def agencies_list(call: Call) -> dict[str, Any]:
    return {
        "data": [
            {"id": u.code, "pid": u.parent or "", "code": u.code, "name": u.name, "mail": "", "oldCode": ""}
            for u in await call.backend.units()
        ]
    }


async def agencies_list_qd20(call: Call) -> dict[str, Any]:
    """Both identifier forms side by side: an agency registered in one form shows it in its column."""
    return {
        "data": [
            {
                "id": u.code,
                "code": u.code if u.form == "qd20" else "",
                "code102": u.code if u.form == "qcvn102" else "",
                "name": u.name,
                "mail": "",
            }
            for u in await call.backend.units()
        ]
    }


async def synchronize_unit(call: Call) -> dict[str, Any]:
    return {
        "data": [
            {
                "id": u.code,
                "pid": u.parent or "",
                "code": u.code,
                "name": u.name,
                "mail": "",
                "centerCode": "",
                "modifyDate": _time(u.registered_at),
                "version": 1,
                "deleted": not u.active,
                "isAgency": True,
            }
            for u in await call.backend.units()
        ]
    }


async def register_agency(call: Call) -> dict[str, Any]:
    _admin(call)
    body = await call.body()
    try:
        fields = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise RequestRefused("request.invalid", "the registerAgency body is not UTF-8") from None
    except json.JSONDecodeError as error:
        near = error.doc[max(0, error.pos - 10) : error.pos + 10]
        raise RequestRefused(
            "request.invalid",
            f"the registerAgency body is not JSON: {error.msg} at character {error.pos} (near {near!r})",
        ) from None
    except (ValueError, RecursionError):  # nesting too deep, a number too long
        raise RequestRefused("request.invalid", "the registerAgency body must be a flat JSON object of strings") from None
    if not isinstance(fields, dict) or not all(isinstance(v, str | int) for v in fields.values()):
        raise RequestRefused("request.invalid", "the registerAgency body must be a JSON object of strings")
    code, name = str(fields.get("code", "")).strip(), str(fields.get("name", "")).strip()
    if not code or not name:
        raise RequestRefused("request.invalid", "registerAgency needs \"code\" and \"name\" in its body")
    await call.backend.register(NewAgency(code, name, str(fields.get("pcode", "")).strip() or None))
    return {}


async def delete_agency(call: Call) -> dict[str, Any]:
    _admin(call)
    await call.backend.delete(call.params.require("AgencyCode"))
    return {}


METHODS: dict[str, tuple[str, Handler]] = {
    "getAgenciesList": ("POST", agencies_list),
    "getAgenciesListQD20": ("POST", agencies_list_qd20),
    "getSynchronizeUnit": ("POST", synchronize_unit),
    "registerAgency": ("POST", register_agency),
    "deleteAgency": ("POST", delete_agency),
    "sendEdoc": ("POST", send_edoc),
    "getReceivedEdocList": ("POST", received_list),
    "getEdoc": ("POST", get_edoc),
    protocol.DOWNLOAD: ("GET", download_edoc),
    "updateStatus": ("POST", update_status),
    "getSentEdocList": ("POST", sent_list),
    "countReceiveEdoc": ("POST", count_edoc),
    "countReceiveStatus": ("POST", count_status),
}
"""Each method with the verb the SDK uses (the count methods POST ``{}`` although their code
names GET)."""
