"""XML signatures under the axis's strict policy; the only module that signs or verifies XML.

``sign`` places one enveloped ``ds:Signature`` at the policy's location (for edXML:
``edXML/edXMLEnvelope/edXMLHeader``) covering the whole document. ``verify`` accepts exactly
that shape and nothing else, in this order, each fault with its own refusal code:

1. the bytes pass the structural pre-check and the hardened parser (``xml.*``);
2. there is exactly one signature, in the XMLDSig namespace, at the policy's location;
3. SignedInfo is exactly: exclusive c14n, RSA-SHA256 or ECDSA-SHA256, one Reference with
   ``URI=""`` and no Type, transforms enveloped-signature then exclusive c14n, SHA-256 digest;
4. KeyInfo holds X509Data with certificates only (a KeyValue, if present, must be the
   certificate's key); the key is RSA of at least 2048 bits or EC P-256;
5. the certificate chains to a trust anchor, may sign, is valid and not revoked at ``at``;
6. the SignatureValue and then the digest verify.

Signing and verifying are done here directly with lxml's exclusive c14n and ``cryptography``
(the policy allows one shape only, so nothing general is needed); the signature element is also
validated against the XMLDSig schema that signxml ships. Interoperability with other
implementations is tested against xmlsec1 and signxml (tests/test_interop_xmlsec.py).

Security: callers must read only ``Verified.signed_xml`` afterwards. It is the canonical form of
what the signature covers, re-parsed, so comments and unsigned nodes are gone. Its elements carry
the line numbers of the original bytes, so that a fault found in it is reported where the sender
can see it. The original bytes are what the axis stores and forwards; they are never
re-serialised or "repaired".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from lxml import etree

from axis import pki, xmlguard
from axis.edxml import NS as EDXML_NS
from axis.errors import CertificateRefused, SignatureRefused

DS = "http://www.w3.org/2000/09/xmldsig#"
DSIG11 = "http://www.w3.org/2009/xmldsig11#"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"


def ds(name: str) -> str:
    return f"{{{DS}}}{name}"


@dataclass(frozen=True)
class SignaturePolicy:
    """What a signature must look like; the defaults are DESIGN.md's policy for edXML packages."""

    location: tuple[str, ...] = (
        f"{{{EDXML_NS}}}edXML",
        f"{{{EDXML_NS}}}edXMLEnvelope",
        f"{{{EDXML_NS}}}edXMLHeader",
    )
    """Clark names from the root down to the signature's parent; the signature must be exactly there."""
    signature_methods: frozenset[str] = frozenset({RSA_SHA256, ECDSA_SHA256})
    """Accepted SignatureMethod algorithms. SHA-1, MD5, HMAC and DSA are never accepted."""
    min_rsa_bits: int = 2048
    """Smallest RSA modulus accepted."""
    limits: xmlguard.XMLLimits = field(default_factory=xmlguard.XMLLimits)
    """Structural limits of the pre-check that runs before anything is parsed."""


EDXML_POLICY = SignaturePolicy()
# The one canonicalisation, transform chain and digest the policy allows; not configurable.
TRANSFORMS = (ENVELOPED, EXC_C14N)
ALGORITHM_NAMES = {
    RSA_SHA256: "RSA-SHA256",
    ECDSA_SHA256: "ECDSA-SHA256",
    SHA256: "SHA-256",
    EXC_C14N: "exclusive c14n",
}


@dataclass(frozen=True)
class Verified:
    """What a valid signature proves. Read the package from ``signed_xml`` only."""

    signed_xml: etree._Element
    """The signed content: the canonical document without its signature, re-parsed. Each element's
    ``sourceline`` is its line in the original bytes (up to ``MAX_ELEMENT_LINE``)."""
    certificate: x509.Certificate
    """The signer's certificate."""
    chain: tuple[x509.Certificate, ...]
    """Signer first, trust anchor last."""
    fingerprint: str
    """SHA-256 of the signer's certificate (how the registry binds it to an agency)."""
    organ_id: str | None
    """OrganId written in the certificate subject, if any (informative; trust binds by fingerprint)."""
    signature_method: str
    digest_method: str
    canonicalization: str
    checked_at: datetime
    """The time the certificate was checked at."""
    digest: str = ""
    """Hex of the verified DigestValue: SHA-256 of the canonical signed content, unchanged by comments,
    quoting or whitespace between attributes (the identity of *what* was signed)."""
    sha256: str = ""
    """Hex SHA-256 of the bytes exactly as received: the package's identity in the store and receipts."""
    size: int = 0
    """Their length."""


# ---------------------------------------------------------------- signing


def _signature_parent(root: etree._Element, policy: SignaturePolicy) -> etree._Element:
    if root.tag != policy.location[0]:
        raise SignatureRefused(
            "signature.wrong_location",
            f"cannot sign: the root element is {root.tag}, expected {policy.location[0]}",
        )
    parent = root
    for name in policy.location[1:]:
        found = parent.find(name)
        if found is None:
            raise SignatureRefused(
                "signature.wrong_location", f"cannot sign: {name} is missing under {parent.tag}"
            )
        parent = found
    return parent


def _signature_like(root: etree._Element) -> list[etree._Element]:
    return list(root.iter("{*}Signature"))  # any namespace or none, matched inside libxml2


def sign(
    data: bytes,
    key: pki.PrivateKey,
    certificate: x509.Certificate,
    intermediates: tuple[x509.Certificate, ...] = (),
    *,
    replace: bool = False,
    policy: SignaturePolicy = EDXML_POLICY,
) -> bytes:
    """Sign ``data`` (an unsigned document) and return the signed bytes.

    A document that already carries a ``Signature`` element (an XMLDSig one, or a legacy
    placeholder in another namespace) is refused unless ``replace`` is set, which removes them.
    This signs any document the policy can place a signature in; ``verification.sign_package``
    also refuses an edXML package the axis would refuse.
    """
    root = unsigned_tree(data, replace=replace, policy=policy)
    return sign_tree(root, key, certificate, intermediates, policy=policy)


def unsigned_tree(
    data: bytes, *, replace: bool = False, policy: SignaturePolicy = EDXML_POLICY
) -> etree._Element:
    """Parse a document to be signed, without any ``Signature`` element in it (see ``sign``)."""
    root = xmlguard.parse(data, policy.limits)
    existing = _signature_like(root)
    if existing and not replace:
        raise SignatureRefused(
            "signature.already_signed",
            "the document already has a <Signature>; remove it first (axis sign --replace) to sign it again",
        )
    for element in existing:
        _remove_keeping_tail(element)
    return root


def sign_tree(
    root: etree._Element,
    key: pki.PrivateKey,
    certificate: x509.Certificate,
    intermediates: tuple[x509.Certificate, ...] = (),
    *,
    policy: SignaturePolicy = EDXML_POLICY,
) -> bytes:
    """Sign a tree (no ``Signature`` in it) and return the signed bytes; ``root`` gains the signature
    where the policy places it. The digest is taken over the exclusive canonical form of the
    document before the signature is added: what the enveloped-signature transform gives back."""
    if not _belongs(key, certificate):
        raise SignatureRefused("signature.key_mismatch", "the private key does not belong to the certificate")
    parent = _signature_parent(root, policy)
    signature = _signature(_c14n(root), key, (certificate, *intermediates))
    parent.append(etree.fromstring(signature, xmlguard.parser()))
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def sign_canonical(
    document: bytes, key: pki.PrivateKey, certificate: x509.Certificate, *, policy: SignaturePolicy
) -> bytes:
    """Sign a document the caller wrote in exclusive canonical form itself, for a policy that puts
    the signature last in the root (receipts): nothing is parsed or canonicalised again. The caller
    answers for ``document`` being canonical; a verifier would otherwise refuse the digest."""
    if len(policy.location) != 1:
        raise ValueError("sign_canonical places the signature in the root element only")
    if not _belongs(key, certificate):
        raise SignatureRefused("signature.key_mismatch", "the private key does not belong to the certificate")
    close = document.rindex(b"</")
    signature = _signature(document, key, (certificate,))
    return b"<?xml version='1.0' encoding='UTF-8'?>\n" + document[:close] + signature + document[close:]


SIGNED_INFO = (
    "<ds:SignedInfo{declaration}>"
    f'<ds:CanonicalizationMethod Algorithm="{EXC_C14N}"></ds:CanonicalizationMethod>'
    '<ds:SignatureMethod Algorithm="{method}"></ds:SignatureMethod>'
    '<ds:Reference URI=""><ds:Transforms>'
    + "".join(f'<ds:Transform Algorithm="{t}"></ds:Transform>' for t in TRANSFORMS)
    + f'</ds:Transforms><ds:DigestMethod Algorithm="{SHA256}"></ds:DigestMethod>'
    "<ds:DigestValue>{digest}</ds:DigestValue></ds:Reference></ds:SignedInfo>"
)
"""The one SignedInfo the policy allows, written in its exclusive canonical form (with
``declaration`` the ``xmlns:ds`` that canonicalisation puts on it)."""


def _signature(signed: bytes, key: pki.PrivateKey, certificates: tuple[x509.Certificate, ...]) -> bytes:
    """The ``ds:Signature`` element over ``signed`` (the exclusive c14n of the document without it).
    SignedInfo is written directly in canonical form, so it is signed without being canonicalised."""
    fields = {
        "method": RSA_SHA256 if isinstance(key, rsa.RSAPrivateKey) else ECDSA_SHA256,
        "digest": base64.b64encode(hashlib.sha256(signed).digest()).decode(),
    }
    value = _signature_value(key, SIGNED_INFO.format(declaration=f' xmlns:ds="{DS}"', **fields).encode())
    x509_data = "".join(f"<ds:X509Certificate>{_certificate_text(c)}</ds:X509Certificate>" for c in certificates)
    return (
        f'<ds:Signature xmlns:ds="{DS}">{SIGNED_INFO.format(declaration="", **fields)}'
        f"<ds:SignatureValue>{base64.b64encode(value).decode()}</ds:SignatureValue>"
        f"<ds:KeyInfo><ds:X509Data>{x509_data}</ds:X509Data></ds:KeyInfo></ds:Signature>"
    ).encode()


@lru_cache(maxsize=16)
def _belongs(key: pki.PrivateKey, certificate: x509.Certificate) -> bool:
    """The key is the certificate's (remembered: the axis signs every receipt with the same pair)."""
    return _spki(key.public_key()) == _spki(certificate.public_key())


@lru_cache(maxsize=64)
def _certificate_text(certificate: x509.Certificate) -> str:
    return base64.b64encode(certificate.public_bytes(Encoding.DER)).decode()


def _c14n(node: etree._Element | etree._ElementTree) -> bytes:
    """Exclusive c14n 1.0 without comments: the one canonical form the policy allows. libxml2 will not
    canonicalise some documents (a relative namespace URI): those cannot be signed, nor verified."""
    try:
        return bytes(etree.tostring(node, method="c14n", exclusive=True, with_comments=False))
    except etree.C14NError as error:
        raise SignatureRefused("signature.malformed", f"the XML has no canonical form: {error}") from None


def _signature_value(key: pki.PrivateKey, signed_info: bytes) -> bytes:
    """RSA PKCS#1 v1.5 or ECDSA over SHA-256; an ECDSA value is r || s (XMLDSig), not DER."""
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(signed_info, padding.PKCS1v15(), hashes.SHA256())
    r, s = decode_dss_signature(key.sign(signed_info, ec.ECDSA(hashes.SHA256())))
    size = (key.curve.key_size + 7) // 8
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def _spki(public: CertificatePublicKeyTypes) -> bytes:
    return public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _remove_keeping_tail(element: etree._Element) -> None:
    parent = element.getparent()
    if parent is None:
        return
    if element.tail:
        previous = element.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + element.tail
        else:
            parent.text = (parent.text or "") + element.tail
    parent.remove(element)


# ---------------------------------------------------------------- verification


def _path(element: etree._Element) -> str:
    names = []
    node: etree._Element | None = element
    while node is not None:
        names.append(etree.QName(node).localname)
        node = node.getparent()
    return "/" + "/".join(reversed(names))


def _locate(root: etree._Element, policy: SignaturePolicy) -> etree._Element:
    candidates = _signature_like(root)
    signatures = [e for e in candidates if e.tag == ds("Signature")]
    if not signatures:
        if candidates:
            namespace = etree.QName(candidates[0]).namespace or "no namespace"
            raise SignatureRefused(
                "signature.wrong_namespace",
                f"the <Signature> at {_path(candidates[0])} is in {namespace}, not the XMLDSig namespace {DS}: "
                "it is a placeholder, not an XML signature; sign the package with a real XMLDSig signature",
            )
        raise SignatureRefused(
            "signature.missing", "the package is not signed: it has no ds:Signature element"
        )
    if len(candidates) > 1:
        where = ", ".join(_path(e) for e in candidates)
        raise SignatureRefused(
            "signature.multiple", f"exactly one Signature is allowed, found {len(candidates)}: {where}"
        )
    signature = signatures[0]
    expected = [etree.QName(n).localname for n in policy.location]
    ancestors: list[etree._Element] = list(signature.iterancestors())
    if [a.tag for a in reversed(ancestors)] != list(policy.location):
        raise SignatureRefused(
            "signature.wrong_location",
            f"the signature is at {_path(signature)}; it must be at /{'/'.join(expected)}/Signature",
        )
    return signature


def _ds_name(element: etree._Element) -> str:
    """Local name for XMLDSig elements, the full Clark name for anything else."""
    qname = etree.QName(element)
    return qname.localname if qname.namespace == DS else element.tag


def _children(element: etree._Element) -> list[etree._Element]:
    """Element children; comments are allowed between them (they are not signed and not read)."""
    return [c for c in element if isinstance(c.tag, str)]


def _expect_children(
    element: etree._Element, names: list[str], code: str = "signature.unexpected_element"
) -> list[etree._Element]:
    children = _children(element)
    found = [_ds_name(c) for c in children]
    if found != names:
        raise SignatureRefused(
            code,
            f"<{etree.QName(element).localname}> must contain exactly {', '.join(names)}; found {', '.join(found) or 'nothing'}",
        )
    return children


def _base64(element: etree._Element, name: str) -> bytes:
    try:
        value = xmlguard.base64_binary(element.text)
    except ValueError:
        value = b""
    if not value:
        raise SignatureRefused("signature.malformed", f"{name} must hold non-empty base64")
    return value


def _check_no_stray_text(signature: etree._Element) -> None:
    """Container elements of the signature hold elements only; text there is unsigned noise."""
    for node in signature.iter():
        parent = node.getparent()
        if node is not signature and parent is not None and (node.tail or "").strip():
            where = etree.QName(parent).localname
        elif (
            isinstance(node.tag, str)
            and any(isinstance(c.tag, str) for c in node)
            and (node.text or "").strip()
        ):
            where = etree.QName(node).localname
        else:
            continue
        raise SignatureRefused(
            "signature.unexpected_element", f"stray text inside the signature, in <{where}>"
        )


def _algorithm(element: etree._Element) -> str:
    return element.get("Algorithm") or ""


def _check_signed_info(signature: etree._Element, policy: SignaturePolicy) -> tuple[str, str]:
    if set(signature.attrib) - {"Id"}:
        raise SignatureRefused("signature.unexpected_element", "ds:Signature may carry only an Id attribute")
    if [_ds_name(c) for c in _children(signature)] == ["SignedInfo", "SignatureValue"]:
        raise SignatureRefused(
            "signature.certificate_missing",
            "the signature has no KeyInfo: the signer's X.509 certificate is required",
        )
    signed_info, value, _key_info = _expect_children(signature, ["SignedInfo", "SignatureValue", "KeyInfo"])
    _check_no_stray_text(signature)
    _base64(value, "SignatureValue")
    parts = _children(signed_info)
    if len(parts) < 2 or [_ds_name(p) for p in parts[:2]] != [
        "CanonicalizationMethod",
        "SignatureMethod",
    ]:
        raise SignatureRefused(
            "signature.unexpected_element",
            "SignedInfo must start with CanonicalizationMethod and SignatureMethod",
        )
    c14n, method, references = parts[0], parts[1], parts[2:]
    if _algorithm(c14n) != EXC_C14N or _children(c14n):
        raise SignatureRefused(
            "signature.c14n_forbidden",
            f"CanonicalizationMethod {_algorithm(c14n)!r} is not accepted; use exclusive c14n ({EXC_C14N}) "
            "without parameters",
        )
    if _algorithm(method) not in policy.signature_methods or _children(method):
        raise SignatureRefused(
            "signature.algorithm_forbidden",
            f"SignatureMethod {_algorithm(method)!r} is not accepted; use RSA-SHA256 ({RSA_SHA256}) "
            f"or ECDSA-SHA256 ({ECDSA_SHA256})",
        )
    if len(references) != 1 or any(r.tag != ds("Reference") for r in references):
        raise SignatureRefused(
            "signature.reference_count",
            f"SignedInfo must hold exactly one Reference, covering the whole document; found {len(references)} elements",
        )
    reference = references[0]
    if reference.get("URI") != "" or set(reference.attrib) != {"URI"}:
        shown = {str(k): str(v) for k, v in reference.attrib.items()}
        raise SignatureRefused(
            "signature.reference_uri",
            f'the Reference must be URI="" (the whole document) with no Type or Id; found {shown}',
        )
    transforms, digest_method, digest = _expect_children(
        reference, ["Transforms", "DigestMethod", "DigestValue"]
    )
    chain = _children(transforms)
    algorithms = tuple(_algorithm(t) for t in chain)
    if algorithms != TRANSFORMS or any(t.tag != ds("Transform") or _children(t) for t in chain):
        raise SignatureRefused(
            "signature.transform_forbidden",
            f"the transforms must be exactly enveloped-signature then exclusive c14n; found {list(algorithms)}",
        )
    if _algorithm(digest_method) != SHA256 or _children(digest_method):
        raise SignatureRefused(
            "signature.digest_algorithm_forbidden",
            f"DigestMethod {_algorithm(digest_method)!r} is not accepted; use SHA-256 ({SHA256})",
        )
    if len(_base64(digest, "DigestValue")) != 32:
        raise SignatureRefused("signature.malformed", "DigestValue must be the 32 bytes of a SHA-256 digest")
    return _algorithm(method), _algorithm(digest_method)


def _certificates(
    signature: etree._Element,
) -> tuple[x509.Certificate, list[x509.Certificate], etree._Element | None]:
    key_info = signature.find(ds("KeyInfo"))
    assert key_info is not None
    x509_data = [c for c in _children(key_info) if c.tag == ds("X509Data")]
    key_values = [c for c in _children(key_info) if c.tag == ds("KeyValue")]
    others = [c for c in _children(key_info) if c.tag not in (ds("X509Data"), ds("KeyValue"))]
    if others:
        raise SignatureRefused(
            "signature.key_info_forbidden",
            f"KeyInfo may hold only X509Data (and a matching KeyValue); found {etree.QName(others[0]).localname}",
        )
    if not x509_data:
        raise SignatureRefused(
            "signature.certificate_missing",
            "KeyInfo has no X509Data: a bare KeyValue is not accepted, the signer's X.509 certificate is required",
        )
    if len(x509_data) > 1 or len(key_values) > 1:
        raise SignatureRefused(
            "signature.key_info_forbidden", "KeyInfo may hold one X509Data and at most one KeyValue"
        )
    encoded = _children(x509_data[0])
    if not encoded or any(c.tag != ds("X509Certificate") for c in encoded):
        raise SignatureRefused(
            "signature.key_info_forbidden", "X509Data must hold X509Certificate elements only, signer first"
        )
    certificates = [_certificate(element) for element in encoded]
    return certificates[0], certificates[1:], key_values[0] if key_values else None


LOADED_MAX = 256
"""Certificates remembered by ``_certificate`` (per process) before the memory is emptied."""
_loaded: dict[str, x509.Certificate] = {}


def _certificate(element: etree._Element) -> x509.Certificate:
    """Load one X509Certificate and parse every part the policy reads, so a malformed one is refused
    here. Agencies sign with the same few certificates: one loaded before is reused (by its text)."""
    text = element.text or ""
    known = _loaded.get(text)
    if known is not None:
        return known
    certificate = _load_certificate(text)
    if len(_loaded) >= LOADED_MAX:
        _loaded.clear()
    _loaded[text] = certificate
    return certificate


def _load_certificate(text: str) -> x509.Certificate:
    try:
        certificate = x509.load_der_x509_certificate(xmlguard.base64_binary(text))
        certificate.public_key()
        _ = (
            certificate.extensions,
            certificate.subject,
            certificate.issuer,
            certificate.signature_hash_algorithm,
        )
    except (
        ValueError,
        TypeError,
        UnsupportedAlgorithm,
        x509.DuplicateExtension,
        x509.UnsupportedGeneralNameType,
    ):
        raise CertificateRefused(
            "certificate.malformed",
            "an X509Certificate in the signature is not a well-formed DER certificate",
        ) from None
    return certificate


def _check_key(certificate: x509.Certificate, method: str, policy: SignaturePolicy) -> None:
    public = certificate.public_key()
    if method == RSA_SHA256:
        if not isinstance(public, rsa.RSAPublicKey):
            raise SignatureRefused(
                "signature.key_mismatch", "SignatureMethod is RSA-SHA256 but the certificate key is not RSA"
            )
        if public.key_size < policy.min_rsa_bits:
            raise SignatureRefused(
                "signature.key_too_weak",
                f"the RSA key has {public.key_size} bits; at least {policy.min_rsa_bits} are required",
            )
    elif method == ECDSA_SHA256:
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise SignatureRefused(
                "signature.key_mismatch", "SignatureMethod is ECDSA-SHA256 but the certificate key is not EC"
            )
        if not isinstance(public.curve, ec.SECP256R1):
            raise SignatureRefused(
                "signature.key_too_weak", f"the EC key is on {public.curve.name}; only P-256 is accepted"
            )


def _b64_int(element: etree._Element | None) -> int | None:
    if element is None:
        return None
    try:
        return int.from_bytes(xmlguard.base64_binary(element.text), "big")
    except ValueError:
        return None


def _check_key_value(key_value: etree._Element | None, certificate: x509.Certificate) -> None:
    """A KeyValue next to X509Data is tolerated only when it is exactly the certificate's key."""
    if key_value is None:
        return
    public = certificate.public_key()
    matches = False
    rsa_value = key_value.find(ds("RSAKeyValue"))
    ec_value = key_value.find(f"{{{DSIG11}}}ECKeyValue")
    if rsa_value is not None and isinstance(public, rsa.RSAPublicKey):
        numbers = public.public_numbers()
        matches = (_b64_int(rsa_value.find(ds("Modulus"))), _b64_int(rsa_value.find(ds("Exponent")))) == (
            numbers.n,
            numbers.e,
        )
    elif ec_value is not None and isinstance(public, ec.EllipticCurvePublicKey):
        point = _b64_int(ec_value.find(f"{{{DSIG11}}}PublicKey"))
        point_numbers = public.public_numbers()
        size = (public.curve.key_size + 7) // 8
        expected = int.from_bytes(
            b"\x04" + point_numbers.x.to_bytes(size, "big") + point_numbers.y.to_bytes(size, "big"), "big"
        )
        matches = point == expected
    if not matches:
        raise SignatureRefused(
            "signature.key_value_mismatch", "the KeyValue in KeyInfo is not the key of the X.509 certificate"
        )


UNSIGNED_AT_A_GLANCE = 4 * 1024 * 1024
"""Packages above this size are looked at as bytes before the pre-check and the parse: one that
never names the XMLDSig namespace cannot hold a ds:Signature, and one that names none of the
accepted signature methods, or holds no X509Certificate, cannot hold an acceptable one; a heavy
package (nine megabytes of elements dense with attributes) costs a worker a second to find out
otherwise. Smaller ones go the whole way, so that a malformed file is refused with libxml2's
own account of its fault, and every refusal names the first fault in document order."""
_SIGNATURE_TAG = re.compile(rb"<(?:[^\s<>:/!?]+:)?Signature[\s/>]")


def _refuse_at_a_glance(data: bytes, policy: SignaturePolicy) -> None:
    if len(data) <= UNSIGNED_AT_A_GLANCE or b"<!DOCTYPE" in data:
        return  # a DTD is refused by the pre-check with its own code
    if DS.encode() in data:
        if not any(method.encode() in data for method in policy.signature_methods):
            raise SignatureRefused(
                "signature.algorithm_forbidden",
                f"the package names no accepted SignatureMethod; use RSA-SHA256 ({RSA_SHA256}) or ECDSA-SHA256"
                f" ({ECDSA_SHA256})",
            )
        if b"X509Certificate" not in data:
            raise SignatureRefused(
                "signature.certificate_missing", "the signature carries no X509Data/X509Certificate: add the signer's certificate"
            )
        return
    if _SIGNATURE_TAG.search(data):
        raise SignatureRefused(
            "signature.wrong_namespace",
            f"the package's <Signature> is not in the XMLDSig namespace {DS}: it is a placeholder, not an XML"
            " signature; sign the package with a real XMLDSig signature",
        )
    raise SignatureRefused("signature.missing", "the package is not signed: it has no ds:Signature element")


def verify(source: bytes | Path, trust: pki.Trust, at: datetime, policy: SignaturePolicy = EDXML_POLICY) -> Verified:
    """Verify ``source`` (the bytes, or a file holding them) under ``policy`` with certificates
    checked at ``at``; raise a refusal otherwise.

    ``at`` is the acceptance time: now for a new submission, the recorded acceptance time when an
    archived package is re-verified years later. A file's bytes are let go before the tree is built,
    and the first tree before the canonical form is parsed again: at most one tree and one copy of
    the bytes are held at once, beside libxml2's own canonicalisation buffers.
    """
    if at.tzinfo is None:
        raise ValueError("verify() needs a timezone-aware time")
    received = hashlib.sha256()
    size = 0

    def seen(data: bytes) -> None:
        nonlocal size
        _refuse_at_a_glance(data, policy)
        received.update(data)
        size = len(data)

    root = xmlguard.parse(source, policy.limits, seen=seen)
    signature = _locate(root, policy)
    method, digest_method = _check_signed_info(signature, policy)
    certificate, intermediates, key_value = _certificates(signature)
    _check_key(certificate, method, policy)
    _check_key_value(key_value, certificate)
    chain = pki.validate(certificate, intermediates, trust, at)
    on_chain = {pki.fingerprint(c) for c in chain} if intermediates else set()
    if any(pki.fingerprint(c) not in on_chain for c in intermediates):
        raise SignatureRefused(
            "signature.key_info_forbidden",
            "X509Data holds a certificate that is not on the signer's chain; send the signer's chain only",
        )
    try:
        _xmldsig_schema().assertValid(signature)
    except etree.DocumentInvalid as error:
        raise SignatureRefused("signature.malformed", f"the signature does not follow the XMLDSig schema: {error}") from None
    signed_info = signature.find(ds("SignedInfo"))
    assert signed_info is not None
    digest_value = _base64(signed_info.find(f"{ds('Reference')}/{ds('DigestValue')}"), "DigestValue")  # type: ignore[arg-type]
    _check_value(certificate, method, _base64(signature.find(ds("SignatureValue")), "SignatureValue"), _c14n(signed_info))  # type: ignore[arg-type]
    # The one Reference (URI="") through its one transform chain: the document without the
    # signature element (enveloped-signature), in exclusive c14n without comments.
    _remove_keeping_tail(signature)
    lines: list[int | None] = [element.sourceline for element in root.iter(etree.Element)]  # type: ignore[misc]
    signed = _c14n(root)
    del root, signature, signed_info  # the tree is no longer read: free it before the re-parse
    if not hmac.compare_digest(hashlib.sha256(signed).digest(), digest_value):
        raise SignatureRefused(
            "signature.digest_mismatch",
            "the document was changed after it was signed: its SHA-256 digest does not match the signed DigestValue",
        )
    try:
        signed_xml = etree.fromstring(signed, xmlguard.parser())
    except etree.XMLSyntaxError as error:  # cannot happen for c14n output; refused all the same
        raise SignatureRefused("signature.malformed", f"the signed content cannot be read: {error}") from None
    del signed
    _restore_lines(signed_xml, lines)
    return Verified(
        signed_xml=signed_xml,
        certificate=certificate,
        chain=tuple(chain),
        fingerprint=pki.fingerprint(certificate),
        organ_id=pki.organ_id_of(certificate),
        signature_method=method,
        digest_method=digest_method,
        canonicalization=EXC_C14N,
        checked_at=at,
        digest=digest_value.hex(),
        sha256=received.hexdigest(),
        size=size,
    )


MAX_ELEMENT_LINE = 65_535
"""libxml2 keeps an element's line in 16 bits: past this line an element keeps its canonical line."""


def _restore_lines(signed_xml: etree._Element, lines: list[int | None]) -> None:
    """Give each element of the canonical form its line in the original bytes, which canonicalisation
    shifts (the XML declaration, comments, the signature and line breaks inside tags are gone).
    Schema faults and the reader's refusals then name the line the sender sees in its file. The
    two trees hold the same elements in the same order: the digest just proved it."""
    for element, line in zip(signed_xml.iter(etree.Element), lines, strict=True):
        if line is not None and line <= MAX_ELEMENT_LINE:
            element.sourceline = line  # type: ignore[assignment]  # lxml-stubs type sourceline as "..."


@cache
def _xmldsig_schema() -> etree.XMLSchema:
    """The XMLDSig 1.1 schema (shipped with signxml): every attribute and value type the policy
    checks do not name is still checked."""
    with resources.as_file(resources.files("signxml.schemas").joinpath("xmldsig1-schema.xsd")) as path:
        return xmlguard.compile_schema(etree.parse(str(path)))


def _check_value(certificate: x509.Certificate, method: str, value: bytes, signed_info: bytes) -> None:
    """The SignatureValue over the canonical SignedInfo, with the certificate's key (already checked
    to match ``method``). An ECDSA value is r || s (XMLDSig), not DER."""
    public = certificate.public_key()
    try:
        if isinstance(public, rsa.RSAPublicKey):
            public.verify(value, signed_info, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(public, ec.EllipticCurvePublicKey):
            size = (public.curve.key_size + 7) // 8
            if len(value) != 2 * size:
                raise InvalidSignature
            r, s = int.from_bytes(value[:size], "big"), int.from_bytes(value[size:], "big")
            public.verify(encode_dss_signature(r, s), signed_info, ec.ECDSA(hashes.SHA256()))
        else:
            raise InvalidSignature
    except InvalidSignature:
        raise SignatureRefused(
            "signature.invalid",
            "the SignatureValue does not verify with the certificate's key: SignedInfo or the value was altered, "
            "or a different key signed it",
        ) from None
