"""Signing: large packages, key/certificate mismatch, and the signer/sender rule's limits."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
from lxml import etree

from axis import edxml, pki, signing
from axis.errors import AxisError
from axis.verification import verify_package
from tests.conftest import PKI, Agency


def test_a_package_near_the_size_limit_signs_and_verifies(
    dev_pki: PKI, vpcp: Agency, document: edxml.DocumentPackage
) -> None:
    big = replace(
        document, attachments=(replace(document.attachments[0], data=os.urandom(30 * 1024 * 1024)),)
    )
    signed = signing.sign(edxml.build(big), vpcp.key, vpcp.certificate)
    result = verify_package(signed, dev_pki.trust, dev_pki.now)
    assert isinstance(result.package, edxml.DocumentPackage)
    assert result.package.attachments[0].data == big.attachments[0].data


def test_signing_with_a_key_that_is_not_the_certificates_is_refused(
    vpcp: Agency, document: edxml.DocumentPackage
) -> None:
    with pytest.raises(AxisError) as refused:
        signing.sign(edxml.build(document), pki.new_key(), vpcp.certificate)
    assert refused.value.code == "signature.key_mismatch"


def test_ecdsa_p256_agency_signs_and_verifies(dev_pki: PKI, document: edxml.DocumentPackage) -> None:
    issued = pki.issue(dev_pki.ca, "VPCP", dev_pki.now, organ_id="000.00.00.G22", key=pki.new_key("ec"))
    signed = signing.sign(edxml.build(document), issued.key, issued.certificate)
    result = verify_package(signed, dev_pki.trust, dev_pki.now)
    assert result.signature.signature_method == signing.ECDSA_SHA256


def test_certificate_uid_that_is_not_an_organ_id_is_not_compared(
    dev_pki: PKI, document: edxml.DocumentPackage
) -> None:
    """State CA certificates may carry a tax code as UID; the registry binds those by fingerprint."""
    issued = pki.issue(dev_pki.ca, "Văn phòng Chính phủ", dev_pki.now, organ_id="MST:0101234567")
    signed = signing.sign(edxml.build(document), issued.key, issued.certificate)
    assert verify_package(signed, dev_pki.trust, dev_pki.now).signature.organ_id == "MST:0101234567"


def test_verification_time_must_carry_a_timezone(dev_pki: PKI, signed_document: bytes) -> None:
    with pytest.raises(ValueError):
        signing.verify(signed_document, dev_pki.trust, dev_pki.now.replace(tzinfo=None))


def test_signed_content_carries_the_line_numbers_of_the_original_bytes(
    dev_pki: PKI, vpcp: Agency, document: edxml.DocumentPackage
) -> None:
    """Canonicalisation drops the XML declaration, comments and the signature: without the original
    lines, every fault found in the signed content would be reported some lines too early."""
    root = etree.fromstring(edxml.build(document))
    root[0][0].insert(0, etree.Comment(" a comment\n  over\n  three lines "))
    etree.indent(root)
    unsigned = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    signed = signing.sign(unsigned, vpcp.key, vpcp.certificate)
    signed = signed.replace(b"<ds:KeyInfo>", b"\n\n<ds:KeyInfo>")  # unsigned whitespace in the signature
    verified = signing.verify(signed, dev_pki.trust, dev_pki.now)
    in_file: list[object] = [
        e.sourceline
        for e in etree.fromstring(signed).iter(etree.Element)
        if etree.QName(e).namespace != signing.DS
    ]
    assert [e.sourceline for e in verified.signed_xml.iter(etree.Element)] == in_file
    assert in_file[0] == 2 and len(set(in_file)) > 40


def test_a_large_package_that_cannot_hold_an_acceptable_signature_is_refused_before_it_is_parsed(
    dev_pki: PKI, vpcp: Agency, document: edxml.DocumentPackage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above 4 MiB the bytes alone decide these refusals (the same codes the whole path gives):
    nothing is pre-checked or parsed, so a heavy package costs its worker almost nothing."""
    big = replace(document, attachments=(replace(document.attachments[0], data=os.urandom(4_000_000)),))
    unsigned = edxml.build(big)
    signed = signing.sign(unsigned, vpcp.key, vpcp.certificate)
    cases = {
        "signature.missing": unsigned,
        "signature.wrong_namespace": unsigned.replace(b"</edXMLHeader>", b"<Signature/></edXMLHeader>"),
        "signature.algorithm_forbidden": signed.replace(signing.RSA_SHA256.encode(), b"http://www.w3.org/2000/09/xmldsig#rsa-sha1"),
    }
    x509 = etree.fromstring(signed)
    for element in x509.iter(f"{{{signing.DS}}}X509Data"):
        element.getparent().remove(element)  # type: ignore[union-attr]
    cases["signature.certificate_missing"] = etree.tostring(x509, xml_declaration=True, encoding="UTF-8")

    def not_parsed(*args: object, **kwargs: object) -> None:
        raise AssertionError("pre-checked or parsed")

    monkeypatch.setattr(signing.xmlguard, "precheck", not_parsed)
    monkeypatch.setattr(signing.xmlguard.etree, "fromstring", not_parsed)
    for code, data in cases.items():
        assert len(data) > signing.UNSIGNED_AT_A_GLANCE
        with pytest.raises(AxisError) as refused:
            signing.verify(data, dev_pki.trust, dev_pki.now)
        assert refused.value.code == code, (code, refused.value)
