"""The key store on disk: the development CA, the axis's own key, issued agency keys, trust and CRL.

Layout under the key store directory (default ``keys/``)::

    ca/ca.key  ca/ca.pem       development CA (stands in for the state CA); ca.key is 0600
    trust/ca.pem trust/ca.crl  the trust directory that ``axis verify --trust`` reads
    axis.key  axis.pem         the axis's receipt-signing key and certificate
    issued/<fingerprint>.pem   every certificate this CA issued, so ``revoke`` can find it
    agencies/ORGANID.key|.pem  default output of ``axis keys issue``

Private keys are created with mode 0600 and never overwritten; public files are replaced
atomically (write, fsync, rename). Nothing here logs or prints key material.
"""

from __future__ import annotations

import contextlib
import os
import string
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from axis import pki
from axis.errors import CertificateRefused, KeyStoreError
from axis.identifiers import organ_id as check_organ_id

AXIS_KEY_PASSPHRASE = "AXIS_KEY_PASSPHRASE"  # noqa: S105 (the variable's name, not a secret)
"""The environment variable holding the passphrase of an encrypted axis key."""
CA_NAME = "axis development CA (stands in for the state CA)"


def write_secret(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 (refusing to overwrite) and write ``data`` durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyStoreError(
            "keystore.exists", f"{path} already exists; refusing to overwrite a private key"
        ) from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def write_private_key(path: Path, key: pki.PrivateKey, passphrase: bytes | None = None) -> None:
    """Create ``path`` with mode 0600 (refusing to overwrite) and write the PEM key into it."""
    write_secret(path, pki.key_pem(key, passphrase))


class SecretBox:
    """Seals shared secrets the axis must read back (VXP HMAC secrets) with AES-256-GCM under a key
    kept in the key store (``secrets.key``, 0600), so the database alone does not reveal them.
    The context (a system id) is bound as associated data: a sealed secret cannot be moved to
    another system id."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    @classmethod
    def at(cls, path: Path) -> SecretBox:
        """The box of the key file at ``path``, created (0600) on first use."""
        if not path.exists():
            with contextlib.suppress(KeyStoreError):  # created meanwhile by another process
                write_secret(path, AESGCM.generate_key(bit_length=256))
        return cls(_read(path, "secrets key"))

    def seal(self, secret: bytes, context: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, secret, context.encode())

    def open(self, sealed: bytes, context: str) -> bytes:
        try:
            return self._aead.decrypt(sealed[:12], sealed[12:], context.encode())
        except InvalidTag:
            raise KeyStoreError(
                "keystore.secret_unreadable", f"the sealed secret of {context} does not open with this key store"
            ) from None


def fsync_directory(directory: Path) -> None:
    """Make the entries of ``directory`` (a file just created or renamed in it) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_public(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically and durably with ``data`` (mode 0644: nothing secret). The
    temporary file has a fresh random name, created exclusively: no planted symlink is followed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyStoreError("keystore.missing", f"{what} not found at {path}") from None


def read_private_key(path: Path, passphrase: bytes | None = None) -> pki.PrivateKey:
    return pki.load_key(_read(path, "private key"), passphrase)


def read_certificates(path: Path) -> list[x509.Certificate]:
    return pki.load_certificates(_read(path, "certificate"))


def read_trust(directory: Path) -> pki.Trust:
    """Load a trust directory: CA certificates ``*.pem``/``*.crt`` and CRLs ``*.crl``, PEM or DER."""
    if not directory.is_dir():
        raise KeyStoreError(
            "keystore.missing", f"trust directory {directory} not found (create one with `axis keys init`)"
        )
    files = {
        p.name: p.read_bytes() for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")
    }
    return pki.Trust.from_files(files)


def import_crl(trust: Path, data: bytes) -> tuple[Path, x509.CertificateRevocationList]:
    """Add a CRL (PEM or DER) to a trust directory; it must be signed by one of its anchors."""
    revocations = pki.load_crl(data)
    issuer = next((a for a in read_trust(trust).anchors if a.subject == revocations.issuer), None)
    if issuer is None or not revocations.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
        raise CertificateRefused("certificate.untrusted", "the CRL is not signed by a configured trust anchor")
    path = trust / f"{pki.fingerprint(issuer)[:16]}.crl"
    write_public(path, pki.crl_pem(revocations))
    return path, revocations


@dataclass(frozen=True)
class KeyStore:
    """Paths of one key store directory; every method takes the clock as an argument."""

    root: Path

    @property
    def ca_key(self) -> Path:
        return self.root / "ca" / "ca.key"

    @property
    def ca_certificate(self) -> Path:
        return self.root / "ca" / "ca.pem"

    @property
    def trust(self) -> Path:
        return self.root / "trust"

    @property
    def crl(self) -> Path:
        return self.trust / "ca.crl"

    @property
    def axis_key(self) -> Path:
        return self.root / "axis.key"

    @property
    def axis_certificate(self) -> Path:
        return self.root / "axis.pem"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets.key"

    @property
    def issued(self) -> Path:
        return self.root / "issued"

    def axis_signer(self) -> tuple[pki.PrivateKey, x509.Certificate]:
        """The axis's own key and certificate, the key decrypted with ``$AXIS_KEY_PASSPHRASE`` if set."""
        passphrase = os.environ.get(AXIS_KEY_PASSPHRASE)
        key = read_private_key(self.axis_key, passphrase.encode() if passphrase else None)
        return key, read_certificates(self.axis_certificate)[0]

    def init(self, at: datetime, passphrase: bytes | None = None) -> None:
        """Create the development CA, its first CRL, and the axis's own signing certificate."""
        if self.ca_key.exists():
            raise KeyStoreError(
                "keystore.exists", f"a CA already exists in {self.root}; refusing to replace it"
            )
        ca = pki.create_ca(CA_NAME, at)
        write_private_key(self.ca_key, ca.key, passphrase)
        write_public(self.ca_certificate, pki.certificate_pem(ca.certificate))
        write_public(self.trust / "ca.pem", pki.certificate_pem(ca.certificate))
        write_public(self.crl, pki.crl_pem(pki.crl(ca, [], at, number=1)))
        # ECDSA P-256 (allowed by the policy): the axis signs a receipt for every acceptance and
        # every delivery, and a P-256 signature costs a small fraction of an RSA-2048 one.
        axis = pki.issue(ca, "axis", at, organization="axis document interchange", days=365 * 3, key=pki.new_key("ec"))
        write_private_key(self.axis_key, axis.key, passphrase)
        write_public(self.axis_certificate, pki.certificate_pem(axis.certificate))
        self._record(axis.certificate)

    def axis_certificates(self) -> list[x509.Certificate]:
        """Every certificate the key store's CA issued under the axis's own name (the current one
        and those it replaced), for checking what the axis signed before a renewal."""
        current = read_certificates(self.axis_certificate)[0]
        found = []
        for path in sorted(self.issued.glob("*.pem")):
            certificate = read_certificates(path)[0]
            if certificate.subject == current.subject:
                found.append(certificate)
        return found or [current]

    def ca(self, passphrase: bytes | None = None) -> pki.Issued:
        key = read_private_key(self.ca_key, passphrase)
        return pki.Issued(key, read_certificates(self.ca_certificate)[0])

    def _record(self, certificate: x509.Certificate) -> None:
        write_public(self.issued / f"{pki.fingerprint(certificate)}.pem", pki.certificate_pem(certificate))

    def issue(
        self,
        organ_id: str,
        out: Path,
        at: datetime,
        *,
        name: str | None = None,
        kind: pki.KeyKind = "rsa",
        ca_passphrase: bytes | None = None,
        key_passphrase: bytes | None = None,
    ) -> tuple[Path, Path]:
        """Issue an agency signing certificate; write ``ORGANID.key`` (0600) and ``ORGANID.pem`` in ``out``."""
        check_organ_id(organ_id)
        ca = self.ca(ca_passphrase)
        issued = pki.issue(
            ca, name or organ_id, at, organ_id=organ_id, organization=name, key=pki.new_key(kind)
        )
        key_path, cert_path = out / f"{organ_id}.key", out / f"{organ_id}.pem"
        write_private_key(key_path, issued.key, key_passphrase)
        write_public(cert_path, pki.certificate_pem(issued.certificate))
        self._record(issued.certificate)
        return key_path, cert_path

    def revoke(self, fingerprint: str, at: datetime, ca_passphrase: bytes | None = None) -> x509.Certificate:
        """Add the certificate with this SHA-256 fingerprint to the CA's CRL and rewrite the CRL."""
        wanted = fingerprint.lower().replace(":", "")
        path = self.issued / f"{wanted}.pem"
        if len(wanted) != 64 or set(wanted) - set(string.hexdigits) or not path.exists():
            raise CertificateRefused(
                "certificate.unknown",
                f"no certificate with SHA-256 fingerprint {fingerprint} was issued by this CA",
            )
        certificate = read_certificates(path)[0]
        current = pki.load_crl(_read(self.crl, "CRL"))
        write_public(self.crl, pki.crl_pem(pki.revoke(self.ca(ca_passphrase), current, certificate, at)))
        return certificate

    def refresh_crl(self, at: datetime, ca_passphrase: bytes | None = None) -> x509.CertificateRevocationList:
        """Re-sign the CRL with a fresh validity window (it expires after pki.CRL_DAYS)."""
        renewed = pki.refresh(self.ca(ca_passphrase), pki.load_crl(_read(self.crl, "CRL")), at)
        write_public(self.crl, pki.crl_pem(renewed))
        return renewed
