"""edXML packages (QCVN 102:2016): a typed model, ``build`` to bytes and ``parse`` from bytes.

Reading is lenient where real agency software is sloppy (element order, prefixes, empty
optional fields, impossible dates inside identifiers) and strict where an error would route a
document wrongly (sender and recipient OrganIds, duplicate recipients, the DocumentId of a
document package) or a value the axis relies on would mislead it (a DueDate no calendar has).
Building is strict: ``build`` refuses a package that breaks a length or shape rule of EDXML.md,
or carries a date or time no calendar has. Elements are matched by namespace URI, never by prefix.

Shapes from real agency software that ``read`` accepts (EDXML.md, "Shapes seen in real agency
software"): a status package whose header element is ``Status`` instead of ``MessageHeader``
(holding only the status fields), ``TraceHeaderList`` children in any order, and ``Business``
as a spelling of ``Bussiness``. ``build`` always writes the regulation's own forms.

``parse`` does not check signatures; ``axis.verification`` does, and reads only what was signed.
"""

from __future__ import annotations

import base64
import dataclasses
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, TypeVar

from lxml import etree

from axis import xmlguard
from axis.errors import IdentifierError, PackageRefused
from axis.identifiers import document_id, in_calendar, organ_id

NS = "http://www.mic.gov.vn/TBT/QCVN_102_2016"

STATUS_CODES = {
    "01": "arrived",
    "02": "refused",
    "03": "accepted",
    "04": "assigned",
    "05": "in progress",
    "06": "completed",
    "13": "take-back requested",
    "15": "update or take-back agreed",
    "16": "update or take-back refused",
}
BUSSINESS_DOC_TYPES = {0: "new", 1: "revoke", 2: "update", 3: "replace"}


def q(name: str) -> str:
    """Clark name of an edXML element."""
    return f"{{{NS}}}{name}"


def _xml(name: str, **kwargs: Any) -> Any:
    return field(metadata={"xml": name}, **kwargs)


# Records whose fields are all optional text, read and written by one generic pair of functions.


@dataclass(frozen=True)
class Organization:
    organ_id: str = _xml("OrganId")
    organization_in_charge: str | None = _xml("OrganizationInCharge", default=None)
    organ_name: str | None = _xml("OrganName", default=None)
    organ_add: str | None = _xml("OrganAdd", default=None)
    email: str | None = _xml("Email", default=None)
    telephone: str | None = _xml("Telephone", default=None)
    fax: str | None = _xml("Fax", default=None)
    website: str | None = _xml("Website", default=None)


@dataclass(frozen=True)
class Code:
    code_number: str | None = _xml("CodeNumber", default=None)
    code_notation: str | None = _xml("CodeNotation", default=None)


@dataclass(frozen=True)
class PromulgationInfo:
    place: str | None = _xml("Place", default=None)
    promulgation_date: str | None = _xml("PromulgationDate", default=None)


@dataclass(frozen=True)
class DocumentType:
    type: str | None = _xml("Type", default=None)
    type_detail: str | None = _xml("TypeDetail", default=None)
    type_name: str | None = _xml("TypeName", default=None)


@dataclass(frozen=True)
class SignerInfo:
    competence: str | None = _xml("Competence", default=None)
    position: str | None = _xml("Position", default=None)
    full_name: str | None = _xml("FullName", default=None)


@dataclass(frozen=True)
class ResponseFor:
    """The document this one answers, revokes, updates or replaces (or a status answers)."""

    organ_id: str | None = _xml("OrganId", default=None)
    code: str | None = _xml("Code", default=None)
    promulgation_date: str | None = _xml("PromulgationDate", default=None)
    document_id: str | None = _xml("DocumentId", default=None)


@dataclass(frozen=True)
class StaffInfo:
    department: str | None = _xml("Department", default=None)
    staff: str | None = _xml("Staff", default=None)
    email: str | None = _xml("Email", default=None)
    mobile: str | None = _xml("Mobile", default=None)


@dataclass(frozen=True)
class TraceHeader:
    """One hop: written by the sender before it signs (the axis keeps its own hops in the trail)."""

    organ_id: str | None = _xml("OrganId", default=None)
    timestamp: str | None = _xml("Timestamp", default=None)


@dataclass(frozen=True)
class Receiver:
    organ_id: str | None = _xml("OrganId", default=None)
    receiver_type: str | None = _xml("ReceiverType", default=None)


# Records with lists or typed values.


@dataclass(frozen=True)
class OtherInfo:
    priority: int | None = None
    """0-4; higher is more urgent (meaning unconfirmed, see EDXML.md)."""
    sphere_of_promulgation: str | None = None
    typer_notation: str | None = None
    promulgation_amount: int | None = None
    page_amount: int | None = None
    direction: bool | None = None
    appendixes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReplacementInfo:
    document_id: str | None = None
    organ_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class BussinessDocumentInfo:
    document_info: str | None = None
    document_receiver: str | None = None
    receivers: tuple[Receiver, ...] = ()


@dataclass(frozen=True)
class Bussiness:
    """Business information of the TraceHeaderList (the regulation spells it with two s)."""

    document_id: str | None = None
    bussiness_doc_type: int | None = None
    """0 new, 1 revoke, 2 update, 3 replace."""
    bussiness_doc_reason: str | None = None
    paper: int | None = None
    """0: no paper copy follows."""
    staff_info: StaffInfo | None = None
    bussiness_document_info: BussinessDocumentInfo | None = None
    replacement_info_list: tuple[ReplacementInfo, ...] = ()


@dataclass(frozen=True)
class Attachment:
    """One attached file; ``data`` is the decoded bytes (agency software often zips them first)."""

    name: str
    data: bytes
    content_type: str = "application/octet-stream"
    description: str | None = None
    content_id: str | None = None
    """``cid:...``; ``build`` numbers attachments when it is missing."""


@dataclass(frozen=True)
class DocumentPackage:
    """A document (văn bản) with its MessageHeader, TraceHeaderList and attachments."""

    sender: Organization
    recipients: tuple[Organization, ...]
    document_id: str
    subject: str
    code: Code | None = None
    promulgation_info: PromulgationInfo | None = None
    document_type: DocumentType | None = None
    content: str | None = None
    signer_info: SignerInfo | None = None
    due_date: str | None = None
    to_places: tuple[str, ...] = ()
    other_info: OtherInfo | None = None
    response_for: tuple[ResponseFor, ...] = ()
    steering_type: int | None = None
    trace_headers: tuple[TraceHeader, ...] = ()
    bussiness: Bussiness | None = None
    attachments: tuple[Attachment, ...] = ()

    kind = "document"


@dataclass(frozen=True)
class StatusPackage:
    """A processing status (gói tin trạng thái) sent back about a document; it has no body."""

    sender: Organization
    response_for: ResponseFor
    status_code: str
    timestamp: str
    staff_info: StaffInfo | None = None
    description: str | None = None
    trace_headers: tuple[TraceHeader, ...] = ()

    kind = "status"


Package = DocumentPackage | StatusPackage
R = TypeVar("R")


# ---------------------------------------------------------------- reading


def _refuse(code: str, element: etree._Element | None, fault: str) -> PackageRefused:
    line = element.sourceline if element is not None else None
    where = f"line {line}: " if line else ""
    return PackageRefused(code, where + fault, line=line)


def _child(parent: etree._Element, name: str) -> etree._Element | None:
    return next(parent.iterchildren(q(name)), None)  # the first such child, like find(), without a path parse


def _children(parent: etree._Element, name: str) -> list[etree._Element]:
    return parent.findall(q(name))


def _text(parent: etree._Element, name: str) -> str | None:
    return _value(_child(parent, name))


def _value(element: etree._Element | None) -> str | None:
    if element is None:
        return None
    text = element.text
    return text if text and text.strip() else None


def _required(parent: etree._Element, name: str) -> str:
    value = _text(parent, name)
    if value is None:
        raise _refuse(
            "edxml.missing_field", parent, f"<{etree.QName(parent).localname}> needs a non-empty <{name}>"
        )
    return value


def _int(parent: etree._Element, name: str) -> int | None:
    value = _text(parent, name)
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        raise _refuse(
            "edxml.invalid_field", _child(parent, name), f"<{name}> must be a whole number, not {value!r}"
        ) from None


def _bool(parent: etree._Element, name: str) -> bool | None:
    value = _text(parent, name)
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise _refuse(
        "edxml.invalid_field", _child(parent, name), f"<{name}> must be true or false, not {value!r}"
    )


def _record(cls: type[R], element: etree._Element | None) -> R | None:
    if element is None:
        return None
    first: dict[str, etree._Element] = {}
    for child in element:  # one pass; the first child of each name counts, as with _child()
        first.setdefault(child.tag, child)
    values = {f.name: _value(first.get(q(f.metadata["xml"]))) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return None if all(v is None for v in values.values()) else cls(**values)


def _organization(element: etree._Element) -> Organization:
    value = _required(element, "OrganId")
    try:
        organ_id(value)
    except IdentifierError as error:
        raise _refuse("edxml.invalid_organ_id", _child(element, "OrganId"), error.message) from None
    organization = _record(Organization, element)
    assert organization is not None
    return organization


def _other_info(element: etree._Element | None) -> OtherInfo | None:
    if element is None:
        return None
    appendixes = _child(element, "Appendixes")
    return OtherInfo(
        priority=_int(element, "Priority"),
        sphere_of_promulgation=_text(element, "SphereOfPromulgation"),
        typer_notation=_text(element, "TyperNotation"),
        promulgation_amount=_int(element, "PromulgationAmount"),
        page_amount=_int(element, "PageAmount"),
        direction=_bool(element, "Direction"),
        appendixes=tuple(
            (a.text or "") for a in (_children(appendixes, "Appendix") if appendixes is not None else [])
        ),
    )


def _bussiness(element: etree._Element | None) -> Bussiness | None:
    if element is None:
        return None
    info = _child(element, "BussinessDocumentInfo")
    receiver_list = _child(info, "ReceiverList") if info is not None else None
    replacements = _child(element, "ReplacementInfoList")
    doc_type = _int(element, "BussinessDocType")
    if doc_type is not None and doc_type not in BUSSINESS_DOC_TYPES:
        raise _refuse(
            "edxml.invalid_field",
            _child(element, "BussinessDocType"),
            f"BussinessDocType must be 0-3, not {doc_type}",
        )
    return Bussiness(
        document_id=_text(element, "DocumentId"),
        bussiness_doc_type=doc_type,
        bussiness_doc_reason=_text(element, "BussinessDocReason"),
        paper=_int(element, "Paper"),
        staff_info=_record(StaffInfo, _child(element, "StaffInfo")),
        bussiness_document_info=None
        if info is None
        else BussinessDocumentInfo(
            document_info=_text(info, "DocumentInfo"),
            document_receiver=_text(info, "DocumentReceiver"),
            receivers=tuple(
                r
                for r in (
                    _record(Receiver, e)
                    for e in (_children(receiver_list, "Receiver") if receiver_list is not None else [])
                )
                if r is not None
            ),
        ),
        replacement_info_list=tuple(
            ReplacementInfo(
                document_id=_text(r, "DocumentId"),
                organ_ids=tuple(
                    (o.text or "") for lst in _children(r, "OrganIdList") for o in _children(lst, "OrganId")
                ),
            )
            for r in (_children(replacements, "ReplacementInfo") if replacements is not None else [])
        ),
    )


def _attachments(root: etree._Element, decode: bool) -> tuple[Attachment, ...]:
    """The attachments, decoded; without ``decode``, each one's base64 is only checked (in bounded
    memory) and none is returned."""
    encoded = _child(root, "AttachmentEncoded")
    if encoded is None:
        return ()
    result = []
    for element in _children(encoded, "Attachment"):
        payload = _child(element, "ContentTransferEncoded")
        text = payload.text if payload is not None else None
        try:
            if not decode:
                xmlguard.base64_size(text)
                continue
            data = xmlguard.base64_binary(text)
        except ValueError:
            raise _refuse(
                "edxml.invalid_attachment",
                payload if payload is not None else element,
                "<ContentTransferEncoded> is not valid base64",
            ) from None
        result.append(
            Attachment(
                name=_text(element, "AttachmentName") or "",
                data=data,
                content_type=_text(element, "ContentType") or "application/octet-stream",
                description=_text(element, "Description"),
                content_id=_text(element, "ContentId"),
            )
        )
    return tuple(result)


BUSSINESS_NAMES = (q("Bussiness"), q("Business"))
"""The regulation spells it ``Bussiness``; readers in the field also accept ``Business``."""


def _trace_headers(header: etree._Element) -> tuple[tuple[TraceHeader, ...], etree._Element | None]:
    """The hops and the Bussiness element, in any order (the operator's builder writes Bussiness first)."""
    trace_list = _child(header, "TraceHeaderList")
    if trace_list is None:
        return (), None
    hops = tuple(
        h for h in (_record(TraceHeader, e) for e in _children(trace_list, "TraceHeader")) if h is not None
    )
    bussiness = [e for e in trace_list if e.tag in BUSSINESS_NAMES]
    if len(bussiness) > 1:
        raise _refuse(
            "edxml.duplicate_field",
            bussiness[1],
            f"<TraceHeaderList> may hold one <Bussiness> (or <Business>), found {len(bussiness)}: "
            "the axis and a recipient could read different ones",
        )
    return hops, bussiness[0] if bussiness else None


@cache
def schema() -> etree.XMLSchema:
    """The edXML schema shipped in the ``schemas`` package (lenient on order, strict on names)."""
    text = resources.files("schemas").joinpath("edxml.xsd").read_bytes()
    return xmlguard.compile_schema(etree.fromstring(text, xmlguard.parser()))


def validate(root: etree._Element) -> None:
    """Check ``root`` against schemas/edxml.xsd; the first fault is reported with its line."""
    if root.tag != q("edXML"):
        raise _refuse(
            "edxml.not_edxml",
            root,
            f"the root element is {root.tag!r}; an edXML package has root <edXML> in namespace {NS}",
        )
    checker = schema()
    if not checker.validate(root):
        first = next(iter(checker.error_log))  # type: ignore[call-overload]  # lxml-stubs lack _ErrorLog.__iter__
        raise PackageRefused("edxml.schema_invalid", f"line {first.line}: {first.message}", line=first.line)


# MessageHeader children that may appear once: a second one would let the axis and a recipient
# read different values from the same signed package.
SINGLE_VALUED = (
    "DocumentId",
    "Code",
    "PromulgationInfo",
    "DocumentType",
    "Subject",
    "Content",
    "SignerInfo",
    "DueDate",
    "ToPlaces",
    "OtherInfo",
    "SteeringType",
    "StaffInfo",
    "StatusCode",
    "Description",
    "Timestamp",
)
DOCUMENT_ONLY = ("To", "DocumentId", "Subject", "Code", "PromulgationInfo", "DocumentType", "SignerInfo")
"""Document parts a status MessageHeader may not carry."""
STATUS_FIELDS = ("From", "ResponseFor", "StaffInfo", "StatusCode", "Description", "Timestamp")
"""All that a ``Status`` header element may hold: the vendor SDK that writes it writes nothing else,
so any other field there is a document part."""


def _header_element(root: etree._Element) -> etree._Element:
    """``MessageHeader``, or ``Status`` (one vendor's SDK names a status package's header so).

    The schema lets both through together so that they are refused here with a precise code:
    with two header elements the axis and a recipient could read different senders or kinds.
    """
    header = root.find(f"{q('edXMLEnvelope')}/{q('edXMLHeader')}")
    found = [] if header is None else [e for e in header if e.tag in (q("MessageHeader"), q("Status"))]
    if not found:
        raise _refuse(
            "edxml.missing_field",
            root if header is None else header,
            "edXMLEnvelope/edXMLHeader needs a <MessageHeader> (or, for a status package, <Status>)",
        )
    if len(found) > 1:
        names = " and ".join(f"<{etree.QName(e).localname}>" for e in found)
        raise _refuse(
            "edxml.ambiguous_kind", found[1], f"edXMLHeader holds {names}; a package has one header element"
        )
    return found[0]


def _refuse_ambiguity(root: etree._Element, message: etree._Element, is_status: bool) -> None:
    name = etree.QName(message).localname
    present: dict[object, list[etree._Element]] = {}
    for child in message:  # one pass over the header element, not one search per field
        present.setdefault(child.tag, []).append(child)
    for field_name in SINGLE_VALUED:
        repeated = present.get(q(field_name), [])
        if len(repeated) > 1:
            raise _refuse(
                "edxml.duplicate_field", repeated[1], f"<{field_name}> may appear only once in {name}"
            )
    if not is_status:
        return
    answered = _children(message, "ResponseFor")
    if len(answered) > 1:
        raise _refuse(
            "edxml.duplicate_field", answered[1], "a status package answers exactly one <ResponseFor>"
        )
    if message.tag == q("Status"):
        allowed = {q(n) for n in STATUS_FIELDS}
        mixed = [etree.QName(t).localname for t in present if isinstance(t, str) and t not in allowed]
        kind = "a <Status> header"
    else:
        mixed = [n for n in DOCUMENT_ONLY if q(n) in present]
        kind = "a package with <StatusCode>"
    body = root.find(f"{q('edXMLEnvelope')}/{q('edXMLBody')}")
    if body is not None:
        mixed.append("edXMLBody")
    if _child(root, "AttachmentEncoded") is not None:
        mixed.append("AttachmentEncoded")
    if mixed:
        raise _refuse(
            "edxml.ambiguous_kind",
            message,
            f"{kind} is a status package and cannot also carry {', '.join(mixed)}",
        )


def read(root: etree._Element, *, attachments: bool = True) -> Package:
    """Turn a parsed (and, for anything trusted, signature-verified) tree into a package. Without
    ``attachments`` their base64 is checked but nothing is decoded: the package has none (what
    the verification workers need, in a fraction of the memory)."""
    validate(root)
    message = _header_element(root)
    header = message.getparent()
    assert header is not None
    senders = _children(message, "From")
    if len(senders) != 1:
        raise _refuse(
            "edxml.missing_field",
            message,
            f"{etree.QName(message).localname} needs exactly one <From>, found {len(senders)}",
        )
    sender = _organization(senders[0])
    trace_headers, bussiness = _trace_headers(header)
    is_status = message.tag == q("Status") or _child(message, "StatusCode") is not None
    _refuse_ambiguity(root, message, is_status)

    if is_status:
        status_code = _required(message, "StatusCode").strip()
        if status_code not in STATUS_CODES:
            raise _refuse(
                "edxml.invalid_field",
                _child(message, "StatusCode"),
                f"StatusCode {status_code!r} is not one of {', '.join(STATUS_CODES)}",
            )
        answered = _record(ResponseFor, _child(message, "ResponseFor"))
        if answered is None or answered.document_id is None:
            raise _refuse(
                "edxml.missing_field", message, "a status package needs <ResponseFor> with its <DocumentId>"
            )
        return StatusPackage(
            sender=sender,
            response_for=answered,
            status_code=status_code,
            timestamp=_required(message, "Timestamp"),
            staff_info=_record(StaffInfo, _child(message, "StaffInfo")),
            description=_text(message, "Description"),
            trace_headers=trace_headers,
        )

    recipients = tuple(_organization(e) for e in _children(message, "To"))
    if not recipients:
        raise _refuse("edxml.missing_field", message, "a document package needs at least one <To>")
    seen: set[str] = set()
    for recipient in recipients:
        if recipient.organ_id in seen:
            raise _refuse(
                "edxml.duplicate_recipient", message, f"<To> {recipient.organ_id} appears more than once"
            )
        seen.add(recipient.organ_id)
    doc_id = _required(message, "DocumentId")
    try:
        document_id(doc_id)
    except IdentifierError as error:
        raise _refuse("edxml.invalid_document_id", _child(message, "DocumentId"), error.message) from None
    to_places = _child(message, "ToPlaces")
    return DocumentPackage(
        sender=sender,
        recipients=recipients,
        document_id=doc_id,
        subject=_required(message, "Subject"),
        code=_record(Code, _child(message, "Code")),
        promulgation_info=_record(PromulgationInfo, _child(message, "PromulgationInfo")),
        document_type=_record(DocumentType, _child(message, "DocumentType")),
        content=_text(message, "Content"),
        signer_info=_record(SignerInfo, _child(message, "SignerInfo")),
        due_date=_due_date(message),
        to_places=tuple(
            (p.text or "") for p in (_children(to_places, "Place") if to_places is not None else [])
        ),
        other_info=_other_info(_child(message, "OtherInfo")),
        response_for=tuple(
            r for r in (_record(ResponseFor, e) for e in _children(message, "ResponseFor")) if r
        ),
        steering_type=_int(message, "SteeringType"),
        trace_headers=trace_headers,
        bussiness=_bussiness(bussiness),
        attachments=_attachments(root, attachments),
    )


def parse(data: bytes, limits: xmlguard.XMLLimits = xmlguard.DEFAULT_LIMITS) -> Package:
    """Pre-check, parse with the hardened parser, validate and read ``data``. Signatures are not checked."""
    return read(xmlguard.parse(data, limits))


# ---------------------------------------------------------------- building

_TIMESTAMP = re.compile(r"\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}", re.ASCII)
TIMESTAMP_FORMAT = "%Y/%m/%d %H:%M:%S"
FIELD_DATE = re.compile(r"(\d{4})/(\d{2})/(\d{2})|(\d{2})/(\d{2})/(\d{4})", re.ASCII)
"""A PromulgationDate or DueDate: ``yyyy/MM/dd`` as EDXML.md writes it, or ``dd/MM/yyyy`` as agency
software also does (``build`` writes either, and only days the calendar has; ``read`` checks the
calendar for the DueDate alone, see ``_due_date``). A DocumentId's date stays ``yyyy/MM/dd`` only."""


def _field_date_exists(value: str) -> bool:
    """A ``FIELD_DATE``-shaped ``value`` names a day the calendar has."""
    return in_calendar(value, "%Y/%m/%d" if value[4] == "/" else "%d/%m/%Y")


def _due_date(message: etree._Element) -> str | None:
    """The DueDate as written, read leniently (other shapes pass, as agency software writes them),
    except a date of a ``FIELD_DATE`` shape that no calendar has: the overdue report compares
    DueDates as dates, and ``2026/02/31`` or ``99/99/2026`` would be counted wrongly for as long
    as the document is kept. The other dates of a package read are the agency's, never relied on."""
    value = _text(message, "DueDate")
    if value is not None and FIELD_DATE.fullmatch(value) and not _field_date_exists(value):
        raise _refuse("edxml.invalid_field", _child(message, "DueDate"), f"DueDate {value!r} is not a day in the calendar")
    return value


def sortable_date(value: str | None) -> str | None:
    """``value`` as ``yyyy/MM/dd`` when it is a date of either FIELD_DATE shape, so that dates
    compare as text (the store's overdue report does); any other text is returned unchanged."""
    match = FIELD_DATE.fullmatch(value) if value is not None else None
    if match is None or match.group(1):
        return value
    day, month, year = match.group(4, 5, 6)
    return f"{year}/{month}/{day}"


LENGTH_LIMITS = {
    "CodeNumber": 11,
    "CodeNotation": 30,
    "Place": 50,
    "TypeName": 100,
    "Subject": 500,
    "Content": 500,
    "ToPlace": 150,
}


def _check_length(name: str, value: str | None) -> None:
    if value is not None and len(value) > LENGTH_LIMITS[name]:
        raise PackageRefused(
            "edxml.invalid_field",
            f"{name} is {len(value)} characters; the limit is {LENGTH_LIMITS[name]}",
            field=name,
        )


def _check_shape(name: str, value: str | None, pattern: re.Pattern[str], example: str) -> None:
    if value is not None and not pattern.fullmatch(value):
        raise PackageRefused(
            "edxml.invalid_field", f"{name} {value!r} must be written like {example}", field=name
        )


def _check_date(name: str, value: str | None) -> None:
    _check_shape(name, value, FIELD_DATE, "2026/11/21 or 21/11/2026")
    if value is not None and not _field_date_exists(value):
        raise PackageRefused("edxml.invalid_field", f"{name} {value!r} is not a day in the calendar", field=name)


def _check_timestamp(name: str, value: str | None) -> None:
    _check_shape(name, value, _TIMESTAMP, "2026/11/21 09:30:00")
    if value is not None and not in_calendar(value, TIMESTAMP_FORMAT):
        raise PackageRefused("edxml.invalid_field", f"{name} {value!r} is not a real date and time", field=name)


def _check_identifier(check: Any, value: str, name: str) -> None:
    try:
        check(value)
    except IdentifierError as error:
        raise PackageRefused("edxml.invalid_field", f"{name}: {error.message}", field=name) from None


def check(package: Package) -> None:
    """The producer's rules: what ``build`` refuses to write, even though ``read`` may accept it."""
    _check_identifier(organ_id, package.sender.organ_id, "From/OrganId")
    for hop in package.trace_headers:
        _check_timestamp("TraceHeader/Timestamp", hop.timestamp)
    if isinstance(package, StatusPackage):
        if package.status_code not in STATUS_CODES:
            raise PackageRefused(
                "edxml.invalid_field", f"StatusCode {package.status_code!r} is unknown", field="StatusCode"
            )
        if not package.response_for.document_id:
            raise PackageRefused(
                "edxml.missing_field", "a status package needs ResponseFor/DocumentId", field="ResponseFor"
            )
        # The document answered may carry an impossible date in its DocumentId: shape only.
        _check_identifier(document_id, package.response_for.document_id, "ResponseFor/DocumentId")
        _check_timestamp("Timestamp", package.timestamp)
        return
    if not package.recipients:
        raise PackageRefused(
            "edxml.missing_field", "a document package needs at least one recipient", field="To"
        )
    ids = [r.organ_id for r in package.recipients]
    for value in ids:
        _check_identifier(organ_id, value, "To/OrganId")
    if len(set(ids)) != len(ids):
        raise PackageRefused(
            "edxml.duplicate_recipient", "a recipient appears more than once in To", field="To"
        )
    _check_identifier(lambda value: document_id(value, calendar=True), package.document_id, "DocumentId")
    if not package.subject.strip():
        raise PackageRefused("edxml.missing_field", "Subject is required", field="Subject")
    _check_length("Subject", package.subject)
    _check_length("Content", package.content)
    if package.code:
        _check_length("CodeNumber", package.code.code_number)
        _check_length("CodeNotation", package.code.code_notation)
    if package.promulgation_info:
        _check_length("Place", package.promulgation_info.place)
        _check_date("PromulgationDate", package.promulgation_info.promulgation_date)
    if package.document_type:
        _check_length("TypeName", package.document_type.type_name)
    for place in package.to_places:
        _check_length("ToPlace", place)
    _check_date("DueDate", package.due_date)
    priority = package.other_info.priority if package.other_info else None
    if priority is not None and not 0 <= priority <= 4:
        raise PackageRefused("edxml.invalid_field", f"Priority must be 0-4, not {priority}", field="Priority")
    kind = package.bussiness.bussiness_doc_type if package.bussiness else None
    if kind is not None and kind not in BUSSINESS_DOC_TYPES:
        raise PackageRefused(
            "edxml.invalid_field", f"BussinessDocType must be 0-3, not {kind}", field="BussinessDocType"
        )
    content_ids = [a.content_id for a in package.attachments if a.content_id]
    if len(set(content_ids)) != len(content_ids):
        raise PackageRefused(
            "edxml.invalid_attachment", "two attachments share a ContentId", field="ContentId"
        )


def _add(parent: etree._Element, name: str, value: object | None) -> etree._Element | None:
    if value is None:
        return None
    element = etree.SubElement(parent, q(name))
    if isinstance(value, bool):
        element.text = "true" if value else "false"
    else:
        element.text = str(value)
    return element


def _add_record(parent: etree._Element, name: str, record: object | None) -> None:
    if record is None:
        return
    element = etree.SubElement(parent, q(name))
    for f in dataclasses.fields(record):  # type: ignore[arg-type]
        _add(element, f.metadata["xml"], getattr(record, f.name))


def _add_list(parent: etree._Element, name: str, item: str, values: tuple[str, ...]) -> None:
    if values:
        element = etree.SubElement(parent, q(name))
        for value in values:
            _add(element, item, value)


def _build_bussiness(parent: etree._Element, bussiness: Bussiness) -> None:
    element = etree.SubElement(parent, q("Bussiness"))
    _add(element, "DocumentId", bussiness.document_id)
    _add(element, "BussinessDocType", bussiness.bussiness_doc_type)
    _add(element, "BussinessDocReason", bussiness.bussiness_doc_reason)
    _add(element, "Paper", bussiness.paper)
    info = bussiness.bussiness_document_info
    if info is not None:
        info_element = etree.SubElement(element, q("BussinessDocumentInfo"))
        _add(info_element, "DocumentInfo", info.document_info)
        _add(info_element, "DocumentReceiver", info.document_receiver)
        if info.receivers:
            receivers = etree.SubElement(info_element, q("ReceiverList"))
            for receiver in info.receivers:
                _add_record(receivers, "Receiver", receiver)
    if bussiness.replacement_info_list:
        replacements = etree.SubElement(element, q("ReplacementInfoList"))
        for replacement in bussiness.replacement_info_list:
            r = etree.SubElement(replacements, q("ReplacementInfo"))
            _add(r, "DocumentId", replacement.document_id)
            _add_list(r, "OrganIdList", "OrganId", replacement.organ_ids)
    _add_record(element, "StaffInfo", bussiness.staff_info)


def build(package: Package) -> bytes:
    """Serialise ``package`` as UTF-8 edXML (unsigned; ``axis.signing.sign`` adds the signature)."""
    check(package)
    root = etree.Element(q("edXML"), nsmap={None: NS})  # type: ignore[dict-item]
    envelope = etree.SubElement(root, q("edXMLEnvelope"))
    header = etree.SubElement(envelope, q("edXMLHeader"))
    message = etree.SubElement(header, q("MessageHeader"))
    _add_record(message, "From", package.sender)
    if isinstance(package, StatusPackage):
        _add_record(message, "ResponseFor", package.response_for)
        _add_record(message, "StaffInfo", package.staff_info)
        _add(message, "StatusCode", package.status_code)
        _add(message, "Description", package.description)
        _add(message, "Timestamp", package.timestamp)
    else:
        for recipient in package.recipients:
            _add_record(message, "To", recipient)
        _add(message, "DocumentId", package.document_id)
        _add_record(message, "Code", package.code)
        _add_record(message, "PromulgationInfo", package.promulgation_info)
        _add_record(message, "DocumentType", package.document_type)
        _add(message, "Subject", package.subject)
        _add(message, "Content", package.content)
        _add_record(message, "SignerInfo", package.signer_info)
        _add(message, "DueDate", package.due_date)
        _add_list(message, "ToPlaces", "Place", package.to_places)
        if package.other_info is not None:
            other = etree.SubElement(message, q("OtherInfo"))
            info = package.other_info
            _add(other, "Priority", info.priority)
            _add(other, "SphereOfPromulgation", info.sphere_of_promulgation)
            _add(other, "TyperNotation", info.typer_notation)
            _add(other, "PromulgationAmount", info.promulgation_amount)
            _add(other, "PageAmount", info.page_amount)
            _add(other, "Direction", info.direction)
            _add_list(other, "Appendixes", "Appendix", info.appendixes)
        for answered in package.response_for:
            _add_record(message, "ResponseFor", answered)
        _add(message, "SteeringType", package.steering_type)
    if package.trace_headers or (isinstance(package, DocumentPackage) and package.bussiness):
        trace_list = etree.SubElement(header, q("TraceHeaderList"))
        for hop in package.trace_headers:
            _add_record(trace_list, "TraceHeader", hop)
        if isinstance(package, DocumentPackage) and package.bussiness is not None:
            _build_bussiness(trace_list, package.bussiness)
    if isinstance(package, DocumentPackage):
        body = etree.SubElement(envelope, q("edXMLBody"))
        manifest = etree.SubElement(body, q("edXMLManifest"), version="1.0")
        attachments = [
            dataclasses.replace(a, content_id=a.content_id or f"cid:{index}")
            for index, a in enumerate(package.attachments, start=1)
        ]
        for attachment in attachments:
            reference = etree.SubElement(manifest, q("Reference"))
            _add(reference, "ContentId", attachment.content_id)
            _add(reference, "ContentType", attachment.content_type)
            _add(reference, "Description", attachment.description)
            _add(reference, "AttachmentName", attachment.name)
        if attachments:
            encoded = etree.SubElement(root, q("AttachmentEncoded"))
            for attachment in attachments:
                element = etree.SubElement(encoded, q("Attachment"))
                _add(element, "ContentId", attachment.content_id)
                _add(element, "AttachmentName", attachment.name)
                _add(element, "Description", attachment.description)
                _add(element, "ContentType", attachment.content_type)
                _add(element, "ContentTransferEncoded", base64.b64encode(attachment.data).decode("ascii"))
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))
