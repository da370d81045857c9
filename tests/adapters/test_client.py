"""AxisClient against a real axis: idempotent sends, retries, the pull loop's dedupe, and the
local checks of receipts and trails."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from adapters.client import AxisClient, Received, Signer, check_events
from adapters.seen import Seen
from axis.errors import AdapterError, Refused
from axis.server.runtime import Running
from tests.server.conftest import G22, H14, H41, Network, free_port


def signer(network: Network, organ_id: str) -> Signer:
    return Signer.from_files(network.root / "agencies" / f"{organ_id}.key", network.root / "agencies" / f"{organ_id}.pem")


async def test_send_is_idempotent_and_receive_hands_each_package_once(network: Network, axis: Running, tmp_path: Path) -> None:
    trust = network.settings.trust
    async with AxisClient(axis.url, network.endpoint("vpcp", [G22]), trust=trust, signer=signer(network, G22)) as sender:
        sent, data = await sender.send_package(network.document())
        again = await sender.send(data)
        assert (again.message_id, again.resubmitted, sent.resubmitted) == (sent.message_id, True, False)
        with pytest.raises(Refused) as refused:
            await sender.send(data.replace(b"</edXML>", b"<!-- x --></edXML>").replace("Đề nghị".encode(), b"De nghi"))
        assert refused.value.code == "signature.digest_mismatch" and refused.value.status == 422 and not refused.value.transient

    token = network.endpoint("platform", [H41, H14])
    handed: list[Received] = []

    async def handler(received: Received) -> None:
        handed.append(received)

    async def pull_once(seen: Seen) -> None:
        stop = asyncio.Event()
        async with AxisClient(axis.url, token, trust=trust, seen=seen) as receiver:
            task = asyncio.ensure_future(receiver.receive(handler, wait=0.2, stop=stop))
            await asyncio.sleep(2)
            stop.set()
            await task

    seen = Seen(tmp_path / "seen.sqlite3")
    await pull_once(seen)
    assert sorted(r.entry.recipient for r in handed) == [H14, H41]
    assert all(r.package is not None and r.package.signature.organ_id == G22 for r in handed)
    # The axis delivers at least once: pretend the acks were lost by requeuing as an admin would.
    # What the dedupe remembers is acknowledged again, never handed twice.
    assert seen.has(sent.message_id, H41) and seen.has(sent.message_id, H14)
    await pull_once(seen)
    assert len(handed) == 2
    seen.close()

    async with AxisClient(axis.url, network.endpoint("vpcp2", [G22]), trust=trust) as sender:
        trail = await sender.trail(sent.message_id)
        assert trail["events"] and {d["state"] for d in trail["deliveries"]} == {"delivered"}
        altered = [dict(e) for e in trail["events"]]
        altered[0]["kind"] = "message.deleted"
        with pytest.raises(AdapterError) as error:
            check_events(altered)
        assert error.value.code == "adapter.trail_altered"


async def test_a_recipient_refuses_a_package_and_the_sender_gets_a_failed_receipt(network: Network, axis: Running) -> None:
    trust = network.settings.trust
    async with AxisClient(axis.url, network.endpoint("vpcp", [G22]), trust=trust, signer=signer(network, G22)) as sender, \
            AxisClient(axis.url, network.endpoint("nghe-an", [H41]), trust=trust) as recipient:
        assert {a["organ_id"] for a in await recipient.agencies()} >= {G22, H41, H14}
        odd, _ = await sender.send_package(network.document())  # a reason XML cannot carry: still a receipt
        assert await recipient.refuse(odd.message_id, agency=H41, reason="x\u0001y\ud800z") == [H41]
        assert "failed" in {r["kind"] for r in await sender.receipts(odd.message_id)}
        refused, _ = await sender.send_package(network.document())
        assert await recipient.refuse(refused.message_id, reason="the attachment cannot be opened") == [H41]
        assert await recipient.refuse(refused.message_id) == []  # once is enough: nothing changes
        receipts = {r["recipient"]: r["kind"] for r in await sender.receipts(refused.message_id)}
        assert receipts[H41] == "failed"
        trail = await sender.trail(refused.message_id)
        (delivery,) = [d for d in trail["deliveries"] if d["recipient"] == H41]
        assert (delivery["state"], delivery["last_error"]) == ("expired", "the attachment cannot be opened")

        taken, _ = await sender.send_package(network.document())
        await recipient.ack(taken.message_id)
        with pytest.raises(Refused) as late:
            await recipient.refuse(taken.message_id)
        assert (late.value.code, late.value.status) == ("store.invalid_transition", 409)
        with pytest.raises(Refused) as foreign:
            await sender.refuse(taken.message_id)  # the sender is not a recipient
        assert foreign.value.code == "message.not_found"


async def test_an_axis_that_does_not_answer_is_reported_after_the_retries(network: Network) -> None:
    client = AxisClient(f"http://127.0.0.1:{free_port()}", "token", attempts=3, backoff=0.01)
    with pytest.raises(AdapterError) as error:
        await client.inbox()
    await client.close()
    assert error.value.code == "adapter.unreachable" and "3 attempts" in error.value.message


async def test_a_token_is_never_shown(network: Network) -> None:
    client = AxisClient("http://127.0.0.1:1", "secret-token-value")
    assert "secret-token-value" not in repr(client)
    await client.close()
