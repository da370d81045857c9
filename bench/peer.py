"""The axis side by side with the pipeline an operator would assemble instead, in one run.

The pipeline: a RabbitMQ durable queue (persistent messages, publisher confirms), consumers that
verify each package's XML signature with libxmlsec1 (python-xmlsec, against the sender's
certificate) and publish a receipt signed with libxmlsec1 to a durable queue (confirmed) before
acknowledging the package: durable, verified, receipted, as the axis is, without its checks of
policy, chain, CRL, registry and audit log. As many consumer processes as cores.

The axis: the same 10 KB packages accepted over HTTP by ``axis serve`` on SQLite, and, when a
PostgreSQL server is given (argument or ``$AXIS_TEST_POSTGRES``), by one node and by two nodes
sharing one database.

RabbitMQ comes from Debian's packages (``rabbitmq-server``); it is started on loopback for the
run and stopped after. Without it, or without a PostgreSQL server, those rows say why they are
missing. Figures, not assertions: ``python bench/peer.py [postgresql://...]``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.server import load, packages, setup, start_server  # noqa: E402

COUNT = 2000
RABBIT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def axis_rate(root: Path, now: datetime, store_url: str = "", nodes: int = 1) -> float:
    root.mkdir(parents=True)
    config, token, _ = setup(root, now, store_url=store_url)
    bodies = packages(root, now, 10_000, COUNT, f"peer{nodes}{bool(store_url)}")
    servers = [start_server(config) for _ in range(nodes)]
    try:
        async def run() -> float:
            started = time.perf_counter()
            share = len(bodies) // nodes
            await asyncio.gather(*(load(url, token, bodies[n * share : (n + 1) * share]) for n, (_, url) in enumerate(servers)))
            return time.perf_counter() - started

        return COUNT / asyncio.run(run())
    finally:
        for process, _ in servers:
            process.terminate()
            process.wait(30)


# ---------------------------------------------------------------- the pipeline


def start_rabbit(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    port, dist = free_port(), free_port()
    shutil.chown(directory, "rabbitmq")
    environment = {
        "HOME": str(directory), "RABBITMQ_NODENAME": f"bench{port}@localhost", "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist), "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
        "RABBITMQ_LOG_BASE": str(directory / "log"), "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "plugins"),
        "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq"), "PATH": os.environ.get("PATH", ""),
    }
    exports = " ".join(f"{k}={v}" for k, v in environment.items())
    process = subprocess.Popen(["su", "rabbitmq", "-s", "/bin/bash", "-c", f"{exports} exec {RABBIT}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    import pika

    deadline = time.monotonic() + 60
    while True:
        try:
            pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port)).close()
            return process, port
        except Exception:  # noqa: BLE001 - not up yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def consume(port: int, certificate: bytes, key: bytes, stop: multiprocessing.synchronize.Event) -> None:
    """One consumer: verify with libxmlsec1, publish a signed receipt (confirmed), acknowledge."""
    import pika
    import xmlsec
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from lxml import etree

    sender_key = xmlsec.Key.from_memory(certificate, xmlsec.constants.KeyDataFormatCertPem)
    receipt_key = xmlsec.Key.from_memory(key, xmlsec.constants.KeyDataFormatPem)
    method = (  # the axis's own key kind: its receipts are signed the same way
        xmlsec.constants.TransformEcdsaSha256
        if isinstance(load_pem_private_key(key, None), ec.EllipticCurvePrivateKey)
        else xmlsec.constants.TransformRsaSha256
    )
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    channel = connection.channel()
    channel.confirm_delivery()
    channel.basic_qos(prefetch_count=64)

    def receipt(package_id: str) -> bytes:
        root = etree.fromstring(
            f'<Receipt xmlns="urn:bench"><MessageId>{package_id}</MessageId><Time>{datetime.now(UTC).isoformat()}</Time></Receipt>'.encode()
        )
        signature = xmlsec.template.create(root, xmlsec.constants.TransformExclC14N, method)
        root.append(signature)
        reference = xmlsec.template.add_reference(signature, xmlsec.constants.TransformSha256, uri="")
        xmlsec.template.add_transform(reference, xmlsec.constants.TransformEnveloped)
        xmlsec.template.add_transform(reference, xmlsec.constants.TransformExclC14N)
        context = xmlsec.SignatureContext()
        context.key = receipt_key
        context.sign(signature)
        return bytes(etree.tostring(root))

    def handle(ch, method, properties, body: bytes) -> None:  # type: ignore[no-untyped-def]
        root = etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True))
        node = xmlsec.tree.find_node(root, xmlsec.constants.NodeSignature)
        context = xmlsec.SignatureContext()
        context.key = sender_key
        context.verify(node)
        ch.basic_publish("", "receipts", receipt(properties.message_id or ""), pika.BasicProperties(delivery_mode=2))
        ch.basic_ack(method.delivery_tag)

    channel.basic_consume("packages", handle)
    while not stop.is_set():
        connection.process_data_events(time_limit=0.2)
    connection.close()


def pipeline_rate(bodies: list[bytes], certificate: bytes, key: bytes) -> float:
    import pika

    directory = Path(tempfile.mkdtemp(prefix="bench-rabbit-"))
    rabbit, port = start_rabbit(directory)
    try:
        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        channel = connection.channel()
        for queue in ("packages", "receipts"):
            channel.queue_declare(queue, durable=True)
        channel.confirm_delivery()
        stop = multiprocessing.get_context("spawn").Event()
        consumers = [
            multiprocessing.get_context("spawn").Process(target=consume, args=(port, certificate, key, stop))
            for _ in range(os.cpu_count() or 1)
        ]
        for consumer in consumers:
            consumer.start()
        time.sleep(2)  # the consumers are connected
        started = time.perf_counter()
        for body in bodies:
            channel.basic_publish("", "packages", body, pika.BasicProperties(delivery_mode=2, message_id=str(uuid.uuid4())))
        deadline = time.monotonic() + 600
        while channel.queue_declare("receipts", durable=True, passive=True).method.message_count < len(bodies):
            if time.monotonic() > deadline or not any(c.is_alive() for c in consumers):
                raise RuntimeError("the pipeline's consumers stopped before every receipt was published")
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        stop.set()
        for consumer in consumers:
            consumer.join(30)
        connection.close()
        return len(bodies) / elapsed
    finally:
        subprocess.run(["pkill", "-f", f"bench{port}@localhost"], check=False)
        rabbit.wait(30)
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    now = datetime.now(UTC)
    server = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("AXIS_TEST_POSTGRES", "")
    rows: list[tuple[str, float | str]] = []
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        rows.append(("axis, SQLite", axis_rate(root / "sqlite", now)))
        peer_root = root / "peer"
        peer_root.mkdir()
        _, _, keys = setup(peer_root, now)
        bodies = packages(peer_root, now, 10_000, COUNT, "peer")
        certificate = (peer_root / "agencies" / "000.00.00.G22.pem").read_bytes()
        if RABBIT.exists():
            rows.append(("RabbitMQ + libxmlsec1 pipeline", pipeline_rate(bodies, certificate, keys.axis_key.read_bytes())))
        else:
            rows.append(("RabbitMQ + libxmlsec1 pipeline", "not measured: Debian's rabbitmq-server is not installed"))
        if server:
            from bench.postgres import database

            for nodes in (1, 2):
                with database(server) as url:
                    rows.append((f"axis, PostgreSQL, {nodes} node{'s' if nodes > 1 else ''}", axis_rate(root / f"pg{nodes}", now, url, nodes)))
        else:
            rows.append(("axis, PostgreSQL", "not measured: give a PostgreSQL server (argument or $AXIS_TEST_POSTGRES)"))
    peer = next((r for n, r in rows if n.startswith("RabbitMQ") and isinstance(r, float)), None)
    print(f"{COUNT} packages of 10 KB (RSA-2048), {os.cpu_count()} cores, all in one run")
    for name, rate in rows:
        if isinstance(rate, float):
            ratio = f"   {rate / peer:.2f} x the pipeline" if peer and not name.startswith("RabbitMQ") else ""
            print(f"  {name:<34} {rate:8.0f} accepted/s{ratio}")
        else:
            print(f"  {name:<34} {rate}")


if __name__ == "__main__":
    main()
