"""``/v1/admin/*``: the registry and dead letters over HTTP. Admins write; auditors read."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

from aiohttp import web

from axis import exchange, keystore
from axis.errors import RequestRefused
from axis.server.http import delivery_json, json_response, node, principal, read_body, read_json, require


async def _body(request: web.Request) -> bytes:
    """The body under the same limit as a package (a client gone mid-upload is a quiet refusal)."""
    return await read_body(request, node(request).settings.server.max_package)


async def _json(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object (required), under the same limit as a package."""
    body = await read_json(request, node(request).settings.server.max_package)
    if body is None:
        raise RequestRefused("request.invalid", "the body must be a JSON object")
    return body


def _field(body: dict[str, Any], name: str, kind: type = str, required: bool = True) -> Any:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, kind) or (isinstance(value, str) and not value.strip()):
        raise RequestRefused("request.invalid", f"{name!r} must be a non-empty {kind.__name__}")
    return value


@require("admin")
async def add_agency(request: web.Request) -> web.Response:
    body = await _json(request)
    agency = await asyncio.to_thread(
        node(request).registry.add_agency,
        _field(body, "organ_id"),
        _field(body, "name"),
        _field(body, "parent", required=False),
    )
    return json_response(asdict(agency), 201)


@require("admin")
async def agency_status(request: web.Request) -> web.Response:
    organ_id, action = request.match_info["organ_id"], request.match_info["action"]
    status = {"suspend": "suspended", "resume": "active"}[action]
    axis = node(request)
    await asyncio.to_thread(axis.registry.set_status, organ_id, status)
    return json_response(asdict(await asyncio.to_thread(axis.registry.agency, organ_id)))


@require("admin", "auditor")
async def list_endpoints(request: web.Request) -> web.Response:
    rows = await asyncio.to_thread(node(request).store.endpoints)
    return json_response({"items": [asdict(e) for e in rows]})


@require("admin")
async def add_endpoint(request: web.Request) -> web.Response:
    body = await _json(request)
    agencies = _field(body, "agencies", list)
    if not all(isinstance(a, str) for a in agencies):
        raise RequestRefused("request.invalid", "'agencies' must be a list of OrganIds")
    axis = node(request)
    endpoint, token = await asyncio.to_thread(
        axis.registry.add_endpoint,
        _field(body, "name"),
        agencies,
        _field(body, "push_url", required=False),
        _field(body, "client_cert_fingerprint", required=False),
    )
    if axis.dispatcher is not None:
        axis.dispatcher.wake()
    return json_response({**asdict(endpoint), "token": token}, 201)


@require("admin")
async def revoke_endpoint(request: web.Request) -> web.Response:
    axis = node(request)
    await asyncio.to_thread(axis.registry.store.revoke_endpoint, request.match_info["name"], axis.registry.clock().isoformat())
    return json_response({"name": request.match_info["name"], "status": "revoked"})


@require("admin", "auditor")
async def list_tokens(request: web.Request) -> web.Response:
    """Role tokens by id, name, role and times: never a token or its hash."""
    rows = await asyncio.to_thread(node(request).store.role_tokens)
    return json_response({"items": rows})


@require("admin")
async def revoke_token(request: web.Request) -> web.Response:
    """Revoke by id, or every token of a name; the tokens stop working at the next request."""
    revoked = await asyncio.to_thread(node(request).registry.revoke_role_tokens, request.match_info["token_id"])
    return json_response({"items": revoked})


@require("admin", "auditor")
async def list_certificates(request: web.Request) -> web.Response:
    rows = await asyncio.to_thread(node(request).store.certificates, request.query.get("agency"))
    return json_response({"items": [asdict(c) for c in rows]})


@require("admin")
async def add_certificate(request: web.Request) -> web.Response:
    body = await _json(request)
    record = await asyncio.to_thread(
        node(request).registry.add_certificate, _field(body, "organ_id"), _field(body, "pem").encode()
    )
    return json_response(asdict(record), 201)


@require("admin")
async def revoke_certificate(request: web.Request) -> web.Response:
    fingerprint = request.match_info["fingerprint"]
    axis = node(request)
    await asyncio.to_thread(axis.registry.revoke_certificate, fingerprint)
    record = await asyncio.to_thread(axis.store.certificate, fingerprint.lower().replace(":", ""))
    assert record is not None
    return json_response(asdict(record))


@require("admin", "auditor")
async def list_crls(request: web.Request) -> web.Response:
    trust = await asyncio.to_thread(keystore.read_trust, node(request).settings.trust)
    return json_response(
        {
            "items": [
                {
                    "issuer": c.issuer.rfc4514_string(),
                    "last_update": c.last_update_utc.isoformat(),
                    "next_update": c.next_update_utc.isoformat() if c.next_update_utc else None,
                    "revoked": len(list(c)),
                }
                for c in trust.crls
            ]
        }
    )


@require("admin")
async def import_crl(request: web.Request) -> web.Response:
    data = await _body(request)
    path, revocations = await asyncio.to_thread(keystore.import_crl, node(request).settings.trust, data)
    return json_response(
        {"issuer": revocations.issuer.rfc4514_string(), "revoked": len(list(revocations)), "file": path.name}, 201
    )


@require("admin", "auditor")
async def list_deliveries(request: web.Request) -> web.Response:
    state = request.query.get("state")
    if state not in (None, "queued", "leased", "delivered", "expired"):
        raise RequestRefused("request.invalid", "state must be queued, leased, delivered or expired")
    try:
        limit = min(1000, max(1, int(request.query.get("limit", "100"))))
    except ValueError:
        raise RequestRefused("request.invalid", "limit must be a whole number") from None
    rows = await asyncio.to_thread(node(request).store.deliveries, state, limit)
    return json_response({"items": [delivery_json(d) for d in rows]})


@require("admin")
async def requeue(request: web.Request) -> web.Response:
    try:
        delivery_id = int(request.match_info["delivery_id"])
    except ValueError:
        raise RequestRefused("request.invalid", "a delivery id is a whole number") from None
    delivery = await exchange.requeue(node(request), delivery_id, principal(request).name)
    return json_response(delivery_json(delivery))


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/v1/admin/agencies", add_agency)
    r.add_post("/v1/admin/agencies/{organ_id}/{action:suspend|resume}", agency_status)
    r.add_get("/v1/admin/endpoints", list_endpoints)
    r.add_post("/v1/admin/endpoints", add_endpoint)
    r.add_delete("/v1/admin/endpoints/{name}", revoke_endpoint)
    r.add_get("/v1/admin/tokens", list_tokens)
    r.add_post("/v1/admin/tokens/{token_id}/revoke", revoke_token)
    r.add_get("/v1/admin/certificates", list_certificates)
    r.add_post("/v1/admin/certificates", add_certificate)
    r.add_post("/v1/admin/certificates/{fingerprint}/revoke", revoke_certificate)
    r.add_get("/v1/admin/crl", list_crls)
    r.add_post("/v1/admin/crl", import_crl)
    r.add_get("/v1/admin/deliveries", list_deliveries)
    r.add_post("/v1/admin/deliveries/{delivery_id}/requeue", requeue)



