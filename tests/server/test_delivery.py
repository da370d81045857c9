"""Delivery when things go wrong: a push endpoint down then back, time-to-live, dead letters."""

from __future__ import annotations

import aiohttp
import xmlsec
from lxml import etree

from adapters.demo import CAO_BANG
from axis import receipts
from axis.server.runtime import start
from tests.server.conftest import G22, H14, Client, Network, Receiver, eventually, free_port, make_network


async def test_recipient_down_for_a_while_then_back(network: Network, session: aiohttp.ClientSession) -> None:
    receiver = Receiver(free_port())  # nothing listens on the port yet: connections are refused
    sender_token = network.endpoint("vpcp", [G22])
    network.endpoint("cao-bang", [H14], receiver.url)
    axis = await start(network.settings)
    try:
        client = Client(session, axis.url, sender_token)
        data = network.sign(network.document(recipients=(CAO_BANG,)))
        status, accepted = await client.submit(data)
        assert status == 202
        store = axis.axis.store
        await eventually(lambda: (d := store.deliveries_of(accepted["message_id"])[0]).attempts >= 3 and d.state != "delivered")
        assert store.deliveries_of(accepted["message_id"])[0].last_error
        receiver.answer = 503  # up, but busy: still a failed attempt
        await receiver.start()
        attempts = store.deliveries_of(accepted["message_id"])[0].attempts
        await eventually(lambda: store.deliveries_of(accepted["message_id"])[0].attempts > attempts)
        assert receiver.received == []
        receiver.answer = 200
        await eventually(lambda: receiver.received)
        await eventually(lambda: store.deliveries_of(accepted["message_id"])[0].state == "delivered")
        assert [body for _, body in receiver.received] == [data]
    finally:
        await axis.stop()
        await receiver.stop()


async def test_ttl_expires_then_requeue_delivers(tmp_path, session: aiohttp.ClientSession) -> None:  # type: ignore[no-untyped-def]
    network = make_network(tmp_path, {"delivery": {"ttl": 1.0}})
    receiver = Receiver(free_port())
    sender_token = network.endpoint("vpcp", [G22])
    network.endpoint("cao-bang", [H14], receiver.url)
    axis = await start(network.settings)
    try:
        sender, admin = Client(session, axis.url, sender_token), Client(session, axis.url, network.admin_token)
        status, accepted = await sender.submit(network.sign(network.document(recipients=(CAO_BANG,))))
        assert status == 202

        async def dead_letters() -> list[dict[str, object]]:
            _, body, _ = await admin.request("GET", "/v1/admin/deliveries", params={"state": "expired"})
            return body["items"]  # type: ignore[no-any-return]

        (dead,) = await eventually(dead_letters)
        assert dead["message_id"] == accepted["message_id"] and dead["last_error"]

        # the sender hears about it: a signed `failed` receipt in its inbox
        async def failed_receipt() -> bytes | None:
            _, inbox, _ = await sender.request("GET", "/v1/inbox")
            for item in inbox["items"]:
                _, xml, _ = await sender.request("GET", f"/v1/messages/{item['message_id']}")
                if b"<Kind>failed</Kind>" in xml:
                    return xml  # type: ignore[no-any-return]
            return None

        xml = await eventually(failed_receipt)
        failed = receipts.verify(xml, network_trust(network)).receipt
        assert failed.kind == "failed" and failed.recipients == (H14,) and failed.reason

        await receiver.start()
        status, requeued, _ = await admin.request("POST", f"/v1/admin/deliveries/{dead['id']}/requeue")
        assert status == 200 and requeued["state"] == "queued"
        await eventually(lambda: receiver.received)
        await eventually(lambda: axis.axis.store.delivery(dead["id"]).state == "delivered")  # type: ignore[union-attr]
        kinds = sorted(k for k, _, _ in axis.axis.store.receipts(accepted["message_id"]))
        assert kinds == ["accepted", "delivered", "failed"]
    finally:
        await axis.stop()
        await receiver.stop()


def network_trust(network: Network):  # type: ignore[no-untyped-def]
    from axis import keystore

    return keystore.read_trust(network.settings.trust)


async def test_receipts_verify_with_xmlsec(network: Network, session: aiohttp.ClientSession) -> None:
    """An independent XMLDSig implementation accepts the axis's receipts, chain included."""
    token = network.endpoint("vpcp", [G22])
    axis = await start(network.settings)
    try:
        status, accepted = await Client(session, axis.url, token).submit(network.sign(network.document()))
        assert status == 202
        root = etree.fromstring(accepted["receipt"].encode())
        manager = xmlsec.KeysManager()
        manager.load_cert(str(network.keys.ca_certificate), xmlsec.constants.KeyDataFormatPem, xmlsec.constants.KeyDataTypeTrusted)
        signature = root.find(f"{{{xmlsec.constants.DSigNs}}}Signature")
        assert signature is not None
        xmlsec.SignatureContext(manager).verify(signature)
        # and a changed receipt does not verify
        root.find(receipts.q("Recipient")).text = "000.00.00.H99"  # type: ignore[union-attr]
        try:
            xmlsec.SignatureContext(manager).verify(signature)
        except xmlsec.Error:
            pass
        else:
            raise AssertionError("xmlsec accepted an altered receipt")
        # the certificate endpoint serves the key that signs them
        async with session.get(axis.url + "/v1/axis/certificate") as response:
            assert response.status == 200 and b"BEGIN CERTIFICATE" in await response.read()
    finally:
        await axis.stop()


async def test_a_pull_ack_during_a_push_leaves_the_dispatcher_serving(network: Network, session: aiohttp.ClientSession) -> None:
    """An agency reached both by a slow push endpoint and a pull endpoint: the pull acknowledges
    while the push is in flight. The push's outcome is not recorded twice and its task goes on."""
    receiver = Receiver(free_port(), answer=503, delay=1.0)  # the push in flight will fail
    await receiver.start()
    sender_token = network.endpoint("vpcp", [G22])
    network.endpoint("cao-bang-push", [H14], receiver.url)
    pull_token = network.endpoint("cao-bang-pull", [H14])
    axis = await start(network.settings)
    try:
        sender, puller = Client(session, axis.url, sender_token), Client(session, axis.url, pull_token)
        status, first = await sender.submit(network.sign(network.document(recipients=(CAO_BANG,))))
        assert status == 202
        await eventually(lambda: receiver.in_flight)
        assert (await puller.request("POST", f"/v1/messages/{first['message_id']}/ack"))[0] == 200
        await eventually(lambda: not receiver.in_flight)  # its failure arrives after the ack
        receiver.answer, receiver.delay = 200, 0.0
        status, second = await sender.submit(network.sign(network.document(recipients=(CAO_BANG,))))
        # delivered by the same push task, well before the dispatcher would replace a dead one (5 s)
        await eventually(lambda: second["message_id"] in receiver.message_ids(), timeout=3)
        assert [k for k, _, _ in axis.axis.store.receipts(first["message_id"])] == ["accepted", "delivered"]
    finally:
        await axis.stop()
        await receiver.stop()
