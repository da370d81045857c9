"""The path of a package over real HTTP: submit, push and pull delivery, receipts, statuses."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import replace
from datetime import timedelta

import aiohttp
import pytest

from adapters.demo import CAO_BANG, NGHE_AN, VPCP
from axis import edxml, keystore, pki, receipts
from axis.server.runtime import start
from tests.server.conftest import G22, H14, H41, Client, Network, Receiver, eventually, free_port


def verify_receipt(network: Network, xml: str | bytes, kind: str) -> receipts.Receipt:
    data = xml.encode() if isinstance(xml, str) else xml
    axis_cert = keystore.read_certificates(network.keys.axis_certificate)[0]
    verified = receipts.verify(data, keystore.read_trust(network.settings.trust), frozenset({pki.fingerprint(axis_cert)}))
    assert verified.receipt.kind == kind
    return verified.receipt


async def test_document_round_trip_push_and_pull(network: Network, session: aiohttp.ClientSession) -> None:
    receiver = Receiver(free_port())
    await receiver.start()
    sender_token = network.endpoint("vpcp-software", [G22])
    pull_token = network.endpoint("nghe-an-platform", [H41])
    network.endpoint("cao-bang-push", [H14], receiver.url)
    axis = await start(network.settings)
    try:
        sender, puller = Client(session, axis.url, sender_token), Client(session, axis.url, pull_token)
        document = network.document()
        data = network.sign(document)
        status, body = await sender.submit(data)
        assert status == 202, body
        assert body["document_id"] == document.document_id and body["recipients"] == [H41, H14]
        accepted = verify_receipt(network, body["receipt"], "accepted")
        assert accepted.message_id == body["message_id"] and uuid.UUID(body["message_id"]).version == 7
        assert accepted.package_sha256 == hashlib.sha256(data).hexdigest()
        assert accepted.recipients == (H41, H14) and accepted.sender == G22

        # push: the receiving application gets the original bytes
        await eventually(lambda: receiver.received)
        headers, pushed = receiver.received[0]
        assert pushed == data and headers["X-Axis-Message-Id"] == body["message_id"]

        # pull: list (long-poll), fetch the original bytes, acknowledge
        status, inbox, _ = await puller.request("GET", "/v1/inbox", params={"wait": 5})
        assert status == 200 and [i["message_id"] for i in inbox["items"]] == [body["message_id"]]
        item = inbox["items"][0]
        assert item["kind"] == "document" and item["sender"] == G22 and item["sha256"] == accepted.package_sha256
        status, fetched, _ = await puller.request("GET", f"/v1/messages/{body['message_id']}")
        assert status == 200 and fetched == data
        status, acked, _ = await puller.request("POST", f"/v1/messages/{body['message_id']}/ack")
        assert status == 200 and acked["acknowledged"] == [H41]
        status, again, _ = await puller.request("POST", f"/v1/messages/{body['message_id']}/ack")
        assert status == 200  # acknowledgements are idempotent
        status, inbox, _ = await puller.request("GET", "/v1/inbox")
        assert inbox["items"] == []

        # the sender gets two signed `delivered` receipts in its inbox, and they are listed
        async def receipts_in_inbox() -> list[dict[str, str]]:
            _, listing, _ = await sender.request("GET", "/v1/inbox")
            return [i for i in listing["items"] if i["kind"] == "receipt"]

        items = await eventually(lambda: _two(receipts_in_inbox))
        for item in items:
            _, xml, _ = await sender.request("GET", f"/v1/messages/{item['message_id']}")
            receipt = verify_receipt(network, xml, "delivered")
            assert receipt.message_id == body["message_id"]
        status, listed, _ = await sender.request("GET", f"/v1/messages/{body['message_id']}/receipts")
        kinds = sorted((r["kind"], r["recipient"]) for r in listed["items"])
        assert kinds == [("accepted", None), ("delivered", H14), ("delivered", H41)]
        pushed_receipt = next(r for r in listed["items"] if r["recipient"] == H14)
        assert verify_receipt(network, pushed_receipt["xml"], "delivered").acknowledgement_sha256 == hashlib.sha256(b"ok").hexdigest()

        status, trail, _ = await sender.request("GET", f"/v1/messages/{body['message_id']}/trail")
        assert status == 200
        kinds = [e["kind"] for e in trail["events"]]
        assert kinds[0] == "message.accepted" and kinds.count("delivery.delivered") == 2
        assert {d["state"] for d in trail["deliveries"]} == {"delivered"}
    finally:
        await axis.stop()
        await receiver.stop()


async def _two(listing):  # type: ignore[no-untyped-def]
    items = await listing()
    return items if len(items) == 2 else None


async def test_resubmission_conflict_and_revision(network: Network, session: aiohttp.ClientSession) -> None:
    token = network.endpoint("vpcp", [G22])
    axis = await start(network.settings)
    try:
        client = Client(session, axis.url, token)
        document = network.document()
        data = network.sign(document)
        first = await client.submit(data)
        assert first[0] == 202
        again = await client.submit(data)
        assert again == (200, first[1])  # the original receipt, nothing stored again
        # the same signed content re-serialised (a comment added) is the same package
        requoted = data.replace(b"<edXMLBody>", b"<!-- re-sent --><edXMLBody>", 1)
        assert requoted != data
        assert await client.submit(requoted) == (200, first[1])
        assert axis.axis.store.delivery_counts() == {"queued": 2}

        changed = network.sign(replace(document, subject="Một nội dung khác"))
        status, problem = await client.submit(changed)
        assert status == 409 and problem["code"] == "message.conflict"

        update = replace(
            document,
            subject="Cập nhật: " + document.subject,
            bussiness=edxml.Bussiness(document_id=document.document_id, bussiness_doc_type=2, bussiness_doc_reason="Sửa lỗi chính tả", paper=0),
        )
        status, body = await client.submit(network.sign(update))
        assert status == 202, body
        unknown = replace(update, document_id=f"{G22},{network.now:%Y/%m/%d},999/VPCP-X", bussiness=replace(update.bussiness, document_id=f"{G22},{network.now:%Y/%m/%d},999/VPCP-X"))  # type: ignore[arg-type]
        status, problem = await client.submit(network.sign(unknown))
        assert status == 422 and problem["code"] == "message.unknown_reference"
    finally:
        await axis.stop()


@pytest.mark.parametrize("codes", [("01", "03", "04", "05", "06")])
async def test_status_round_trip(network: Network, session: aiohttp.ClientSession, codes: tuple[str, ...]) -> None:
    sender_token = network.endpoint("vpcp", [G22])
    recipient_token = network.endpoint("nghe-an", [H41])
    axis = await start(network.settings)
    try:
        sender, recipient = Client(session, axis.url, sender_token), Client(session, axis.url, recipient_token)
        document = network.document(recipients=(NGHE_AN,))
        status, accepted = await sender.submit(network.sign(document))
        assert status == 202
        # the recipient acknowledges with its signed status 01 as the body
        arrived = network.sign(network.status(document, NGHE_AN, codes[0]))
        status, ack, _ = await recipient.request("POST", f"/v1/messages/{accepted['message_id']}/ack", data=arrived)
        assert status == 200, ack
        assert ack["status"]["recipients"] == [G22]
        for code in codes[1:]:
            status, body = await recipient.submit(network.sign(network.status(document, NGHE_AN, code)))
            assert status == 202, body
            assert body["recipients"] == [G22]
        assert axis.axis.store.status(G22, document.document_id, H41) == codes[-1]

        _, inbox, _ = await sender.request("GET", "/v1/inbox", params={"limit": 100})
        statuses = [i for i in inbox["items"] if i["kind"] == "status"]
        assert len(statuses) == len(codes) and all(i["sender"] == H41 for i in statuses)
        for item in statuses:
            _, xml, _ = await sender.request("GET", f"/v1/messages/{item['message_id']}")
            assert b"<StatusCode>" in xml

        # a status about a document the axis never carried between these agencies is refused
        stray = network.document(recipients=(CAO_BANG,))
        status, problem = await recipient.submit(network.sign(network.status(stray, NGHE_AN, "03")))
        assert status == 422 and problem["code"] == "status.unknown_document"

        # a document past its DueDate that nobody completed is overdue at its recipient
        late = network.document(recipients=(NGHE_AN,), due_date=f"{network.now - timedelta(days=1):%Y/%m/%d}")
        assert (await sender.submit(network.sign(late)))[0] == 202

        auditor = Client(session, axis.url, network.auditor_token)
        status, stats, _ = await auditor.request("GET", "/v1/stats")
        assert status == 200
        rows = {r["agency"]: r for r in stats["items"]}
        assert rows[G22]["sent"] == 2 and rows[H41]["received"] == 2 and rows[H41]["delivered"] == 1
        assert rows[H41]["pending"] == 1 and rows[H41]["overdue"] == 1  # the completed one is not overdue
        async with session.get(axis.url + "/metrics") as response:
            text = await response.text()
        assert 'axis_submissions_total{kind="status",outcome="accepted"}' in text
        assert 'axis_queue_deliveries{state="queued"}' in text and 'axis_queue_deliveries{state="delivered"} 1.0' in text
        status, trail, _ = await auditor.request("GET", f"/v1/messages/{accepted['message_id']}/trail")
        assert trail["statuses"] == [
            {"recipient": H41, "status_code": codes[-1], "message_id": trail["statuses"][0]["message_id"], "updated_at": trail["statuses"][0]["updated_at"]}
        ]
    finally:
        await axis.stop()


async def test_status_13_takes_a_document_back_from_every_recipient(network: Network, session: aiohttp.ClientSession) -> None:
    sender_token = network.endpoint("vpcp", [G22])
    axis = await start(network.settings)
    try:
        sender = Client(session, axis.url, sender_token)
        document = network.document()
        assert (await sender.submit(network.sign(document)))[0] == 202
        status, body = await sender.submit(network.sign(network.status(document, VPCP, "13")))
        assert status == 202, body
        assert sorted(body["recipients"]) == sorted([H41, H14])
        assert axis.axis.store.status(G22, document.document_id, H14) == "13"
    finally:
        await axis.stop()


async def test_statuses_are_kept_per_sender_of_the_document_and_never_cross(
    network: Network, session: aiohttp.ClientSession
) -> None:
    """Cao Bằng sends its own package to Nghệ An under VPCP's DocumentId (accepted: real packages
    carry a DocumentId of another agency; flagged in the trail). Nghệ An's statuses about VPCP's
    document and about Cao Bằng's stay apart: neither sender reads nor overwrites the other's."""
    tokens = {a: network.endpoint(f"software-{a}", [a]) for a in (G22, H41, H14)}
    axis = await start(network.settings)
    try:
        vpcp, nghe_an, cao_bang = (Client(session, axis.url, tokens[a]) for a in (G22, H41, H14))
        original = network.document(recipients=(NGHE_AN,))
        status, sent = await vpcp.submit(network.sign(original))
        assert status == 202, sent
        assert (await nghe_an.submit(network.sign(network.status(original, NGHE_AN, "03"))))[0] == 202

        borrowed = replace(network.document(sender=CAO_BANG, recipients=(NGHE_AN,)), document_id=original.document_id)
        status, copied = await cao_bang.submit(network.sign(borrowed))
        assert status == 202, copied
        _, trail, _ = await cao_bang.request("GET", f"/v1/messages/{copied['message_id']}/trail")
        assert trail["statuses"] == []  # Nghệ An's status about VPCP's document is not Cao Bằng's to read
        (accepted,) = [e for e in trail["events"] if e["kind"] == "message.accepted"]
        assert accepted["document_id_issuer"] == G22

        assert (await nghe_an.submit(network.sign(network.status(borrowed, NGHE_AN, "06"))))[0] == 202
        _, trail, _ = await vpcp.request("GET", f"/v1/messages/{sent['message_id']}/trail")
        assert [(s["recipient"], s["status_code"]) for s in trail["statuses"]] == [(H41, "03")]
        _, trail, _ = await cao_bang.request("GET", f"/v1/messages/{copied['message_id']}/trail")
        assert [(s["recipient"], s["status_code"]) for s in trail["statuses"]] == [(H41, "06")]

        # Cao Bằng cannot speak for VPCP's document: it carried nothing of it to Cao Bằng
        forged = network.status(original, CAO_BANG, "06")
        status, problem = await cao_bang.submit(network.sign(forged))
        assert (status, problem["code"]) == (422, "status.unknown_document")
        assert axis.axis.store.status(G22, original.document_id, H41) == "03"
        assert axis.axis.store.status(H14, original.document_id, H41) == "06"
    finally:
        await axis.stop()
