"""The VXP facade driven by a client written from ../shared/VXP.md, against a real axis.

``VxpClient`` does what the operator's Java SDK does on the wire: every parameter as an
``XroadVnpt-`` header, the signed-header JSON, its HMAC-SHA256 under the secret as text, the
``ddMMyyyyTHHmmss+NNNN`` timestamp in Vietnam time, raw or multipart uploads, and the SDK's
quirks (stale parameters re-sent, ``docId`` as "null", unpadded hex hashes).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import subprocess
import sys
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters import vxp
from adapters.demo import CAO_BANG, NGHE_AN
from axis import keystore
from axis.registry import Registry
from axis.server.runtime import start
from axis.store import SQLiteStore
from tests.conftest import REPO
from tests.server.conftest import G22, H14, H41, Network, make_network

VIETNAM = timezone(timedelta(hours=7))
COUNTER = itertools.count(5000)


def timestamp(at: datetime | None = None) -> str:
    local = (at or datetime.now(UTC)).astimezone(VIETNAM)
    return f"{local:%d%m%Y}T{local:%H%M%S}+{next(COUNTER):04d}"


def unpadded_hex(data: bytes) -> str:
    return "".join(f"{b:x}" for b in hashlib.sha256(data).digest())


@dataclass
class VxpClient:
    session: aiohttp.ClientSession
    endpoint: str
    system_id: str
    secret: str
    sticky: dict[str, str] | None = None
    """Parameters of earlier calls the real SDK keeps sending (a quirk)."""

    def headers(self, params: dict[str, str], *, at: datetime | None = None, tamper: dict[str, str] | None = None) -> dict[str, str]:
        logical = {**(self.sticky or {}), "systemid": self.system_id, "timestamp": timestamp(at), **params}
        names = list(logical)
        signed = json.dumps({f"XroadVnpt-{n}": logical[n] for n in names}, separators=(",", ":"))
        digest = hmac.new(self.secret.encode(), signed.encode(), hashlib.sha256).hexdigest()
        headers = {f"XroadVnpt-{n}": v for n, v in logical.items()}
        headers.update(
            {
                "XroadVnpt-sign-header-key": ";".join(names),
                "XroadVnpt-sign-header": signed,
                "XroadVnpt-hash-header": digest,
                "XroadVnpt-version": "3.0.201608",
                "User-Agent": "JAVASDKAgent/1.0.0 XRoad/VPCP",
            }
        )
        headers.update(tamper or {})
        return headers

    async def call(self, method: str, params: dict[str, str] | None = None, *, body: bytes | None = None,
                   multipart: bool = False, verb: str = "POST", headers: dict[str, str] | None = None) -> dict[str, Any]:
        sent = headers or self.headers(params or {})
        data: Any = body
        if multipart and body is not None:
            form = aiohttp.FormData()
            form.add_field("file_doc", body, filename="edoc.edxml", content_type="application/octet-stream")
            data = form
        elif body is not None:
            sent = {**sent, "Content-Type": "application/octet-stream"}
        async with self.session.request(verb, f"{self.endpoint}/{method}", data=data, headers=sent) as response:
            assert response.status == 200, await response.text()  # the SDK expects 200 even for FAIL
            return await response.json(content_type=None)  # type: ignore[no-any-return]

    async def send(self, package: bytes, *, messagetype: str = "edoc", multipart: bool = False, **extra: str) -> dict[str, Any]:
        params = {"servicetype": "eDoc", "messagetype": messagetype, "hash-file": unpadded_hex(package),
                  "Content-Type": "application/octet-stream", **extra}
        return await self.call("sendEdoc", params, body=package, multipart=multipart)


def add_vxp_endpoint(network: Network, name: str, agencies: list[str], system_id: str, admin: bool = False) -> str:
    store = SQLiteStore(network.settings.data)
    try:
        box = keystore.SecretBox.at(network.keys.secrets)
        _, _, secret = Registry(store, lambda: keystore.read_trust(network.settings.trust)).add_vxp_endpoint(
            name, agencies, system_id, box, admin=admin
        )
    finally:
        store.close()
    return secret


@pytest.fixture
async def world(tmp_path: Path):  # type: ignore[no-untyped-def]
    network = make_network(tmp_path)
    secrets = {
        "vpcp": add_vxp_endpoint(network, "vpcp-qlvb", [G22], "VPCP-QLVB"),
        "nghe-an": add_vxp_endpoint(network, "nghe-an-qlvb", [H41], "NGHEAN-QLVB"),
        "admin": add_vxp_endpoint(network, "operator", [H14], "OPERATOR", admin=True),
    }
    running = await start(network.settings, extensions=[vxp.mount])
    async with aiohttp.ClientSession() as session:
        base = running.url + "/vxp"
        yield {
            "network": network,
            "axis": running,
            "sender": VxpClient(session, base, "VPCP-QLVB", secrets["vpcp"]),
            "recipient": VxpClient(session, base, "NGHEAN-QLVB", secrets["nghe-an"], sticky={"from": G22}),
            "admin": VxpClient(session, base, "OPERATOR", secrets["admin"]),
            "session": session,
            "base": base,
        }
    await running.stop()


def nothing_stored(running: Any) -> bool:
    return running.axis.store.delivery_counts() == {}


async def test_send_list_get_update_and_sent_status(world: dict[str, Any]) -> None:
    network: Network = world["network"]
    sender, recipient = world["sender"], world["recipient"]
    document = network.document(recipients=(NGHE_AN,))
    package = network.sign(document)
    sent = await sender.send(package, **{"from": G22, "to": H41})
    assert sent["status"] == "OK" and sent["ErrorCode"] == "0", sent
    doc_id = sent["DocId"]

    # the recipient's SDK re-sends hash-file/from of earlier calls on list calls: tolerated
    recipient.sticky = {"from": G22, "hash-file": unpadded_hex(package)}
    assert (await recipient.call("countReceiveEdoc", verb="GET"))["count"] == 1
    listing = await recipient.call("getReceivedEdocList", {"servicetype": "eDoc"})
    assert [i["docId"] for i in listing["data"]] == [doc_id]
    assert listing["data"][0]["from"] == G22 and listing["data"][0]["messageType"] == "edoc"
    fetched = await recipient.call("getEdoc", {"docId": doc_id})
    assert fetched["data"].encode() == package
    assert (await recipient.call("getEdoc", {"docId": "null"}))["ErrorCode"] == "request.invalid"
    done = await recipient.call("updateStatus", {"docId": doc_id, "status": "done"})
    assert done["status"] == "OK"
    assert (await recipient.call("countReceiveEdoc", verb="GET"))["count"] == 0

    report = await sender.call("getSentEdocList", {"docId": doc_id})
    (row,) = report["data"]
    assert row["toCode"] == H41 and row["sendStatus"] == "delivered" and row["title"] == document.subject
    assert row["notation"] == "1234/VPCP-KSTT" and row["receivedTime"]

    # a status package travels back to the sender through the same facade
    status = network.sign(network.status(document, NGHE_AN, "03"))
    answered = await recipient.send(status, messagetype="status")
    assert answered["status"] == "OK", answered
    assert (await sender.call("countReceiveStatus", verb="GET"))["count"] == 1
    statuses = await sender.call("getReceivedEdocList", {"messagetype": "status"})
    assert [i["messageType"] for i in statuses["data"]] == ["status"]
    report = await sender.call("getSentEdocList", {"docId": doc_id})
    assert report["data"][0]["receiveStatus"] == "03"
    # the sender's axis-native receipts say the same, signed
    kinds = sorted(k for k, _, _ in world["axis"].axis.store.receipts(doc_id))
    assert kinds == ["accepted", "delivered"]


async def test_multipart_upload_and_fail_status(world: dict[str, Any]) -> None:
    network: Network = world["network"]
    sender, recipient = world["sender"], world["recipient"]
    package = network.sign(network.document(recipients=(NGHE_AN,)))
    sent = await sender.send(package, multipart=True)
    assert sent["status"] == "OK", sent
    failed = await recipient.call("updateStatus", {"docId": sent["DocId"], "status": "fail"})
    assert failed["status"] == "OK"
    report = await sender.call("getSentEdocList", {"docId": sent["DocId"]})
    assert report["data"][0]["sendStatus"] == "expired"
    store = world["axis"].axis.store
    assert sorted(k for k, _, _ in store.receipts(sent["DocId"])) == ["accepted", "failed"]


async def test_download_edoc_streams_the_bytes(world: dict[str, Any]) -> None:
    network: Network = world["network"]
    package = network.sign(network.document(recipients=(NGHE_AN,)))
    doc_id = (await world["sender"].send(package))["DocId"]
    recipient = world["recipient"]
    async with world["session"].post(world["base"] + "/downloadEdoc", headers=recipient.headers({"docId": doc_id})) as response:
        assert response.status == 200 and await response.read() == package


async def test_refusals_answer_fail_and_store_nothing(world: dict[str, Any]) -> None:
    network: Network = world["network"]
    sender: VxpClient = world["sender"]
    running = world["axis"]
    package = network.sign(network.document(recipients=(NGHE_AN,)))
    params = {"servicetype": "eDoc", "messagetype": "edoc", "hash-file": hashlib.sha256(package).hexdigest()}

    async def refused(code: str, **kwargs: Any) -> None:
        answer = await sender.call("sendEdoc", body=package, **kwargs)
        assert (answer["status"], answer["ErrorCode"]) == ("FAIL", code), answer
        assert answer["ErrorDesc"]
        assert nothing_stored(running)

    wrong = replace(sender, secret="not the secret")
    answer = await wrong.call("sendEdoc", params, body=package)
    assert (answer["status"], answer["ErrorCode"]) == ("FAIL", "auth.vxp_bad_signature")
    assert nothing_stored(running)
    await refused("auth.vxp_header_mismatch", headers=sender.headers(params, tamper={"XroadVnpt-messagetype": "status"}))
    await refused("auth.vxp_stale", headers=sender.headers(params, at=datetime.now(UTC) - timedelta(minutes=30)))
    await refused("auth.vxp_unknown_system", headers=replace(sender, system_id="NOBODY").headers(params))
    await refused("auth.vxp_unsigned", headers={"XroadVnpt-systemid": sender.system_id})
    replayed = sender.headers(params)
    stranger = network.sign(network.document(sender=NGHE_AN, recipients=(CAO_BANG,)))
    first = await sender.call("sendEdoc", body=stranger, headers={**replayed, "XroadVnpt-hash-file": params["hash-file"]})
    assert first["ErrorCode"] in ("request.hash_mismatch",)  # the signed hash is of another package
    await refused("auth.vxp_replay", headers=replayed)
    # acting for another agency: VPCP's system sends a package signed by Nghệ An
    answer = await sender.send(stranger)
    assert (answer["status"], answer["ErrorCode"]) == ("FAIL", "sender.not_granted")
    # an unsigned package is refused exactly as POST /v1/messages refuses it
    from axis import edxml

    answer = await sender.send(edxml.build(network.document(recipients=(NGHE_AN,))))
    assert (answer["status"], answer["ErrorCode"]) == ("FAIL", "signature.missing")
    answer = await sender.send(package, messagetype="status")
    assert answer["ErrorCode"] == "request.invalid"
    assert nothing_stored(running)
    # another system cannot read what was not sent to it
    ok = await sender.send(package)
    assert ok["status"] == "OK"
    outsider = world["admin"]
    answer = await outsider.call("getEdoc", {"docId": ok["DocId"]})
    assert (answer["status"], answer["ErrorCode"]) == ("FAIL", "message.not_found")


async def test_agency_lists_and_admin_methods(world: dict[str, Any]) -> None:
    sender, admin = world["sender"], world["admin"]
    listing = await sender.call("getAgenciesList")
    assert {a["code"] for a in listing["data"]} >= {G22, H41, H14}
    qd20 = await sender.call("getAgenciesListQD20")
    assert all(set(a) == {"id", "code", "name", "mail", "code102"} for a in qd20["data"])
    units = await sender.call("getSynchronizeUnit")
    assert all(a["isAgency"] for a in units["data"])
    answer = await sender.call("registerAgency", {"code": "000.00.00.H30", "name": "UBND Tỉnh Hà Tĩnh"})
    assert (answer["status"], answer["ErrorCode"]) == ("FAIL", "auth.forbidden")
    answer = await admin.call("registerAgency", {"code": "000.00.00.H30", "name": "UBND Tỉnh Hà Tĩnh"})
    assert answer["status"] == "OK", answer
    answer = await admin.call("registerAgency", {"code": "G22.99", "name": "Đơn vị theo QĐ 20"})
    assert answer["status"] == "OK", answer  # the Decision 20/2020 form is kept as given
    qd20 = await sender.call("getAgenciesListQD20")
    assert {"id": "G22.99", "code": "G22.99", "name": "Đơn vị theo QĐ 20", "mail": "", "code102": ""} in qd20["data"]
    answer = await admin.call("registerAgency", {"code": "not an id", "name": "x"})
    assert (answer["status"], answer["ErrorCode"]) == ("FAIL", "identifier.organ_id")
    answer = await admin.call("deleteAgency", {"code": "000.00.00.H30"})
    assert answer["status"] == "OK"
    assert world["axis"].axis.store.agency("000.00.00.H30").status == "suspended"


def test_endpoint_add_shows_the_vxp_secret_once(tmp_path: Path) -> None:
    def axis(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", "from cli import main; main()", "--config", str(tmp_path / "axis.toml"), *args],
            cwd=REPO, capture_output=True, text=True, timeout=120,
        )

    assert axis("init", "--dir", str(tmp_path)).returncode == 0
    assert axis("agency", "add", G22, "--name", "Văn phòng Chính phủ").returncode == 0
    result = axis("endpoint", "add", "vpcp-qlvb", "--agency", G22, "--pull", "--vxp-system-id", "VPCP-QLVB", "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert set(shown) == {"token", "vxp_secret"} and len(shown["vxp_secret"]) >= 40
    database = (tmp_path / "data" / "axis.sqlite3").read_bytes()
    assert shown["vxp_secret"].encode() not in database  # sealed, never in clear
    assert (tmp_path / "keys" / "secrets.key").stat().st_mode & 0o777 == 0o600
    result = axis("endpoint", "add", "push-one", "--agency", G22, "--push-url", "http://127.0.0.1:9/x", "--vxp-system-id", "X")
    assert result.returncode != 0 and "--pull" in result.stderr


async def test_hostile_bytes_and_a_large_raw_upload(world: dict[str, Any]) -> None:
    network: Network = world["network"]
    sender: VxpClient = world["sender"]
    headers = sender.headers({"servicetype": "eDoc"})
    for name, value in (("XroadVnpt-hash-header", "\u00e9" * 64), ("XroadVnpt-sign-header", headers["XroadVnpt-sign-header"][:-1] + "\u00e9}")):
        answer = await sender.call("getReceivedEdocList", headers={**headers, name: value})
        assert answer["status"] == "FAIL" and answer["ErrorCode"].startswith("auth.vxp_"), answer
    # a 4 MB package arrives in many chunks: the whole of it is read, hashed and verified
    big = replace(
        network.document(recipients=(NGHE_AN,)),
        attachments=(replace(network.document().attachments[0], data=b"\x00" * 3_000_000),),
    )
    sent = await sender.send(network.sign(big))
    assert sent["status"] == "OK", sent
