"""The signing gateway as its own process, twice (one per agency), against a real axis, driven by
``SdkClient`` (the operator's SDK as ../shared/VXP.md describes it) with placeholder-signed
packages, as agency software writes them; and SIGKILL of each gateway mid-send and mid-receive."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from lxml import etree

from adapters.demo import NGHE_AN, VPCP
from adapters.vxp.ledger import Ledger
from axis import edxml, keystore, pki
from axis.server.runtime import Running
from axis.verification import verify_package
from tests.adapters.conftest import Adapter, axis_command, environment
from tests.adapters.test_vxp import SdkClient
from tests.server.conftest import G22, H41, Network, eventually, free_port

PLACEHOLDER = (
    '<edXML:Signature xmlns:edXML="http://www.mic.gov.vn/TBT/QCVN_102_2016"><edXML:SignedInfo>'
    '<edXML:SignatureMethod Algorithm="http://www.w3.org/2000/09/xmldsig#rsa-sha1"/><edXML:DigestValue/>'
    "</edXML:SignedInfo><edXML:SignatureValue/></edXML:Signature>"
)


def with_placeholder(package: edxml.Package) -> bytes:
    """What agency software hands its SDK: the package with a stub signature in the edXML namespace."""
    root = etree.fromstring(edxml.build(package))
    header = root.find(f"{edxml.q('edXMLEnvelope')}/{edxml.q('edXMLHeader')}")
    assert header is not None
    header.append(etree.fromstring(PLACEHOLDER))
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


@dataclass
class GatewayProcess:
    """One agency's gateway: its process, how to start it again, and its SDK's credentials."""

    name: str
    args: list[str]
    env: dict[str, str]
    log: Path
    url: str
    system_id: str
    secret: str
    process: Adapter | None = None

    async def start(self) -> None:
        self.process = await Adapter.spawn(self.log, *self.args, env=self.env)
        assert self.process.first["url"] == self.url

    async def kill(self) -> None:
        assert self.process is not None
        assert await self.process.stop(signal.SIGKILL) == -signal.SIGKILL

    async def stop(self) -> None:
        if self.process is not None:
            await self.process.stop()

    def sdk(self, session: aiohttp.ClientSession) -> SdkClient:
        """A new service object of the agency's software (a new timestamp)."""
        return SdkClient(session, self.url, self.system_id, self.secret)


async def gateway(network: Network, axis: Running, tmp_path: Path, name: str, agency: str) -> GatewayProcess:
    state = tmp_path / name
    code, out, err = await axis_command("adapter", "vxp-gateway", "--state", str(state), "credential", "add",
                                        f"{name.upper()}-QLVB", "--agency", agency, "--json")
    assert code == 0, err
    issued = json.loads(out)
    port = free_port()
    env = environment(AXIS_URL=axis.url, AXIS_TOKEN=network.endpoint(f"{name}-gateway", [agency]),
                      AXIS_TRUST=str(network.settings.trust))
    args = ["adapter", "vxp-gateway", "--listen", f"127.0.0.1:{port}", "--agency", agency,
            "--keys", str(network.root / "agencies"), "--state", str(state)]
    found = GatewayProcess(name, args, env, tmp_path / f"{name}.log", f"http://127.0.0.1:{port}/vxp",
                           issued["system_id"], issued["secret"])
    await found.start()
    return found


def stored(axis: Running, message_id: str) -> bytes:
    message = axis.axis.store.message(message_id)
    assert message is not None
    return axis.axis.store.blobs.get(message.sha256)


async def test_a_placeholder_signed_package_travels_signed_between_two_gateways(
    network: Network, axis: Running, tmp_path: Path
) -> None:
    a = await gateway(network, axis, tmp_path, "vpcp", G22)
    b = await gateway(network, axis, tmp_path, "nghean", H41)
    try:
        async with aiohttp.ClientSession() as session:
            sender, recipient = a.sdk(session), b.sdk(session)
            document = network.document(recipients=(NGHE_AN,))
            sent = await sender.send_edoc({"from": G22, "servicetype": "eDoc", "messagetype": "edoc"}, with_placeholder(document))
            assert (sent["status"], sent["ErrorCode"]) == ("OK", "0"), sent
            doc_id = sent["DocId"]
            on_axis = stored(axis, doc_id)
            assert b"edXML:Signature" not in on_axis  # the placeholder is not kept inside the signed package
            verified = verify_package(on_axis, keystore.read_trust(network.settings.trust), datetime.now(UTC))
            assert verified.signature.organ_id == G22 and verified.package.sender.organ_id == G22

            await eventually(lambda: _count(recipient, "countReceiveEdoc", 1), timeout=30)
            listing = await recipient.call("getReceivedEdocList", {"servicetype": "eDoc", "messagetype": "edoc"})
            assert [(i["docId"], i["from"], i["to"]) for i in listing["data"]] == [(doc_id, G22, H41)]
            fetched = await recipient.call("getEdoc", {"filePath": "xml", "docId": doc_id})
            assert base64.b64decode(fetched["data"]) == on_axis  # byte for byte what the axis stored
            _, raw, _ = await recipient.download(doc_id)
            assert raw == on_axis
            assert (await recipient.call("updateStatus", {"status": "done", "docId": doc_id}, body=b"{}"))["status"] == "OK"
            assert (await recipient.count("countReceiveEdoc"))["count"] == 0
            assert {d.state for d in axis.axis.store.deliveries_of(doc_id)} == {"delivered"}
            report = await sender.call("getSentEdocList", {"docId": doc_id})
            assert [(r["toCode"], r["sendStatus"], r["title"]) for r in report["data"]] == [(H41, "delivered", document.subject)]

            # a status the recipient's software writes (placeholder-signed) is signed by B and reaches A
            status = network.status(document, NGHE_AN, "03")
            answered = await recipient.send_edoc({"from": H41, "messagetype": "status"}, with_placeholder(status))
            assert answered["status"] == "OK", answered
            await eventually(lambda: _count(sender, "countReceiveStatus", 1), timeout=30)
            statuses = await sender.call("getReceivedEdocList", {"messagetype": "status"})
            assert [(i["docId"], i["from"]) for i in statuses["data"]] == [(answered["DocId"], H41)]
            assert (await sender.call("getSentEdocList", {"docId": doc_id}))["data"][0]["receiveStatus"] == "03"

            # a package From another agency than the gateway's: refused, saying so, nothing sent
            foreign = await sender.send_edoc({"from": H41}, with_placeholder(network.document(sender=NGHE_AN, recipients=(VPCP,))))
            assert (foreign["status"], foreign["ErrorCode"], foreign["DocId"]) == ("FAIL", "sender.not_granted", "")
            assert "signs only for 000.00.00.G22" in foreign["ErrorDesc"]
            broken = await sender.send_edoc({"from": G22}, b"<edXML><unclosed></edXML>")
            assert broken["status"] == "FAIL" and broken["ErrorCode"].startswith("xml.")
            assert (await sender.call("registerAgency", {}, body=b'{"code":"000.00.00.H30","name":"x"}'))["ErrorCode"] == "auth.forbidden"
            units = await sender.call("getAgenciesList", {})
            assert {u["code"] for u in units["data"]} >= {G22, H41}

        # the gateway keeps the axis's receipts: accepted with the send, delivered from its inbox
        async def receipts() -> list[str]:
            code, out, err = await axis_command("adapter", "vxp-gateway", "--state", str(tmp_path / "vpcp"), "status", "--json")
            assert code == 0, err
            sent_rows = {row["message_id"]: row for row in json.loads(out)["sent"]}
            return sorted(r["kind"] for r in sent_rows[doc_id]["receipts"])

        await eventually(lambda: _equals(receipts(), ["accepted", "delivered"]), timeout=30)
    finally:
        await a.stop()
        await b.stop()


async def _count(client: SdkClient, method: str, expected: int) -> bool:
    return bool((await client.count(method))["count"] == expected)


async def _equals(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def test_sigkill_of_the_sending_gateway_loses_and_duplicates_nothing(
    network: Network, axis: Running, tmp_path: Path
) -> None:
    """The gateway is killed at different moments of a send; the application, which did not hear
    OK, sends the same file again after the restart: one message at the axis, and its id."""
    a = await gateway(network, axis, tmp_path, "vpcp", G22)
    try:
        async with aiohttp.ClientSession() as session:
            base = network.document(recipients=(NGHE_AN,))
            big = replace(base.attachments[0], data=bytes(range(256)) * 24_000)
            for n, delay in enumerate((0.0, 0.05, 0.1, 0.15, 0.2, 0.3)):
                document = replace(network.document(recipients=(NGHE_AN,)), attachments=(big,))
                data = with_placeholder(document)
                attempt = asyncio.ensure_future(a.sdk(session).send_edoc({"from": G22}, data))
                await asyncio.sleep(delay)
                await a.kill()
                try:
                    first: str | None = (await attempt)["DocId"]
                except (aiohttp.ClientError, AssertionError, json.JSONDecodeError):
                    first = None  # the application heard nothing
                await a.start()
                again = await a.sdk(session).send_edoc({"from": G22}, data)
                assert again["status"] == "OK", (n, again)
                held = axis.axis.store.messages(G22, document.document_id)
                assert [m.id for m in held] == [again["DocId"]], n  # exactly one message at the axis
                assert first in (None, "", again["DocId"]), n
    finally:
        await a.stop()


async def test_sigkill_of_the_receiving_gateway_loses_and_duplicates_nothing(
    network: Network, axis: Running, tmp_path: Path
) -> None:
    """The recipient's gateway is killed while it pulls and right after the software's
    updateStatus; every package is served once as new, and acknowledged once at the axis."""
    a = await gateway(network, axis, tmp_path, "vpcp", G22)
    b = await gateway(network, axis, tmp_path, "nghean", H41)
    try:
        async with aiohttp.ClientSession() as session:
            ids = []
            for _ in range(4):
                sent = await a.sdk(session).send_edoc({"from": G22}, with_placeholder(network.document(recipients=(NGHE_AN,))))
                ids.append(sent["DocId"])
            for delay in (0.05, 0.3, 0.8):
                await asyncio.sleep(delay)
                await b.kill()
                await b.start()
            await eventually(lambda: _count(b.sdk(session), "countReceiveEdoc", 4), timeout=30)
            listing = await b.sdk(session).call("getReceivedEdocList", {"messagetype": "edoc"})
            assert sorted(i["docId"] for i in listing["data"]) == sorted(ids)  # each once
            first, *rest = ids
            assert (await b.sdk(session).call("updateStatus", {"status": "done", "docId": first}, body=b"{}"))["status"] == "OK"
            await b.kill()
            await b.start()
            listing = await b.sdk(session).call("getReceivedEdocList", {"messagetype": "edoc"})
            assert sorted(i["docId"] for i in listing["data"]) == sorted(rest)  # done is never new again
            await b.stop()
            # killed after recording the software's decision and before telling the axis: told on restart
            ledger = Ledger(tmp_path / "nghean")
            ledger.decide(rest[0], H41, "done")
            ledger.decide(rest[1], H41, "fail")
            ledger.close()
            await b.start()
            await eventually(lambda: axis.axis.store.deliveries_of(rest[1])[0].state == "expired", timeout=30)
            await eventually(lambda: axis.axis.store.deliveries_of(rest[0])[0].state == "delivered", timeout=30)
            assert (await b.sdk(session).call("updateStatus", {"status": "done", "docId": rest[2]}, body=b"{}"))["status"] == "OK"
            listing = await b.sdk(session).call("getReceivedEdocList", {"messagetype": "edoc"})
            assert listing["data"] == []
            late = await b.sdk(session).call("updateStatus", {"status": "fail", "docId": first}, body=b"{}")
            assert late["ErrorCode"] == "store.invalid_transition"
            # the refused one, requeued by an administrator, is new again for the software
            (dead,) = axis.axis.store.deliveries_of(rest[1])
            async with session.post(f"{axis.url}/v1/admin/deliveries/{dead.id}/requeue",
                                    headers={"Authorization": f"Bearer {network.admin_token}"}) as response:
                assert response.status == 200, await response.text()
            await eventually(lambda: _count(b.sdk(session), "countReceiveEdoc", 1), timeout=30)
            assert (await b.sdk(session).call("updateStatus", {"status": "done", "docId": rest[1]}, body=b"{}"))["status"] == "OK"
        states = {i: [d.state for d in axis.axis.store.deliveries_of(i)] for i in ids}
        assert all(v == ["delivered"] for v in states.values()), states
        for message_id in ids:  # one receipt per outcome: nothing acknowledged twice
            kinds = sorted(k for k, _, _ in axis.axis.store.receipts(message_id))
            expected = ["accepted", "delivered", "failed"] if message_id == rest[1] else ["accepted", "delivered"]
            assert kinds == expected, (message_id, kinds)
    finally:
        await a.stop()
        await b.stop()


async def test_the_gateway_runs_from_a_config_file_with_an_encrypted_key_never_logged(
    network: Network, axis: Running, tmp_path: Path
) -> None:
    keys = tmp_path / "encrypted-keys"
    keys.mkdir()
    key = keystore.read_private_key(network.root / "agencies" / f"{G22}.key")
    passphrase = "mật khẩu của văn thư"
    keystore.write_secret(keys / f"{G22}.key", pki.key_pem(key, passphrase.encode()))
    (keys / f"{G22}.pem").write_bytes((network.root / "agencies" / f"{G22}.pem").read_bytes())
    a = await gateway(network, axis, tmp_path, "vpcp", G22)
    await a.stop()
    port = a.url.split(":")[2].split("/")[0]
    settings = tmp_path / "gateway.toml"
    settings.write_text(
        "[gateway]\n"
        f'listen = "127.0.0.1:{port}"\nagency = ["{G22}"]\nkeys = "encrypted-keys"\nstate = "vpcp"\n'
        f'url = "{axis.url}"\ntrust = "{network.settings.trust}"\n'
    )
    a.args = ["adapter", "vxp-gateway", "--config", str(settings)]
    a.env = {**a.env, "AXIS_KEY_PASSPHRASE": passphrase, "AXIS_URL": "", "AXIS_TRUST": ""}
    await a.start()
    try:
        async with aiohttp.ClientSession() as session:
            sent = await a.sdk(session).send_edoc({"from": G22}, with_placeholder(network.document(recipients=(NGHE_AN,))))
            assert sent["status"] == "OK", sent
            verified = verify_package(stored(axis, sent["DocId"]), keystore.read_trust(network.settings.trust), datetime.now(UTC))
            assert verified.signature.organ_id == G22
    finally:
        await a.stop()
    log = a.log.read_bytes()
    assert passphrase.encode() not in log and a.secret.encode() not in log and b"PRIVATE KEY" not in log


async def test_the_real_sdks_captured_sends_go_through_a_gateway_signed(
    network: Network, axis: Running, tmp_path: Path, vxp_captures: Path
) -> None:
    """The captured sendEdoc requests of both SDK versions, byte for byte, to a gateway holding
    the keys of 000.00.00.G22 and 000.00.00.H41 (a platform) that issued the captures' system id
    and secret: each package reaches the axis signed by its sender's key here, once."""
    from tests.adapters.test_vxp_captures import exchange

    registry, store = network.registry()
    try:
        registry.add_agency("000.00.00.G17", "Bộ Tư pháp")
    finally:
        store.close()
    state = tmp_path / "platform"
    ledger = Ledger(state)
    ledger.add_system("vxp.test", [G22, H41], "vxp-test-secret")
    ledger.close()
    port = free_port()
    env = environment(AXIS_URL=axis.url, AXIS_TOKEN=network.endpoint("platform-gateway", [G22, H41]),
                      AXIS_TRUST=str(network.settings.trust))
    args = ["adapter", "vxp-gateway", "--listen", f"127.0.0.1:{port}", "--agency", G22, "--agency", H41,
            "--keys", str(network.root / "agencies"), "--state", str(state)]
    platform = GatewayProcess("platform", args, env, tmp_path / "platform.log", f"http://127.0.0.1:{port}/vxp",
                              "vxp.test", "vxp-test-secret")
    await platform.start()
    try:
        captured = edxml.parse((vxp_captures / "package.edxml").read_bytes())
        assert isinstance(captured, edxml.DocumentPackage) and captured.bussiness is not None
        written = captured.bussiness.document_id or ""  # 2014/02/30: read leniently, never built
        original = replace(captured, document_id=written.replace("/02/30", "/02/28"), bussiness=None, attachments=())
        data = with_placeholder(original).replace(original.document_id.encode(), written.encode())
        async with aiohttp.ClientSession() as session:  # the document the captured package updates
            first = await platform.sdk(session).send_edoc({"from": G22}, data)
        assert first["status"] == "OK", first
        index = json.loads((vxp_captures / "index.json").read_text())
        answers: dict[str, list[str]] = {"edoc": [], "status": []}
        for vector in index["vectors"]:
            if vector["method"] != "sendEdoc":
                continue
            status, _, body = await exchange("127.0.0.1", port, (vxp_captures / vector["request"]).read_bytes())
            answer = json.loads(body)
            assert (status, answer["status"], answer["ErrorCode"]) == (200, "OK", "0"), (vector["nn"], answer)
            answers["status" if vector["variant"] == "status" else "edoc"].append(answer["DocId"])
        assert len(answers["edoc"]) == 6 and len(set(answers["edoc"])) == 1  # one message for one file
        assert len(answers["status"]) == 2 and len(set(answers["status"])) == 1
        trust = keystore.read_trust(network.settings.trust)
        for message_id, signer in ((answers["edoc"][0], G22), (answers["status"][0], H41)):
            verified = verify_package(stored(axis, message_id), trust, datetime.now(UTC))
            assert verified.signature.organ_id == signer == verified.package.sender.organ_id
            assert verified.signature.fingerprint == pki.fingerprint(network.credentials(signer)[1])
    finally:
        await platform.stop()
