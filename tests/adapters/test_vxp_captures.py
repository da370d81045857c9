"""Every request the operator's real Java SDK (2.0.1 and 2.0.0) sent, replayed byte for byte
against a real axis on 127.0.0.1 (../shared/vxp-captures: the SDK's secret, keys and packages).

The axis trusts the captures' development CA, knows their system id and secret, and carries the
documents they name: the original of the captured update package (message id
``aeb85c79-…``, which the captured getSentEdocList asks about), the captured package itself
(``5b0e3c2a-…5a61``, which getEdoc/downloadEdoc fetch) and the captured status (``8c9d0e1f-…``).
``5b0e3c2a-…5a62`` stays unknown, so the captured calls about it show FAIL answers. Each answer
is read as the SDK reads it, and compared with what the capture server answered where the two
must agree.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters import vxp
from axis import edxml, keystore, pki, router, signing
from axis.registry import new_token, token_hash
from axis.server.runtime import start
from axis.store import Endpoint, VxpCredential
from tests.adapters.test_vxp import read_like_the_sdk
from tests.server.conftest import G22, H14, H41, make_network

G17 = "000.00.00.G17"
ORIGINAL = "aeb85c79-beb4-51aa-9cf0-dae583921d11"
PACKAGE = "5b0e3c2a-7d41-4f6e-9a8b-1c2d3e4f5a61"
UNKNOWN = "5b0e3c2a-7d41-4f6e-9a8b-1c2d3e4f5a62"
STATUS = "8c9d0e1f-2a3b-4c5d-8e6f-7a8b9c0d1e21"
DOCUMENT_ID = "000.00.00.G22,2015/09/30,7816/VPCP-TTĐT"

Check = Callable[[dict[str, Any], Path], None]


def doc_ids(*expected: str) -> Check:
    def check(answer: dict[str, Any], captures: Path) -> None:
        assert sorted(i["docId"] for i in answer["data"]) == sorted(expected), answer

    return check


def field(name: str, value: Any) -> Check:
    def check(answer: dict[str, Any], captures: Path) -> None:
        assert answer[name] == value, answer

    return check


def the_captured_package(answer: dict[str, Any], captures: Path) -> None:
    """Byte for byte the base64 the capture server answered (the SDK decodes it to the file)."""
    captured = json.loads((captures / "requests" / "13-2.0.1-getEdoc.answer.json").read_text())
    assert answer["data"] == captured["data"]


def agencies(answer: dict[str, Any], captures: Path) -> None:
    codes = {a.get("code") or a.get("code102") for a in answer["data"]}
    assert {G22, H41, H14, G17} <= codes, answer


def recipients_of_the_original(answer: dict[str, Any], captures: Path) -> None:
    assert sorted(r["toCode"] for r in answer["data"]) == sorted([H41, H14, G17])
    assert all(r["senderDocId"] == ORIGINAL and r["title"] for r in answer["data"]), answer


OK: tuple[str, str] = ("OK", "0")
EXPECTED: dict[str, tuple[tuple[str, str], Check | None]] = {
    "01": (OK, agencies), "02": (OK, agencies), "03": (OK, agencies),
    # registerAgency/deleteAgency need a signature made within [vxp] admin_window: these are old
    "04": (("FAIL", "auth.vxp_stale"), None), "05": (("FAIL", "auth.vxp_stale"), None),
    "06": (("FAIL", "auth.vxp_stale"), None),
    "07": (OK, field("DocId", PACKAGE)), "08": (OK, field("DocId", STATUS)),
    "09": (OK, field("DocId", PACKAGE)), "10": (OK, field("DocId", PACKAGE)),  # resubmissions: idempotent
    "11": (OK, doc_ids(ORIGINAL, PACKAGE)), "12": (OK, doc_ids(STATUS)),
    "13": (OK, the_captured_package),
    "16": (OK, None),
    "17": (("FAIL", "store.invalid_transition"), None),  # fail after done
    "18": (OK, None), "19": (OK, None),
    "20": (OK, recipients_of_the_original),
    "21": (OK, field("count", 1)), "22": (OK, field("count", 1)),
    "23": (OK, doc_ids(ORIGINAL)), "24": (OK, the_captured_package), "25": (OK, None),
    "26": (("FAIL", "message.not_found"), field("data", "")), "27": (("FAIL", "message.not_found"), None),
    "28": (OK, field("count", 1)), "29": (OK, field("count", 1)),
    "30": (OK, agencies), "31": (OK, agencies),
    "32": (("FAIL", "auth.vxp_stale"), None), "33": (("FAIL", "auth.vxp_stale"), None),
    "34": (("FAIL", "auth.vxp_stale"), None),
    "35": (OK, field("DocId", PACKAGE)), "36": (OK, field("DocId", STATUS)),
    "37": (OK, field("DocId", PACKAGE)), "38": (OK, field("DocId", PACKAGE)),
    "39": (OK, doc_ids(ORIGINAL)), "40": (OK, doc_ids(STATUS)), "41": (OK, the_captured_package),
    "42": (OK, None), "43": (("FAIL", "store.invalid_transition"), None), "44": (OK, None), "45": (OK, None),
    "46": (("FAIL", "message.not_found"), field("data", [])),  # the capture server's own DocId
    "47": (OK, doc_ids(ORIGINAL)), "48": (OK, the_captured_package), "49": (OK, None),
    "50": (("FAIL", "message.not_found"), field("data", "")), "51": (("FAIL", "message.not_found"), None),
    "52": (OK, agencies), "53": (OK, agencies),
}
DOWNLOADS = {"14": (200, "package"), "15": (401, "auth.vxp_unsigned")}
"""downloadEdoc answers the raw package; downloadEdoc2 (no headers at all) an empty body."""


def trust_the_captures(network: Any, captures: Path, now: datetime) -> str:
    """The captures' CA (its CRL re-signed: the stored one expires) and keys, the agencies their
    packages name, and their system id and secret; the bearer token of that system's endpoint."""
    pki_dir = captures / "pki"
    ca = pki.Issued(keystore.read_private_key(pki_dir / "ca.key"), keystore.read_certificates(pki_dir / "ca.pem")[0])
    trust = network.settings.trust
    (trust / "capture-ca.pem").write_bytes((pki_dir / "ca.pem").read_bytes())
    (trust / "capture-ca.crl").write_bytes(pki.crl_pem(pki.crl(ca, [], now - timedelta(minutes=1), 2)))
    registry, store = network.registry()
    try:
        registry.add_agency(G17, "Bộ Tư pháp")
        for organ_id in (G22, H41):
            registry.add_certificate(organ_id, (pki_dir / f"{organ_id}.pem").read_bytes())
        box = keystore.SecretBox.at(network.keys.secrets)
        token = new_token()
        store.add_endpoint(
            Endpoint("vxp-test", "pull", (G22, H41), now.isoformat()),
            token_hash(token),
            VxpCredential("vxp.test", box.seal(b"vxp-test-secret", "vxp.test"), "admin"),
        )
    finally:
        store.close()
    return token


def original_document(captures: Path, now: datetime) -> bytes:
    """The document the captured package updates (BussinessDocType 2, naming the original's
    DocumentId): same sender and recipients, signed with the captures' key of 000.00.00.G22."""
    captured = edxml.parse((captures / "package.edxml").read_bytes())
    assert isinstance(captured, edxml.DocumentPackage) and captured.document_id == DOCUMENT_ID
    assert captured.bussiness is not None and captured.bussiness.document_id is not None
    written = captured.bussiness.document_id  # 000.00.00.G22,2014/02/30,...: not a calendar day,
    buildable = written.replace("/02/30", "/02/28")  # which edxml.build refuses to write; read, it passes
    original = edxml.DocumentPackage(
        sender=captured.sender,
        recipients=captured.recipients,
        document_id=buildable,
        subject=captured.subject,
        code=captured.code,
        trace_headers=(edxml.TraceHeader(organ_id=G22, timestamp=f"{now:%Y/%m/%d %H:%M:%S}"),),
    )
    key = keystore.read_private_key(captures / "pki" / f"{G22}.key")
    certificate = keystore.read_certificates(captures / "pki" / f"{G22}.pem")[0]
    return signing.sign(edxml.build(original).replace(buildable.encode(), written.encode()), key, certificate)


async def exchange(host: str, port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send one captured request as it was sent (head and body at once) and read the answer."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(raw)
        await writer.drain()
        while True:
            head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)).decode("latin-1")
            status = int(head.split(" ", 2)[1])
            if status != 100:  # the interim answer to Expect: 100-continue
                break
        headers = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line)
        length = int({k.lower(): v for k, v in headers.items()}.get("content-length", "0"))
        return status, headers, await asyncio.wait_for(reader.readexactly(length), 30)
    finally:
        writer.close()


async def test_every_captured_sdk_request_gets_an_answer_the_sdk_reads(
    tmp_path: Path, vxp_captures: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    network = make_network(tmp_path)
    token = trust_the_captures(network, vxp_captures, now)
    ids = [ORIGINAL, PACKAGE, STATUS]  # the ids the captures name, in the order the axis accepts them
    made = router.new_message_id
    monkeypatch.setattr(router, "new_message_id", lambda at: ids.pop(0) if ids else made(at))
    running = await start(network.settings, extensions=[vxp.mount])
    try:
        async with aiohttp.ClientSession() as session, session.post(
            running.url + "/v1/messages",
            data=original_document(vxp_captures, now),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/xml"},
        ) as response:
            assert response.status == 202, await response.text()
            assert (await response.json())["message_id"] == ORIGINAL
        host, port = running.url.removeprefix("http://").split(":")
        index = json.loads((vxp_captures / "index.json").read_text())
        package = (vxp_captures / "package.edxml").read_bytes()
        seen = set()
        for vector in index["vectors"]:
            nn, method = vector["nn"], vector["method"]
            raw = (vxp_captures / vector["request"]).read_bytes()
            status, headers, body = await exchange(host, int(port), raw)
            seen.add(nn)
            if nn in DOWNLOADS:
                expected_status, expected = DOWNLOADS[nn]
                assert status == expected_status, (nn, status, headers)
                if expected == "package":
                    assert body == package, nn
                else:
                    assert (body, headers.get("X-Axis-Refusal")) == (b"", expected), (nn, headers)
                continue
            answer = read_like_the_sdk(method, body)
            (outcome, check) = EXPECTED[nn]
            assert (answer["status"], answer["ErrorCode"]) == outcome, (nn, method, answer)
            if check is not None:
                check(answer, vxp_captures)
        assert seen == set(EXPECTED) | set(DOWNLOADS)
    finally:
        await running.stop()
