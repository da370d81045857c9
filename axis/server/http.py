"""What every module of the HTTP API shares: the app's keys, who is calling, role checks, JSON
answers and reading a body within limits. Imported by ``app`` and ``admin`` (and the VXP service);
imports neither."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from axis.errors import RequestRefused
from axis.spool import Incoming, Spool
from axis.store import Endpoint

if TYPE_CHECKING:
    from axis.server.runtime import Axis

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
AXIS: web.AppKey[Axis] = web.AppKey("axis")
BODY_TIMEOUT: web.AppKey[float] = web.AppKey("body_timeout", float)
"""Seconds a request body may stall (``[server] body_timeout``); apps without it wait this long:"""
DEFAULT_BODY_TIMEOUT = 60.0
SELF_AUTHENTICATED: web.AppKey[tuple[str, ...]] = web.AppKey("self_authenticated", tuple)
"""Path prefixes whose routes authenticate callers themselves (the VXP facade's HMAC)."""
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


def node(request: web.Request) -> Axis:
    return request.app[AXIS]


def principal(request: web.Request) -> Principal:
    caller: Principal = request[PRINCIPAL]
    return caller


def require(*roles: str) -> Callable[[Handler], Handler]:
    """Only these roles may call the handler (403 for the others)."""

    def decorate(handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            caller = principal(request)
            if caller.role not in roles:
                raise RequestRefused(
                    "auth.forbidden", f"this needs the {' or '.join(roles)} role; the token is {caller.role}'s"
                )
            return await handler(request)

        guarded.__name__ = handler.__name__
        return guarded

    return decorate


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, refused (413) as soon as it exceeds ``limit`` bytes. A client that closes
    the connection mid-body is refused ``request.incomplete``: nobody reads that answer, but the
    access log records it in one line, where an escaping ConnectionError would log a traceback."""
    chunks: list[bytes] = []

    async def keep(chunk: bytes) -> None:
        chunks.append(chunk)

    await _read(request, limit, keep)
    return b"".join(chunks)


async def read_package(request: web.Request, limit: int, spool: Spool) -> Incoming:
    """The body as a package, as ``read_body`` reads it, but hashed as it arrives and spooled to a
    file by the store past what it keeps in memory; nothing of it is left behind if it is refused."""

    async def keep(chunk: bytes) -> None:
        if spool.spilled:
            await asyncio.to_thread(spool.write, chunk)
        else:
            spool.write(chunk)

    try:
        await _read(request, limit, keep)
        return spool.finish()
    except BaseException:
        spool.discard()
        raise


async def _read(request: web.Request, limit: int, keep: Callable[[bytes], Awaitable[None]]) -> None:
    if request.content_length is not None and request.content_length > limit:
        raise RequestRefused("request.too_large", f"the body is {request.content_length} bytes; the limit is {limit}")
    stall = request.app.get(BODY_TIMEOUT, DEFAULT_BODY_TIMEOUT)
    size = 0
    try:
        while True:
            async with asyncio.timeout(stall):  # a body that stops arriving does not hold its connection
                chunk = await request.content.read(1 << 20)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise RequestRefused("request.too_large", f"the body exceeds the limit of {limit} bytes")
            await keep(chunk)
    except ConnectionError:
        raise RequestRefused(
            "request.incomplete", f"the client closed the connection after {size} bytes of the body"
        ) from None
    except TimeoutError:
        raise RequestRefused(
            "request.timeout", f"no byte of the body arrived for {stall:g} s (after {size} bytes); send it again"
        ) from None


async def read_json(request: web.Request, limit: int) -> dict[str, Any] | None:
    """The body as a JSON object, None when there is no body. Nesting too deep for the parser
    (``[[[[...``) raises RecursionError, not ValueError: both are the client's fault, so both
    answer 400."""
    data = await read_body(request, limit)
    if not data:
        return None
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise RequestRefused("request.invalid", "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise RequestRefused("request.invalid", "the body must be a JSON object")
    return body


def delivery_json(d: Any) -> dict[str, Any]:
    row = asdict(d)
    for key in ("created_at", "due_at", "expires_at", "lease_deadline", "delivered_at"):
        if row[key] is not None:
            row[key] = datetime.fromtimestamp(row[key], UTC).isoformat()
    return row
