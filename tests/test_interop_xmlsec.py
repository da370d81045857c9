"""Interoperability with libxmlsec1 (through the ``xmlsec`` package), an independent XMLDSig implementation.

Both directions are checked with real keys from the development PKI and nothing mocked:

* what ``axis.signing.sign`` produces (RSA and ECDSA P-256) verifies with xmlsec, which itself
  validates the X.509 chain from the certificate in the signature to the development CA, and a
  one-character change in the signed content makes xmlsec refuse it;
* what xmlsec signs under an issued agency key, in the shape the policy prescribes, verifies with
  ``axis.verification.verify_package`` and with the real ``axis verify`` command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import xmlsec
from cryptography.hazmat.primitives.asymmetric import ec
from lxml import etree

from axis import edxml, keystore, pki, receipts, signing
from axis.errors import SignatureRefused
from axis.verification import verify_package
from tests.conftest import PKI, REPO, Agency

DS = signing.DS
NS = edxml.NS
SENDER = "000.00.00.G22"  # the sender of adapters.demo.example_document


def ed(name: str) -> str:
    return f"{{{NS}}}{name}"


def signature_node(root: etree._Element) -> etree._Element:
    node = root.find(f"{ed('edXMLEnvelope')}/{ed('edXMLHeader')}/{{{DS}}}Signature")
    assert node is not None, "no ds:Signature at edXML/edXMLEnvelope/edXMLHeader"
    return node


def xmlsec_verify(data: bytes, trusted_ca: Path) -> None:
    """Verify with libxmlsec1; the key comes only from the X509Data, checked against ``trusted_ca``."""
    root = etree.fromstring(data)
    manager = xmlsec.KeysManager()
    manager.load_cert(str(trusted_ca), xmlsec.constants.KeyDataFormatPem, xmlsec.constants.KeyDataTypeTrusted)
    context = xmlsec.SignatureContext(manager)
    context.verify(signature_node(root))


def tamper_subject(data: bytes) -> bytes:
    """Change exactly one character of the Subject text, byte-for-byte, leaving everything else alone."""
    marker = b"<Subject>V/v "
    assert data.count(marker) == 1, "the Subject element was not found exactly once in the signed bytes"
    changed = data.replace(marker, b"<Subject>W/v ")
    assert len(changed) == len(data) and sum(a != b for a, b in zip(changed, data, strict=True)) == 1
    return changed


@pytest.fixture(scope="session")
def ec_agency(dev_pki: PKI, now: datetime) -> Agency:
    """The sender again, with an ECDSA P-256 key issued by the development CA."""
    issued = pki.issue(dev_pki.ca, SENDER, now, organ_id=SENDER, key=pki.new_key("ec"))
    out = dev_pki.store.root / "ec-agencies"
    key_path, cert_path = out / f"{SENDER}.key", out / f"{SENDER}.pem"
    keystore.write_private_key(key_path, issued.key)
    keystore.write_public(cert_path, pki.certificate_pem(issued.certificate))
    return Agency(SENDER, key_path, cert_path)


@pytest.fixture(params=["rsa", "ec"])
def agency(request: pytest.FixtureRequest, vpcp: Agency, ec_agency: Agency) -> Agency:
    return vpcp if request.param == "rsa" else ec_agency


@pytest.fixture(scope="session")
def other_ca(tmp_path_factory: pytest.TempPathFactory, now: datetime) -> Path:
    """A CA certificate that did not issue any agency certificate used here."""
    path = tmp_path_factory.mktemp("other-ca") / "ca.pem"
    path.write_bytes(pki.certificate_pem(pki.create_ca("some other CA", now).certificate))
    return path


# ---------------------------------------------------------------- axis signs, xmlsec verifies


def test_xmlsec_verifies_axis_rsa_signature(signed_document: bytes, dev_pki: PKI, vpcp: Agency) -> None:
    root = etree.fromstring(signed_document)
    method = signature_node(root).find(f"{{{DS}}}SignedInfo/{{{DS}}}SignatureMethod")
    assert method is not None and method.get("Algorithm") == signing.RSA_SHA256
    xmlsec_verify(signed_document, dev_pki.store.ca_certificate)


def test_xmlsec_verifies_axis_ecdsa_signature(
    document: edxml.DocumentPackage, dev_pki: PKI, ec_agency: Agency, now: datetime
) -> None:
    signed = signing.sign(edxml.build(document), ec_agency.key, ec_agency.certificate)
    method = signature_node(etree.fromstring(signed)).find(f"{{{DS}}}SignedInfo/{{{DS}}}SignatureMethod")
    assert method is not None and method.get("Algorithm") == signing.ECDSA_SHA256
    xmlsec_verify(signed, dev_pki.store.ca_certificate)
    # and axis agrees with itself on the same bytes
    result = verify_package(signed, dev_pki.trust, now)
    assert result.signature.fingerprint == pki.fingerprint(ec_agency.certificate)


def test_xmlsec_and_signxml_verify_an_axis_receipt(dev_pki: PKI, now: datetime) -> None:
    """Receipts are written and signed in canonical form directly (no parse); two independent
    verifiers must agree with it, text that c14n escapes included."""
    from signxml.verifier import XMLVerifier

    receipt = receipts.Receipt(
        "failed", "m-1", "document", "000.00.00.G22,2026/11/21,1&<2>/VPCP", "ab" * 32, SENDER,
        ("000.00.00.H41",), now.isoformat(), reason="refused: \"<b>\" & 'x'\r\nü",
    )
    signed = receipts.sign(receipt, keystore.read_private_key(dev_pki.store.axis_key),
                           keystore.read_certificates(dev_pki.store.axis_certificate)[0])
    root = etree.fromstring(signed)
    manager = xmlsec.KeysManager()
    manager.load_cert(str(dev_pki.store.ca_certificate), xmlsec.constants.KeyDataFormatPem, xmlsec.constants.KeyDataTypeTrusted)
    xmlsec.SignatureContext(manager).verify(root.find(f"{{{DS}}}Signature"))
    XMLVerifier().verify(signed, x509_cert=keystore.read_certificates(dev_pki.store.axis_certificate)[0])
    assert receipts.verify(signed, dev_pki.trust).receipt == receipt


def test_xmlsec_refuses_axis_signature_after_one_character_changes(
    signed_document: bytes, document: edxml.DocumentPackage, dev_pki: PKI, ec_agency: Agency, now: datetime
) -> None:
    ec_signed = signing.sign(edxml.build(document), ec_agency.key, ec_agency.certificate)
    for signed in (signed_document, ec_signed):
        xmlsec_verify(signed, dev_pki.store.ca_certificate)  # the untouched bytes verify ...
        tampered = tamper_subject(signed)
        with pytest.raises(xmlsec.VerificationError):  # ... and one changed character does not
            xmlsec_verify(tampered, dev_pki.store.ca_certificate)
        with pytest.raises(SignatureRefused) as refused:
            verify_package(tampered, dev_pki.trust, now)
        assert refused.value.code == "signature.digest_mismatch"


def test_xmlsec_checks_the_chain_itself(signed_document: bytes, other_ca: Path) -> None:
    """With another CA as the only trusted certificate, xmlsec refuses the (intact) signature."""
    with pytest.raises(xmlsec.Error):
        xmlsec_verify(signed_document, other_ca)


# ---------------------------------------------------------------- xmlsec signs, axis verifies


def xmlsec_sign(document: edxml.DocumentPackage, agency: Agency) -> bytes:
    root = etree.fromstring(edxml.build(document))
    header = root.find(f"{ed('edXMLEnvelope')}/{ed('edXMLHeader')}")
    assert header is not None
    method = xmlsec.Transform.ECDSA_SHA256 if _is_ec(agency) else xmlsec.Transform.RSA_SHA256
    signature = xmlsec.template.create(root, xmlsec.Transform.EXCL_C14N, method, ns="ds")
    header.append(signature)
    reference = xmlsec.template.add_reference(signature, xmlsec.Transform.SHA256, uri="")
    xmlsec.template.add_transform(reference, xmlsec.Transform.ENVELOPED)
    xmlsec.template.add_transform(reference, xmlsec.Transform.EXCL_C14N)
    key_info = xmlsec.template.ensure_key_info(signature)
    x509_data = xmlsec.template.add_x509_data(key_info)
    xmlsec.template.x509_data_add_certificate(x509_data)
    key = xmlsec.Key.from_file(str(agency.key_path), xmlsec.KeyFormat.PEM)
    key.load_cert_from_file(str(agency.cert_path), xmlsec.KeyFormat.PEM)
    context = xmlsec.SignatureContext()
    context.key = key
    context.sign(signature)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def _is_ec(agency: Agency) -> bool:
    return isinstance(agency.key, ec.EllipticCurvePrivateKey)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", "import cli; cli.main()", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_axis_verifies_xmlsec_signature(
    document: edxml.DocumentPackage, agency: Agency, dev_pki: PKI, now: datetime, tmp_path: Path
) -> None:
    signed = xmlsec_sign(document, agency)
    root = etree.fromstring(signed)
    signature = signature_node(root)
    # xmlsec wraps base64 at 64 columns (SignatureValue, X509Certificate): axis must accept that form
    certificate_text = signature.findtext(f"{{{DS}}}KeyInfo/{{{DS}}}X509Data/{{{DS}}}X509Certificate")
    assert certificate_text is not None and "\n" in certificate_text.strip()
    assert signature.get("Id") is None
    expected_method = signing.ECDSA_SHA256 if _is_ec(agency) else signing.RSA_SHA256

    result = verify_package(signed, dev_pki.trust, now)
    fingerprint = pki.fingerprint(agency.certificate)
    assert result.package.sender.organ_id == SENDER
    assert result.signature.organ_id == SENDER
    assert result.signature.fingerprint == fingerprint
    assert result.signature.signature_method == expected_method
    assert result.package.document_id == document.document_id  # type: ignore[union-attr]

    path = tmp_path / "signed-by-xmlsec.edxml"
    path.write_bytes(signed)
    text = run_cli("verify", str(path), "--trust", str(dev_pki.store.trust))
    assert text.returncode == 0, text.stdout + text.stderr
    assert "VALID" in text.stdout and "INVALID" not in text.stdout
    assert fingerprint in text.stdout

    as_json = run_cli("verify", str(path), "--trust", str(dev_pki.store.trust), "--json")
    assert as_json.returncode == 0, as_json.stdout + as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["valid"] is True
    assert report["signer"]["fingerprint"] == fingerprint
    assert report["signer"]["organ_id"] == SENDER
    assert report["package"]["sender"] == SENDER
    assert report["algorithms"]["signature"] == expected_method


def test_axis_refuses_xmlsec_signature_after_one_character_changes(
    document: edxml.DocumentPackage, vpcp: Agency, dev_pki: PKI, tmp_path: Path
) -> None:
    signed = xmlsec_sign(document, vpcp)
    path = tmp_path / "tampered.edxml"
    path.write_bytes(tamper_subject(signed))
    result = run_cli("verify", str(path), "--trust", str(dev_pki.store.trust), "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["valid"] is False and report["code"] == "signature.digest_mismatch"
