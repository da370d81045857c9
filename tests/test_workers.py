"""The verification pool: results and refusals come back; a lost or stuck worker costs only its check."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from typing import Any

import pytest

from axis.errors import AxisError
from axis.spool import Incoming
from axis.workers import VerifierPool
from tests.conftest import PKI


@pytest.fixture
def pool(dev_pki: PKI) -> Iterator[VerifierPool]:
    started = VerifierPool(dev_pki.store.trust, workers=2, timeout=30)
    started.warm_up()
    yield started
    started.close()


def test_checks_come_back_with_their_result_or_refusal(pool: VerifierPool, signed_document: bytes, dev_pki: PKI) -> None:
    async def run() -> list[object]:
        return await asyncio.gather(
            *(pool.check(Incoming.of(signed_document), dev_pki.now) for _ in range(8)),
            pool.check(Incoming.of(b"<edXML"), dev_pki.now),
            return_exceptions=True,
        )

    *checked, refused = asyncio.run(run())
    assert all(getattr(c, "sha256", None) == hashlib.sha256(signed_document).hexdigest() for c in checked)
    assert isinstance(refused, AxisError) and refused.code == "xml.malformed"


def test_a_worker_that_dies_is_replaced_and_its_check_runs_again(
    pool: VerifierPool, signed_document: bytes, dev_pki: PKI
) -> None:
    async def run() -> object:
        loop = asyncio.get_running_loop()
        first = loop.create_task(pool.check(Incoming.of(signed_document), dev_pki.now))
        await asyncio.sleep(0)  # handed to a worker
        busy = [w for w in pool._pool if w.checks]
        assert busy
        busy[0].process.kill()
        return await first

    checked = asyncio.run(run())
    assert getattr(checked, "sha256", None) == hashlib.sha256(signed_document).hexdigest()
    assert pool.replaced == 1


def test_a_check_past_the_timeout_is_refused_and_only_its_worker_replaced(dev_pki: PKI, signed_document: bytes) -> None:
    pool = VerifierPool(dev_pki.store.trust, workers=2, timeout=0.0001)
    pool.warm_up()
    try:
        with pytest.raises(AxisError) as refused:
            asyncio.run(pool.check(Incoming.of(signed_document), dev_pki.now))
        assert refused.value.code == "request.verify_timeout"
        assert pool.replaced == 1
    finally:
        pool.close()


def test_pools_come_and_go_on_one_loop(dev_pki: PKI, signed_document: bytes) -> None:
    """A pool closed from a thread while its loop runs lets go of its pipes first, so the next
    pool's pipes (which may reuse the descriptor numbers) are watched and answer."""

    async def run() -> None:
        for _ in range(3):
            pool = VerifierPool(dev_pki.store.trust, workers=1, timeout=30)
            await asyncio.to_thread(pool.warm_up)
            checked = await pool.check(Incoming.of(signed_document), dev_pki.now)
            assert checked.sha256 == hashlib.sha256(signed_document).hexdigest()
            await asyncio.to_thread(pool.close)

    asyncio.run(asyncio.wait_for(run(), 60))


def test_a_pool_serves_a_second_event_loop(pool: VerifierPool, signed_document: bytes, dev_pki: PKI) -> None:
    for _ in range(2):
        checked = asyncio.run(asyncio.wait_for(pool.check(Incoming.of(signed_document), dev_pki.now), 30))
        assert checked.sha256 == hashlib.sha256(signed_document).hexdigest()


def heavy_package() -> bytes:
    """Nine megabytes inside every limit, dense with attributes, naming the XMLDSig namespace, an
    accepted signature method and X509Certificate (so that an attacker's package goes the whole
    way through the pre-check and the parse before it is refused)."""
    attributes = " ".join(f'a{i}="v"' for i in range(60))
    body = "".join(f"<e {attributes}/>" for i in range(19_000))
    return (
        '<edXML xmlns="http://www.mic.gov.vn/TBT/QCVN_102_2016" xmlns:ds="http://www.w3.org/2000/09/xmldsig#">'
        "<!-- http://www.w3.org/2001/04/xmldsig-more#rsa-sha256 X509Certificate -->"
        f"{body}</edXML>"
    ).encode()


def test_a_stream_of_heavy_packages_from_one_endpoint_does_not_hold_up_the_others(
    pool: VerifierPool, signed_document: bytes, dev_pki: PKI
) -> None:
    """Twenty heavy packages from one sender are queued first; another sender's ten packages, sent
    meanwhile, are all verified while most of the heavy ones still wait (first come, first served
    would have verified all twenty first)."""
    heavy = heavy_package()

    async def run() -> tuple[int, list[Any]]:
        attacks = [asyncio.ensure_future(pool.check(Incoming.of(heavy), dev_pki.now, "attacker")) for _ in range(20)]
        await asyncio.sleep(0)
        legitimate = await asyncio.gather(*(pool.check(Incoming.of(signed_document), dev_pki.now, "ministry") for _ in range(10)))
        finished = sum(a.done() for a in attacks)
        await asyncio.gather(*attacks, return_exceptions=True)
        return finished, legitimate

    finished, legitimate = asyncio.run(run())
    assert all(getattr(c, "sha256", None) == hashlib.sha256(signed_document).hexdigest() for c in legitimate)
    assert finished <= 6, f"{finished} of the 20 heavy checks went first"


def test_a_package_that_needs_more_memory_than_a_worker_may_use_is_refused(dev_pki: PKI, signed_document: bytes) -> None:
    pool = VerifierPool(dev_pki.store.trust, workers=1, timeout=30, memory=320 * 1024 * 1024)
    pool.warm_up()
    try:
        async def run() -> list[object]:
            return await asyncio.gather(
                pool.check(Incoming.of(heavy_package()), dev_pki.now), pool.check(Incoming.of(signed_document), dev_pki.now), return_exceptions=True
            )

        refused, checked = asyncio.run(run())
        assert isinstance(refused, AxisError) and refused.code == "request.too_complex", refused
        assert getattr(checked, "sha256", None) == hashlib.sha256(signed_document).hexdigest()  # a fresh worker
        assert pool.replaced == 1
    finally:
        pool.close()
