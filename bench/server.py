"""The axis server measured as a real ``axis serve`` process over loopback HTTP.

1. Accept throughput for 10 KB, 100 KB and 2 MB packages, against the floor (below).
2. End-to-end latency at a fixed offered 200/s: submit → the push endpoint has it.
3. Fan-out: 100 KB packages to 100 recipients behind 10 push endpoints, deliveries/s.
4. Memory of the whole axis (the server and its children) accepting and serving one 50 MB package.

The axis runs as its own process (``axis serve``, one verification worker per core); this
process is the load: 64 concurrent clients POST distinct signed packages (RSA-2048) to
``/v1/messages`` and count 202s. Full work per package: verification in the pool, authorisation,
durable group-committed store, signed receipt.

The floor, measured in the same run on the same machine: per package, one hardened parse +
exclusive c14n + SHA-256 + one RSA-2048 verify, one signed receipt, and one group-committed
insert (amortised over concurrent callers). Its throughput assumes every core does nothing else.
Prints a table and writes bench/results/server.json. Figures, not assertions.

Beside each accept row, "HTTP alone": the same load generator against a process that only reads
each body and answers 202, the most any aiohttp server could do here with this client.

The load generator shares the machine with the axis (the given setup: the same cores), so each
accept row also says how many cores the axis (server process and its workers) and this process
used while it ran; what is left of the machine went to anything else running at the time. The
figures move by 10-20 % between runs on a busy machine: compare runs, not single numbers.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
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
from aiohttp import web
from lxml import etree

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.demo import NGHE_AN, VPCP, example_document  # noqa: E402
from axis import edxml, keystore, receipts, signing  # noqa: E402
from axis.config import load as load_config  # noqa: E402
from axis.registry import Registry  # noqa: E402
from axis.store import open_store  # noqa: E402
from bench.store import group_commit  # noqa: E402
from bench.verify import floor as crypto_floor  # noqa: E402
from bench.verify import timed  # noqa: E402

SIZES = {"10 KB": (10_000, 1500), "100 KB": (100_000, 600), "2 MB": (2_000_000, 60)}
CLIENTS = 64
RESULTS = ROOT / "bench" / "results"


def setup(
    root: Path, now: datetime, push: dict[str, list[str]] | None = None, extra: list[str] | None = None,
    store_url: str = "",
) -> tuple[Path, str, keystore.KeyStore]:
    """An axis directory: VPCP sends (pull endpoint `bench`), Nghệ An receives (pull), plus
    ``extra`` agencies and push endpoints {url: agencies}; its store in ``store_url`` if given.
    Nghệ An's token is left in ``nghe-an.token``."""
    config = root / "axis.toml"
    config.write_text(
        '[axis]\ndata = "data"\nkeys = "keys"\n[server]\nport = 0\nrecipient_backlog = 100000000\nshutdown_grace = 5\n'
        + (f'[store]\nurl = "{store_url}"\n' if store_url else "")
    )
    keys = keystore.KeyStore(root / "keys")
    keys.init(now)
    store = open_store(load_config(config))
    registry = Registry(store, lambda: keystore.read_trust(keys.trust))
    try:
        for organ in (VPCP, NGHE_AN):
            registry.add_agency(organ.organ_id, organ.organ_name or organ.organ_id)
        for organ_id in extra or []:
            registry.add_agency(organ_id, f"Sở {organ_id}")
        _, cert = keys.issue(VPCP.organ_id, root / "agencies", now)
        registry.add_certificate(VPCP.organ_id, cert.read_bytes())
        _, token = registry.add_endpoint("bench", [VPCP.organ_id])
        _, receiver = registry.add_endpoint("nghe-an", [NGHE_AN.organ_id])
        (root / "nghe-an.token").write_text(receiver)
        for n, (url, agencies) in enumerate((push or {}).items()):
            registry.add_endpoint(f"push-{n}", agencies, url)
    finally:
        store.close()
    return config, token, keys


def packages(
    root: Path, now: datetime, size: int, count: int, label: str, recipients: tuple[edxml.Organization, ...] = (NGHE_AN,)
) -> list[bytes]:
    key = keystore.read_private_key(root / "agencies" / f"{VPCP.organ_id}.key")
    cert = keystore.read_certificates(root / "agencies" / f"{VPCP.organ_id}.pem")[0]
    base = example_document(now)
    payload = os.urandom(max(0, (size - 4_800) * 3 // 4))
    attachment = replace(base.attachments[0], data=payload)
    out = []
    for n in range(count):
        document = replace(
            base,
            recipients=recipients,
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


def http_alone() -> None:
    """A server that only reads each body and answers 202: the ceiling of any aiohttp server here."""

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"status": "accepted"}, status=202)

    async def run() -> None:
        app = web.Application(client_max_size=80 * 1024 * 1024)
        app.router.add_post("/v1/messages", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        print(json.dumps({"url": f"http://127.0.0.1:{runner.addresses[0][1]}"}), flush=True)
        await asyncio.Event().wait()

    asyncio.run(run())


def http_ceiling(bodies: list[bytes]) -> float:
    """Packages/s the same load generator gets through ``http_alone`` (in its own process)."""
    process = subprocess.Popen(
        [sys.executable, "-c", "from bench.server import http_alone; http_alone()"], cwd=ROOT, stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        elapsed, _ = asyncio.run(load(json.loads(process.stdout.readline())["url"], "-", bodies))
    finally:
        process.kill()
        process.wait(30)
    return len(bodies) / elapsed


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


def insert_floor(root: Path) -> float:
    """Seconds per group-committed message insert (one delivery, one event) with many callers:
    ``bench/store.py``'s group-commit row."""
    rate, _ = group_commit(root / "floor-store", 3200)
    return 1 / rate


class Receiver:
    """A push endpoint in this process: notes when each package (by SHA-256) arrives."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.count = 0
        self.done = asyncio.Event()
        self.expected = 0

    async def start(self) -> tuple[web.AppRunner, str]:
        async def handle(request: web.Request) -> web.Response:
            await request.read()
            self.arrived.setdefault(request.headers["X-Axis-Sha256"], time.perf_counter())
            self.count += 1
            if self.expected and self.count >= self.expected:
                self.done.set()
            return web.Response(text="ok")

        app = web.Application(client_max_size=80 * 1024 * 1024)
        app.router.add_post("/in", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        return runner, f"http://127.0.0.1:{port}/in"


async def latency(now: datetime, rate: float = 200.0, seconds: float = 10.0) -> dict[str, float]:
    """Offered load ``rate``/s of 10 KB packages; submit → the push endpoint has it."""
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        receiver = Receiver()
        runner, url = await receiver.start()
        config, token, _ = setup(root, now, push={url: [NGHE_AN.organ_id]})
        bodies = await asyncio.to_thread(packages, root, now, 10_000, int(rate * seconds), "lat")
        process, axis_url = await asyncio.to_thread(start_server, config)
        sent: dict[str, float] = {}
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/xml"}
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:

                async def one(body: bytes) -> None:
                    sent[hashlib.sha256(body).hexdigest()] = time.perf_counter()
                    async with session.post(axis_url + "/v1/messages", data=body, headers=headers) as response:
                        await response.read()

                started = time.perf_counter()
                tasks = []
                for n, body in enumerate(bodies):
                    await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
                    tasks.append(asyncio.create_task(one(body)))
                await asyncio.gather(*tasks)
                deadline = time.perf_counter() + 60
                while len(receiver.arrived) < len(bodies) and time.perf_counter() < deadline:
                    await asyncio.sleep(0.05)
        finally:
            process.terminate()
            await asyncio.to_thread(process.wait, 30)
            await runner.cleanup()
        waits = sorted(receiver.arrived[d] - sent[d] for d in sent if d in receiver.arrived)
        return {
            "offered_per_s": rate,
            "packages": len(bodies),
            "arrived": len(waits),
            "p50_ms": statistics.median(waits) * 1e3,
            "p99_ms": waits[int(len(waits) * 0.99) - 1] * 1e3,
        }


async def fan_out(now: datetime, recipients: int = 100, count: int = 10) -> dict[str, float]:
    """One 100 KB package to 100 recipients (served by 10 push endpoints of 10 agencies each)."""
    agencies = [f"{n + 1:03d}.00.00.H40" for n in range(recipients)]  # units of Hà Tĩnh province
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        receiver = Receiver()
        receiver.expected = recipients * count
        runner, url = await receiver.start()
        push = {f"{url}?p={n}": agencies[n * 10 : n * 10 + 10] for n in range(recipients // 10)}
        config, token, _ = setup(root, now, push=push, extra=agencies)
        organs = tuple(edxml.Organization(organ_id=a) for a in agencies)
        bodies = await asyncio.to_thread(packages, root, now, 100_000, count, "fan", organs)
        process, axis_url = await asyncio.to_thread(start_server, config)
        try:
            started = time.perf_counter()
            await load(axis_url, token, bodies)
            await asyncio.wait_for(receiver.done.wait(), 300)
            elapsed = time.perf_counter() - started
        finally:
            process.terminate()
            await asyncio.to_thread(process.wait, 30)
            await runner.cleanup()
        return {"recipients": recipients, "packages": count, "deliveries": receiver.count, "deliveries_per_s": receiver.count / elapsed}


def peak_rss(now: datetime, size: int = 50_000_000, store_url: str = "") -> dict[str, float]:
    """Peak RSS (VmHWM) of the server process and each of its children (verification workers, the
    push process) while accepting one package and serving it back; the whole axis is their sum
    (an upper bound: the peaks need not coincide)."""
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        config, token, _ = setup(root, now, store_url=store_url)
        (body,) = packages(root, now, size, 1, "rss")
        process, url = start_server(config)
        sampling = threading.Event()
        sampled: list[float] = []
        sampler = threading.Thread(target=_sample_pss, args=(process.pid, sampling, sampled))
        try:
            before = _hwm(process.pid)
            sampler.start()
            elapsed, _ = asyncio.run(load(url, token, [body]))
            fetched = asyncio.run(_fetch_newest(url, root, len(body)))
            server = _hwm(process.pid)
            children = [_hwm(int(p)) for p in _children(process.pid)]
        finally:
            sampling.set()
            sampler.join()
            process.terminate()
            process.wait(30)
        whole = server + sum(children)
        return {
            "package_mb": len(body) / 1e6,
            "server_idle_mb": before / 1e6,
            "server_peak_mb": server / 1e6,
            "worker_peak_mb": max(children, default=0) / 1e6,
            "children_mb": [c / 1e6 for c in children],
            "axis_peak_mb": whole / 1e6,
            "axis_pss_peak_mb": max(sampled, default=0) / 1e6,
            "pss_samples": len(sampled),
            "fetched_mb": fetched / 1e6,
            "seconds": elapsed,
            "budget_mb": (4 * len(body) + 150e6) / 1e6,
        }


async def _fetch_newest(url: str, root: Path, size: int) -> int:
    """Nghệ An's endpoint fetches what arrived (the package just sent), reading the stream in pieces."""
    token = (root / "nghe-an.token").read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.get(f"{url}/v1/inbox") as response:
            (item,) = (await response.json())["items"]
        received = 0
        async with session.get(f"{url}/v1/messages/{item['message_id']}") as response:
            async for piece in response.content.iter_chunked(1 << 20):
                received += len(piece)
    assert received == size, (received, size)
    return received


def _sample_pss(pid: int, done: threading.Event, into: list[float]) -> None:
    """The whole axis's memory as it is, every few milliseconds until ``done``: the sum of the
    proportional set sizes (Pss) of the server and its children, so libraries they share are
    counted once."""
    while not done.is_set():
        total = 0.0
        for process in [str(pid), *_children(pid)]:
            try:
                for line in Path(f"/proc/{process}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        total += float(line.split()[1]) * 1024
                        break
            except OSError:
                pass
        into.append(total)
        time.sleep(0.002)


def _hwm(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return float(line.split()[1]) * 1024
    return 0.0


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its child processes (the workers)."""
    total = 0.0
    for process in [str(pid), *_children(pid)]:
        fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def _children(pid: int) -> list[str]:
    """Child processes started by any thread of ``pid`` (the pool spawns from its own thread)."""
    return [child for task in Path(f"/proc/{pid}/task").iterdir() for child in (task / "children").read_text().split()]


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
                server_before, client_before = _cpu(process.pid), _own_cpu()
                elapsed, latencies = asyncio.run(load(url, token, bodies))
                server_cores = (_cpu(process.pid) - server_before) / elapsed
                client_cores = (_own_cpu() - client_before) / elapsed
            finally:
                process.terminate()
                process.wait(30)
            rate = count / elapsed
            floor_rate = cores / floor_per_package
            ceiling = http_ceiling(bodies)
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
                    "http_alone_per_s": ceiling,
                    "server_cores": server_cores,
                    "client_cores": client_cores,
                }
            )
    print(f"accept over HTTP, {CLIENTS} clients, RSA-2048, {cores} cores (floor = parse+c14n+SHA-256+verify"
          f" {''}+ receipt {receipt_cost * 1e3:.2f} ms + insert {insert_cost * 1e3:.2f} ms, all cores busy)")
    print(f"{'package':>8} {'pkg/s':>8} {'MB/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'floor/s':>8} {'ours/floor':>10}"
          f" {'axis cores':>10} {'load cores':>10} {'HTTP alone/s':>12}")
    for r in rows:
        print(f"{r['package']:>8} {r['accepted_per_s']:8.0f} {r['mb_per_s']:7.1f} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f}"
              f" {r['floor_per_s']:8.0f} {r['ours_over_floor']:10.0%} {r['server_cores']:10.2f} {r['client_cores']:10.2f}"
              f" {r['http_alone_per_s']:12.0f}")
    timing = asyncio.run(latency(now))
    print(f"\nend to end, offered {timing['offered_per_s']:.0f}/s of 10 KB to a push endpoint:"
          f" p50 {timing['p50_ms']:.1f} ms, p99 {timing['p99_ms']:.1f} ms ({timing['arrived']:.0f}/{timing['packages']:.0f} arrived)")
    spread = asyncio.run(fan_out(now))
    print(f"fan-out, {spread['packages']:.0f} x 100 KB to {spread['recipients']:.0f} recipients:"
          f" {spread['deliveries_per_s']:.0f} deliveries/s")
    memory = peak_rss(now)
    print(f"accepting and serving one {memory['package_mb']:.0f} MB package: whole axis at most"
          f" {memory['axis_pss_peak_mb']:.0f} MB at once (Pss of the server and its children, sampled),"
          f" {memory['axis_peak_mb']:.0f} MB adding each process's own peak (shared libraries counted in each);"
          f" budget 4 x package + 150 MB = {memory['budget_mb']:.0f} MB")
    print(f"  peak RSS: server {memory['server_peak_mb']:.0f} MB (idle {memory['server_idle_mb']:.0f}),"
          f" children {', '.join(f'{c:.0f}' for c in memory['children_mb'])} MB")
    if os.environ.get("AXIS_TEST_POSTGRES"):  # the same on a PostgreSQL store (a fresh database, dropped after)
        from bench.postgres import database

        with database(os.environ["AXIS_TEST_POSTGRES"]) as store_url:
            on_postgres = peak_rss(now, store_url=store_url)
        print(f"  on PostgreSQL: whole axis at most {on_postgres['axis_pss_peak_mb']:.0f} MB at once,"
              f" server peak {on_postgres['server_peak_mb']:.0f} MB")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "server.json").write_text(
        json.dumps({"accept": rows, "latency": timing, "fan_out": spread, "peak_rss": memory}, indent=2)
    )


if __name__ == "__main__":
    main()
