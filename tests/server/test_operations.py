"""What an operator relies on beside the API's answers: role tokens revoked over HTTP stop at once,
hostile JSON is a 400, and every request leaves one access-log line (never a secret), a client
gone mid-upload included, without a traceback."""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
import pytest

from axis.server.runtime import start
from tests.server.conftest import G22, Client, Network


async def test_role_tokens_listed_and_revoked_over_http_stop_working_at_once(
    network: Network, session: aiohttp.ClientSession
) -> None:
    registry, store = network.registry()
    try:
        departing = registry.add_role_token("auditor", "Nguyễn Thị C")
    finally:
        store.close()
    axis = await start(network.settings)
    try:
        admin, auditor = Client(session, axis.url, network.admin_token), Client(session, axis.url, departing)
        assert (await auditor.request("GET", "/v1/admin/tokens"))[0] == 200  # the registry cache holds it now
        status, listed, _ = await admin.request("GET", "/v1/admin/tokens")
        assert status == 200 and [(t["name"], t["role"]) for t in listed["items"]] == [
            ("test admin", "admin"), ("test auditor", "auditor"), ("Nguyễn Thị C", "auditor")
        ]
        text = json.dumps(listed)
        assert all(t not in text for t in (network.admin_token, network.auditor_token, departing))
        assert set(listed["items"][2]) == {"id", "name", "role", "created_at", "revoked_at"}
        status, body, _ = await auditor.request("POST", f"/v1/admin/tokens/{listed['items'][2]['id']}/revoke")
        assert (status, body["code"]) == (403, "auth.forbidden")  # auditors read, admins revoke
        status, body, _ = await admin.request("POST", f"/v1/admin/tokens/{listed['items'][2]['id']}/revoke")
        assert status == 200 and [t["name"] for t in body["items"]] == ["Nguyễn Thị C"] and body["items"][0]["revoked_at"]
        status, body, _ = await auditor.request("GET", "/v1/admin/tokens")
        assert (status, body["code"]) == (401, "auth.invalid")
        status, body, _ = await admin.request("POST", "/v1/admin/tokens/nobody/revoke")
        assert body["code"] == "store.unknown_token"
        events = [json.loads(e.content) for e in axis.axis.store.events()]
        assert [e["subject"] for e in events if e["kind"] == "token.revoked"] == ["Nguyễn Thị C"]
    finally:
        await axis.stop()


@pytest.mark.parametrize("path", ["/v1/admin/agencies", "/v1/admin/endpoints", "/v1/admin/certificates"])
async def test_deeply_nested_json_is_a_bad_request(network: Network, session: aiohttp.ClientSession, path: str) -> None:
    axis = await start(network.settings)
    try:
        admin = Client(session, axis.url, network.admin_token)
        nested = b"[" * 100_000 + b"]" * 100_000
        status, body, _ = await admin.request("POST", path, data=nested, content_type="application/json")
        assert status == 400 and body["code"] == "request.invalid", body
    finally:
        await axis.stop()


async def test_one_access_line_per_request_with_its_code_and_no_secret(
    network: Network, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="axis.access")
    token = network.endpoint("vpcp", [G22])
    secret = "Sjq8-not-a-real-token-but-secret-looking-4Kx"
    axis = await start(network.settings)
    try:
        status, body, _ = await Client(session, axis.url, secret).request("GET", "/v1/inbox", params={"token": token})
        assert (status, body["code"]) == (401, "auth.invalid")
        status, _, _ = await Client(session, axis.url, token).request("GET", "/v1/inbox", params={"agency": G22, "token": secret})
        assert status == 200
        status, _ = await Client(session, axis.url, token).submit(network.sign(network.document()))
        assert status == 202
    finally:
        await axis.stop()
    lines = [r for r in caplog.records if r.name == "axis.access"]
    assert [(r.levelno, json.loads(r.getMessage())["status"]) for r in lines] == [
        (logging.INFO, 401), (logging.INFO, 200), (logging.INFO, 202)
    ]
    refused, listed, submitted = (json.loads(r.getMessage()) for r in lines)
    assert refused["code"] == "auth.invalid" and refused["path"] == "/v1/inbox" and refused["method"] == "GET"
    assert (listed["code"], listed["role"], listed["name"]) == (None, "endpoint", "vpcp")
    assert submitted["path"] == "/v1/messages" and submitted["ms"] >= 0
    assert secret not in caplog.text and token not in caplog.text and "<edXML" not in caplog.text


async def test_a_client_gone_mid_upload_is_one_quiet_line(network: Network, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    token = network.endpoint("vpcp", [G22])
    axis = await start(network.settings)
    try:
        host, port = axis.url.removeprefix("http://").split(":")
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"POST /v1/messages HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/xml\r\nContent-Length: {1 << 20}\r\n\r\n".encode()
            + b"<" * 300_000
        )
        await writer.drain()
        await asyncio.sleep(0.2)  # the handler is reading the body
        writer.close()
        await writer.wait_closed()
        for _ in range(100):
            if any(r.name == "axis.access" for r in caplog.records):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # anything logged after the refusal arrives too
        assert axis.axis.store.delivery_counts() == {}
    finally:
        await axis.stop()
    assert [json.loads(r.getMessage())["code"] for r in caplog.records if r.name == "axis.access"] == ["request.incomplete"]
    assert "Traceback" not in caplog.text and not [r for r in caplog.records if r.levelno >= logging.ERROR]
