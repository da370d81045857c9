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
from axis.errors import SignatureRefused


@dataclass(frozen=True)
class VerifiedPackage:
    package: edxml.Package
    """Read from the signed content only."""
    signature: signing.Verified
    sha256: str
    """Hex SHA-256 of the bytes exactly as received: the package's identity in the store and receipts."""


def verify_package(data: bytes, trust: pki.Trust, at: datetime) -> VerifiedPackage:
    """Verify ``data`` at time ``at`` and return the package it signs; raise a refusal otherwise.

    When the signer's certificate names an OrganId, it must be the package's sender: an agency
    cannot sign in another agency's name even with a certificate the registry would accept.
    """
    verified = signing.verify(data, trust, at)
    package = edxml.read(verified.signed_xml)
    if verified.organ_id is not None and verified.organ_id != package.sender.organ_id:
        raise SignatureRefused(
            "signature.signer_not_sender",
            f"the package is sent by {package.sender.organ_id} but signed with the certificate of {verified.organ_id}",
        )
    return VerifiedPackage(package, verified, hashlib.sha256(data).hexdigest())
