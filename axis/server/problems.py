"""Refusals as ``application/problem+json`` (RFC 9457) with the axis's stable codes.

The body is ``{"type", "title", "status", "code", "detail", ...fields}``; ``code`` is the same
string the CLI and the logs use. The HTTP status follows from the code: exact codes first, then
the code's prefix.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from aiohttp import web

from axis.errors import AxisError

BY_CODE = {
    "auth.missing": 401,
    "auth.invalid": 401,
    "auth.client_certificate": 401,
    "auth.forbidden": 403,
    "request.invalid": 400,
    "request.not_found": 404,
    "request.method_not_allowed": 405,
    "request.too_large": 413,
    "request.too_complex": 413,
    "xml.too_large": 413,
    "request.unsupported_media_type": 415,
    "request.recipient_busy": 429,
    "request.rate_limited": 429,
    "request.shutting_down": 503,
    "request.overloaded": 503,
    "request.timeout": 408,
    "request.verify_timeout": 503,
    "request.unavailable": 503,
    "request.disk_full": 507,
    "message.not_found": 404,
    "message.conflict": 409,
    "store.duplicate": 409,
    "store.conflict": 409,
    "store.invalid_transition": 409,
    "store.unknown_agency": 404,
    "store.unknown_endpoint": 404,
    "store.unknown_token": 404,
    "store.unknown_certificate": 404,
    "store.unknown_delivery": 404,
    "store.unavailable": 503,
    "store.closed": 503,
    "store.disk_full": 507,
}
BY_PREFIX = {
    "auth": 401,
    "request": 400,
    "sender": 403,
    "recipient": 422,
    "message": 422,
    "status": 422,
    "xml": 422,
    "edxml": 422,
    "identifier": 422,
    "signature": 422,
    "certificate": 422,
    "store": 400,
}


def status_of(code: str) -> int:
    return BY_CODE.get(code) or BY_PREFIX.get(code.split(".", 1)[0], 500)


def problem(error: AxisError, headers: dict[str, str] | None = None) -> web.Response:
    status = status_of(error.code)
    body: dict[str, Any] = {
        "type": f"urn:axis:refusal:{error.code}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        **error.as_dict(),
    }
    extra = dict(headers or {})
    if "retry_after" in error.fields:
        extra["Retry-After"] = str(int(error.fields["retry_after"]))
    return web.Response(
        status=status,
        body=json.dumps(body, ensure_ascii=False, default=str).encode(),
        content_type="application/problem+json",
        headers=extra,
    )
