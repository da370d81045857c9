"""Every attack of the foundation issue, refused with its own code, reading no file and no network.

Each case starts from a genuinely signed package (or a genuinely signed attack, where the attack
needs a real signature) and checks the exact refusal code. A baseline case proves the unmodified
package, put through the same serialisation, verifies: a refusal is caused by the attack alone.
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from lxml import etree
from signxml import DigestAlgorithm, SignatureMethod, XMLSigner
from signxml.algorithms import CanonicalizationMethod

from axis import edxml, keystore, pki, signing
from axis.errors import AxisError
from axis.verification import verify_package
from tests.conftest import PKI, Agency

DS = signing.DS
NS = edxml.NS


def ds(name: str) -> str:
    return f"{{{DS}}}{name}"


def ed(name: str) -> str:
    return f"{{{NS}}}{name}"


def tree(data: bytes) -> etree._Element:
    return etree.fromstring(data, etree.XMLParser(remove_blank_text=False))


def serialise(root: etree._Element) -> bytes:
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def mutate(data: bytes, change: Callable[[etree._Element], None]) -> bytes:
    root = tree(data)
    change(root)
    return serialise(root)


def signature_of(root: etree._Element) -> etree._Element:
    found = root.find(f".//{ds('Signature')}")
    assert found is not None
    return found


@dataclass
class Context:
    pki: PKI
    agency: Agency
    signed: bytes
    document: edxml.DocumentPackage

    def sign_with(self, issued: pki.Issued, data: bytes | None = None) -> bytes:
        return signing.sign(data or edxml.build(self.document), issued.key, issued.certificate)


# ---------------------------------------------------------------- attack builders


def tamper_header(c: Context) -> bytes:
    return mutate(c.signed, lambda r: setattr(r.find(f".//{ed('Subject')}"), "text", "V/v hủy bỏ kết nối"))


def tamper_attachment(c: Context) -> bytes:
    def change(root: etree._Element) -> None:
        payload = root.find(f".//{ed('ContentTransferEncoded')}")
        data = bytearray(base64.b64decode(payload.text))
        data[10] ^= 0x01
        payload.text = base64.b64encode(bytes(data)).decode()

    return mutate(c.signed, change)


def tamper_digest_value(c: Context) -> bytes:
    def change(root: etree._Element) -> None:
        value = root.find(f".//{ds('DigestValue')}")
        value.text = base64.b64encode(b"\x00" * 32).decode()

    return mutate(c.signed, change)


def tamper_signature_value(c: Context) -> bytes:
    def change(root: etree._Element) -> None:
        value = root.find(f".//{ds('SignatureValue')}")
        raw = bytearray(base64.b64decode(value.text))
        raw[-1] ^= 0x01
        value.text = base64.b64encode(bytes(raw)).decode()

    return mutate(c.signed, change)


def wrapped_in_attacker_root(c: Context) -> bytes:
    evil = etree.Element("{urn:attacker}Envelope", nsmap={"a": "urn:attacker"})
    evil.append(tree(c.signed))
    return serialise(evil)


def evil_twin_original_in_object(c: Context) -> bytes:
    """The signed MessageHeader moves into a ds:Object; a forged twin takes its place."""

    def change(root: etree._Element) -> None:
        header = root.find(f".//{ed('MessageHeader')}")
        original = etree.fromstring(etree.tostring(header))
        header.find(f".//{ed('Subject')}").text = "Forged subject"
        obj = etree.SubElement(signature_of(root), ds("Object"))
        obj.append(original)

    return mutate(c.signed, change)


def evil_twin_original_moved_to_body(c: Context) -> bytes:
    """The signed MessageHeader moves into the body; a forged twin takes its place."""

    def change(root: etree._Element) -> None:
        header = root.find(f".//{ed('MessageHeader')}")
        original = etree.fromstring(etree.tostring(header))
        header.find(f".//{ed('Subject')}").text = "Forged subject"
        root.find(f".//{ed('edXMLBody')}").append(original)

    return mutate(c.signed, change)


def partial_signature(c: Context) -> bytes:
    """A real signature whose Reference covers only the MessageHeader (by Id), not the document."""
    root = tree(edxml.build(c.document))
    header = root.find(f".//{ed('MessageHeader')}")
    header.set("Id", "header")
    placeholder = etree.SubElement(
        root.find(f".//{ed('edXMLHeader')}"), ds("Signature"), Id="placeholder", nsmap={"ds": DS}
    )
    assert placeholder is not None
    signer = XMLSigner(
        signature_algorithm=SignatureMethod.RSA_SHA256,
        digest_algorithm=DigestAlgorithm.SHA256,
        c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
    )
    signed = signer.sign(root, key=c.agency.key, cert=[c.agency.certificate], reference_uri="#header")
    return serialise(signed)


def two_references(c: Context) -> bytes:
    def change(root: etree._Element) -> None:
        reference = root.find(f".//{ds('Reference')}")
        reference.addnext(etree.fromstring(etree.tostring(reference)))

    return mutate(c.signed, change)


def second_signature_in_body(c: Context) -> bytes:
    def change(root: etree._Element) -> None:
        root.find(f".//{ed('edXMLBody')}").append(etree.fromstring(etree.tostring(signature_of(root))))

    return mutate(c.signed, change)


def set_attribute(tag: str, name: str, value: str) -> Callable[[Context], bytes]:
    def build(c: Context) -> bytes:
        return mutate(c.signed, lambda r: r.find(f".//{ds(tag)}").set(name, value))

    return build


def reference_to_id(c: Context) -> bytes:
    def change(root: etree._Element) -> None:
        root.find(f".//{ed('MessageHeader')}").set("Id", "h")
        root.find(f".//{ds('Reference')}").set("URI", "#h")

    return mutate(c.signed, change)


def replace_transform(algorithm: str, body: str = "") -> Callable[[Context], bytes]:
    def build(c: Context) -> bytes:
        def change(root: etree._Element) -> None:
            transforms = root.find(f".//{ds('Transforms')}")
            last = transforms[-1]
            last.set("Algorithm", algorithm)
            if body:
                last.append(etree.fromstring(body))

        return mutate(c.signed, change)

    return build


def key_value_only(c: Context) -> bytes:
    def change(root: etree._Element) -> None:
        key_info = root.find(f".//{ds('KeyInfo')}")
        numbers = c.agency.certificate.public_key().public_numbers()
        for child in list(key_info):
            key_info.remove(child)
        key_info.append(_rsa_key_value(numbers.n, numbers.e))

    return mutate(c.signed, change)


def _rsa_key_value(n: int, e: int) -> etree._Element:
    key_value = etree.Element(ds("KeyValue"))
    rsa_value = etree.SubElement(key_value, ds("RSAKeyValue"))
    etree.SubElement(rsa_value, ds("Modulus")).text = base64.b64encode(
        n.to_bytes((n.bit_length() + 7) // 8, "big")
    ).decode()
    etree.SubElement(rsa_value, ds("Exponent")).text = base64.b64encode(e.to_bytes(3, "big")).decode()
    return key_value


def key_value_mismatch(c: Context) -> bytes:
    def change(root: etree._Element) -> None:
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_numbers()
        root.find(f".//{ds('KeyInfo')}").append(_rsa_key_value(other.n, other.e))

    return mutate(c.signed, change)


def self_signed_right_name(c: Context) -> bytes:
    key = pki.new_key()
    name = c.agency.certificate.subject
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(c.pki.now - timedelta(days=1))
        .not_valid_after(c.pki.now + timedelta(days=365))
        .add_extension(
            x509.KeyUsage(True, True, False, False, False, False, False, False, False), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    return c.sign_with(pki.Issued(key, certificate))


def other_ca(c: Context) -> bytes:
    rogue = pki.create_ca(keystore.CA_NAME, c.pki.now)
    return c.sign_with(pki.issue(rogue, "VPCP", c.pki.now, organ_id=c.agency.organ_id))


def expired(c: Context) -> bytes:
    return c.sign_with(
        pki.issue(
            c.pki.ca,
            "VPCP",
            c.pki.now,
            organ_id=c.agency.organ_id,
            not_before=c.pki.now - timedelta(days=10),
            days=5,
        )
    )


def not_yet_valid(c: Context) -> bytes:
    return c.sign_with(
        pki.issue(
            c.pki.ca, "VPCP", c.pki.now, organ_id=c.agency.organ_id, not_before=c.pki.now + timedelta(days=1)
        )
    )


def no_digital_signature(c: Context) -> bytes:
    return c.sign_with(
        pki.issue(c.pki.ca, "VPCP", c.pki.now, organ_id=c.agency.organ_id, digital_signature=False)
    )


def weak_rsa(c: Context) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return c.sign_with(pki.issue(c.pki.ca, "VPCP", c.pki.now, organ_id=c.agency.organ_id, key=key))


def comment_in_organ_id(c: Context) -> bytes:
    organ_id = c.agency.organ_id.encode()
    return c.signed.replace(
        b">" + organ_id + b"<", b">" + organ_id[:6] + b"<!-- x -->" + organ_id[6:] + b"<", 1
    )


PROLOG = b'<?xml version="1.0" encoding="UTF-8"?>\n'


def with_doctype(doctype: bytes) -> Callable[[Context], bytes]:
    def build(c: Context) -> bytes:
        body = c.signed[len(PROLOG) :] if c.signed.startswith(PROLOG) else c.signed.split(b"?>", 1)[1]
        return PROLOG + doctype + b"\n" + body

    return build


def deep(c: Context) -> bytes:
    return b"<edXML>" + b"<a>" * 10_000 + b"</a>" * 10_000 + b"</edXML>"


def many_namespaces(c: Context) -> bytes:
    declarations = b" ".join(b'xmlns:n%d="urn:n%d"' % (i, i) for i in range(30_000))
    body = c.signed.split(b"?>", 1)[1]
    return PROLOG + body.replace(b"<edXML ", b"<edXML " + declarations + b" ", 1)


def many_attributes(c: Context) -> bytes:
    attributes = b" ".join(b'a%d="1"' % i for i in range(100_000))
    return PROLOG + b"<edXML " + attributes + b"/>"


def comment_flood(c: Context) -> bytes:
    return c.signed.replace(b"<edXMLEnvelope>", b"<edXMLEnvelope>" + b"<!---->" * 60_000, 1)


def ca_certificate_as_signer(c: Context) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    key = pki.new_key()
    ca = c.pki.ca
    certificate = (
        x509.CertificateBuilder()
        .subject_name(c.agency.certificate.subject)
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(c.pki.now - timedelta(days=1))
        .not_valid_after(c.pki.now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, True, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca.key, hashes.SHA256())
    )
    return c.sign_with(pki.Issued(key, certificate))


def unrelated_certificate_in_x509data(c: Context) -> bytes:
    stranger = pki.issue(pki.create_ca("Stranger CA", c.pki.now), "stranger", c.pki.now).certificate
    return signing.sign(edxml.build(c.document), c.agency.key, c.agency.certificate, (stranger,))


def relative_namespace(c: Context) -> bytes:
    """A namespace URI libxml2 will not canonicalise ("relative"): refused, not a crash."""
    assert b"<edXMLHeader>" in c.signed
    return c.signed.replace(b"<edXMLHeader>", b'<edXMLHeader xmlns:r="relative/uri">', 1)


def truncated(c: Context) -> bytes:
    return c.signed[: len(c.signed) // 2]


def not_utf8(c: Context) -> bytes:
    """Vietnamese text in Windows-1258, as old agency software writes it, in a UTF-8 document."""
    assert "Văn phòng".encode() in c.signed
    return c.signed.replace("Văn phòng".encode(), b"V\xe3n ph\xf2ng", 1)


def latin1_declared(c: Context) -> bytes:
    declaration, body = c.signed.split(b"?>", 1)
    assert b"UTF-8" in declaration
    return declaration.replace(b"UTF-8", b"ISO-8859-1") + b"?>" + body


CANARY = Path(__file__).resolve().parent / "canary.txt"
XXE_FILE = b'<!DOCTYPE edXML [<!ENTITY leak SYSTEM "file://' + str(CANARY).encode() + b'">]>'
XXE_PARAMETER = b'<!DOCTYPE edXML [<!ENTITY % p SYSTEM "file://' + str(CANARY).encode() + b'"> %p;]>'
EXTERNAL_DTD = b'<!DOCTYPE edXML SYSTEM "http://127.0.0.1:9/evil.dtd">'
BILLION_LAUGHS = (
    b'<!DOCTYPE edXML [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
    b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>'
)

ATTACKS: list[tuple[str, Callable[[Context], bytes], str]] = [
    ("tampered header field", tamper_header, "signature.digest_mismatch"),
    ("tampered attachment", tamper_attachment, "signature.digest_mismatch"),
    ("tampered DigestValue", tamper_digest_value, "signature.invalid"),
    ("tampered SignatureValue", tamper_signature_value, "signature.invalid"),
    ("wrapped in an attacker's root", wrapped_in_attacker_root, "signature.wrong_location"),
    (
        "evil twin, original moved into ds:Object",
        evil_twin_original_in_object,
        "signature.unexpected_element",
    ),
    (
        "evil twin, original moved into the body",
        evil_twin_original_moved_to_body,
        "signature.digest_mismatch",
    ),
    ("signature covering only the MessageHeader", partial_signature, "signature.reference_uri"),
    ("two References", two_references, "signature.reference_count"),
    ("a second ds:Signature in the body", second_signature_in_body, "signature.multiple"),
    ("Reference to #id", reference_to_id, "signature.reference_uri"),
    (
        "Reference to an external URI",
        set_attribute("Reference", "URI", "http://127.0.0.1:9/doc.xml"),
        "signature.reference_uri",
    ),
    (
        "Reference with a Type",
        set_attribute("Reference", "Type", "http://www.w3.org/2000/09/xmldsig#Object"),
        "signature.reference_uri",
    ),
    (
        "XSLT transform",
        replace_transform(
            "http://www.w3.org/TR/1999/REC-xslt-19991116",
            '<xsl:stylesheet xmlns:xsl="http://www.w3.org/1999/XSL/Transform" version="1.0"/>',
        ),
        "signature.transform_forbidden",
    ),
    (
        "XPath transform",
        replace_transform("http://www.w3.org/TR/1999/REC-xpath-19991116", f"<XPath xmlns='{DS}'>1</XPath>"),
        "signature.transform_forbidden",
    ),
    ("unknown transform", replace_transform("urn:attacker:transform"), "signature.transform_forbidden"),
    (
        "inclusive c14n",
        set_attribute(
            "CanonicalizationMethod", "Algorithm", "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
        ),
        "signature.c14n_forbidden",
    ),
    (
        "c14n 1.1",
        set_attribute("CanonicalizationMethod", "Algorithm", "http://www.w3.org/2006/12/xml-c14n11"),
        "signature.c14n_forbidden",
    ),
    (
        "exclusive c14n with comments",
        set_attribute(
            "CanonicalizationMethod", "Algorithm", "http://www.w3.org/2001/10/xml-exc-c14n#WithComments"
        ),
        "signature.c14n_forbidden",
    ),
    (
        "rsa-sha1",
        set_attribute("SignatureMethod", "Algorithm", f"{DS}rsa-sha1"),
        "signature.algorithm_forbidden",
    ),
    (
        "sha1 digest",
        set_attribute("DigestMethod", "Algorithm", f"{DS}sha1"),
        "signature.digest_algorithm_forbidden",
    ),
    (
        "HMAC",
        set_attribute("SignatureMethod", "Algorithm", f"{DS}hmac-sha1"),
        "signature.algorithm_forbidden",
    ),
    (
        "HMAC-SHA256",
        set_attribute("SignatureMethod", "Algorithm", "http://www.w3.org/2001/04/xmldsig-more#hmac-sha256"),
        "signature.algorithm_forbidden",
    ),
    ("DSA", set_attribute("SignatureMethod", "Algorithm", f"{DS}dsa-sha1"), "signature.algorithm_forbidden"),
    ("KeyValue-only key", key_value_only, "signature.certificate_missing"),
    ("KeyValue not matching the certificate", key_value_mismatch, "signature.key_value_mismatch"),
    ("RSA key under 2048 bits", weak_rsa, "signature.key_too_weak"),
    ("self-signed certificate with the right name", self_signed_right_name, "certificate.self_signed"),
    ("certificate from another CA with the same name", other_ca, "certificate.untrusted"),
    ("expired certificate", expired, "certificate.expired"),
    ("not-yet-valid certificate", not_yet_valid, "certificate.not_yet_valid"),
    ("certificate without digitalSignature", no_digital_signature, "certificate.key_usage"),
    ("comment injected into an OrganId", comment_in_organ_id, "xml.comment_in_value"),
    ("XXE reading a file", with_doctype(XXE_FILE), "xml.dtd_forbidden"),
    ("XXE through a parameter entity", with_doctype(XXE_PARAMETER), "xml.dtd_forbidden"),
    ("external DTD", with_doctype(EXTERNAL_DTD), "xml.dtd_forbidden"),
    ("billion laughs", with_doctype(BILLION_LAUGHS), "xml.dtd_forbidden"),
    ("depth 10 000", deep, "xml.too_deep"),
    ("30 000 namespace declarations on the root", many_namespaces, "xml.too_many_namespaces"),
    ("100 000 attributes", many_attributes, "xml.too_many_attributes"),
    ("60 000 empty comments", comment_flood, "xml.too_many_nodes"),
    ("a CA certificate as signer", ca_certificate_as_signer, "certificate.not_end_entity"),
    (
        "an unrelated certificate in X509Data",
        unrelated_certificate_in_x509data,
        "signature.key_info_forbidden",
    ),
    ("a relative namespace URI", relative_namespace, "signature.malformed"),
    ("truncated bytes", truncated, "xml.malformed"),
    ("non-UTF-8 bytes", not_utf8, "xml.encoding"),
    ("a non-UTF-8 encoding declared", latin1_declared, "xml.encoding"),
]


@pytest.fixture(scope="module")
def context(dev_pki: PKI, vpcp: Agency, signed_document: bytes, document: edxml.DocumentPackage) -> Context:
    CANARY.write_text("CANARY-SECRET-5f1e\n")
    # Warm every lazily loaded resource (schemas) so the attack runs below must read nothing.
    verify_package(signed_document, dev_pki.trust, dev_pki.now)
    return Context(dev_pki, vpcp, signed_document, document)


class NoIO:
    """Records file opens and network connections made through Python while active."""

    active = False
    events: list[tuple[str, tuple[object, ...]]] = []
    installed = False

    @classmethod
    def hook(cls, event: str, args: tuple[object, ...]) -> None:
        if cls.active and (event == "open" or event.startswith("socket.")):
            cls.events.append((event, args))

    @classmethod
    def install(cls) -> None:
        if not cls.installed:
            sys.addaudithook(cls.hook)
            cls.installed = True


def test_baseline_reserialised_package_verifies(context: Context) -> None:
    result = verify_package(mutate(context.signed, lambda r: None), context.pki.trust, context.pki.now)
    assert result.package.sender.organ_id == context.agency.organ_id


@pytest.mark.parametrize(("name", "attack", "code"), ATTACKS, ids=[a[0] for a in ATTACKS])
def test_attack_is_refused_with_its_code(
    context: Context, name: str, attack: Callable[[Context], bytes], code: str
) -> None:
    data = attack(context)
    trust = context.pki.trust
    NoIO.install()
    NoIO.events.clear()
    NoIO.active = True
    try:
        with pytest.raises(AxisError) as refused:
            verify_package(data, trust, context.pki.now)
    finally:
        NoIO.active = False
    assert refused.value.code == code, refused.value.message
    assert NoIO.events == [], f"{name}: the verifier touched files or the network: {NoIO.events}"
    assert "CANARY-SECRET" not in refused.value.message


def test_revoked_certificate_is_refused(context: Context) -> None:
    agency = context.pki.agency("000.00.00.H14")
    status = edxml.StatusPackage(
        sender=edxml.Organization(organ_id=agency.organ_id),
        response_for=edxml.ResponseFor(document_id=context.document.document_id),
        status_code="01",
        timestamp="2026/11/21 09:00:00",
    )
    signed = signing.sign(edxml.build(status), agency.key, agency.certificate)
    at = context.pki.now + timedelta(minutes=1)
    current = pki.load_crl(context.pki.store.crl.read_bytes())
    revoked = pki.revoke(context.pki.ca, current, agency.certificate, at)
    trust = pki.Trust(context.pki.trust.anchors, (revoked,))
    with pytest.raises(AxisError) as refused:
        verify_package(signed, trust, at + timedelta(seconds=1))
    assert refused.value.code == "certificate.revoked"
    # Re-verification at a time before the revocation (the acceptance time) still succeeds.
    assert verify_package(signed, trust, context.pki.now).package.sender.organ_id == agency.organ_id


def test_status_signed_by_another_agency_is_refused(context: Context) -> None:
    status = edxml.StatusPackage(
        sender=edxml.Organization(organ_id="000.00.00.H41"),
        response_for=edxml.ResponseFor(document_id=context.document.document_id),
        status_code="03",
        timestamp="2026/11/21 09:00:00",
    )
    signed = signing.sign(edxml.build(status), context.agency.key, context.agency.certificate)
    with pytest.raises(AxisError) as refused:
        verify_package(signed, context.pki.trust, context.pki.now)
    assert refused.value.code == "signature.signer_not_sender"


def _signature_variants(signed: bytes):  # type: ignore[no-untyped-def]
    count = len(list(signature_of(tree(signed)).iter()))
    for index in range(count):
        for how in ("empty", "garbage", "remove", "algorithm", "comment-tail"):
            root = tree(signed)
            element = list(signature_of(root).iter())[index]
            was_blank = not (element.text or "").strip()
            if how == "empty":
                element.text = None
            elif how == "garbage":
                element.text = "!!not base64!!"
            elif how == "remove":
                if element.getparent() is None or element is signature_of(root):
                    continue
                element.getparent().remove(element)
            elif how == "algorithm":
                element.set("Algorithm", "")
            else:
                comment = etree.Comment("c")
                comment.tail = "junk"
                element.insert(0, comment)
            yield index, how, was_blank, serialise(root)


def test_every_signature_element_damaged_is_a_refusal_never_a_crash(context: Context) -> None:
    """Empty, garbage, removed or re-attributed: each damaged signature is refused with a code."""
    accepted = []
    for index, how, was_blank, data in _signature_variants(context.signed):
        try:
            verify_package(data, context.pki.trust, context.pki.now)
        except AxisError:
            continue
        accepted.append((index, how))
        # Only clearing whitespace that was already blank may leave a valid signature.
        assert how == "empty" and was_blank, f"element {index} with {how} was accepted"
    assert len(accepted) < 20


def test_damaged_certificate_bytes_are_a_refusal_never_a_crash(context: Context) -> None:
    """Byte flips across the DER certificate (names, key, extensions, signature): always a refusal."""
    root = tree(context.signed)
    element = root.find(f".//{ds('X509Certificate')}")
    der = bytearray(base64.b64decode(element.text))
    codes = set()
    for position in range(0, len(der), 7):
        damaged = bytearray(der)
        damaged[position] ^= 0x5A
        element.text = base64.b64encode(bytes(damaged)).decode()
        with pytest.raises(AxisError) as refused:
            verify_package(serialise(root), context.pki.trust, context.pki.now)
        codes.add(refused.value.code)
    assert "certificate.malformed" in codes
    assert codes <= {
        "certificate.malformed",
        "certificate.untrusted",
        "certificate.key_usage",
        "certificate.expired",
        "certificate.not_yet_valid",
        "certificate.self_signed",
        "certificate.not_end_entity",
        "signature.invalid",
        "signature.key_too_weak",
        "signature.key_mismatch",
        "signature.signer_not_sender",
        "certificate.revocation_unknown",
    }, codes


def test_a_remembered_chain_is_refused_past_the_span_it_was_checked_for(context: Context) -> None:
    """pki.validate remembers valid chains; a revocation dated later, the CRL's next update and the
    certificate's expiry must still refuse at times past them, with the same trust object."""
    agency = context.pki.agency("000.00.00.H17")
    at = context.pki.now + timedelta(minutes=1)
    current = pki.load_crl(context.pki.store.crl.read_bytes())
    revoked_later = pki.revoke(context.pki.ca, current, agency.certificate, at + timedelta(hours=1))
    trust = pki.Trust(context.pki.trust.anchors, (revoked_later,))
    assert pki.validate(agency.certificate, (), trust, at)  # valid now, and remembered
    with pytest.raises(AxisError) as revoked:
        pki.validate(agency.certificate, (), trust, at + timedelta(hours=2))
    assert revoked.value.code == "certificate.revoked"
    trust = pki.Trust(context.pki.trust.anchors, (current,))
    assert pki.validate(agency.certificate, (), trust, at)
    assert current.next_update_utc is not None
    with pytest.raises(AxisError) as stale:
        pki.validate(agency.certificate, (), trust, current.next_update_utc + timedelta(seconds=1))
    assert stale.value.code in ("certificate.crl_expired", "certificate.expired")
    with pytest.raises(AxisError) as expired:
        pki.validate(agency.certificate, (), trust, agency.certificate.not_valid_after_utc + timedelta(days=1))
    assert expired.value.code in ("certificate.expired", "certificate.untrusted", "certificate.crl_expired")
