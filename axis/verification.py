"""Step 3 of the path of a package: verify the signature, then read only what it covers.

This is the one place a package's bytes become a trusted ``edxml.Package``: the offline
``axis verify`` uses it, and so does the server. The registry's checks (sender registered,
certificate bound to the sender by fingerprint, recipients active) come after it, elsewhere.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

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


def verify_package(data: bytes, trust: pki.Trust, at: datetime) -> VerifiedPackage:
    """Verify ``data`` at time ``at`` and return the package it signs; raise a refusal otherwise.

    When the signer's certificate names an OrganId (UID in the subject), it must be the package's
    sender: an agency cannot sign in another agency's name. Certificates without one are bound to
    agencies by the registry's fingerprint binding alone.
    """
    verified = signing.verify(data, trust, at)
    package = edxml.read(verified.signed_xml)
    if _names_an_agency(verified.organ_id) and verified.organ_id != package.sender.organ_id:
        raise SignatureRefused(
            "signature.signer_not_sender",
            f"the package is sent by {package.sender.organ_id} but signed with the certificate of {verified.organ_id}",
        )
    return VerifiedPackage(package, verified, hashlib.sha256(data).hexdigest())
