"""The axis's signed receipts: ``accepted``, ``delivered``, ``failed`` (schemas/receipt.xsd).

A receipt is evidence a sender can show a third party with nothing else but the axis
certificate: it names the message, the DocumentId, the SHA-256 of the package bytes exactly as
received, the sender, the recipients (all of them for ``accepted``, the one concerned for
``delivered`` and ``failed``), the time, and for ``delivered`` the SHA-256 of what the recipient
answered. It is signed by the axis key under the same strict policy as packages, with the
signature as the last child of ``<Receipt>``. Pure: bytes in, values out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources

from cryptography import x509
from lxml import etree

from axis import pki, signing, xmlguard
from axis.errors import PackageRefused, SignatureRefused

NS = "urn:axis:receipt:1"
KINDS = ("accepted", "delivered", "failed")
POLICY = signing.SignaturePolicy(location=(f"{{{NS}}}Receipt",))


def q(name: str) -> str:
    return f"{{{NS}}}{name}"


@dataclass(frozen=True)
class Receipt:
    kind: str
    message_id: str
    package_kind: str
    """``document`` or ``status``: what the receipt is about."""
    document_id: str
    package_sha256: str
    sender: str
    recipients: tuple[str, ...]
    time: str
    """ISO 8601 with offset (UTC)."""
    acknowledgement_sha256: str | None = None
    reason: str | None = None


def build(receipt: Receipt) -> bytes:
    """The unsigned receipt XML, children in schema order."""
    return bytes(etree.tostring(_tree(receipt), xml_declaration=True, encoding="UTF-8"))


def _tree(receipt: Receipt) -> etree._Element:
    if receipt.kind not in KINDS:
        raise ValueError(f"unknown receipt kind {receipt.kind!r}")
    root = etree.Element(q("Receipt"), nsmap={None: NS}, version="1")  # type: ignore[dict-item]
    for name, value in (
        ("Kind", receipt.kind),
        ("MessageId", receipt.message_id),
        ("PackageKind", receipt.package_kind),
        ("DocumentId", receipt.document_id),
        ("PackageSHA256", receipt.package_sha256),
        ("Sender", receipt.sender),
    ):
        etree.SubElement(root, q(name)).text = value
    for recipient in receipt.recipients:
        etree.SubElement(root, q("Recipient")).text = recipient
    etree.SubElement(root, q("Time")).text = receipt.time
    if receipt.acknowledgement_sha256 is not None:
        etree.SubElement(root, q("AcknowledgementSHA256")).text = receipt.acknowledgement_sha256
    if receipt.reason is not None:
        etree.SubElement(root, q("Reason")).text = receipt.reason[:1000]
    return root


def sign(receipt: Receipt, key: pki.PrivateKey, certificate: x509.Certificate) -> bytes:
    """The signed receipt; the tree is signed as built, without serialising and parsing it first."""
    return signing.sign_tree(_tree(receipt), key, certificate, policy=POLICY)


@cache
def schema() -> etree.XMLSchema:
    text = resources.files("schemas").joinpath("receipt.xsd").read_bytes()
    return etree.XMLSchema(etree.fromstring(text, xmlguard.parser()))


def read(root: etree._Element) -> Receipt:
    """A receipt from a (verified) tree; the schema is checked first."""
    checker = schema()
    if not checker.validate(root):
        first = next(iter(checker.error_log))  # type: ignore[call-overload]
        raise PackageRefused("edxml.schema_invalid", f"receipt line {first.line}: {first.message}")

    def text(name: str) -> str | None:
        element = root.find(q(name))
        return None if element is None else (element.text or "")

    return Receipt(
        kind=text("Kind") or "",
        message_id=text("MessageId") or "",
        package_kind=text("PackageKind") or "",
        document_id=text("DocumentId") or "",
        package_sha256=text("PackageSHA256") or "",
        sender=text("Sender") or "",
        recipients=tuple(e.text or "" for e in root.findall(q("Recipient"))),
        time=text("Time") or "",
        acknowledgement_sha256=text("AcknowledgementSHA256"),
        reason=text("Reason"),
    )


@dataclass(frozen=True)
class VerifiedReceipt:
    receipt: Receipt
    signature: signing.Verified


def verify(data: bytes, trust: pki.Trust, axis_fingerprints: frozenset[str] | None = None) -> VerifiedReceipt:
    """Verify a receipt at the time it states, and (when given) that the axis key signed it.

    The time is read before verification only to choose the moment the certificate is checked at;
    the value returned is read again from the signed content, and both must agree.
    """
    claimed = xmlguard.parse(data, POLICY.limits).find(q("Time"))
    try:
        at = datetime.fromisoformat((claimed.text or "") if claimed is not None else "")
    except ValueError:
        raise PackageRefused("edxml.invalid_field", "the receipt has no valid <Time>") from None
    verified = signing.verify(data, trust, at, POLICY)
    receipt = read(verified.signed_xml)
    if receipt.time != claimed.text:  # type: ignore[union-attr]
        raise PackageRefused("edxml.invalid_field", "the receipt's signed <Time> differs from the one read")
    if axis_fingerprints is not None and verified.fingerprint not in axis_fingerprints:
        raise SignatureRefused(
            "signature.not_axis",
            f"the receipt is signed by certificate {verified.fingerprint}, not by the axis",
        )
    return VerifiedReceipt(receipt, verified)
