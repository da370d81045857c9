"""A bundle of 10 000 messages (about 200 MB of packages) is exported and verified by processes
whose peak memory stays far below what the bundle holds: both stream, one message at a time."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from adapters.demo import NGHE_AN, VPCP
from axis import edxml, keystore, signing
from axis.server.runtime import start
from tests.server.conftest import G22, Client, make_network

COUNT = 10_000
REPO = Path(__file__).resolve().parents[2]
PEAK = """import subprocess, sys, tempfile, time
output = tempfile.TemporaryFile()
child = subprocess.Popen(sys.argv[1:], stdout=output, stderr=subprocess.STDOUT)
peak = 0
while child.poll() is None:
    try:
        with open(f"/proc/{child.pid}/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    peak = max(peak, int(line.split()[1]) * 1024)
    except OSError:
        pass
    time.sleep(0.005)
print(child.returncode, peak)
output.seek(0)
sys.stderr.write(output.read().decode()[-4000:])"""


def peak_of(*command: str) -> tuple[int, int, str]:
    """Run ``axis COMMAND`` in a process of its own; its exit code and the most anonymous memory
    (RssAnon: what it allocated, sampled every 5 ms) it held. Not the whole RSS: the SQLite store
    maps its database file (``mmap_size``), and pages read through that map are the kernel's page
    cache, shared and reclaimable, yet counted in RSS as they are touched (exporting 200 MB of
    packages stored inline takes RSS to about 430 MB that way, and to about 110 MB without the map)."""
    done = subprocess.run(
        [sys.executable, "-c", PEAK, sys.executable, "-c", "from cli import main; main()", *command],
        cwd=REPO, capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    code, peak = done.stdout.split()
    return int(code), int(peak), done.stderr


async def test_ten_thousand_messages_are_exported_and_verified_in_bounded_memory(tmp_path: Path) -> None:
    network = make_network(tmp_path, {"audit": {"checkpoint_interval": 0}})
    if network.settings.store.url:
        pytest.skip("the figure is about the export and the check, measured once, on the default store")
    now = datetime.now(UTC)
    # an ECDSA certificate for the sender: 10 000 RSA signatures would take most of the test's time
    registry, store = network.registry()
    try:
        _, cert_path = network.keys.issue(VPCP.organ_id, tmp_path / "ec", now - timedelta(minutes=5), kind="ec")
        registry.add_certificate(VPCP.organ_id, cert_path.read_bytes())
    finally:
        store.close()
    key = keystore.read_private_key(tmp_path / "ec" / f"{VPCP.organ_id}.key")
    certificate = keystore.read_certificates(cert_path)[0]
    attachment = edxml.Attachment("so-lieu.bin", os.urandom(15_000))
    bodies = [
        signing.sign(edxml.build(network.document(recipients=(NGHE_AN,), attachments=(attachment,))), key, certificate)
        for _ in range(COUNT)
    ]
    total = sum(map(len, bodies))
    token = network.endpoint("vpcp", [G22])
    axis = await start(network.settings)
    try:
        async with aiohttp.ClientSession() as session:
            client = Client(session, axis.url, token)
            waiting = iter(bodies)

            async def send() -> None:
                for body in waiting:
                    status, answer = await client.submit(body)
                    assert status == 202, answer

            await asyncio.gather(*(send() for _ in range(32)))
    finally:
        await axis.stop()
    bundle = tmp_path / "month.zip"
    today = now.date()
    code, exported, output = peak_of(
        "--config", str(network.settings.path), "audit", "export",
        "--from", f"{today}", "--to", f"{today + timedelta(days=1)}", "-o", str(bundle),
    )
    assert code == 0 and f"{COUNT} messages" in output, output
    code, verified, output = peak_of(
        "verify-bundle", str(bundle), "--trust", str(network.settings.trust), "--axis-cert", str(network.keys.axis_certificate)
    )
    assert code == 0 and "the bundle holds" in output, output[-3000:]
    assert total > 180_000_000
    print(f"10 000 messages, {total / 1e6:.0f} MB of packages: peak anonymous memory {exported / 1e6:.0f} MB"
          f" exporting, {verified / 1e6:.0f} MB verifying")
    # each process holds one message at a time: its peak is its code and libraries, not the bundle
    assert exported < 120_000_000 and verified < 120_000_000, (exported, verified, total)
