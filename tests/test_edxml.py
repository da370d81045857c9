from __future__ import annotations

import base64
import copy
import random
from dataclasses import replace
from pathlib import Path

import pytest
from lxml import etree

from axis import edxml, xmlguard
from axis.errors import PackageRefused, XMLRefused
from tests.conftest import FIXTURES, MALFORMED_SAMPLES, REPO, well_formed_sample_names

WELL_FORMED = well_formed_sample_names()


def test_the_shared_samples_are_all_there(samples: Path) -> None:
    assert len(WELL_FORMED) == 13  # status.edxml is a second 01 sample beside status_inbox_01.edxml
    assert {p.name for p in samples.glob("*.edxml")} >= MALFORMED_SAMPLES


@pytest.mark.parametrize("name", WELL_FORMED)
def test_well_formed_samples_parse_and_round_trip(samples: Path, name: str) -> None:
    package = edxml.parse((samples / name).read_bytes())
    assert package.sender.organ_id
    assert edxml.parse(edxml.build(package)) == package


def test_sample_fields_are_read_by_namespace(samples: Path) -> None:
    update = edxml.parse((samples / "edoc_update.edxml").read_bytes())
    assert isinstance(update, edxml.DocumentPackage)
    assert [r.organ_id for r in update.recipients] == ["000.00.00.H41", "000.00.00.H14", "000.00.00.G17"]
    assert update.document_id == "000.00.00.G22,2015/09/30,7816/VPCP-TTĐT"
    assert update.subject == "V/v kết nối, liên thông phần mềm quản lý văn bản"
    assert update.bussiness is not None and update.bussiness.bussiness_doc_type == 2
    assert update.bussiness.document_id == "000.00.00.G22,2014/02/30,7806/VPCP-TTĐT"
    info = update.bussiness.bussiness_document_info
    assert info is not None and [r.organ_id for r in info.receivers] == ["000.00.00.H41", "000.00.00.H14"]
    assert update.other_info == edxml.OtherInfo(
        priority=0,
        sphere_of_promulgation="Liên thông văn bản quốc gia",
        typer_notation="TVC",
        promulgation_amount=2,
        page_amount=22,
        direction=False,
        appendixes=("Công văn về việc kết nối, liên thông phần mềm quản lý văn bản",),
    )
    (attachment,) = update.attachments
    assert attachment.name == "1896_QD-TTg_m_294779.doc"
    assert attachment.content_type == "application/zip"
    assert attachment.data.startswith(b"PK")  # agency software zips the file first
    replacement = edxml.parse((samples / "edoc_replacement.edxml").read_bytes())
    assert isinstance(replacement, edxml.DocumentPackage) and replacement.bussiness is not None
    assert replacement.bussiness.replacement_info_list[0].organ_ids == ("000.00.00.H41", "000.00.00.H14")
    status = edxml.parse((samples / "status_acceptance_03.edxml").read_bytes())
    assert isinstance(status, edxml.StatusPackage)
    assert (status.status_code, status.response_for.document_id) == (
        "03",
        "000.00.00.G22,2015/09/30,7816/VPCP-TTĐT",
    )
    assert status.staff_info is not None and status.staff_info.staff == "Nguyen thi ngoc tram"


@pytest.mark.parametrize(
    ("name", "line", "column", "fault"),
    [
        ("edoc.edxml", 116, 39, "Namespace prefix xlink for href on Reference is not defined"),
        ("edoc_new.edxml", 1, 1, "stray bytes before the XML declaration"),
    ],
)
def test_malformed_samples_are_refused_with_line_and_column(
    samples: Path, name: str, line: int, column: int, fault: str
) -> None:
    with pytest.raises(XMLRefused) as refused:
        edxml.parse((samples / name).read_bytes())
    assert refused.value.code == "xml.malformed"
    assert (refused.value.fields["line"], refused.value.fields["column"]) == (line, column)
    assert fault in refused.value.message
    assert refused.value.message.startswith(f"line {line}, column {column}: ")


def test_build_parse_round_trips_every_field(document: edxml.DocumentPackage) -> None:
    full = replace(
        document,
        response_for=(
            edxml.ResponseFor(
                organ_id="000.00.00.H41",
                code="12/UBND-VP",
                promulgation_date="2026/10/01",
                document_id="000.00.00.H41,2026/10/01,12/UBND-VP",
            ),
        ),
        other_info=edxml.OtherInfo(
            priority=4,
            sphere_of_promulgation="Toàn quốc",
            typer_notation="NVA",
            promulgation_amount=5,
            page_amount=7,
            direction=True,
            appendixes=("Phụ lục I", "Phụ lục II"),
        ),
        bussiness=edxml.Bussiness(
            document_id="000.00.00.G22,2026/01/15,99/VPCP-KSTT",
            bussiness_doc_type=3,
            bussiness_doc_reason="Văn bản thay thế",
            paper=1,
            staff_info=edxml.StaffInfo(
                department="Văn thư", staff="Trần Thị Bình", email="vt@chinhphu.vn", mobile="0912000001"
            ),
            bussiness_document_info=edxml.BussinessDocumentInfo(
                document_info="1",
                document_receiver="1",
                receivers=(edxml.Receiver(organ_id="000.00.00.H41", receiver_type="0"),),
            ),
            replacement_info_list=(
                edxml.ReplacementInfo(
                    document_id="000.00.00.G22,2026/01/15,99/VPCP-KSTT", organ_ids=("000.00.00.H41",)
                ),
            ),
        ),
        attachments=document.attachments
        + (
            edxml.Attachment(
                name="Phụ lục.zip",
                data=bytes(range(256)) * 40,
                content_type="application/zip",
                content_id="cid:2",
            ),
        ),
    )
    assert edxml.parse(edxml.build(full)) == full


def test_status_round_trips() -> None:
    status = edxml.StatusPackage(
        sender=edxml.Organization(organ_id="000.00.00.H41", organ_name="UBND Tỉnh Nghệ An"),
        response_for=edxml.ResponseFor(
            organ_id="000.00.00.G22", document_id="000.00.00.G22,2026/11/20,1234/VPCP-KSTT"
        ),
        status_code="05",
        timestamp="2026/11/21 10:15:00",
        staff_info=edxml.StaffInfo(staff="Lê Văn Cường"),
        description="Đang xử lý",
        trace_headers=(edxml.TraceHeader(organ_id="000.00.00.H41", timestamp="2026/11/21 10:15:00"),),
    )
    assert edxml.parse(edxml.build(status)) == status


@pytest.mark.parametrize(
    ("change", "code", "fault"),
    [
        ({"subject": "x" * 501}, "edxml.invalid_field", "Subject"),
        ({"subject": "  "}, "edxml.missing_field", "Subject"),
        ({"document_id": "9fbfbad2-f1f8-4256-a2eb-50fb1061cddb"}, "edxml.invalid_field", "DocumentId"),
        ({"due_date": "28-09-2018"}, "edxml.invalid_field", "DueDate"),
        ({"recipients": ()}, "edxml.missing_field", "recipient"),
        ({"code": edxml.Code(code_number="123456789012")}, "edxml.invalid_field", "CodeNumber"),
        ({"other_info": edxml.OtherInfo(priority=7)}, "edxml.invalid_field", "Priority"),
        ({"sender": edxml.Organization(organ_id="28.22.H17")}, "edxml.invalid_field", "From/OrganId"),
    ],
)
def test_build_is_strict(
    document: edxml.DocumentPackage, change: dict[str, object], code: str, fault: str
) -> None:
    with pytest.raises(PackageRefused) as refused:
        edxml.build(replace(document, **change))  # type: ignore[arg-type]
    assert refused.value.code == code
    assert fault in refused.value.message


def test_build_refuses_duplicate_recipients(document: edxml.DocumentPackage) -> None:
    with pytest.raises(PackageRefused) as refused:
        edxml.build(replace(document, recipients=document.recipients + document.recipients[:1]))
    assert refused.value.code == "edxml.duplicate_recipient"


def _edit(data: bytes, old: str, new: str) -> bytes:
    assert old.encode() in data
    return data.replace(old.encode(), new.encode(), 1)


@pytest.mark.parametrize(
    ("old", "new", "code"),
    [
        (
            "<To><OrganId>000.00.00.H41</OrganId>",
            "<To><OrganId>000.00.00.H14</OrganId>",
            "edxml.duplicate_recipient",
        ),
        ("<OrganId>000.00.00.H41</OrganId>", "<OrganId>28.22.H17</OrganId>", "edxml.invalid_organ_id"),
        ("<Priority>2</Priority>", "<Priority>high</Priority>", "edxml.invalid_field"),
        ("<Direction>false</Direction>", "<Direction>maybe</Direction>", "edxml.invalid_field"),
        ("<Subject>", "<Unknown>x</Unknown><Subject>", "edxml.schema_invalid"),
        (
            '<edXML xmlns="http://www.mic.gov.vn/TBT/QCVN_102_2016">',
            '<edXML xmlns="urn:other">',
            "edxml.not_edxml",
        ),
        (
            "<BussinessDocType>0</BussinessDocType>",
            "<BussinessDocType>9</BussinessDocType>",
            "edxml.invalid_field",
        ),
        ("<ContentTransferEncoded>", "<ContentTransferEncoded>***", "edxml.invalid_attachment"),
        ("<Subject>", "<Subject>Bản thứ hai</Subject><Subject>", "edxml.duplicate_field"),
        (
            "<DocumentId>",
            "<DocumentId>000.00.00.G22,2026/01/01,1/X</DocumentId><DocumentId>",
            "edxml.duplicate_field",
        ),
        (
            "<Subject>",
            "<StatusCode>03</StatusCode><Timestamp>2026/11/21 09:00:00</Timestamp><ResponseFor><DocumentId>000.00.00.G22,2026/01/01,1/X</DocumentId></ResponseFor><Subject>",
            "edxml.ambiguous_kind",
        ),
    ],
)
def test_parse_refuses_what_would_route_wrongly(
    document: edxml.DocumentPackage, old: str, new: str, code: str
) -> None:
    with pytest.raises(PackageRefused) as refused:
        edxml.parse(_edit(edxml.build(document), old, new))
    assert refused.value.code == code


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "xml.malformed"),
        (b"\xff\xfe<\x00a\x00/\x00>\x00", "xml.encoding"),
        (b"<a><?php evil ?></a>", "xml.pi_forbidden"),
        (b"<a/><b/>", "xml.malformed"),
        (b"<a>" + b"x" * 200 + b"</a>", "xml.text_too_large"),
        (b"<a>" + b"<b/>" * 11 + b"</a>", "xml.too_many_nodes"),
        (b"<a>" + b"<!---->" * 11 + b"</a>", "xml.too_many_nodes"),
        (b"<a>" + b"<![CDATA[x]]>" * 11 + b"</a>", "xml.too_many_nodes"),
        (b"<a " + b" ".join(b"x%d='1'" % i for i in range(9)) + b"/>", "xml.too_many_attributes"),
        (b"<a>\n<b>\n</a>", "xml.malformed"),
        (b"<a><!-- never closed </a>", "xml.malformed"),
    ],
)
def test_precheck_limits(data: bytes, code: str) -> None:
    limits = xmlguard.XMLLimits(max_text_bytes=100, max_nodes=10, max_attributes=8)
    with pytest.raises(XMLRefused) as refused:
        xmlguard.parse(data, limits)
    assert refused.value.code == code


def test_precheck_accepts_markup_characters_inside_values() -> None:
    data = b"<?xml version='1.0' encoding='utf-8'?>\n<a x='1>2' y=\"&lt;\"><b><![CDATA[<b>]]></b>\n<!-- <c> -->\n<d>&amp; &gt;</d></a>"
    assert xmlguard.parse(data).get("x") == "1>2"


def test_too_large_is_refused_before_reading(document: edxml.DocumentPackage) -> None:
    with pytest.raises(XMLRefused) as refused:
        edxml.parse(edxml.build(document), xmlguard.XMLLimits(max_bytes=1000))
    assert refused.value.code == "xml.too_large"


def test_status_answering_two_documents_is_refused() -> None:
    status = edxml.build(
        edxml.StatusPackage(
            sender=edxml.Organization(organ_id="000.00.00.H41"),
            response_for=edxml.ResponseFor(document_id="000.00.00.G22,2026/11/20,1/VPCP"),
            status_code="06",
            timestamp="2026/11/21 10:15:00",
        )
    )
    twice = status.replace(
        b"<StatusCode>",
        b"<ResponseFor><DocumentId>000.00.00.G22,2026/11/20,2/VPCP</DocumentId></ResponseFor><StatusCode>",
        1,
    )
    with pytest.raises(PackageRefused) as refused:
        edxml.parse(twice)
    assert refused.value.code == "edxml.duplicate_field"


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        (b"<a><b>000.00.00.G22<!-- trailing note --></b></a>", True),
        (b"<a><!-- between elements --><b>x</b>\n<!-- another -->\n</a>", True),
        (b"<a><b><!-- before -->000.00.00.G22</b></a>", False),
        (b"<a><b>000.00<!-- x -->.00.G22</b></a>", False),
    ],
)
def test_comments_are_refused_only_where_they_change_a_value(value: bytes, accepted: bool) -> None:
    if accepted:
        xmlguard.parse(value)
    else:
        with pytest.raises(XMLRefused) as refused:
            xmlguard.parse(value)
        assert refused.value.code == "xml.comment_in_value"


# ---------------------------------------------------------------- shapes from real agency software

EXAMPLES = REPO / "schemas" / "examples"


def _example(name: str) -> etree._Element:
    return etree.fromstring((EXAMPLES / name).read_bytes())


def _header(root: etree._Element) -> etree._Element:
    header = root.find(f"{edxml.q('edXMLEnvelope')}/{edxml.q('edXMLHeader')}")
    assert header is not None
    return header


def _status_header(root: etree._Element) -> etree._Element:
    """The example status package rewritten as one vendor's SDK writes it: header element Status."""
    message = _header(root).find(edxml.q("MessageHeader"))
    assert message is not None
    message.tag = edxml.q("Status")
    return message


def _bytes(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def test_status_header_element_reads_as_the_same_status_package() -> None:
    root = _example("status.edxml")
    _status_header(root)
    package = edxml.parse(_bytes(root))
    assert isinstance(package, edxml.StatusPackage)
    assert package == edxml.parse((EXAMPLES / "status.edxml").read_bytes())
    assert (package.status_code, package.response_for.organ_id) == ("03", "000.00.00.G22")


@pytest.mark.parametrize("status_first", [True, False])
def test_status_beside_message_header_is_ambiguous(status_first: bool) -> None:
    root = _example("status.edxml")
    second = copy.deepcopy(_header(root)[0])
    _status_header(root)
    _header(root).insert(1 if status_first else 0, second)
    with pytest.raises(PackageRefused) as refused:
        edxml.parse(_bytes(root))
    assert refused.value.code == "edxml.ambiguous_kind"
    assert "<MessageHeader>" in refused.value.message and "<Status>" in refused.value.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("To", "<OrganId>000.00.00.H14</OrganId>"),
        ("DocumentId", "000.00.00.H41,2026/11/20,9/UBND-VP"),
        ("Subject", "V/v lạ"),
        ("DueDate", "2026/12/04"),
        ("SteeringType", "1"),
    ],
)
def test_status_header_holding_a_document_field_is_ambiguous(field: str, value: str) -> None:
    root = _example("status.edxml")
    _status_header(root).append(etree.fromstring(f'<{field} xmlns="{edxml.NS}">{value}</{field}>'))
    with pytest.raises(PackageRefused) as refused:
        edxml.parse(_bytes(root))
    assert refused.value.code == "edxml.ambiguous_kind"
    assert f"a <Status> header is a status package and cannot also carry {field}" in refused.value.message


def test_status_header_needs_its_status_code() -> None:
    root = _example("status.edxml")
    status = _status_header(root)
    status.remove(status.find(edxml.q("StatusCode")))  # type: ignore[arg-type]
    with pytest.raises(PackageRefused) as refused:
        edxml.parse(_bytes(root))
    assert refused.value.code == "edxml.missing_field"
    assert "<Status> needs a non-empty <StatusCode>" in refused.value.message


def _trace_list(root: etree._Element) -> etree._Element:
    trace_list = _header(root).find(edxml.q("TraceHeaderList"))
    assert trace_list is not None
    return trace_list


def test_trace_header_list_children_in_any_order_and_business_spelling() -> None:
    expected = edxml.parse((EXAMPLES / "document.edxml").read_bytes())
    assert isinstance(expected, edxml.DocumentPackage) and expected.bussiness is not None
    root = _example("document.edxml")
    trace_list = _trace_list(root)
    bussiness = trace_list.find(edxml.q("Bussiness"))
    assert bussiness is not None
    trace_list.insert(0, bussiness)  # the operator's EdXML102 builder writes Bussiness first
    assert edxml.parse(_bytes(root)) == expected
    bussiness.tag = edxml.q("Business")
    assert edxml.parse(_bytes(root)) == expected


@pytest.mark.parametrize("second", ["Bussiness", "Business"])
def test_two_bussiness_elements_are_refused(second: str) -> None:
    root = _example("document.edxml")
    trace_list = _trace_list(root)
    extra = copy.deepcopy(trace_list.find(edxml.q("Bussiness")))
    assert extra is not None
    extra.tag = edxml.q(second)
    trace_list.insert(0, extra)
    with pytest.raises(PackageRefused) as refused:
        edxml.parse(_bytes(root))
    assert refused.value.code == "edxml.duplicate_field"
    assert "found 2" in refused.value.message


@pytest.mark.parametrize("date", ["2026/11/21", "21/11/2026"])
def test_build_writes_dates_in_both_shapes_read_accepts(document: edxml.DocumentPackage, date: str) -> None:
    dated = replace(document, due_date=date, promulgation_info=edxml.PromulgationInfo(promulgation_date=date))
    assert edxml.parse(edxml.build(dated)) == dated


@pytest.mark.parametrize("date", ["2026-11-21", "21/11/26", "1/11/2026", "2026/11/21 "])
def test_build_refuses_other_date_shapes(document: edxml.DocumentPackage, date: str) -> None:
    with pytest.raises(PackageRefused) as refused:
        edxml.build(replace(document, due_date=date))
    assert refused.value.code == "edxml.invalid_field"
    assert "2026/11/21 or 21/11/2026" in refused.value.message


@pytest.mark.parametrize(
    ("value", "sortable"),
    [("21/11/2026", "2026/11/21"), ("2026/11/21", "2026/11/21"), ("sớm", "sớm"), (None, None)],
)
def test_sortable_date(value: str | None, sortable: str | None) -> None:
    assert edxml.sortable_date(value) == sortable


def test_unclosed_element_names_libxml2_fault_and_the_file_line() -> None:
    with pytest.raises(XMLRefused) as refused:
        edxml.parse((FIXTURES / "unclosed-element.edxml").read_bytes())
    assert refused.value.code == "xml.malformed"
    assert refused.value.message == (
        "line 16, column 23: Opening and ending tag mismatch: From line 7 and MessageHeader"
    )


def _status(**changes: object) -> edxml.StatusPackage:
    status = edxml.StatusPackage(
        sender=edxml.Organization(organ_id="000.00.00.H41"),
        response_for=edxml.ResponseFor(organ_id="000.00.00.G22", document_id="000.00.00.G22,2026/11/20,1234/VPCP-KSTT"),
        status_code="03",
        timestamp="2026/11/21 10:15:00",
    )
    return replace(status, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "field", "value"),
    [
        ({"due_date": "2026/02/31"}, "DueDate", "2026/02/31"),
        ({"due_date": "31/02/2026"}, "DueDate", "31/02/2026"),
        ({"due_date": "99/99/2026"}, "DueDate", "99/99/2026"),
        ({"promulgation_info": edxml.PromulgationInfo(promulgation_date="2026/02/30")}, "PromulgationDate", "2026/02/30"),
        ({"promulgation_info": edxml.PromulgationInfo(promulgation_date="2025/02/29")}, "PromulgationDate", "2025/02/29"),
        ({"trace_headers": (edxml.TraceHeader(organ_id="000.00.00.G22", timestamp="2026/11/21 99:99:99"),)},
         "TraceHeader/Timestamp", "2026/11/21 99:99:99"),
        ({"trace_headers": (edxml.TraceHeader(organ_id="000.00.00.G22", timestamp="2026/02/31 09:30:00"),)},
         "TraceHeader/Timestamp", "2026/02/31 09:30:00"),
        ({"document_id": "000.00.00.G22,2026/02/31,1234/VPCP-KSTT"}, "DocumentId", "2026/02/31"),
    ],
)
def test_build_refuses_dates_no_calendar_has(
    document: edxml.DocumentPackage, change: dict[str, object], field: str, value: str
) -> None:
    with pytest.raises(PackageRefused) as refused:
        edxml.build(replace(document, **change))  # type: ignore[arg-type]
    assert refused.value.code == "edxml.invalid_field"
    assert field in refused.value.message and repr(value) in refused.value.message
    assert "calendar" in refused.value.message or "real date and time" in refused.value.message


@pytest.mark.parametrize("timestamp", ["2026/11/21 24:00:00", "2026/11/21 23:60:00", "2026/02/29 10:00:00"])
def test_build_refuses_a_status_timestamp_no_calendar_has(timestamp: str) -> None:
    with pytest.raises(PackageRefused) as refused:
        edxml.build(_status(timestamp=timestamp))
    assert refused.value.code == "edxml.invalid_field"
    assert f"Timestamp {timestamp!r} is not a real date and time" in refused.value.message


def test_build_accepts_real_dates_and_references_to_documents_with_impossible_ones(document: edxml.DocumentPackage) -> None:
    """A leap day is a day; a DocumentId the axis carried (``2014/02/30`` in real packages) may be
    answered by a status or revised by a document: it is a name, not a date made here."""
    leap = replace(document, due_date="29/02/2028", promulgation_info=edxml.PromulgationInfo(promulgation_date="2028/02/29"))
    assert edxml.parse(edxml.build(leap)) == leap
    carried = "000.00.00.G22,2014/02/30,7806/VPCP-TTĐT"
    status = _status(response_for=edxml.ResponseFor(organ_id="000.00.00.G22", document_id=carried))
    assert edxml.parse(edxml.build(status)) == status
    revision = replace(document, bussiness=edxml.Bussiness(document_id=carried, bussiness_doc_type=2, paper=0))
    assert edxml.parse(edxml.build(revision)) == revision


@pytest.mark.parametrize("due_date", ["2026/02/31", "30/02/2026", "2026/13/01", "00/01/2026"])
def test_parse_refuses_a_due_date_no_calendar_has(document: edxml.DocumentPackage, due_date: str) -> None:
    """The overdue report compares DueDates as days: an impossible one would count wrongly."""
    data = _edit(edxml.build(replace(document, due_date="2026/12/05")), "<DueDate>2026/12/05", f"<DueDate>{due_date}")
    with pytest.raises(PackageRefused) as refused:
        edxml.parse(data)
    assert refused.value.code == "edxml.invalid_field"
    assert f"DueDate {due_date!r} is not a day in the calendar" in refused.value.message
    assert refused.value.message.startswith("line ")


def test_parse_stays_lenient_on_dates_the_axis_does_not_rely_on(document: edxml.DocumentPackage) -> None:
    """Read, only the DueDate is checked against the calendar: the package's own DocumentId, its
    PromulgationDate, TraceHeader timestamps and the DocumentIds it refers to are the agency's."""
    data = edxml.build(replace(document, due_date="2026/12/05"))
    data = _edit(data, f"<DocumentId>{document.document_id}", "<DocumentId>000.00.00.G22,2014/02/30,7806/VPCP-TTĐT")
    stamp = document.trace_headers[0].timestamp
    assert stamp is not None
    data = _edit(data, f"<Timestamp>{stamp}", "<Timestamp>2026/11/21 99:99:99")
    promulgated = document.promulgation_info.promulgation_date if document.promulgation_info else None
    assert promulgated is not None
    data = _edit(data, f"<PromulgationDate>{promulgated}", "<PromulgationDate>2026/02/31")
    package = edxml.parse(data)
    assert isinstance(package, edxml.DocumentPackage)
    assert package.document_id == "000.00.00.G22,2014/02/30,7806/VPCP-TTĐT"
    assert package.trace_headers[0].timestamp == "2026/11/21 99:99:99"
    assert package.promulgation_info is not None and package.promulgation_info.promulgation_date == "2026/02/31"


def test_a_real_captured_package_with_an_impossible_reference_date_is_read(vxp_captures: Path) -> None:
    package = edxml.parse((vxp_captures / "package.edxml").read_bytes())
    assert isinstance(package, edxml.DocumentPackage)
    assert package.bussiness is not None and package.bussiness.document_id == "000.00.00.G22,2014/02/30,7806/VPCP-TTĐT"


def test_attachments_checked_in_pieces_agree_with_decoding_them_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """``base64_size`` (what the workers use: no decoded copy) accepts and refuses exactly what
    ``base64_binary`` does, wherever the pieces fall."""
    rng = random.Random(20261130)
    letters = "ABCDab01+/= \n\r\t!-"
    values = []
    for n in range(3000):
        raw = base64.b64encode(rng.randbytes(rng.randrange(20))).decode()
        if n % 2:
            raw = "".join(c + (rng.choice(" \n=") if rng.random() < 0.1 else "") for c in raw) + "=" * rng.randrange(4)
        values.append(raw if n % 3 else "".join(rng.choice(letters) for _ in range(rng.randrange(24))))
    for piece in (1, 2, 3, 5, 8, 1 << 20):
        monkeypatch.setattr(xmlguard, "_BASE64_PIECE", piece)
        for value in values:
            try:
                expected: int | None = len(xmlguard.base64_binary(value))
            except ValueError:
                expected = None
            try:
                got: int | None = xmlguard.base64_size(value)
            except ValueError:
                got = None
            assert got == expected, (piece, value)
