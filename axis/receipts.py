"""The axis's signed receipts: ``accepted``, ``delivered``, ``failed`` (schemas/receipt.xsd).

A receipt is evidence a sender can show a third party with nothing else but the axis
certificate: it names the message, the DocumentId, the SHA-256 of the package bytes exactly as
received, the sender, the recipients (all of them for ``accepted``, the one concerned for
``delivered`` and ``failed``), the time, and for ``delivered`` the SHA-256 of what the recipient
answered. It is signed by the axis key under the same strict policy as packages, with the
signature as the last child of ``<Receipt>``. Pure: bytes in, values out.
"""

from __future__ import annotations

import re
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


Signed = tuple[bytes, str]
"""A receipt signed already (its XML), and its time."""


def build(receipt: Receipt) -> bytes:
    """The unsigned receipt XML, children in schema order."""
    return b"<?xml version='1.0' encoding='UTF-8'?>\n" + _canonical(receipt)


def _canonical(receipt: Receipt) -> bytes:
    """The receipt in exclusive canonical XML, written directly: one namespace, no attributes but
    ``version``, text escaped as c14n does. Refuses text XML cannot carry, as lxml would."""
    if receipt.kind not in KINDS:
        raise ValueError(f"unknown receipt kind {receipt.kind!r}")
    fields = [
        ("Kind", receipt.kind),
        ("MessageId", receipt.message_id),
        ("PackageKind", receipt.package_kind),
        ("DocumentId", receipt.document_id),
        ("PackageSHA256", receipt.package_sha256),
        ("Sender", receipt.sender),
        *(("Recipient", recipient) for recipient in receipt.recipients),
        ("Time", receipt.time),
    ]
    if receipt.acknowledgement_sha256 is not None:
        fields.append(("AcknowledgementSHA256", receipt.acknowledgement_sha256))
    if receipt.reason is not None:  # free text (a recipient's, a push endpoint's)
        fields.append(("Reason", xml_text(receipt.reason[:1000])))
    body = "".join(f"<{name}>{_text(value)}</{name}>" for name, value in fields)
    return f'<Receipt xmlns="{NS}" version="1">{body}</Receipt>'.encode()


_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(text: str) -> str:
    """Free text (a reason given by a recipient or a push endpoint) with every character XML cannot
    carry, lone surrogates included, replaced by U+FFFD: it goes into signed receipts and the store."""
    return _NOT_XML.sub("\ufffd", text)


_C14N_TEXT = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#xD;"})


def _text(value: str) -> str:
    if not (value.isascii() and value.isprintable()) and _NOT_XML.search(value):
        raise ValueError("All strings must be XML compatible: Unicode or ASCII, no NULL bytes or control characters")
    return value.translate(_C14N_TEXT)


def sign(receipt: Receipt, key: pki.PrivateKey, certificate: x509.Certificate) -> bytes:
    """The signed receipt, signed over the canonical form it is written in (nothing is parsed)."""
    return signing.sign_canonical(_canonical(receipt), key, certificate, policy=POLICY)


@cache
def schema() -> etree.XMLSchema:
    text = resources.files("schemas").joinpath("receipt.xsd").read_bytes()
    return xmlguard.compile_schema(etree.fromstring(text, xmlguard.parser()))


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
