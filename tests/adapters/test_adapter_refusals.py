"""Each ``adapter.*`` refusal the other adapter tests do not reach, provoked for real: files in a
real folder tree, a real HTTP server standing in for an axis whose receipt is wrong."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from aiohttp import web

from adapters.client import AxisClient, Signer
from adapters.folder import FolderBridge
from adapters.layout import Layout
from axis import edxml
from axis.errors import AdapterError
from tests.server.conftest import G22, H41, NGHE_AN, Network, free_port


def bridge(network: Network, root: Path, signers: dict[str, Signer]) -> FolderBridge:
    layout = Layout(root, [G22])
    client = AxisClient("http://127.0.0.1:1", "token", trust=network.settings.trust, seen=layout.seen)
    return FolderBridge(layout, client, signers, settle=0, poll=0.01)


async def refusal_of(bridge_: FolderBridge, name: str) -> str:
    """Send what waits in the outbox; return the code the bridge wrote into error/<name>.reason."""
    for _ in range(2):  # a file is taken when unchanged across two looks
        await bridge_.send_waiting()
    return (bridge_.layout.folder(G22, "error") / f"{name}.reason").read_text().split("\n")[0]


def signer(network: Network, organ_id: str) -> Signer:
    return Signer.from_files(network.root / "agencies" / f"{organ_id}.key", network.root / "agencies" / f"{organ_id}.pem")


async def test_the_folder_bridge_files_what_it_cannot_send_with_its_code(network: Network, tmp_path: Path) -> None:
    outbox = tmp_path / "tree" / G22 / "outbox"
    unsigned = bridge(network, tmp_path / "tree", {})
    outbox.joinpath("unsigned.edxml").write_bytes(edxml.build(network.document()))
    assert await refusal_of(unsigned, "unsigned.edxml") == "adapter.no_key"
    unsigned.layout.seen.close()

    other = bridge(network, tmp_path / "tree2", {G22: signer(network, G22)})
    outbox2 = tmp_path / "tree2" / G22 / "outbox"
    outbox2.joinpath("theirs.edxml").write_bytes(network.sign(network.document(sender=NGHE_AN, recipients=(edxml.Organization(organ_id=G22),))))
    assert await refusal_of(other, "theirs.edxml") == "adapter.sender_mismatch"


async def test_a_missing_attachment_waits_then_is_refused(network: Network, tmp_path: Path) -> None:
    b = bridge(network, tmp_path / "tree", {G22: signer(network, G22)})
    description = tmp_path / "tree" / G22 / "outbox" / "letter.json"
    description.write_text(json.dumps({"to": [H41], "subject": "V/v", "attachments": ["absent.pdf"]}))
    for _ in range(2):
        await b.send_waiting()
    assert description.exists()  # perhaps still being copied: it waits
    old = description.stat().st_mtime - 600
    os.utime(description, (old, old))
    b.retry_at.clear()
    assert await refusal_of(b, "letter.json") == "adapter.attachment_missing"


def test_layout_and_client_refuse_what_they_cannot_work_with(network: Network, tmp_path: Path) -> None:
    with pytest.raises(AdapterError) as error:
        Layout(tmp_path / "empty", [])
    assert error.value.code == "adapter.no_agency"
    layout = Layout(tmp_path / "tree", [G22])
    with pytest.raises(AdapterError) as error:
        Layout(tmp_path / "tree", [G22])
    assert error.value.code == "adapter.folder_in_use"
    layout.seen.close()

    async def run() -> None:
        client = AxisClient("http://127.0.0.1:1", "token")
        with pytest.raises(AdapterError) as refused:
            await client.receive(lambda r: asyncio.sleep(0))  # type: ignore[arg-type,return-value]
        assert refused.value.code == "adapter.no_state"
        with pytest.raises(AdapterError) as refused:
            await client.verify_receipt(b"<Receipt/>")
        assert refused.value.code == "adapter.no_trust"
        client.trust_dir = tmp_path / "no-such-trust"
        with pytest.raises(AdapterError) as refused:
            await client.verify_receipt(b"<Receipt/>")
        assert refused.value.code == "adapter.no_trust"
        with pytest.raises(AdapterError) as refused:
            await client.send_package(network.document())
        assert refused.value.code == "adapter.no_key"
        await client.close()

    asyncio.run(run())


async def test_a_receipt_that_does_not_name_the_package_is_reported(network: Network) -> None:
    """An axis that answers 202 with a receipt for something else (here: not a receipt at all)."""

    async def accept(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"message_id": "m", "document_id": "d", "recipients": [H41], "receipt": "<Receipt/>"}, status=202)

    async def certificate(request: web.Request) -> web.Response:
        return web.Response(body=network.keys.axis_certificate.read_bytes())

    app = web.Application()
    app.router.add_post("/v1/messages", accept)
    app.router.add_get("/v1/axis/certificate", certificate)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with AxisClient(f"http://127.0.0.1:{port}", "token", trust=network.settings.trust) as client:
            with pytest.raises(AdapterError) as error:
                await client.send(network.sign(network.document()))
        assert error.value.code == "adapter.receipt_mismatch"
    finally:
        await runner.cleanup()
