"""The VXP compatibility facade: the operator's Java SDK connects to the axis unchanged.

Mounted by ``axis serve`` under ``[server] vxp_prefix`` (``/vxp`` by default), so software that
used ``http://operator/.../<method>`` only changes its endpoint URL, system id and secret
(docs/vxp.md). A thin translation onto the axis's own path:

- ``sendEdoc`` goes through exactly the verification, authorisation, persistence and receipts of
  ``POST /v1/messages``; ``DocId`` is the axis message id.
- ``getReceivedEdocList``/``getEdoc``/``downloadEdoc``/``updateStatus`` are the inbox, fetch and
  ack: ``done`` is delivered; ``fail`` ends the delivery (a dead letter) and the sender's signed
  ``failed`` receipt says so; ``processing`` changes nothing.
- ``getSentEdocList`` reports each recipient's delivery and latest business status.
- Agency lists come from the registry; ``registerAgency``/``deleteAgency`` (which suspends: the
  registry keeps history) need a system id with the admin role.

Authentication is VXP.md's HMAC scheme, checked completely: the system id is registered; the
HMAC-SHA256 of the exact ``XroadVnpt-sign-header`` string under the secret matches (constant
time); the signed JSON names exactly the ``sign-header-key`` names, each equal to the header
sent; ``systemid`` and ``timestamp`` are among them; the timestamp is within ``vxp_window``; the
signature was not used before. Parameters are read from the signed values only. Every failure
is HTTP 200 with ``status: FAIL`` and the axis's refusal code in ``ErrorCode``, as the client
expects.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from aiohttp import BodyPartReader, web

from axis import edxml, keystore
from axis.checking import Checked
from axis.errors import AxisError, RequestRefused, RoutingRefused
from axis.server.app import AXIS, SELF_AUTHENTICATED, addressed_to, read_body, submit_package, visible_message
from axis.server.runtime import Axis
from axis.store import Endpoint, InboxItem

H = "XroadVnpt-"
BOX: web.AppKey[keystore.SecretBox] = web.AppKey("vxp_secrets", keystore.SecretBox)
VIETNAM = timezone(timedelta(hours=7))
TIMESTAMP = re.compile(r"^(\d{2})(\d{2})(\d{4})T(\d{2})(\d{2})(\d{2})(?:\+\d+)?$")
KINDS = {"document": "edoc", "status": "status"}
ABSENT = ("", "null", "undefined")


@dataclass(frozen=True)
class Caller:
    endpoint: Endpoint
    role: str
    params: dict[str, str]
    """The signed parameters: the only ones with authority."""

    def param(self, name: str, required: bool = False) -> str | None:
        value = self.params.get(name)
        if value is not None and value.strip() in ABSENT:  # the SDK sends docId as the text "null"
            value = None
        if value is None and required:
            raise RequestRefused("request.invalid", f"the signed header {H}{name} is required for this method")
        return value


def ok(**fields: Any) -> web.Response:
    return web.json_response({"status": "OK", "ErrorCode": "0", "ErrorDesc": "", **fields}, dumps=_dumps)


def fail(error: AxisError) -> web.Response:
    return web.json_response({"status": "FAIL", "ErrorCode": error.code, "ErrorDesc": error.message}, dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: bytes that were not UTF-8
        return False
    return True


def parse_timestamp(text: str) -> datetime:
    """``ddMMyyyy'T'HHmmss`` in Vietnam's local time; the ``+NNNN`` after it is a counter, ignored."""
    match = TIMESTAMP.match(text)
    if match is None:
        raise RequestRefused("auth.vxp_timestamp", f"the timestamp {text!r} is not ddMMyyyyTHHmmss[+NNNN]")
    day, month, year, hour, minute, second = (int(g) for g in match.groups())
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=VIETNAM)
    except ValueError:
        raise RequestRefused("auth.vxp_timestamp", f"the timestamp {text!r} is not a real time") from None


async def authenticate(request: web.Request, axis: Axis) -> Caller:
    headers = request.headers
    system_id = headers.get(H + "systemid")
    names_text, signed, digest = (headers.get(H + n) for n in ("sign-header-key", "sign-header", "hash-header"))
    if not system_id or not names_text or signed is None or not digest or not (system_id + digest).isascii():
        raise RequestRefused(
            "auth.vxp_unsigned",
            f"send {H}systemid, {H}sign-header-key, {H}sign-header and {H}hash-header (the SDK does)",
        )
    found = await asyncio.to_thread(axis.store.vxp_credential, system_id)
    if found is None:
        raise RequestRefused("auth.vxp_unknown_system", f"system id {system_id!r} is not registered with this axis")
    endpoint, credential = found
    secret = request.app[BOX].open(credential.sealed_secret, system_id)
    # aiohttp decodes header bytes as UTF-8 with surrogateescape: encoding back gives the bytes sent.
    expected = hmac.new(secret, signed.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, digest.strip().lower()):
        raise RequestRefused("auth.vxp_bad_signature", "the HMAC of the signed header does not match this system's secret")
    try:
        values = json.loads(signed)
    except ValueError:
        values = None
    if not isinstance(values, dict) or not all(isinstance(v, str) and _utf8(v) for v in values.values()):
        raise RequestRefused("auth.vxp_header_mismatch", "the signed header is not a JSON object of strings")
    names = [n.strip() for n in names_text.split(";") if n.strip()]
    if set(values) != {H + n for n in names}:
        raise RequestRefused(
            "auth.vxp_header_mismatch", f"the signed header must hold exactly {H}<name> for each of {names_text!r}"
        )
    for name in names:
        if headers.get(H + name) != values[H + name]:
            raise RequestRefused(
                "auth.vxp_header_mismatch", f"the header {H}{name} sent differs from its signed value"
            )
    if "systemid" not in names or "timestamp" not in names:
        raise RequestRefused("auth.vxp_unsigned", "systemid and timestamp must be among the signed headers")
    sent = parse_timestamp(values[H + "timestamp"])
    window = axis.settings.server.vxp_window
    if abs((datetime.now(UTC) - sent).total_seconds()) > window:
        raise RequestRefused(
            "auth.vxp_stale", f"the signed timestamp {values[H + 'timestamp']} is more than {window:g} s from the axis's clock"
        )
    if await asyncio.to_thread(axis.store.vxp_replayed, expected, time.time(), window):
        raise RequestRefused("auth.vxp_replay", "this signature was already used; sign every request afresh")
    return Caller(endpoint, credential.role, {n: values[H + n] for n in names})


Method = Callable[[web.Request, Axis, Caller], Awaitable[web.Response]]


def method(handler: Method) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def answer(request: web.Request) -> web.Response:
        axis = request.app[AXIS]
        try:
            return await handler(request, axis, await authenticate(request, axis))
        except AxisError as error:
            axis.metrics.count("axis_vxp_refusals_total", "VXP calls answered FAIL, by code.", code=error.code)
            return fail(error)

    return answer


# ---------------------------------------------------------------- documents


def _hash_renderings(data: bytes) -> set[str]:
    """SHA-256 as standard hex, and as the SDK writes it: each byte in hex without zero-padding."""
    digest = hashlib.sha256(data).digest()
    return {digest.hex(), "".join(f"{b:x}" for b in digest)}


async def _package(request: web.Request, limit: int) -> bytes:
    if not request.content_type.startswith("multipart/"):
        return await read_body(request, limit)
    reader = await request.multipart()  # older SDKs: part `file_doc`
    async for part in reader:
        if isinstance(part, BodyPartReader) and part.name == "file_doc":
            chunks, size = [], 0
            while chunk := await part.read_chunk(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise RequestRefused("request.too_large", f"the package exceeds the limit of {limit} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
    raise RequestRefused("request.invalid", "the multipart body has no part named file_doc")


@method
async def send_edoc(request: web.Request, axis: Axis, caller: Caller) -> web.Response:
    data = await _package(request, axis.settings.server.max_package)
    claimed = caller.param("hash-file")
    if claimed is not None and claimed.strip().lower() not in _hash_renderings(data):
        raise RequestRefused("request.hash_mismatch", "hash-file is not the SHA-256 of the package sent")
    message_type = (caller.param("messagetype") or "edoc").lower()
    # `from` and `to` are not compared with the package: the SDK re-sends stale ones from earlier
    # calls, and the signed package's From/To are what the axis routes by anyway.

    def expect(checked: Checked) -> None:
        if KINDS[checked.kind] != message_type:
            raise RequestRefused(
                "request.invalid", f"messagetype is {message_type} but the package is a {KINDS[checked.kind]}"
            )

    body, _ = await submit_package(axis, caller.endpoint, data, expect)
    return ok(DocId=body["message_id"])


async def _inbox(axis: Axis, caller: Caller, kinds: tuple[str, ...] = tuple(KINDS), limit: int = 10_000) -> list[InboxItem]:
    """Documents and statuses waiting (the axis's receipts are for its own API's clients)."""
    return await asyncio.to_thread(axis.store.inbox, caller.endpoint.agencies, limit, kinds)


@method
async def received_list(request: web.Request, axis: Axis, caller: Caller) -> web.Response:
    wanted = (caller.param("messagetype") or "").lower()
    kinds = tuple(k for k, name in KINDS.items() if not wanted or name == wanted)
    page = await _inbox(axis, caller, kinds, axis.settings.server.inbox_page)
    return ok(
        data=[
            {
                "docId": i.message.id,
                "serviceType": "eDoc",
                "messageType": KINDS[i.message.kind],
                "created_time": i.message.accepted_at,
                "updated_time": i.message.accepted_at,
                "from": i.message.sender,
                "to": i.delivery.recipient,
                "status": "initial",
                "status_desc": "waiting for the receiver",
            }
            for i in page
        ]
    )


async def _count(axis: Axis, caller: Caller, kind: str) -> web.Response:
    return ok(count=len(await _inbox(axis, caller, (kind,))))


@method
async def count_edoc(request: web.Request, axis: Axis, caller: Caller) -> web.Response:
    return await _count(axis, caller, "document")


@method
async def count_status(request: web.Request, axis: Axis, caller: Caller) -> web.Response:
    return await _count(axis, caller, "status")


async def _bytes_of(axis: Axis, caller: Caller) -> bytes:
    message, _ = await visible_message(axis, caller.param("docId", required=True) or "", caller.endpoint)
    return await asyncio.to_thread(axis.store.blobs.get, message.sha256)


@method
async def get_edoc(request: web.Request, axis: Axis, caller: Caller) -> web.Response:
    data = await _bytes_of(axis, caller)
    return ok(data=await asyncio.to_thread(data.decode, "utf-8"))


@method
async def download_edoc(request: web.Request, axis: Axis, caller: Caller) -> web.Response:
    return web.Response(body=await _bytes_of(axis, caller), content_type="application/octet-stream")


@method
async def update_status(request: web.Request, axis: Axis, caller: Caller) -> web.Response:
    doc_id = caller.param("docId", required=True) or ""
    status = (caller.param("status", required=True) or "").lower()
    if status not in ("done", "fail", "processing"):
        raise RequestRefused("request.invalid", f"status must be done, fail or processing, not {status!r}")
    _, mine = await addressed_to(axis, doc_id, caller.endpoint, set(caller.endpoint.agencies))
    for delivery in mine:
        if status == "done":
            await asyncio.to_thread(axis.router.delivered, delivery, b"done")
        elif status == "fail":
            reason = f"the receiving system {caller.endpoint.name!r} reported it could not take the package"
            if await asyncio.to_thread(axis.store.give_up, delivery.id, time.time(), reason):
                await asyncio.to_thread(axis.router.issue_receipt, delivery.id)
    return ok()


@method
async def sent_list(request: web.Request, axis: Axis, caller: Caller) -> web.Response:
    message, deliveries = await visible_message(axis, caller.param("docId", required=True) or "", caller.endpoint)
    if message.sender not in caller.endpoint.agencies:
        raise RoutingRefused("message.not_found", f"message {message.id} was not sent by this system's agencies")
    statuses = {s["recipient"]: s["status_code"] for s in await asyncio.to_thread(axis.store.statuses, message.document_id)}
    package = await asyncio.to_thread(lambda: edxml.parse(axis.store.blobs.get(message.sha256)))
    title = package.subject if isinstance(package, edxml.DocumentPackage) else (package.description or "")
    code = package.code if isinstance(package, edxml.DocumentPackage) else None
    notation = f"{code.code_number or ''}/{code.code_notation or ''}".strip("/") if code else ""
    rows = []
    for d in deliveries:
        business = statuses.get(d.recipient, "")
        rows.append(
            {
                "serviceType": "eDoc",
                "senderDocId": message.id,
                "receiverDocId": message.id,
                "fromCode": message.sender,
                "toCode": d.recipient,
                "title": title,
                "notation": notation,
                "messageType": KINDS.get(message.kind, message.kind),
                "sentTime": message.accepted_at,
                "receivedTime": datetime.fromtimestamp(d.delivered_at, UTC).isoformat() if d.delivered_at else None,
                "sendStatus": d.state,
                "sendStatusDesc": d.last_error or d.state,
                "receiveStatus": business,
                "receiveStatusDesc": edxml.STATUS_CODES.get(business, ""),
            }
        )
    return ok(data=rows)


# ---------------------------------------------------------------- agencies


async def _agencies(axis: Axis) -> list[Any]:
    return await asyncio.to_thread(axis.store.agencies)


@method
async def agencies_list(request: web.Request, axis: Axis, caller: Caller) -> web.Response:
    return ok(
        data=[
            {"id": a.organ_id, "pid": a.parent or "", "code": a.organ_id, "name": a.name, "mail": "", "oldCode": ""}
            for a in await _agencies(axis)
        ]
    )


@method
async def agencies_list_qd20(request: web.Request, axis: Axis, caller: Caller) -> web.Response:
    """Both identifier forms side by side: an agency registered in one form shows it in its column."""
    return ok(
        data=[
            {
                "id": a.organ_id,
                "code": a.organ_id if a.form == "qd20" else "",
                "name": a.name,
                "mail": "",
                "code102": a.organ_id if a.form == "qcvn102" else "",
            }
            for a in await _agencies(axis)
        ]
    )


@method
async def synchronize_unit(request: web.Request, axis: Axis, caller: Caller) -> web.Response:
    return ok(
        data=[
            {
                "id": a.organ_id,
                "pid": a.parent or "",
                "code": a.organ_id,
                "name": a.name,
                "mail": "",
                "version": 1,
                "centerCode": "",
                "deleted": a.status != "active",
                "modifyDate": a.created_at,
                "isAgency": True,
            }
            for a in await _agencies(axis)
        ]
    )


def _admin(caller: Caller) -> None:
    if caller.role != "admin":
        raise RequestRefused("auth.forbidden", "registerAgency and deleteAgency need a system id with the admin role")


@method
async def register_agency(request: web.Request, axis: Axis, caller: Caller) -> web.Response:
    _admin(caller)
    await asyncio.to_thread(
        axis.registry.add_agency,
        caller.param("code", required=True) or "",
        caller.param("name", required=True) or "",
        caller.param("pid"),
    )
    return ok()


@method
async def delete_agency(request: web.Request, axis: Axis, caller: Caller) -> web.Response:
    _admin(caller)
    await asyncio.to_thread(axis.registry.set_status, caller.param("code", required=True) or "", "suspended")
    return ok()


METHODS: dict[str, tuple[tuple[str, ...], Callable[[web.Request], Awaitable[web.Response]]]] = {
    "getAgenciesList": (("POST", "GET"), agencies_list),
    "getAgenciesListQD20": (("POST", "GET"), agencies_list_qd20),
    "getSynchronizeUnit": (("POST", "GET"), synchronize_unit),
    "registerAgency": (("POST",), register_agency),
    "deleteAgency": (("POST",), delete_agency),
    "sendEdoc": (("POST",), send_edoc),
    "getReceivedEdocList": (("POST", "GET"), received_list),
    "getEdoc": (("POST", "GET"), get_edoc),
    "downloadEdoc": (("POST", "GET"), download_edoc),
    "updateStatus": (("POST",), update_status),
    "getSentEdocList": (("POST", "GET"), sent_list),
    "countReceiveEdoc": (("GET", "POST"), count_edoc),
    "countReceiveStatus": (("GET", "POST"), count_status),
}


def mount(app: web.Application) -> None:
    """Add the facade to the API under ``[server] vxp_prefix`` (nothing when it is empty)."""
    settings = app[AXIS].settings
    prefix = settings.server.vxp_prefix.rstrip("/")
    if not prefix:
        return
    # Loaded once: VXP calls do not read the file. Created when missing (no secret is sealed yet, so
    # nothing is lost); a replaced key makes every call FAIL with keystore.secret_unreadable.
    app[BOX] = keystore.SecretBox.at(keystore.KeyStore(settings.keys).secrets)
    app[SELF_AUTHENTICATED] = (*app[SELF_AUTHENTICATED], prefix + "/")
    for name, (verbs, handler) in METHODS.items():
        for verb in verbs:
            app.router.add_route(verb, f"{prefix}/{name}", handler)
