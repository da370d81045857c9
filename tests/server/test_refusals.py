"""Every refusal over HTTP: problem+json with the stable code, the right status, nothing stored."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from adapters.demo import CAO_BANG, NGHE_AN
from axis import edxml, keystore, signing
from axis.registry import Registry
from axis.server.runtime import start
from axis.store import SQLiteStore
from tests.server.conftest import G22, H14, H41, UNGRANTED, Client, Network, make_network


async def check(client: Client, data: bytes, status: int, code: str, **kwargs: str) -> dict[str, object]:
    got, body, headers = await client.request("POST", "/v1/messages", data=data, **kwargs)  # type: ignore[arg-type]
    assert (got, body["code"]) == (status, code), body
    assert headers["Content-Type"].startswith("application/problem+json")
    assert body["status"] == status and body["detail"] and body["title"]
    return body  # type: ignore[no-any-return]


def admin_store(network: Network) -> tuple[Registry, SQLiteStore]:
    return network.registry()


async def test_package_refusals(network: Network, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    token = network.endpoint("vpcp", [G22])
    axis = await start(network.settings)
    try:
        client = Client(session, axis.url, token)
        document = network.document()
        data = network.sign(document)

        # who: credentials and roles
        await check(Client(session, axis.url, None), data, 401, "auth.missing")
        await check(Client(session, axis.url, "not-a-token"), data, 401, "auth.invalid")
        await check(Client(session, axis.url, network.admin_token), data, 403, "auth.forbidden")
        # how: media type, bytes, signature
        await check(client, data, 415, "request.unsupported_media_type", content_type="application/json")
        await check(client, b"<edXML", 422, "xml.malformed")
        await check(client, b'<!DOCTYPE x [<!ENTITY a "b">]><x/>', 422, "xml.dtd_forbidden")
        await check(client, edxml.build(document), 422, "signature.missing")
        await check(client, data.replace(b"<Subject>V/v ", b"<Subject>W/v "), 422, "signature.digest_mismatch")
        # signed by a key the axis's CA never issued
        outsider = keystore.KeyStore(tmp_path / "other-ca")
        outsider.init(network.now)
        key_path, cert_path = outsider.issue(G22, tmp_path / "other", network.now)
        forged = signing.sign(edxml.build(document), keystore.read_private_key(key_path), keystore.read_certificates(cert_path)[0])
        await check(client, forged, 422, "certificate.untrusted")

        # the registry: sender, certificate, recipients
        await check(client, network.sign(network.document(sender=NGHE_AN)), 403, "sender.not_granted")
        unregistered = edxml.Organization(organ_id="000.00.00.H99", organ_name="Không đăng ký")
        keys = network.keys
        keys.issue("000.00.00.H99", network.root / "agencies", network.now)
        await check(client, network.sign(network.document(sender=unregistered)), 403, "sender.not_registered")
        # a second certificate of G22 that nobody registered
        key_path, cert_path = keys.issue(G22, tmp_path / "spare", network.now)
        spare = signing.sign(edxml.build(network.document()), keystore.read_private_key(key_path), keystore.read_certificates(cert_path)[0])
        await check(client, spare, 403, "sender.certificate_not_registered")
        stranger = edxml.Organization(organ_id="000.00.00.H98")
        await check(client, network.sign(network.document(recipients=(NGHE_AN, stranger))), 422, "recipient.not_registered")
        registry, store = network.registry()
        try:
            registry.set_status(H14, "suspended")
        finally:
            store.close()
        await check(client, network.sign(network.document(recipients=(CAO_BANG,))), 422, "recipient.suspended")
        registry, store = network.registry()
        try:
            registry.set_status(G22, "suspended")
        finally:
            store.close()
        await check(client, data, 403, "sender.suspended")
        registry, store = network.registry()
        try:
            registry.set_status(G22, "active")
            registry.revoke_certificate(registry.store.certificates(G22)[0].fingerprint)
        finally:
            store.close()
        await check(client, data, 403, "sender.certificate_revoked")
        assert axis.axis.store.delivery_counts() == {}  # nothing refused left anything behind
        blob_files = getattr(axis.axis.store.blobs, "root", None)  # SQLite's blob directory; PostgreSQL has none
        assert blob_files is None or all(p.is_dir() for p in blob_files.rglob("*"))
    finally:
        await axis.stop()


async def test_endpoints_are_isolated(network: Network, session: aiohttp.ClientSession) -> None:
    sender_token = network.endpoint("vpcp", [G22])
    nghe_an_token = network.endpoint("nghe-an", [H41])
    other_token = network.endpoint("ngoai-giao", [UNGRANTED])
    axis = await start(network.settings)
    try:
        sender = Client(session, axis.url, sender_token)
        nghe_an, other = Client(session, axis.url, nghe_an_token), Client(session, axis.url, other_token)
        status, accepted = await sender.submit(network.sign(network.document(recipients=(NGHE_AN,))))
        assert status == 202
        message = accepted["message_id"]
        status, body, _ = await other.request("GET", "/v1/inbox", params={"agency": H41})
        assert (status, body["code"]) == (403, "auth.forbidden")
        _, body, _ = await other.request("GET", "/v1/inbox")
        assert body["items"] == []
        for method, path in (("GET", ""), ("POST", "/ack"), ("GET", "/receipts"), ("GET", "/trail")):
            status, body, _ = await other.request(method, f"/v1/messages/{message}{path}")
            assert (status, body["code"]) == (404, "message.not_found"), path
        status, body = await nghe_an.submit(network.sign(network.document()))
        assert (status, body["code"]) == (403, "sender.not_granted")
        # the sender can follow its message but cannot acknowledge it for the recipient
        status, body, _ = await sender.request("POST", f"/v1/messages/{message}/ack")
        assert (status, body["code"]) == (404, "message.not_found")
        assert (await nghe_an.request("GET", f"/v1/messages/{message}"))[0] == 200
        # endpoints read the agency directory but cannot use the admin API; auditors cannot write
        status, body, _ = await nghe_an.request("GET", "/v1/agencies")
        assert status == 200 and {a["organ_id"] for a in body["items"]} >= {G22, H41}
        status, body, _ = await nghe_an.request("GET", "/v1/admin/endpoints")
        assert (status, body["code"]) == (403, "auth.forbidden")
        auditor = Client(session, axis.url, network.auditor_token)
        assert (await auditor.request("GET", "/v1/agencies"))[0] == 200
        status, body, _ = await auditor.request("POST", "/v1/admin/agencies", json_body={"organ_id": "000.00.00.H30", "name": "x"})
        assert (status, body["code"]) == (403, "auth.forbidden")
    finally:
        await axis.stop()


@pytest.mark.parametrize(
    ("overrides", "status", "code"),
    [
        ({"server": {"max_package": 2000}}, 413, "request.too_large"),
        # the data directory's disk: a SQLite store's (a PostgreSQL server reports its own as store.disk_full)
        ({"server": {"min_free_disk": 10**18}, "store": {"url": ""}}, 507, "request.disk_full"),
        ({"server": {"recipient_backlog": 1}}, 429, "request.recipient_busy"),
        ({"server": {"verify_timeout": 0.0005}}, 503, "request.verify_timeout"),
    ],
)
async def test_limits(tmp_path: Path, session: aiohttp.ClientSession, overrides: dict, status: int, code: str) -> None:  # type: ignore[type-arg]
    network = make_network(tmp_path, overrides)
    token = network.endpoint("vpcp", [G22])
    axis = await start(network.settings)
    try:
        client = Client(session, axis.url, token)
        if code == "request.recipient_busy":
            assert (await client.submit(network.sign(network.document())))[0] == 202
        body = await check(client, network.sign(network.document()), status, code)
        if code == "request.recipient_busy":
            _, _, headers = await client.request("POST", "/v1/messages", data=network.sign(network.document()))
            assert int(headers["Retry-After"]) > 0 and body["recipient"] in (H41, H14)
        if code == "request.verify_timeout":
            assert axis.axis.pool.replaced >= 1
    finally:
        await axis.stop()


async def test_admin_api_registers_and_requeues(network: Network, session: aiohttp.ClientSession) -> None:
    axis = await start(network.settings)
    try:
        admin = Client(session, axis.url, network.admin_token)
        status, body, _ = await admin.request("POST", "/v1/admin/agencies", json_body={"organ_id": "000.00.00.H30", "name": "UBND Tỉnh Hà Tĩnh"})
        assert status == 201 and body["form"] == "qcvn102"
        status, body, _ = await admin.request("POST", "/v1/admin/agencies", json_body={"organ_id": "000.00.00.H30", "name": "again"})
        assert (status, body["code"]) == (409, "store.duplicate")
        status, body, _ = await admin.request("POST", "/v1/admin/agencies", json_body={"organ_id": "not-an-id", "name": "x"})
        assert (status, body["code"]) == (422, "identifier.organ_id")
        status, body, _ = await admin.request("POST", "/v1/admin/endpoints", json_body={"name": "ha-tinh", "agencies": ["000.00.00.H30"]})
        assert status == 201 and len(body["token"]) >= 40
        status, body, _ = await admin.request("POST", "/v1/admin/agencies/000.00.00.H30/suspend")
        assert status == 200 and body["status"] == "suspended"
        _, key_path = network.keys.issue("000.00.00.H30", network.root / "agencies", network.now)
        status, body, _ = await admin.request("POST", "/v1/admin/certificates", json_body={"organ_id": "000.00.00.H30", "pem": key_path.read_text()})
        assert status == 201 and len(body["fingerprint"]) == 64
        crl = network.keys.crl.read_bytes()
        status, body, _ = await admin.request("POST", "/v1/admin/crl", data=crl, content_type="application/pkix-crl")
        assert status == 201, body
        status, body, _ = await admin.request("GET", "/v1/admin/crl")
        assert status == 200 and body["items"]
        status, body, _ = await admin.request("GET", "/v1/admin/deliveries", params={"state": "expired"})
        assert status == 200 and body["items"] == []
        status, body, _ = await admin.request("POST", "/v1/admin/deliveries/424242/requeue")
        assert (status, body["code"]) == (404, "store.unknown_delivery")
        status, body, _ = await admin.request("GET", "/nowhere")
        assert (status, body["code"]) == (404, "request.not_found")
    finally:
        await axis.stop()


async def test_every_attack_is_refused_over_http_with_its_code(network: Network, session: aiohttp.ClientSession) -> None:
    """The attack list of tests/test_attacks.py, built against this axis's CA and sent over HTTP."""
    from tests.conftest import PKI, Agency
    from tests.test_attacks import ATTACKS, Context

    token = network.endpoint("vpcp", [G22])
    document = network.document()
    context = Context(
        PKI(network.keys, network.now),
        Agency(G22, network.root / "agencies" / f"{G22}.key", network.root / "agencies" / f"{G22}.pem"),
        network.sign(document),
        document,
    )
    axis = await start(network.settings)
    try:
        client = Client(session, axis.url, token)
        wrong = {}
        for name, build, code in ATTACKS:
            status, body = await client.submit(build(context))
            if (status, body.get("code")) != (422 if code != "xml.too_large" else 413, code):
                wrong[name] = (status, body.get("code"), code)
        assert wrong == {}
        assert axis.axis.store.delivery_counts() == {}
    finally:
        await axis.stop()


async def test_hostile_headers_and_ack_bodies(network: Network, session: aiohttp.ClientSession) -> None:
    """Bytes that are not ASCII in a token, and an ack body that is not the recipient's status 01."""
    sender_token = network.endpoint("vpcp", [G22])
    nghe_an_token = network.endpoint("nghe-an", [H41])
    cao_bang_token = network.endpoint("cao-bang", [H14])
    axis = await start(network.settings)
    try:
        raw = aiohttp.ClientSession(skip_auto_headers=["User-Agent"])
        async with raw, raw.get(axis.url + "/v1/inbox", headers={"Authorization": "Bearer t\u00e9st"}) as response:
            assert response.status == 401 and (await response.json())["code"] == "auth.invalid"
        sender, nghe_an = Client(session, axis.url, sender_token), Client(session, axis.url, nghe_an_token)
        document = network.document()
        status, accepted = await sender.submit(network.sign(document))
        assert status == 202
        message = accepted["message_id"]
        # a new document is not an acknowledgement, nor is a status of the wrong code or by another agency
        for body in (
            network.sign(network.document(sender=NGHE_AN, recipients=(CAO_BANG,))),
            network.sign(network.status(document, NGHE_AN, "03")),
            network.sign(network.status(document, CAO_BANG, "01")),
        ):
            status, problem, _ = await nghe_an.request("POST", f"/v1/messages/{message}/ack", data=body)
            assert (status, problem["code"]) == (400, "request.invalid")
        assert {d.state for d in axis.axis.store.deliveries_of(message)} == {"queued"}
        # each recipient sees its own delivery in the trail and receipts, not the other recipient's
        assert (await nghe_an.request("POST", f"/v1/messages/{message}/ack"))[0] == 200
        cao_bang = Client(session, axis.url, cao_bang_token)
        _, trail, _ = await cao_bang.request("GET", f"/v1/messages/{message}/trail")
        assert [d["recipient"] for d in trail["deliveries"]] == [H14]
        assert all(e["kind"] != "delivery.delivered" for e in trail["events"])
        _, listed, _ = await cao_bang.request("GET", f"/v1/messages/{message}/receipts")
        assert listed["items"] == []
        _, listed, _ = await sender.request("GET", f"/v1/messages/{message}/receipts")
        assert [r["recipient"] for r in listed["items"]] == [None, H41]
    finally:
        await axis.stop()
