"""Step 3 of the path of a package: verify the signature, then read only what it covers.

This is the one place a package's bytes become a trusted ``edxml.Package``: the offline
``axis verify`` uses it, and so does the server. The registry's checks (sender registered,
certificate bound to the sender by fingerprint, recipients active) come after it, elsewhere.

``sign_package`` is the signer's side of the same rules (``axis sign``): a package the axis would
refuse for its shape, or for its signer, is refused before it is signed, with the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509

from axis import edxml, pki, signing
from axis.errors import IdentifierError, SignatureRefused
from axis.identifiers import organ_id


@dataclass(frozen=True)
class VerifiedPackage:
    package: edxml.Package
    """Read from the signed content only."""
    signature: signing.Verified
    sha256: str
    """Hex SHA-256 of the bytes exactly as received: the package's identity in the store and receipts."""


def _names_an_agency(uid: str | None) -> bool:
    """Certificates from the state CA may carry other UIDs (a tax code, ``MST:...``): compare OrganIds only."""
    if uid is None:
        return False
    try:
        organ_id(uid)
    except IdentifierError:
        return False
    return True


def _refuse_foreign_signer(certificate: x509.Certificate, sender: str) -> None:
    """When the certificate names an OrganId (UID in the subject), it must be the package's sender:
    an agency cannot sign in another agency's name. Certificates without one are bound to agencies
    by the registry's fingerprint binding alone."""
    signer = pki.organ_id_of(certificate)
    if _names_an_agency(signer) and signer != sender:
        raise SignatureRefused(
            "signature.signer_not_sender",
            f"the package is sent by {sender} but the certificate is that of {signer}: "
            "only the sender's own key may sign it",
        )


def verify_package(
    source: bytes | Path, trust: pki.Trust, at: datetime, *, attachments: bool = True
) -> VerifiedPackage:
    """Verify ``source`` (the bytes, or a file holding them) at time ``at`` and return the package
    it signs; raise a refusal otherwise (the signer must be the sender, see
    ``_refuse_foreign_signer``). Without ``attachments`` they are checked, not decoded."""
    verified = signing.verify(source, trust, at)
    package = edxml.read(verified.signed_xml, attachments=attachments)
    _refuse_foreign_signer(verified.certificate, package.sender.organ_id)
    return VerifiedPackage(package, verified, verified.sha256)


def sign_package(
    data: bytes,
    key: pki.PrivateKey,
    certificate: x509.Certificate,
    intermediates: tuple[x509.Certificate, ...] = (),
    *,
    replace: bool = False,
) -> bytes:
    """Sign an unsigned edXML package for its sender and return the signed bytes.

    Before anything is signed, the package is read as the axis will read it (schema, shape,
    ``edxml.*`` codes) and its From must be the certificate's agency (``signature.signer_not_sender``):
    a signature over a package the axis refuses only wastes the sender's time, and a signature in
    another agency's name is never made. With ``replace``, existing (placeholder) Signature
    elements are removed first and so are never taken for a shape fault.
    """
    root = signing.unsigned_tree(data, replace=replace)
    package = edxml.read(root)
    _refuse_foreign_signer(certificate, package.sender.organ_id)
    return signing.sign_tree(root, key, certificate, intermediates)
