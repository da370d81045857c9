"""Several axis nodes on one PostgreSQL database ([store] url): what one node accepts, another
serves; a long-poll on one node wakes when another commits; a node starting does not take the
live leases of another. Runs when a PostgreSQL server is configured (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp

from axis.server.runtime import start
from tests.server.conftest import G22, H41, Client, make_network


async def test_two_nodes_share_one_database(tmp_path: Path, postgres_url: str) -> None:
    network = make_network(tmp_path, {"store": {"url": postgres_url}})
    sender_token, recipient_token = network.endpoint("vpcp", [G22]), network.endpoint("nghe-an", [H41])
    first, second = await start(network.settings), await start(network.settings)
    try:
        async with aiohttp.ClientSession() as session:
            sender = Client(session, first.url, sender_token)
            recipient = Client(session, second.url, recipient_token)
            # the recipient long-polls node 2 before node 1 accepts anything
            polling = asyncio.ensure_future(recipient.request("GET", "/v1/inbox", params={"wait": "20"}))
            await asyncio.sleep(0.5)
            status, accepted = await sender.submit(network.sign(network.document(recipients=(network_agency(H41),))))
            assert status == 202, accepted
            status, listed, _ = await asyncio.wait_for(polling, 30)
            assert status == 200 and [i["message_id"] for i in listed["items"]] == [accepted["message_id"]]
            status, data, _ = await recipient.request("GET", f"/v1/messages/{accepted['message_id']}")
            assert status == 200 and data
            status, _, _ = await recipient.request("POST", f"/v1/messages/{accepted['message_id']}/ack")
            assert status == 200
            deadline = time.monotonic() + 20
            while True:  # the delivered receipt, made on node 2, is read on node 1
                _, receipts, _ = await sender.request("GET", f"/v1/messages/{accepted['message_id']}/receipts")
                if {r["kind"] for r in receipts["items"]} == {"accepted", "delivered"} or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert {r["kind"] for r in receipts["items"]} == {"accepted", "delivered"}
            # both nodes wrote to one audit log: its chain holds
            report = first.axis.store.verify_chain()
            assert report.events > 0
    finally:
        await first.stop()
        await second.stop()


def network_agency(organ_id: str):  # type: ignore[no-untyped-def]
    from adapters.demo import NGHE_AN

    assert organ_id == NGHE_AN.organ_id
    return NGHE_AN


async def test_an_admin_change_on_one_node_is_enforced_on_the_other_at_once(tmp_path: Path, postgres_url: str) -> None:
    network = make_network(tmp_path, {"store": {"url": postgres_url}})
    token = network.endpoint("vpcp", [G22])
    first, second = await start(network.settings), await start(network.settings)
    try:
        async with aiohttp.ClientSession() as session:
            on_second = Client(session, second.url, token)
            assert (await on_second.request("GET", "/v1/inbox"))[0] == 200
            admin = Client(session, first.url, network.admin_token)
            status, _, _ = await admin.request("DELETE", "/v1/admin/endpoints/vpcp")
            assert status == 200
            status, body, _ = await on_second.request("GET", "/v1/inbox")
            assert (status, body["code"]) == (401, "auth.invalid")  # the next request, on the other node
    finally:
        await first.stop()
        await second.stop()
