"""Shared fixtures: one development PKI per session on disk, real keys, real certificates.

Tests that read ../shared (the agencies' samples, the VXP captures) take it through the
``samples`` and ``vxp_captures`` fixtures: when it is absent (a bare clone) they are skipped with
the reason, unless ``AXIS_REQUIRE_SHARED=1`` (CI sets it), which makes them fail instead.
``AXIS_SHARED`` points elsewhere than ../shared.

Tests of the PostgreSQL store take a fresh database of their own from ``postgres_url``, on the
server ``AXIS_TEST_POSTGRES`` names (``.ci/run`` starts one); without it they are skipped, unless
``AXIS_REQUIRE_POSTGRES=1`` (CI), which makes them fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.demo import example_document
from axis import edxml, keystore, pki, signing

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("AXIS_SHARED") or REPO.parent / "shared")
SAMPLES = SHARED / "samples" / "edxml-vdxp"
VXP_CAPTURES = SHARED / "vxp-captures"
MALFORMED_SAMPLES = {"edoc.edxml", "edoc_new.edxml"}
FIXTURES = REPO / "tests" / "fixtures"


def _shared(path: Path, what: str) -> Path:
    if path.is_dir():
        return path
    reason = f"{what} are expected at {path} (../shared beside the checkout, or $AXIS_SHARED)"
    if os.environ.get("AXIS_REQUIRE_SHARED") == "1":
        pytest.fail(f"{reason}; AXIS_REQUIRE_SHARED=1 requires them")
    pytest.skip(reason)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test (dropped afterwards), as a connection string."""
    server = os.environ.get("AXIS_TEST_POSTGRES")
    if not server:
        reason = "AXIS_TEST_POSTGRES names no PostgreSQL server (.ci/run starts one)"
        if os.environ.get("AXIS_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{reason}; AXIS_REQUIRE_POSTGRES=1 requires it")
        pytest.skip(reason)
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    url = new_postgres_database(server)
    try:
        yield url
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {conninfo_to_dict(url)['dbname']} WITH (FORCE)")


def new_postgres_database(server: str) -> str:
    """A new, empty database on the PostgreSQL ``server``, as a connection string."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    name = f"axis_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")  # a generated name, not input
    return make_conninfo(server, dbname=name)


def well_formed_sample_names() -> list[str]:
    """The well-formed shared samples' names, for ``parametrize``. Without the samples, one
    placeholder: the test still runs once and its ``samples`` fixture skips it (or fails it) with
    the reason, where an empty parameter set would be skipped without one."""
    names = sorted(p.name for p in SAMPLES.glob("*.edxml") if p.name not in MALFORMED_SAMPLES)
    return names or ["shared-samples-absent"]


@dataclass(frozen=True)
class Agency:
    organ_id: str
    key_path: Path
    cert_path: Path

    @property
    def key(self) -> pki.PrivateKey:
        return keystore.read_private_key(self.key_path)

    @property
    def certificate(self):  # type: ignore[no-untyped-def]
        return keystore.read_certificates(self.cert_path)[0]


@dataclass(frozen=True)
class PKI:
    store: keystore.KeyStore
    now: datetime

    @property
    def trust(self) -> pki.Trust:
        return keystore.read_trust(self.store.trust)

    @property
    def ca(self) -> pki.Issued:
        return self.store.ca()

    def agency(self, organ_id: str) -> Agency:
        out = self.store.root / "agencies"
        key, cert = out / f"{organ_id}.key", out / f"{organ_id}.pem"
        if not key.exists():
            self.store.issue(organ_id, out, self.now)
        return Agency(organ_id, key, cert)


@pytest.fixture(scope="session")
def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="session")
def dev_pki(tmp_path_factory: pytest.TempPathFactory, now: datetime) -> PKI:
    store = keystore.KeyStore(tmp_path_factory.mktemp("pki") / "keys")
    store.init(now)
    return PKI(store, now)


@pytest.fixture(scope="session")
def vpcp(dev_pki: PKI) -> Agency:
    return dev_pki.agency("000.00.00.G22")


@pytest.fixture(scope="session")
def document(now: datetime) -> edxml.DocumentPackage:
    return example_document(now)


@pytest.fixture(scope="session")
def signed_document(document: edxml.DocumentPackage, vpcp: Agency) -> bytes:
    return signing.sign(edxml.build(document), vpcp.key, vpcp.certificate)


@pytest.fixture(scope="session")
def samples() -> Path:
    """../shared/samples/edxml-vdxp: packages written by real agency software."""
    return _shared(SAMPLES, "the shared samples")


@pytest.fixture(scope="session")
def vxp_captures() -> Path:
    """../shared/vxp-captures: requests and packages captured from the operator's VXP SDK."""
    return _shared(VXP_CAPTURES, "the VXP captures")
