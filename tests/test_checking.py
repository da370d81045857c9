"""What a verification worker makes of a submission: ``checking.check``, the server's entry point."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from lxml import etree

from axis import checking, edxml, signing
from tests.conftest import PKI, REPO, Agency

HEADER = f"{edxml.q('edXMLEnvelope')}/{edxml.q('edXMLHeader')}"


def test_signed_status_with_a_status_header_element_passes_the_server_check(
    dev_pki: PKI, now: datetime
) -> None:
    """One vendor's SDK names a status package's header element ``Status``: signed by the sender at
    the policy's location (edXMLEnvelope/edXMLHeader), it is checked like any status package."""
    root = etree.fromstring((REPO / "schemas" / "examples" / "status.edxml").read_bytes())
    message = root.find(f"{HEADER}/{edxml.q('MessageHeader')}")
    assert message is not None
    message.tag = edxml.q("Status")
    nghe_an = dev_pki.agency("000.00.00.H41")
    signed = signing.sign(etree.tostring(root), nghe_an.key, nghe_an.certificate)
    header = etree.fromstring(signed).find(HEADER)
    assert header is not None
    assert [child.tag for child in header] == [edxml.q("Status"), signing.ds("Signature")]

    checked = checking.check(signed, dev_pki.store.trust, now)
    assert (checked.kind, checked.sender, checked.status_code) == ("status", "000.00.00.H41", "03")
    assert checked.answers == "000.00.00.G22"
    assert checked.document_id == "000.00.00.G22,2026/11/20,1234/VPCP-KSTT"


def test_a_day_first_due_date_is_checked_as_year_first(
    dev_pki: PKI, vpcp: Agency, document: edxml.DocumentPackage, now: datetime
) -> None:
    """The store's overdue report compares due dates as text: ``dd/MM/yyyy`` would sort wrongly."""
    signed = signing.sign(edxml.build(replace(document, due_date="04/12/2026")), vpcp.key, vpcp.certificate)
    assert checking.check(signed, dev_pki.store.trust, now).due_date == "2026/12/04"
