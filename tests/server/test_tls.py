"""HTTPS with client certificates: an endpoint bound to its certificate must present exactly it."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import pytest

from axis import keystore, pki
from axis.server.runtime import start
from tests.server.conftest import G22, make_network


def write_pair(directory: Path, name: str, issued: pki.Issued) -> tuple[Path, Path]:
    directory.mkdir(exist_ok=True)
    keystore.write_private_key(directory / f"{name}.key", issued.key)
    keystore.write_public(directory / f"{name}.pem", pki.certificate_pem(issued.certificate))
    return directory / f"{name}.pem", directory / f"{name}.key"


def client_context(ca: Path, pair: tuple[Path, Path] | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False  # the development server certificate names no host
    if pair is not None:
        context.load_cert_chain(*pair)
    return context


async def test_mtls_binds_an_endpoint_to_its_client_certificate(tmp_path: Path) -> None:
    network = make_network(
        tmp_path, {"server": {"tls_certificate": "tls/server.pem", "tls_key": "tls/server.key", "client_ca": "keys/ca/ca.pem"}}
    )
    ca = network.keys.ca()
    tls = network.root / "tls"
    write_pair(tls, "server", pki.issue(ca, "axis.localhost", network.now))
    bound = write_pair(tls, "bound", pki.issue(ca, "vpcp endpoint", network.now))
    other = write_pair(tls, "other", pki.issue(ca, "someone else", network.now))
    registry, store = network.registry()
    try:
        fingerprint = pki.fingerprint(keystore.read_certificates(bound[0])[0])
        _, token = registry.add_endpoint("vpcp", [G22], client_cert_fingerprint=fingerprint)
    finally:
        store.close()
    axis = await start(network.settings)
    assert axis.url.startswith("https://")
    package = network.sign(network.document())
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/xml"}
    try:
        for pair, expected in ((bound, (202, None)), (other, (401, "auth.client_certificate"))):
            connector = aiohttp.TCPConnector(ssl=client_context(network.keys.ca_certificate, pair))
            async with (
                aiohttp.ClientSession(connector=connector) as session,
                session.post(axis.url + "/v1/messages", data=package, headers=headers) as response,
            ):
                body = await response.json(content_type=None)
                assert (response.status, body.get("code")) == expected
        connector = aiohttp.TCPConnector(ssl=client_context(network.keys.ca_certificate, None))
        async with aiohttp.ClientSession(connector=connector) as session:
            with pytest.raises(aiohttp.ClientError):  # no client certificate: the handshake fails
                async with session.get(axis.url + "/healthz") as response:
                    await response.read()
    finally:
        await axis.stop()
