"""Agency identifiers (OrganId) and document identifiers (DocumentId), checked and kept as written.

Two OrganId forms live side by side on the national axis, and neither is rewritten into the other:

* QCVN 102:2016 — 13 characters ``NNN.NN.NN.LNN``, level-1 code at the right
  (``000.00.00.G22`` is the Government Office, ``000.00.00.H41`` Nghệ An province).
* Decision 20/2020/QĐ-TTg — up to 35 characters from ``0-9 A-Z .``, dot-separated groups,
  level-1 code at the left: a letter A–Y and two digits (``G22``, ``H41.15.03``).

A DocumentId is ``OrganId,yyyy/MM/dd,Number/Notation``. Read, its date is checked for shape only:
real packages carry impossible dates such as ``2014/02/30`` inside identifiers, and an identifier
read is a name, not a calendar entry. One the axis's side makes is checked against the calendar
(``document_id(..., calendar=True)``), so no new impossible date enters circulation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from axis.errors import IdentifierError

OrganIdForm = Literal["qcvn102", "qd20"]

LEVEL1_KINDS = {
    "A": "Party bodies",
    "B": "State President's Office",
    "C": "National Assembly",
    "D": "Supreme People's Court",
    "E": "Supreme People's Procuracy",
    "F": "State Audit",
    "G": "ministries and ministry-level bodies",
    "H": "provincial People's Committees",
    "I": "central socio-political organisations",
    "J": "social and professional organisations",
    "K": "provincial People's Councils",
}

_QCVN = re.compile(r"\d{3}\.\d{2}\.\d{2}\.[A-Z]\d{2}", re.ASCII)
_QD20_GROUP = re.compile(r"[0-9A-Z]+", re.ASCII)
_QD20_LEVEL1 = re.compile(r"[A-Y]\d{2}", re.ASCII)
DATE_SHAPE = re.compile(r"\d{4}/\d{2}/\d{2}", re.ASCII)
"""How edXML writes a date: yyyy/MM/dd (shape only; impossible dates occur in real identifiers)."""
DATE_FORMAT = "%Y/%m/%d"
"""``DATE_SHAPE`` as a ``strptime`` format, for ``in_calendar``."""
QD20_MAX = 35


@dataclass(frozen=True)
class OrganId:
    """A checked agency identifier; ``value`` is exactly the string that was given."""

    value: str
    form: OrganIdForm

    @property
    def level1(self) -> str:
        """The level-1 code (``G22``): rightmost group in QCVN 102 form, leftmost in Decision 20 form."""
        groups = self.value.split(".")
        return groups[-1] if self.form == "qcvn102" else groups[0]

    def __str__(self) -> str:
        return self.value


def organ_id(text: str) -> OrganId:
    """Check ``text`` as an OrganId in either form; raise ``IdentifierError`` naming the fault."""
    if text != text.strip() or not text:
        raise IdentifierError(
            "identifier.organ_id", f"OrganId {text!r} is empty or has surrounding spaces", value=text
        )
    if text[0] in "0123456789":
        if _QCVN.fullmatch(text):
            return OrganId(text, "qcvn102")
        raise IdentifierError(
            "identifier.organ_id",
            f"OrganId {text!r} starts with a digit, so it must have the QCVN 102:2016 form NNN.NN.NN.LNN "
            "(13 characters, e.g. 000.00.00.G22: three digit groups, then a letter and two digits)",
            value=text,
        )
    if len(text) > QD20_MAX:
        raise IdentifierError(
            "identifier.organ_id",
            f"OrganId {text!r} is {len(text)} characters; Decision 20 allows {QD20_MAX}",
            value=text,
        )
    groups = text.split(".")
    if not _QD20_LEVEL1.fullmatch(groups[0]):
        raise IdentifierError(
            "identifier.organ_id",
            f"OrganId {text!r}: in the Decision 20/2020 form the first group is the level-1 code, "
            f"a letter A-Y and two digits (e.g. G22), not {groups[0]!r}",
            value=text,
        )
    for group in groups[1:]:
        if not _QD20_GROUP.fullmatch(group):
            raise IdentifierError(
                "identifier.organ_id",
                f"OrganId {text!r}: group {group!r} must be non-empty and use only 0-9 and A-Z",
                value=text,
            )
    return OrganId(text, "qd20")


def in_calendar(text: str, form: str = DATE_FORMAT) -> bool:
    """Whether ``text``, already checked for its shape, names a day (or a moment) that exists: a
    shape lets ``2026/02/31`` and ``99:99:99`` through, and a date the axis compares or writes
    must be one a calendar has."""
    try:
        datetime.strptime(text, form)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class DocumentId:
    """A checked ``OrganId,yyyy/MM/dd,Number/Notation``; ``value`` is the string as written."""

    value: str
    organ_id: OrganId
    date: str
    number_notation: str

    def __str__(self) -> str:
        return self.value


def document_id(text: str, *, calendar: bool = False) -> DocumentId:
    """Check the shape of a DocumentId. The date is checked against the calendar only with
    ``calendar``: for a DocumentId being made, never for one read or referred to (see above)."""
    parts = text.split(",")
    if len(parts) != 3:
        raise IdentifierError(
            "identifier.document_id",
            f"DocumentId {text!r} must have three comma-separated parts: OrganId,yyyy/MM/dd,Number/Notation",
            value=text,
        )
    issuer, date, number_notation = parts
    try:
        checked_issuer = organ_id(issuer)
    except IdentifierError as error:
        raise IdentifierError(
            "identifier.document_id", f"DocumentId {text!r}: {error.message}", value=text
        ) from None
    if not DATE_SHAPE.fullmatch(date):
        raise IdentifierError(
            "identifier.document_id",
            f"DocumentId {text!r}: the date {date!r} must be written yyyy/MM/dd",
            value=text,
        )
    if calendar and not in_calendar(date):
        raise IdentifierError(
            "identifier.document_id", f"DocumentId {text!r}: the date {date!r} is not a day in the calendar", value=text
        )
    number, slash, notation = number_notation.partition("/")
    if not number.strip() or not slash or not notation.strip():
        raise IdentifierError(
            "identifier.document_id",
            f"DocumentId {text!r}: the last part {number_notation!r} must be Number/Notation, e.g. 7816/VPCP-TTĐT",
            value=text,
        )
    return DocumentId(text, checked_issuer, date, number_notation)
