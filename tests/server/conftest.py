"""A real axis for the server tests: its own key store and CA, agencies with issued certificates,
the HTTP API on 127.0.0.1 port 0, and real push receivers (aiohttp servers) for push endpoints."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from adapters.demo import CAO_BANG, NGHE_AN, VPCP, example_document
from axis import config, edxml, keystore, pki, signing
from axis.registry import Registry
from axis.store import Store, open_store
from tests.conftest import new_postgres_database

G22, H41, H14 = VPCP.organ_id, NGHE_AN.organ_id, CAO_BANG.organ_id
UNGRANTED = "000.00.00.G01"  # registered, but no endpoint of the tests acts for it

FAST = {
    "server": {"port": 0, "verify_workers": 1, "shutdown_grace": 5},
    "delivery": {"backoff_initial": 0.05, "backoff_max": 0.3, "housekeeping": 0.2, "push_timeout": 5},
}


def write_config(root: Path, overrides: dict[str, dict[str, Any]]) -> Path:
    sections: dict[str, dict[str, Any]] = {"axis": {"data": "data", "keys": "keys"}}
    for name in ("server", "delivery", *overrides):
        sections[name] = {**FAST.get(name, {}), **overrides.get(name, {})}
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path = root / "axis.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Network:
    """An axis directory with registered agencies; endpoints are added by each test."""

    root: Path
    settings: config.Config
    now: datetime
    admin_token: str
    auditor_token: str
    counter: list[int] = field(default_factory=lambda: [0])

    @property
    def keys(self) -> keystore.KeyStore:
        return keystore.KeyStore(self.settings.keys)

    loaded: dict[str, tuple[pki.PrivateKey, Any]] = field(default_factory=dict)

    def credentials(self, organ_id: str) -> tuple[pki.PrivateKey, Any]:
        """An agency's key and certificate, read once (loading an RSA key checks it: slow)."""
        if organ_id not in self.loaded:
            out = self.root / "agencies"
            key_path, cert_path = out / f"{organ_id}.key", out / f"{organ_id}.pem"
            self.loaded[organ_id] = keystore.read_private_key(key_path), keystore.read_certificates(cert_path)[0]
        return self.loaded[organ_id]

    def registry(self) -> tuple[Registry, Store]:
        store = open_store(self.settings)
        return Registry(store, lambda: keystore.read_trust(self.settings.trust)), store

    def endpoint(self, name: str, agencies: list[str], push_url: str | None = None) -> str:
        registry, store = self.registry()
        try:
            return registry.add_endpoint(name, agencies, push_url)[1]
        finally:
            store.close()

    def sign(self, package: edxml.Package, signer: str | None = None) -> bytes:
        key, certificate = self.credentials(signer or package.sender.organ_id)
        return signing.sign(edxml.build(package), key, certificate)

    def document(self, sender: edxml.Organization = VPCP, recipients: tuple[edxml.Organization, ...] = (NGHE_AN, CAO_BANG), **changes: Any) -> edxml.DocumentPackage:
        """A fresh document (new DocumentId each call) from ``sender`` to ``recipients``."""
        self.counter[0] += 1
        base = example_document(self.now)
        number = f"{self.counter[0]}/{sender.organ_id[-3:]}-T"
        return replace(
            base,
            sender=sender,
            recipients=recipients,
            document_id=f"{sender.organ_id},{self.now:%Y/%m/%d},{number}",
            trace_headers=(edxml.TraceHeader(organ_id=sender.organ_id, timestamp=f"{self.now:%Y/%m/%d %H:%M:%S}"),),
            **changes,
        )

    def status(self, document: edxml.DocumentPackage, sender: edxml.Organization, code: str) -> edxml.StatusPackage:
        return edxml.StatusPackage(
            sender=sender,
            response_for=edxml.ResponseFor(organ_id=document.sender.organ_id, document_id=document.document_id),
            status_code=code,
            timestamp=f"{self.now:%Y/%m/%d %H:%M:%S}",
            staff_info=edxml.StaffInfo(department="Văn thư", staff="Trần Thị B"),
            description=f"trạng thái {code}",
        )


def _on_postgres(overrides: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """With ``AXIS_TEST_EVERYTHING_ON_POSTGRES=1``, every axis of the tests keeps its store in a
    fresh PostgreSQL database of the ``AXIS_TEST_POSTGRES`` server (left for the server to drop)."""
    server = os.environ.get("AXIS_TEST_POSTGRES")
    if os.environ.get("AXIS_TEST_EVERYTHING_ON_POSTGRES") != "1" or not server or "store" in overrides:
        return overrides
    return {**overrides, "store": {"url": new_postgres_database(server)}}


def make_network(root: Path, overrides: dict[str, dict[str, Any]] | None = None) -> Network:
    overrides = _on_postgres(overrides or {})
    now = datetime.now(UTC).replace(microsecond=0)
    settings = config.load(write_config(root, overrides or {}))
    store_keys = keystore.KeyStore(settings.keys)
    store_keys.init(now - timedelta(minutes=5))
    store = open_store(settings)
    registry = Registry(store, lambda: keystore.read_trust(settings.trust))
    try:
        for organ in (VPCP, NGHE_AN, CAO_BANG):
            registry.add_agency(organ.organ_id, organ.organ_name or organ.organ_id)
            _, cert = store_keys.issue(organ.organ_id, root / "agencies", now - timedelta(minutes=5))
            registry.add_certificate(organ.organ_id, cert.read_bytes())
        registry.add_agency(UNGRANTED, "Bộ Ngoại giao")
        admin = registry.add_role_token("admin", "test admin")
        auditor = registry.add_role_token("auditor", "test auditor")
    finally:
        store.close()
    return Network(root, settings, now, admin, auditor)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Receiver:
    """A push endpoint's receiving application: records what the axis POSTs to it."""

    port: int
    answer: int = 200
    delay: float = 0.0
    """Seconds each answer takes (keeps pushes in flight, hence leases held)."""
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    runner: web.AppRunner | None = None
    in_flight: int = 0
    """Requests being answered right now (each holds a lease in the axis)."""
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/edxml"

    async def start(self) -> None:
        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            self.in_flight += 1
            try:
                await asyncio.sleep(self.delay)
            finally:
                self.in_flight -= 1
            if self.answer < 300:
                self.received.append((dict(request.headers), body))
                self.arrived.set()
            return web.Response(status=self.answer, text="ok" if self.answer < 300 else "busy")

        app = web.Application(client_max_size=100 * 1024 * 1024)
        app.router.add_post("/edxml", handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def message_ids(self) -> list[str]:
        return [h["X-Axis-Message-Id"] for h, _ in self.received]


async def eventually(check: Callable[[], Any], timeout: float = 20.0, every: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy (bounded: fails after ``timeout``)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(every)


class Client:
    """Thin test client: one bearer token, JSON in and out."""

    def __init__(self, session: aiohttp.ClientSession, url: str, token: str | None) -> None:
        self.session, self.url, self.token = session, url, token

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return {**headers, **(extra or {})}

    async def request(self, method: str, path: str, *, data: bytes | None = None, json_body: Any = None,
                      content_type: str = "application/xml", params: dict[str, Any] | None = None) -> tuple[int, Any, dict[str, str]]:
        headers = self._headers({"Content-Type": content_type} if data is not None else None)
        async with self.session.request(method, self.url + path, data=data, json=json_body, headers=headers, params=params) as r:
            raw = await r.read()
            if r.content_type in ("application/json", "application/problem+json"):
                return r.status, await r.json(), dict(r.headers)
            return r.status, raw, dict(r.headers)

    async def submit(self, data: bytes) -> tuple[int, Any]:
        status, body, _ = await self.request("POST", "/v1/messages", data=data)
        return status, body


@pytest.fixture
async def network(tmp_path: Path) -> Network:
    return make_network(tmp_path)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s
