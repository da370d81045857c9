"""Accept throughput of a real ``axis serve`` over loopback HTTP, against the floor.

The axis runs as its own process (``axis serve``, one verification worker per core); this
process is the load: 64 concurrent clients POST distinct signed packages (RSA-2048) to
``/v1/messages`` and count 202s. Full work per package: verification in the pool, authorisation,
durable group-committed store, signed receipt.

The floor, measured in the same run on the same machine: per package, one hardened parse +
exclusive c14n + SHA-256 + one RSA-2048 verify, one signed receipt, and one group-committed
insert (amortised over concurrent callers). Its throughput assumes every core does nothing else.
Prints a table and writes bench/results/server.json. Figures, not assertions.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from lxml import etree

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.demo import NGHE_AN, VPCP, example_document  # noqa: E402
from axis import edxml, keystore, receipts, signing  # noqa: E402
from axis.registry import Registry  # noqa: E402
from axis.store import Agency, NewMessage, SQLiteStore  # noqa: E402
from bench.verify import floor as crypto_floor  # noqa: E402
from bench.verify import timed  # noqa: E402

SIZES = {"10 KB": (10_000, 1500), "100 KB": (100_000, 600), "2 MB": (2_000_000, 60)}
CLIENTS = 64
RESULTS = ROOT / "bench" / "results"


def setup(root: Path, now: datetime) -> tuple[Path, str, keystore.KeyStore]:
    config = root / "axis.toml"
    config.write_text(
        '[axis]\ndata = "data"\nkeys = "keys"\n[server]\nport = 0\nrecipient_backlog = 100000000\nshutdown_grace = 5\n'
    )
    keys = keystore.KeyStore(root / "keys")
    keys.init(now)
    store = SQLiteStore(root / "data")
    registry = Registry(store, lambda: keystore.read_trust(keys.trust))
    try:
        for organ in (VPCP, NGHE_AN):
            registry.add_agency(organ.organ_id, organ.organ_name or organ.organ_id)
        _, cert = keys.issue(VPCP.organ_id, root / "agencies", now)
        registry.add_certificate(VPCP.organ_id, cert.read_bytes())
        _, token = registry.add_endpoint("bench", [VPCP.organ_id])
    finally:
        store.close()
    return config, token, keys


def packages(root: Path, now: datetime, size: int, count: int, label: str) -> list[bytes]:
    key = keystore.read_private_key(root / "agencies" / f"{VPCP.organ_id}.key")
    cert = keystore.read_certificates(root / "agencies" / f"{VPCP.organ_id}.pem")[0]
    base = example_document(now)
    payload = os.urandom(max(0, (size - 4_800) * 3 // 4))
    attachment = replace(base.attachments[0], data=payload)
    out = []
    for n in range(count):
        document = replace(
            base,
            recipients=(NGHE_AN,),
            document_id=f"{VPCP.organ_id},{now:%Y/%m/%d},{n}/{label.replace(' ', '')}-{uuid.uuid4().hex[:6]}",
            attachments=(attachment,),
        )
        out.append(signing.sign(edxml.build(document), key, cert))
    return out


def start_server(config: Path) -> tuple[subprocess.Popen[bytes], str]:
    process = subprocess.Popen(
        [sys.executable, "-c", "from cli import main; main()", "--config", str(config), "serve"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    return process, json.loads(line)["url"]


async def load(url: str, token: str, bodies: list[bytes]) -> tuple[float, list[float]]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/xml"}
    pending = list(bodies)
    latencies: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CLIENTS)) as session:

        async def client() -> None:
            while pending:
                body = pending.pop()
                started = time.perf_counter()
                async with session.post(url + "/v1/messages", data=body, headers=headers) as response:
                    await response.read()
                    if response.status != 202:
                        raise RuntimeError(f"the axis answered {response.status}")
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(CLIENTS)))
        return time.perf_counter() - started, latencies


def insert_floor(root: Path, callers: int = 32, total: int = 3200) -> float:
    """Seconds per group-committed message insert (one delivery, one event) with many callers."""
    store = SQLiteStore(root / "floor-store")
    for organ in (VPCP, NGHE_AN):
        store.add_agency(Agency(organ.organ_id, "qcvn102", organ.organ_id, "2026-01-01T00:00:00+00:00"))

    def caller(offset: int) -> None:
        for n in range(total // callers):
            store.enqueue(
                NewMessage(str(uuid.uuid4()), "document", VPCP.organ_id, f"{offset}-{n}", "ab" * 32, 1,
                           (NGHE_AN.organ_id,), "2026-01-01T00:00:00+00:00"),
                time.time(), time.time() + 3600,
            )

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    store.close()
    return elapsed / total


def main() -> None:
    now = datetime.now(UTC)
    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        config, token, keys = setup(root, now)
        axis_key = keystore.read_private_key(keys.axis_key)
        axis_cert = keystore.read_certificates(keys.axis_certificate)[0]
        receipt = receipts.Receipt("accepted", str(uuid.uuid4()), "document", "x", "ab" * 32, VPCP.organ_id,
                                   (NGHE_AN.organ_id,), now.isoformat())
        receipt_cost = timed(lambda: receipts.sign(receipt, axis_key, axis_cert))
        insert_cost = insert_floor(root)
        for label, (size, count) in SIZES.items():
            bodies = packages(root, now, size, count, label)
            sample = bodies[0]
            signature = etree.fromstring(sample).find(f".//{{{signing.DS}}}Signature")
            signed_info = etree.tostring(signature.find(f"{{{signing.DS}}}SignedInfo"), method="c14n", exclusive=True)  # type: ignore[union-attr]
            value = base64.b64decode(signature.find(f"{{{signing.DS}}}SignatureValue").text)  # type: ignore[union-attr, arg-type]
            public = keystore.read_certificates(root / "agencies" / f"{VPCP.organ_id}.pem")[0].public_key()
            crypto = timed(lambda s=sample, v=value, i=signed_info, k=public: crypto_floor(s, k, v, i))
            floor_per_package = crypto + receipt_cost + insert_cost
            process, url = start_server(config)
            try:
                elapsed, latencies = asyncio.run(load(url, token, bodies))
            finally:
                process.terminate()
                process.wait(30)
            rate = count / elapsed
            floor_rate = cores / floor_per_package
            latencies.sort()
            rows.append(
                {
                    "package": label,
                    "bytes": len(sample),
                    "packages": count,
                    "accepted_per_s": rate,
                    "mb_per_s": rate * len(sample) / 1e6,
                    "p50_ms": statistics.median(latencies) * 1e3,
                    "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1e3,
                    "floor_ms_per_package": floor_per_package * 1e3,
                    "floor_per_s": floor_rate,
                    "ours_over_floor": rate / floor_rate,
                }
            )
    print(f"accept over HTTP, {CLIENTS} clients, RSA-2048, {cores} cores (floor = parse+c14n+SHA-256+verify"
          f" {''}+ receipt {receipt_cost * 1e3:.2f} ms + insert {insert_cost * 1e3:.2f} ms, all cores busy)")
    print(f"{'package':>8} {'pkg/s':>8} {'MB/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'floor/s':>8} {'ours/floor':>10}")
    for r in rows:
        print(f"{r['package']:>8} {r['accepted_per_s']:8.0f} {r['mb_per_s']:7.1f} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f}"
              f" {r['floor_per_s']:8.0f} {r['ours_over_floor']:10.0%}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "server.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
