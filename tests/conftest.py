"""Shared fixtures: one development PKI per session on disk, real keys, real certificates."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.demo import example_document
from axis import edxml, keystore, pki, signing

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO.parent / "shared" / "samples" / "edxml-vdxp"
MALFORMED_SAMPLES = {"edoc.edxml", "edoc_new.edxml"}


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
    if not SAMPLES.is_dir():
        pytest.fail(f"the shared samples are expected at {SAMPLES}")
    return SAMPLES
