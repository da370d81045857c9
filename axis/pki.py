"""Certificates, CRLs and chain validation: a development CA standing in for the state CA.

Pure: keys, certificates and CRLs in, values out; the clock is an argument. ``axis.keystore``
reads and writes the files. Chain validation uses cryptography's X.509 verifier against the
configured trust anchors only (never the public web PKI); revocation is checked against CRLs
whose signature verifies under the issuing CA.

An agency certificate carries the agency's OrganId in its subject (attribute UID); the registry
binds certificates to agencies by SHA-256 fingerprint, not by any name in the certificate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Literal, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from axis.errors import CertificateRefused, KeyStoreError

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
KeyKind = Literal["rsa", "ec"]
RSA_BITS = 2048
CA_YEARS = 10
AGENCY_DAYS = 730
CRL_DAYS = 30


def new_key(kind: KeyKind = "rsa") -> PrivateKey:
    """RSA-2048 or ECDSA P-256: the two key types the signature policy accepts."""
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)


@dataclass(frozen=True)
class Issued:
    """A private key with its certificate."""

    key: PrivateKey
    certificate: x509.Certificate


@lru_cache(maxsize=256)
def fingerprint(certificate: x509.Certificate) -> str:
    """Lower-case hex SHA-256 of the DER certificate: how the registry names a certificate.
    Remembered for the last few certificates (a verifier sees the same ones over and over)."""
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def organ_id_of(certificate: x509.Certificate) -> str | None:
    """The OrganId written in the subject (UID), if any. Informative only: trust binds by fingerprint."""
    values = certificate.subject.get_attributes_for_oid(NameOID.USER_ID)
    return str(values[0].value) if values else None


def _name(common_name: str, organ_id: str | None = None, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COUNTRY_NAME, "VN")]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    if organ_id:
        attributes.append(x509.NameAttribute(NameOID.USER_ID, organ_id))
    return x509.Name(attributes)


def _key_usage(*, documents: bool, certificates: bool) -> x509.KeyUsage:
    """Document signers: digitalSignature + nonRepudiation. CAs: keyCertSign + cRLSign."""
    return x509.KeyUsage(
        digital_signature=documents,
        content_commitment=documents,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=certificates,
        crl_sign=certificates,
        encipher_only=False,
        decipher_only=False,
    )


def create_ca(common_name: str, at: datetime, key: PrivateKey | None = None) -> Issued:
    """A self-signed root for development; in production the state CA's certificate is the anchor."""
    key = key or new_key("rsa")
    name = _name(common_name, organization="axis development PKI")
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(at - timedelta(minutes=5))
        .not_valid_after(at + timedelta(days=365 * CA_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(documents=False, certificates=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(key, certificate)


def issue(
    ca: Issued,
    common_name: str,
    at: datetime,
    *,
    organ_id: str | None = None,
    organization: str | None = None,
    key: PrivateKey | None = None,
    days: int = AGENCY_DAYS,
    not_before: datetime | None = None,
    digital_signature: bool = True,
) -> Issued:
    """A signing certificate under ``ca``: for an agency (``organ_id`` set) or for the axis itself.

    ``not_before`` and ``digital_signature`` exist so tests can make certificates the policy refuses.
    """
    key = key or new_key("rsa")
    public = key.public_key()
    start = not_before or (at - timedelta(minutes=5))
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organ_id, organization))
        .issuer_name(ca.certificate.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(documents=digital_signature, certificates=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(key, certificate)


def crl(
    ca: Issued, revoked: Iterable[tuple[int, datetime]], at: datetime, number: int, days: int = CRL_DAYS
) -> x509.CertificateRevocationList:
    """A CRL of ``ca`` listing ``(serial, revocation time)`` pairs, valid from ``at`` for ``days``."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(at)
        .next_update(at + timedelta(days=days))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    for serial, when in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    return builder.sign(ca.key, hashes.SHA256())


def revoke(
    ca: Issued, current: x509.CertificateRevocationList | None, certificate: x509.Certificate, at: datetime
) -> x509.CertificateRevocationList:
    """A new CRL: ``current``'s entries plus ``certificate``, numbered one higher."""
    entries = {r.serial_number: r.revocation_date_utc for r in (current or [])}
    entries.setdefault(certificate.serial_number, at)
    number = 1
    if current is not None:
        number = current.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number + 1
    return crl(ca, sorted(entries.items()), at, number)


def refresh(
    ca: Issued, current: x509.CertificateRevocationList, at: datetime
) -> x509.CertificateRevocationList:
    """Re-sign ``current`` with a new validity window, keeping every entry."""
    number = current.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number + 1
    return crl(ca, [(r.serial_number, r.revocation_date_utc) for r in current], at, number)


# ---------------------------------------------------------------- encodings


def key_pem(key: PrivateKey, passphrase: bytes | None = None) -> bytes:
    if passphrase is not None and not passphrase:
        raise KeyStoreError("keystore.passphrase", "an empty passphrase would leave the key unprotected")
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def load_key(data: bytes, passphrase: bytes | None = None) -> PrivateKey:
    """Load a PEM private key; a wrong or missing passphrase is a ``keystore.passphrase`` refusal."""
    try:
        key = serialization.load_pem_private_key(data, passphrase)
    except TypeError:
        raise KeyStoreError(
            "keystore.passphrase", "the private key is encrypted: give its passphrase (AXIS_KEY_PASSPHRASE)"
        ) from None
    except ValueError:
        raise KeyStoreError(
            "keystore.unreadable_key",
            "the private key cannot be read: wrong passphrase, or not a PEM private key",
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise KeyStoreError("keystore.unreadable_key", "only RSA and ECDSA P-256 signing keys are supported")
    return key


def certificate_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def crl_pem(revocations: x509.CertificateRevocationList) -> bytes:
    return revocations.public_bytes(serialization.Encoding.PEM)


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate in ``data``, PEM (one or several) or DER."""
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError as error:
        raise CertificateRefused("certificate.malformed", f"not a PEM or DER certificate: {error}") from None


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as error:
        raise CertificateRefused("certificate.malformed_crl", f"not a PEM or DER CRL: {error}") from None


# ---------------------------------------------------------------- trust and validation


@dataclass(frozen=True)
class Trust:
    """Trust anchors (CA certificates) and the CRLs that say which of their certificates are revoked."""

    anchors: tuple[x509.Certificate, ...]
    crls: tuple[x509.CertificateRevocationList, ...] = ()

    @classmethod
    def from_files(cls, files: Mapping[str, bytes]) -> Trust:
        """Build from a trust directory's contents: ``*.pem``/``*.crt`` certificates, ``*.crl`` CRLs."""
        anchors: list[x509.Certificate] = []
        crls: list[x509.CertificateRevocationList] = []
        for name, data in sorted(files.items()):
            lowered = name.lower()
            if lowered.endswith(".crl"):
                crls.append(load_crl(data))
            elif lowered.endswith((".pem", ".crt")):
                anchors.extend(load_certificates(data))
        return cls(tuple(anchors), tuple(crls))


def _require_digital_signature(
    _policy: object, _certificate: x509.Certificate, usage: x509.KeyUsage | None
) -> None:
    if usage is None or not usage.digital_signature:
        raise ValueError("KeyUsage does not allow digitalSignature")


def _self_signed(certificate: x509.Certificate) -> bool:
    if certificate.issuer != certificate.subject:
        return False
    try:
        certificate.verify_directly_issued_by(certificate)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


E = TypeVar("E", bound=x509.ExtensionType)


def _extension(certificate: x509.Certificate, kind: type[E]) -> E | None:
    try:
        return certificate.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _describe(certificate: x509.Certificate) -> str:
    return f"{certificate.subject.rfc4514_string()} (SHA-256 {fingerprint(certificate)[:16]}…)"


VALIDATED_MAX = 256
"""Chains remembered by ``validate`` (per process) before the memory is emptied."""
_validated: dict[tuple[int, bytes, tuple[bytes, ...]], tuple[Trust, list[x509.Certificate], datetime, datetime]] = {}


def validate(
    certificate: x509.Certificate, intermediates: Iterable[x509.Certificate], trust: Trust, at: datetime
) -> list[x509.Certificate]:
    """Check ``certificate`` is fit to sign at ``at``; return its chain, leaf first, anchor last.

    Order of checks (each its own refusal code): self-signed, key usage, not a CA, validity period,
    chain to a trust anchor, revocation of every non-anchor certificate in the chain.

    A chain found valid is remembered with the span of time over which nothing it was checked
    against changes (every certificate's validity, each CRL's next update, a revocation dated
    later): the same certificates under the same ``trust`` object, at a time inside that span,
    get the same answer without the work. Refusals are never remembered.
    """
    intermediates = tuple(intermediates)
    key = (id(trust), _der(certificate), tuple(_der(c) for c in intermediates))
    known = _validated.get(key)
    if known is not None and known[0] is trust and known[2] <= at <= known[3]:
        return list(known[1])
    chain = _validate(certificate, intermediates, trust, at)
    if len(_validated) >= VALIDATED_MAX:
        _validated.clear()
    _validated[key] = (trust, chain, *_unchanged_span(chain, trust, at))
    return list(chain)


def _der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def _unchanged_span(chain: list[x509.Certificate], trust: Trust, at: datetime) -> tuple[datetime, datetime]:
    """The times around ``at`` at which every check ``_validate`` made on ``chain`` passes alike."""
    start = max(c.not_valid_before_utc for c in chain)
    end = min(c.not_valid_after_utc for c in chain)
    for child, issuer in zip(chain, chain[1:], strict=False):
        current = _current_crl(issuer, trust)
        if current is None:
            return at, at
        if current.next_update_utc is not None:
            end = min(end, current.next_update_utc)
        entry = current.get_revoked_certificate_by_serial_number(child.serial_number)
        if entry is not None:  # revoked later than ``at``: refused from that moment on
            end = min(end, entry.revocation_date_utc - timedelta(microseconds=1))
    return start, end


def _validate(
    certificate: x509.Certificate, intermediates: tuple[x509.Certificate, ...], trust: Trust, at: datetime
) -> list[x509.Certificate]:

    def subject() -> str:
        return _describe(certificate)

    if _self_signed(certificate) and fingerprint(certificate) not in {fingerprint(a) for a in trust.anchors}:
        raise CertificateRefused(
            "certificate.self_signed",
            f"certificate {subject()} is self-signed; a signing certificate must be issued by a trusted CA",
        )
    usage = _extension(certificate, x509.KeyUsage)
    if usage is None or not usage.digital_signature:
        raise CertificateRefused(
            "certificate.key_usage",
            f"certificate {subject()} is not allowed to sign (KeyUsage lacks digitalSignature)",
        )
    constraints = _extension(certificate, x509.BasicConstraints)
    if constraints is not None and constraints.ca:
        raise CertificateRefused(
            "certificate.not_end_entity",
            f"certificate {subject()} is a CA certificate; documents are signed with end-entity certificates",
        )
    if at < certificate.not_valid_before_utc:
        raise CertificateRefused(
            "certificate.not_yet_valid",
            f"certificate {subject()} is valid only from {certificate.not_valid_before_utc.isoformat()}; "
            f"the time checked is {at.isoformat()}",
        )
    if at > certificate.not_valid_after_utc:
        raise CertificateRefused(
            "certificate.expired",
            f"certificate {subject()} expired at {certificate.not_valid_after_utc.isoformat()}; "
            f"the time checked is {at.isoformat()}",
        )
    if not trust.anchors:
        raise CertificateRefused(
            "certificate.untrusted", "no trust anchors are configured (the trust directory is empty)"
        )
    verifier = (
        PolicyBuilder()
        .store(Store(list(trust.anchors)))
        .time(at)
        .max_chain_depth(4)
        .extension_policies(
            ca_policy=ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=ExtensionPolicy.permit_all().require_present(
                x509.KeyUsage, Criticality.AGNOSTIC, _require_digital_signature
            ),
        )
        .build_client_verifier()
    )
    try:
        chain = list(verifier.verify(certificate, list(intermediates)).chain)
    except VerificationError as error:
        raise CertificateRefused(
            "certificate.untrusted",
            f"certificate {subject()} does not chain to a configured trust anchor ({error}); "
            "it may come from another CA",
        ) from None
    for child, issuer in zip(chain, chain[1:], strict=False):
        _check_revocation(child, issuer, trust, at)
    return chain


def _current_crl(issuer: x509.Certificate, trust: Trust) -> x509.CertificateRevocationList | None:
    """The newest CRL in ``trust`` signed by ``issuer``."""
    lists = [
        c
        for c in trust.crls
        if c.issuer == issuer.subject and c.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    ]
    return max(lists, key=lambda c: c.last_update_utc) if lists else None


def _check_revocation(
    certificate: x509.Certificate, issuer: x509.Certificate, trust: Trust, at: datetime
) -> None:
    current = _current_crl(issuer, trust)
    if current is None:
        raise CertificateRefused(
            "certificate.revocation_unknown",
            f"no CRL signed by {issuer.subject.rfc4514_string()} is configured, so revocation of "
            f"{_describe(certificate)} cannot be checked; add the CA's CRL to the trust directory",
        )
    entry = current.get_revoked_certificate_by_serial_number(certificate.serial_number)
    if entry is not None and entry.revocation_date_utc <= at:
        raise CertificateRefused(
            "certificate.revoked",
            f"certificate {_describe(certificate)} was revoked at {entry.revocation_date_utc.isoformat()}",
        )
    next_update = current.next_update_utc
    if next_update is not None and at > next_update:
        raise CertificateRefused(
            "certificate.crl_expired",
            f"the newest CRL of {issuer.subject.rfc4514_string()} expired at {next_update.isoformat()}; "
            "import a fresh CRL",
        )


def sign_bytes(key: PrivateKey, data: bytes) -> bytes:
    """A detached signature over ``data``: SHA-256 with RSA PKCS#1 v1.5, or ECDSA (DER)."""
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def signed_bytes(certificate: x509.Certificate, signature: bytes, data: bytes) -> bool:
    """Whether ``certificate``'s key made ``signature`` over ``data`` (``sign_bytes``)."""
    public = certificate.public_key()
    try:
        if isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        else:
            return False
    except InvalidSignature:
        return False
    return True

