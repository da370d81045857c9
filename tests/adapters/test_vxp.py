"""The VXP facade against a real axis on 127.0.0.1, driven two ways:

- ``SdkClient`` behaves as the operator's Java SDK does (../shared/VXP.md): one service object
  with one timestamp fixed when it is built, parameters that accumulate and are never removed,
  every parameter signed, the file sent with CRLF after it, count methods POSTing ``{}``,
  ``downloadEdoc`` a GET; it reads answers as the SDK does (every key it reads must be there).
- tests/adapters/test_vxp_captures.py replays the requests the real SDK sent, byte for byte.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request

from adapters import vxp
from adapters.demo import CAO_BANG, NGHE_AN
from adapters.vxp import protocol
from adapters.vxp.service import Service
from axis import config, edxml, keystore
from axis.errors import RequestRefused
from axis.registry import Registry
from axis.server.runtime import Running, start
from axis.store import open_store
from tests.server.conftest import G22, H14, H41, Network, make_network

VIETNAM = timezone(timedelta(hours=7))
ENVELOPE = ("status", "ErrorCode", "ErrorDesc")
READS = {
    "sendEdoc": {"DocId": str},
    "getEdoc": {"data": str},
    "getReceivedEdocList": {"data": list},
    "getSentEdocList": {"data": list},
    "countReceiveEdoc": {"count": int},
    "countReceiveStatus": {"count": int},
    "getAgenciesList": {"data": list},
    "getAgenciesListQD20": {"data": list},
    "getSynchronizeUnit": {"data": list},
}
"""What the SDK reads beside the envelope, on every answer (VXP.md §5)."""


def sdk_timestamp(at: datetime) -> str:
    local = at.astimezone(VIETNAM)
    return f"{local:%d%m%Y}T{local:%H%M%S}+{local.microsecond // 1000:04d}"


def read_like_the_sdk(method: str, raw: bytes) -> dict[str, Any]:
    """The checks the SDK's parse makes: any of them failing, the application sees nothing."""
    if method == "sendEdoc":
        assert raw.isascii(), "sendEdoc's answer is decoded as US-ASCII"
    answer = json.loads(raw.decode("utf-8"))
    for key in ENVELOPE:
        assert isinstance(answer.get(key), str), f"{method}: {key} missing or not a string: {answer}"
    for key, kind in READS.get(method, {}).items():
        assert isinstance(answer.get(key), kind), f"{method}: {key} missing or not {kind.__name__}: {answer}"
    for item in answer.get("data") if isinstance(answer.get("data"), list) else []:
        assert isinstance(item, dict) and all(isinstance(v, str | int | bool) for v in item.values()), item
    return answer  # type: ignore[no-any-return]


@dataclass
class SdkClient:
    """One ``KnobstickServiceImp``/``AgencyServiceImp`` object of the SDK."""

    session: aiohttp.ClientSession
    endpoint: str
    system_id: str
    secret: str
    built_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    params: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.params.update(systemid=self.system_id, timestamp=sdk_timestamp(self.built_at))

    def signed_headers(self) -> dict[str, str]:
        signed = json.dumps({f"XroadVnpt-{n}": v for n, v in self.params.items()}, ensure_ascii=False, separators=(",", ":"))
        return {
            **{f"XroadVnpt-{n}": v for n, v in self.params.items()},
            "XroadVnpt-sign-header-key": ";".join(self.params),
            "XroadVnpt-sign-header": signed,
            "XroadVnpt-hash-header": hmac.new(self.secret.encode(), signed.encode(), hashlib.sha256).hexdigest(),
            "User-Agent": "JAVASDKAgent/1.0.0 XRoad/VPCP",
            "XroadVnpt-version": "3.0.201608",
        }

    def _put(self, json_headers: dict[str, Any], content_type: str) -> None:
        self.params["Content-Type"] = content_type
        for name, value in json_headers.items():
            self.params[name] = value if isinstance(value, str) else json.dumps(value)

    async def raw(self, method: str, json_headers: dict[str, Any] | None = None, *, body: bytes = b"",
                  verb: str = "POST", content_type: str = "application/json") -> tuple[int, bytes, dict[str, str]]:
        self._put(json_headers or {}, content_type)
        headers = {**self.signed_headers(), "Content-Type": content_type}
        async with self.session.request(verb, f"{self.endpoint}/{method}", data=body if verb == "POST" else None,
                                        headers=headers) as response:
            return response.status, await response.read(), dict(response.headers)

    async def call(self, method: str, json_headers: dict[str, Any] | None = None, *, body: bytes = b"") -> dict[str, Any]:
        _, raw, _ = await self.raw(method, json_headers, body=body)
        return read_like_the_sdk(method, raw)

    async def send_edoc(self, json_headers: dict[str, Any], data: bytes) -> dict[str, Any]:
        self.params["hash-file"] = "".join(f"{b:x}" for b in hashlib.sha256(data).digest())
        if "to" in json_headers:  # the SDK sends `to` as its JSON text, quotes included
            json_headers = {**json_headers, "to": json.dumps(json_headers["to"])}
        _, raw, _ = await self.raw("sendEdoc", json_headers, body=data + b"\r\n", content_type="application/octet-stream")
        return read_like_the_sdk("sendEdoc", raw)

    async def count(self, method: str) -> dict[str, Any]:
        return await self.call(method, {}, body=b"{}")

    async def download(self, doc_id: str) -> tuple[int, bytes, dict[str, str]]:
        return await self.raw("downloadEdoc", {"filePath": "xml", "docId": doc_id}, verb="GET")


def add_system(network: Network, name: str, agencies: list[str], system_id: str, *, admin: bool = False,
               sources: tuple[str, ...] = ()) -> str:
    store = open_store(network.settings)
    try:
        box = keystore.SecretBox.at(network.keys.secrets)
        registry = Registry(store, lambda: keystore.read_trust(network.settings.trust))
        return registry.add_vxp_endpoint(name, agencies, system_id, box, admin=admin, sources=sources)[2]
    finally:
        store.close()


@dataclass
class World:
    network: Network
    running: Running
    session: aiohttp.ClientSession
    secrets: dict[str, str]

    @property
    def base(self) -> str:
        return self.running.url + "/vxp"

    def client(self, system_id: str, **changes: Any) -> SdkClient:
        arguments: dict[str, Any] = {"secret": self.secrets.get(system_id, ""), **changes}
        return SdkClient(self.session, self.base, system_id, **arguments)

    def nothing_stored(self) -> bool:
        return self.running.axis.store.delivery_counts() == {}


async def open_world(tmp_path: Path, overrides: dict[str, dict[str, Any]] | None = None,
                     sources: tuple[str, ...] = ()) -> tuple[World, Any]:
    network = make_network(tmp_path, overrides)
    secrets = {
        "VPCP-QLVB": add_system(network, "vpcp-qlvb", [G22], "VPCP-QLVB", sources=sources),
        "NGHEAN-QLVB": add_system(network, "nghe-an-qlvb", [H41], "NGHEAN-QLVB"),
        "OPERATOR": add_system(network, "operator", [H14], "OPERATOR", admin=True),
    }
    running = await start(network.settings, extensions=[vxp.mount])
    session = aiohttp.ClientSession()

    async def close() -> None:
        await session.close()
        await running.stop()

    return World(network, running, session, secrets), close


@pytest.fixture
async def world(tmp_path: Path):  # type: ignore[no-untyped-def]
    opened, close = await open_world(tmp_path)
    try:
        yield opened
    finally:
        await close()


async def test_one_service_object_sends_and_the_recipient_lists_gets_downloads_and_updates(world: World) -> None:
    """The vendor example's flows, each on one service object (constant timestamp, parameters
    accumulating), so every call after the first carries the same signature or stale values."""
    network = world.network
    document = network.document(recipients=(NGHE_AN,))
    package = network.sign(document)
    sender = world.client("VPCP-QLVB")
    sent = await sender.send_edoc({"from": G22, "to": H41, "servicetype": "eDoc", "messagetype": "edoc"}, package)
    assert (sent["status"], sent["ErrorCode"]) == ("OK", "0"), sent
    doc_id = sent["DocId"]
    again = await sender.send_edoc({"from": G22, "servicetype": "eDoc", "messagetype": "edoc"}, package)
    assert again["DocId"] == doc_id, "a resubmission is idempotent: the same message, nothing new stored"
    stored = await asyncio.to_thread(world.running.axis.store.message, doc_id)
    assert stored is not None and stored.sha256 == hashlib.sha256(package).hexdigest(), "CRLF is not part of the file"

    recipient = world.client("NGHEAN-QLVB")
    assert (await recipient.count("countReceiveEdoc"))["count"] == 1
    assert (await recipient.count("countReceiveEdoc"))["count"] == 1  # byte-identical request: accepted
    listing = await recipient.call("getReceivedEdocList", {"servicetype": "eDoc", "messagetype": "edoc"})
    (item,) = listing["data"]
    assert (item["docId"], item["from"], item["to"], item["messageType"]) == (doc_id, G22, H41, "edoc")
    fetched = await recipient.call("getEdoc", {"filePath": "xml", "docId": doc_id})
    assert base64.b64decode(fetched["data"]) == package
    status, raw, _ = await recipient.download(doc_id)
    assert (status, raw) == (200, package)
    # the vendor's run-8 form: `docid`, unquoted; `docId` and `filePath` left from earlier calls
    assert (await recipient.call("updateStatus", {"status": "done", "docid": doc_id}, body=b"{}"))["status"] == "OK"
    assert set(recipient.params) >= {"docId", "docid", "filePath", "messagetype", "status"}
    assert (await recipient.count("countReceiveEdoc"))["count"] == 0
    # its getEdoc after updateStatus carries `status: done`: the same signature as that updateStatus
    assert (await recipient.call("getEdoc", {"filePath": "xml", "docId": doc_id}))["status"] == "OK"

    report = await sender.call("getSentEdocList", {"servicetype": "eDoc", "messagetype": "edoc", "docId": doc_id})
    (row,) = report["data"]
    assert (row["toCode"], row["sendStatus"], row["title"]) == (H41, "delivered", document.subject)
    assert row["notation"] == "1234/VPCP-KSTT" and row["receivedTime"]

    # a status goes back through sendEdoc; the package, not the stale `messagetype: edoc`, decides
    status_package = network.sign(network.status(document, NGHE_AN, "03"))
    answered = await recipient.send_edoc({"from": H41, "servicetype": "eDoc"}, status_package)
    assert answered["status"] == "OK", answered
    assert (await sender.count("countReceiveStatus"))["count"] == 1
    statuses = await sender.call("getReceivedEdocList", {"messagetype": "status"})
    assert [i["messageType"] for i in statuses["data"]] == ["status"]
    report = await sender.call("getSentEdocList", {"docId": doc_id})
    assert report["data"][0]["receiveStatus"] == "03"
    kinds = sorted(k for k, _, _ in world.running.axis.store.receipts(doc_id))
    assert kinds == ["accepted", "delivered"]
    # VXP cannot show the axis's receipts: listing takes them off the sender's queue (kept at the axis)
    assert world.running.axis.store.inbox((G22,), 100, ("receipt",)) == []


async def test_fail_status_ends_the_delivery_with_a_signed_failed_receipt(world: World) -> None:
    package = world.network.sign(world.network.document(recipients=(NGHE_AN,)))
    doc_id = (await world.client("VPCP-QLVB").send_edoc({"from": G22}, package))["DocId"]
    recipient = world.client("NGHEAN-QLVB")
    assert (await recipient.call("updateStatus", {"status": "fail", "docId": doc_id}, body=b"{}"))["status"] == "OK"
    report = await world.client("VPCP-QLVB").call("getSentEdocList", {"docId": doc_id})
    assert report["data"][0]["sendStatus"] == "expired"
    assert sorted(k for k, _, _ in world.running.axis.store.receipts(doc_id)) == ["accepted", "failed"]
    late = await recipient.call("updateStatus", {"status": "done", "docId": doc_id}, body=b"{}")
    assert (late["status"], late["ErrorCode"]) == ("FAIL", "store.invalid_transition")


async def test_refusals_carry_every_key_the_method_reads_and_store_nothing(world: World) -> None:
    network = world.network
    package = network.sign(network.document(recipients=(NGHE_AN,)))
    sender = world.client("VPCP-QLVB")

    answer = await sender.send_edoc({"from": G22}, edxml.build(network.document(recipients=(NGHE_AN,))))
    assert (answer["status"], answer["ErrorCode"], answer["DocId"]) == ("FAIL", "signature.missing", "")
    stranger = network.sign(network.document(sender=NGHE_AN, recipients=(CAO_BANG,)))
    answer = await sender.send_edoc({"from": G22}, stranger)
    assert (answer["ErrorCode"], answer["DocId"]) == ("sender.not_granted", "")
    wrong = world.client("VPCP-QLVB", secret="not the secret")
    assert (await wrong.send_edoc({}, package))["ErrorCode"] == "auth.vxp_bad_signature"
    _, raw, _ = await sender.raw("sendEdoc", {}, body=package + b"\r\n", content_type="application/octet-stream")
    assert read_like_the_sdk("sendEdoc", raw)["ErrorCode"] == "request.hash_mismatch"  # hash-file of another file
    unknown = world.client("NOBODY", secret="guess")
    assert (await unknown.call("getReceivedEdocList"))["ErrorCode"] == "auth.vxp_unknown_system"
    assert world.nothing_stored()
    # Vietnamese text in a refusal reaches sendEdoc's US-ASCII decoding intact, as \\u escapes
    assert "\\u" in json.dumps(answer) or answer["ErrorDesc"].isascii()

    doc_id = (await sender.send_edoc({"from": G22}, package))["DocId"]
    outsider = world.client("OPERATOR")
    answer = await outsider.call("getEdoc", {"docId": doc_id})
    assert (answer["status"], answer["ErrorCode"], answer["data"]) == ("FAIL", "message.not_found", "")
    status, raw, headers = await outsider.download(doc_id)
    assert (status, raw, headers[protocol.REFUSAL_HEADER]) == (404, b"", "message.not_found")
    answer = await outsider.call("updateStatus", {"status": "done", "docId": doc_id}, body=b"{}")
    assert answer["ErrorCode"] == "message.not_found"
    answer = await outsider.call("getSentEdocList", {"docId": doc_id})
    assert (answer["ErrorCode"], answer["data"]) == ("message.not_found", [])
    answer = await sender.call("getEdoc", {"docId": "null"})  # an application's "no value"
    assert (answer["ErrorCode"], answer["data"]) == ("request.invalid", "")
    answer = await world.client("NGHEAN-QLVB").call("updateStatus", {"status": "finished", "docId": doc_id})
    assert answer["ErrorCode"] == "request.invalid"

    # downloadEdoc2 sends no header at all: refused with an empty body, so the SDK says FAIL
    async with world.session.get(world.base + "/downloadEdoc") as response:
        assert (response.status, await response.read()) == (401, b"")
        assert response.headers[protocol.REFUSAL_HEADER] == "auth.vxp_unsigned"
    # an unknown method or verb still gets an envelope
    async with world.session.post(world.base + "/sendEdocs", data=b"") as response:
        assert read_like_the_sdk("?", await response.read())["ErrorCode"] == "request.not_found"
    async with world.session.get(world.base + "/countReceiveEdoc") as response:
        assert read_like_the_sdk("countReceiveEdoc", await response.read())["ErrorCode"] == "request.method_not_allowed"


async def test_agency_lists_and_admin_register_and_delete(world: World) -> None:
    sender = world.client("VPCP-QLVB")
    listing = await sender.call("getAgenciesList", {})
    assert {a["code"] for a in listing["data"]} >= {G22, H41, H14}
    qd20 = await sender.call("getAgenciesListQD20", {"level": "1"})
    assert all(set(a) == {"id", "code", "name", "mail", "code102"} for a in qd20["data"])
    units = await sender.call("getSynchronizeUnit", {})
    assert all(a["isAgency"] is True and isinstance(a["version"], int) for a in units["data"])

    body = {"id": "", "pcode": G22, "code": "000.00.00.H30", "name": "UBND Tỉnh Hà Tĩnh",
            "mail": "vanthu@hatinh.gov.vn", "mobile": "0239333333", "fax": "0239333334"}
    text = json.dumps(body, ensure_ascii=False).encode()
    assert (await world.client("VPCP-QLVB").call("registerAgency", {}, body=text))["ErrorCode"] == "auth.forbidden"
    # each admin call on a new service object, as the vendor example does (a new timestamp each)
    base = datetime.now(UTC)

    def admin(n: int) -> SdkClient:
        return world.client("OPERATOR", built_at=base - timedelta(milliseconds=n))

    assert (await admin(1).call("registerAgency", {}, body=text))["status"] == "OK"
    registered = world.running.axis.store.agency("000.00.00.H30")
    assert registered is not None and (registered.name, registered.parent) == ("UBND Tỉnh Hà Tĩnh", G22)
    vendor = b'{"id":"","pcode":"00.22.W00","code":"999.010.01.H22","name":"x","mail":cc"","mobile":333"","fax":333""}'
    answer = await admin(2).call("registerAgency", {}, body=vendor)
    assert answer["ErrorCode"] == "request.invalid" and "not JSON" in answer["ErrorDesc"] and "cc" in answer["ErrorDesc"]
    deep = b'{"code":' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert (await admin(3).call("registerAgency", {}, body=deep))["ErrorCode"] == "request.invalid"
    deleting = admin(4)
    assert (await deleting.call("deleteAgency", {"AgencyCode": "000.00.00.H30"}, body=b"{}"))["status"] == "OK"
    assert world.running.axis.store.agency("000.00.00.H30").status == "suspended"  # type: ignore[union-attr]
    units = await sender.call("getSynchronizeUnit", {})
    assert {u["code"]: u["deleted"] for u in units["data"]}["000.00.00.H30"] is True


async def test_an_admin_signature_seen_before_cannot_carry_another_body(world: World) -> None:
    """Anyone who saw one request of an admin system could send its headers to registerAgency with
    a body of their own: only fresh, unused signatures register or delete."""
    admin = world.client("OPERATOR")
    admin.params["Content-Type"] = "application/json"
    seen = admin.signed_headers()
    async with world.session.post(world.base + "/getAgenciesList", headers=seen) as response:
        assert read_like_the_sdk("getAgenciesList", await response.read())["status"] == "OK"
    forged = json.dumps({"code": "000.00.00.G99", "name": "Bộ giả mạo"}).encode()
    async with world.session.post(world.base + "/registerAgency", headers=seen, data=forged) as response:
        answer = read_like_the_sdk("registerAgency", await response.read())
    assert (answer["status"], answer["ErrorCode"]) == ("FAIL", "auth.vxp_replay")
    old = world.client("OPERATOR", built_at=datetime.now(UTC) - timedelta(minutes=10))
    assert (await old.call("registerAgency", {}, body=forged))["ErrorCode"] == "auth.vxp_stale"
    assert world.running.axis.store.agency("000.00.00.G99") is None


async def test_non_ascii_values_altered_on_the_way_are_named(world: World) -> None:
    """With a port in its endpoint URL the SDK sends each character's low 8 bits (à → 0xE0) but
    signs the UTF-8: the FAIL says why instead of a bare bad signature."""
    client = world.client("VPCP-QLVB")
    client.params.update({"Content-Type": "application/json", "note": "Hà Giang"})
    headers = client.signed_headers()
    host, port = world.running.url.removeprefix("http://").split(":")
    lines = ["POST /vxp/getReceivedEdocList HTTP/1.1", f"Host: {host}:{port}", "Content-Length: 0", "Connection: close"]
    head = "\r\n".join(lines).encode() + b"\r\n"
    head += b"".join(f"{k}: {v}\r\n".encode("latin-1", "replace") if k != "XroadVnpt-sign-header"
                     else k.encode() + b": " + bytes(ord(c) & 0xFF for c in v) + b"\r\n" for k, v in headers.items())
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head + b"\r\n")
    await writer.drain()
    response = await reader.read()
    writer.close()
    answer = read_like_the_sdk("getReceivedEdocList", response.split(b"\r\n\r\n", 1)[1])
    assert answer["ErrorCode"] == "auth.vxp_non_ascii", answer


async def test_source_allowlist_window_and_rate_limit(tmp_path: Path) -> None:
    opened, close = await open_world(
        tmp_path, {"vxp": {"window": 60, "rate": 1, "burst": 3}}, sources=("10.0.0.0/8",)
    )
    try:
        refused = await opened.client("VPCP-QLVB").call("getAgenciesList")
        assert refused["ErrorCode"] == "auth.vxp_source"
        stale = opened.client("NGHEAN-QLVB", built_at=datetime.now(UTC) - timedelta(minutes=10))
        assert (await stale.call("getAgenciesList"))["ErrorCode"] == "auth.vxp_stale"
        fresh = opened.client("NGHEAN-QLVB")
        codes = [(await fresh.call("getAgenciesList"))["ErrorCode"] for _ in range(5)]
        assert codes[:3] == ["0", "0", "0"] and "request.rate_limited" in codes[3:]
    finally:
        await close()


def test_plain_http_is_refused_on_a_listener_that_is_not_loopback(tmp_path: Path) -> None:
    """The SDK's signature is a constant anyone who sees it can replay: off loopback, VXP needs
    HTTPS unless the operator says a TLS proxy stands in front."""

    class Transport:
        def __init__(self, sockname: tuple[str, int]) -> None:
            self.sockname = sockname

        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return {"sockname": self.sockname, "peername": ("10.1.2.3", 50000)}.get(name, default)

    async def check(policy: config.Vxp, sockname: tuple[str, int]) -> str:
        service = Service(backend=None, policy=policy, max_package=1)  # type: ignore[arg-type]
        request = make_mocked_request("POST", "/vxp/getAgenciesList", transport=Transport(sockname))
        try:
            await service.authenticate(request)
        except RequestRefused as error:
            return error.code
        return "passed"

    assert asyncio.run(check(config.Vxp(), ("10.0.0.5", 8080))) == "auth.vxp_https_required"
    # loopback, or the operator's explicit choice: on to the HMAC (no headers here: unsigned)
    assert asyncio.run(check(config.Vxp(), ("127.0.0.1", 8080))) == "auth.vxp_unsigned"
    assert asyncio.run(check(config.Vxp(allow_plain_http=True), ("10.0.0.5", 8080))) == "auth.vxp_unsigned"


def test_the_vxp_section_is_read_from_axis_toml(tmp_path: Path) -> None:
    path = tmp_path / "axis.toml"
    path.write_text('[vxp]\nprefix = "/sdk"\nwindow = 120\nallow_plain_http = true\nrate = 5\n')
    settings = config.load(path)
    assert settings.vxp == config.Vxp(prefix="/sdk", window=120.0, allow_plain_http=True, rate=5.0)
    path.write_text('[vxp]\nallow_plain_http = 1\n')
    with pytest.raises(config.ConfigError):
        config.load(path)


@pytest.mark.parametrize(
    ("body", "hash_of", "expected"),
    [
        (b"<edXML/>\r\n", b"<edXML/>", b"<edXML/>"),  # the SDK: file, then CRLF outside hash-file
        (b"<edXML/>\r\n", b"<edXML/>\r\n", b"<edXML/>\r\n"),  # a file that itself ends with CRLF, sent alone
        (b"<edXML/>\r\n\r\n", b"<edXML/>\r\n", b"<edXML/>\r\n"),  # ... and sent by the SDK
        (b"<edXML/>", b"<edXML/>", b"<edXML/>"),
    ],
)
def test_the_signed_hash_decides_which_bytes_are_the_file(body: bytes, hash_of: bytes, expected: bytes) -> None:
    assert protocol.sent_file(body, protocol.file_hash(hash_of)) == expected
    assert protocol.sent_file(body, hashlib.sha256(hash_of).hexdigest()) == expected


def test_parameters_are_found_by_exact_spelling_first_then_ignoring_case() -> None:
    params = protocol.Params((("docid", "old"), ("docId", "new"), ("STATUS", "done"), ("x", "null")))
    assert (params.get("docId"), params.get("status"), params.get("x")) == ("new", "done", None)
    assert protocol.Params((("docid", "only"),)).get("docId") == "only"


def test_timestamps_end_in_milliseconds() -> None:
    at = protocol.parse_timestamp("30112026T103118+0234")
    assert at == datetime(2026, 11, 30, 3, 31, 18, 234000, tzinfo=UTC)
    assert protocol.format_timestamp(at) == "30112026T103118+0234"
    with pytest.raises(RequestRefused):
        protocol.parse_timestamp("30112026T103118")


async def test_hostile_signature_headers_get_a_fail_not_an_error(world: World) -> None:
    client = world.client("VPCP-QLVB")
    client.params["Content-Type"] = "application/json"
    headers = client.signed_headers()
    cases = {
        "XroadVnpt-hash-header": ("\u00e9" * 64, "auth.vxp_bad_signature"),
        "XroadVnpt-sign-header": (headers["XroadVnpt-sign-header"][:-1] + "\u00e9}", "auth.vxp_bad_signature"),
        "XroadVnpt-sign-header-key": ("systemid;timestamp", "auth.vxp_header_mismatch"),
        "XroadVnpt-systemid": ("\u00e9", "auth.vxp_bad_signature"),
    }
    for name, (value, code) in cases.items():
        async with world.session.post(world.base + "/getReceivedEdocList", headers={**headers, name: value}) as response:
            answer = read_like_the_sdk("getReceivedEdocList", await response.read())
        assert (answer["status"], answer["ErrorCode"]) == ("FAIL", code), (name, answer)


async def test_odd_but_signed_requests_get_an_envelope(world: World) -> None:
    client = world.client("VPCP-QLVB")
    client.params["Content-Type"] = "application/json"
    headers = client.signed_headers()
    # an endpoint URL ending in / makes the SDK ask for //method
    async with world.session.post(world.base + "//getAgenciesList", headers=headers) as response:
        assert read_like_the_sdk("getAgenciesList", await response.read())["status"] == "OK"
    # a signed header that is a JSON array, correctly signed: not the SDK's, refused with its code
    array = json.dumps([["XroadVnpt-systemid", "VPCP-QLVB"], ["XroadVnpt-timestamp", client.params["timestamp"]]])
    odd = {**headers, "XroadVnpt-sign-header": array,
           "XroadVnpt-hash-header": hmac.new(client.secret.encode(), array.encode(), hashlib.sha256).hexdigest()}
    async with world.session.post(world.base + "/getAgenciesList", headers=odd) as response:
        assert read_like_the_sdk("getAgenciesList", await response.read())["ErrorCode"] == "auth.vxp_header_mismatch"
    # a signed docId with a line break (only in the signed JSON: HTTP would not carry it as a header)
    client.params["docId"] = "x\r\nX-Evil: 1"
    signed = {k: v for k, v in client.signed_headers().items() if k != "XroadVnpt-docId"}
    async with world.session.get(world.base + "/downloadEdoc", headers=signed) as response:
        assert (response.status, await response.read()) == (404, b"")
        assert response.headers[protocol.REFUSAL_HEADER] == "message.not_found" and "X-Evil" not in response.headers


async def test_send_edoc_with_a_multipart_type_and_no_boundary_is_read_as_the_file(world: World) -> None:
    """The body is the file whatever Content-Type says (the SDK writes multipart/form-data first,
    then octet-stream): no multipart parsing, so no boundary to miss."""
    package = world.network.sign(world.network.document(recipients=(NGHE_AN,)))
    client = world.client("VPCP-QLVB")
    client.params["hash-file"] = protocol.file_hash(package)
    status, raw, _ = await client.raw("sendEdoc", {"from": G22}, body=package + b"\r\n", content_type="multipart/form-data")
    answer = read_like_the_sdk("sendEdoc", raw)
    assert (status, answer["status"]) == (200, "OK"), answer
