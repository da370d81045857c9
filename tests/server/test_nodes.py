"""Several axis nodes on one PostgreSQL database ([store] url): what one node accepts, another
serves; a long-poll on one node wakes when another commits; a node starting does not take the
live leases of another. Runs when a PostgreSQL server is configured (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import aiohttp

from adapters.demo import CAO_BANG, NGHE_AN
from axis import config
from axis.server.runtime import start
from axis.store import open_store
from tests.server.conftest import (
    G22,
    H14,
    H41,
    Client,
    Network,
    Receiver,
    eventually,
    free_port,
    make_network,
)
from tests.server.test_lifecycle import launch


def named(network: Network, node: str) -> config.Config:
    """The network's settings for one node of it (two nodes in one process need their own names)."""
    return replace(network.settings, server=replace(network.settings.server, node=node))


async def test_two_nodes_share_one_database(tmp_path: Path, postgres_url: str) -> None:
    network = make_network(tmp_path, {"store": {"url": postgres_url}})
    sender_token, recipient_token = network.endpoint("vpcp", [G22]), network.endpoint("nghe-an", [H41])
    first, second = await start(named(network, "axis-1")), await start(named(network, "axis-2"))
    try:
        async with aiohttp.ClientSession() as session:
            sender = Client(session, first.url, sender_token)
            recipient = Client(session, second.url, recipient_token)
            # the recipient long-polls node 2 before node 1 accepts anything
            polling = asyncio.ensure_future(recipient.request("GET", "/v1/inbox", params={"wait": "20"}))
            await asyncio.sleep(0.5)
            status, accepted = await sender.submit(network.sign(network.document(recipients=(NGHE_AN,))))
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


async def test_an_admin_change_on_one_node_is_enforced_on_the_other_at_once(tmp_path: Path, postgres_url: str) -> None:
    network = make_network(tmp_path, {"store": {"url": postgres_url}})
    token = network.endpoint("vpcp", [G22])
    first, second = await start(named(network, "axis-1")), await start(named(network, "axis-2"))
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


async def test_a_node_stopping_releases_its_own_leases_only(tmp_path: Path, postgres_url: str) -> None:
    network = make_network(tmp_path, {"store": {"url": postgres_url}})
    sender_token = network.endpoint("vpcp", [G22])
    network.endpoint("nghe-an", [H41])
    first, second = await start(named(network, "axis-1")), await start(named(network, "axis-2"))
    running = [first, second]
    try:
        async with aiohttp.ClientSession() as session:
            sender = Client(session, first.url, sender_token)
            for _ in range(2):
                status, body = await sender.submit(network.sign(network.document(recipients=(NGHE_AN,))))
                assert status == 202, body
        ours = first.axis.queue.lease([H41], endpoint_id=1, limit=1)  # a push each node has in flight
        theirs = second.axis.queue.lease([H41], endpoint_id=1, limit=1)
        assert [d.leased_node for d in ours + theirs] == ["axis-1", "axis-2"]
        await running.pop(0).stop()
        store = second.axis.store
        assert store.delivery(ours[0].id).state == "queued"  # type: ignore[union-attr]
        kept = store.delivery(theirs[0].id)
        assert kept is not None and (kept.state, kept.leased_node) == ("leased", "axis-2")
    finally:
        for node in running:
            await node.stop()


async def test_sigkill_of_one_node_while_it_pushes_and_is_polled_loses_nothing(tmp_path: Path, postgres_url: str) -> None:
    """Two ``axis serve`` processes share one database. One is killed (SIGKILL) while pushes run
    from it and a client long-polls it; the other finishes every delivery: nothing acknowledged is
    lost, each delivery is ``delivered`` once, and the audit chain verifies without a fork."""
    network = make_network(tmp_path, {"store": {"url": postgres_url}, "delivery": {"lease": 6, "push_timeout": 3}})
    receiver = Receiver(free_port(), delay=0.2)  # slow: pushes (and their leases) are in flight at the kill
    await receiver.start()
    sender_token = network.endpoint("vpcp", [G22])
    puller_token = network.endpoint("nghe-an", [H41])
    network.endpoint("cao-bang", [H14], receiver.url)
    first, first_url = await launch(network.settings.path, "--port", "0", log=tmp_path / "first.log")
    second, second_url = await launch(network.settings.path, "--port", "0", log=tmp_path / "second.log")
    try:
        async with aiohttp.ClientSession() as session:
            sender = Client(session, first_url, sender_token)
            accepted = []
            for _ in range(30):
                status, body = await sender.submit(network.sign(network.document(recipients=(NGHE_AN, CAO_BANG))))
                assert status == 202, body
                accepted.append(body["message_id"])
            polling = asyncio.ensure_future(Client(session, first_url, puller_token).request("GET", "/v1/inbox", params={"wait": "30"}))
            deadline = time.monotonic() + 30
            while not receiver.in_flight and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert receiver.in_flight, "pushes should be in flight at the kill"
            first.kill()
            await first.wait()
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):  # the long-poll was cut: the client
                await asyncio.wait_for(polling, 10)  # turns to the other node
            puller = Client(session, second_url, puller_token)
            pulled: set[str] = set()
            end = time.monotonic() + 60
            while len(pulled) < len(accepted) and time.monotonic() < end:
                _, listed, _ = await puller.request("GET", "/v1/inbox", params={"wait": "2"})
                for item in listed["items"]:
                    status, _, _ = await puller.request("POST", f"/v1/messages/{item['message_id']}/ack")
                    assert status == 200
                    pulled.add(item["message_id"])
            assert pulled == set(accepted)
            await eventually(lambda: set(receiver.message_ids()) >= set(accepted), timeout=60)
    finally:
        for process in (first, second):
            if process.returncode is None:
                process.terminate()
                await asyncio.wait_for(process.wait(), 60)
            process._transport.close()  # type: ignore[attr-defined]
        await receiver.stop()
    assert set(receiver.message_ids()) == set(accepted)  # nothing else reached the application
    store = open_store(network.settings)
    try:
        deliveries = [d for m in accepted for d in store.deliveries_of(m)]
        assert len(deliveries) == 2 * len(accepted) and all(d.state == "delivered" for d in deliveries)
        delivered = Counter(json.loads(e.content)["subject"] for e in store.events() if '"delivery.delivered"' in e.content)
        assert all(delivered[str(d.id)] == 1 for d in deliveries)  # each delivered once
        assert store.verify_chain().events > 0  # one chain, no fork
    finally:
        store.close()
