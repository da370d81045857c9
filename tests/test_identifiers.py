from __future__ import annotations

import pytest

from axis.errors import IdentifierError
from axis.identifiers import document_id, in_calendar, organ_id


@pytest.mark.parametrize(
    ("text", "form", "level1"),
    [
        ("000.00.00.G22", "qcvn102", "G22"),
        ("000.00.00.H41", "qcvn102", "H41"),
        ("000.00.15.H51", "qcvn102", "H51"),
        ("000.12.30.A36", "qcvn102", "A36"),
        ("002.00.20.H13", "qcvn102", "H13"),
        ("G22", "qd20", "G22"),
        ("H41.15.03", "qd20", "H41"),
        ("H41.15.03.01.02.03.04.05.06.07.08.9", "qd20", "H41"),
    ],
)
def test_valid_organ_ids_keep_their_form(text: str, form: str, level1: str) -> None:
    checked = organ_id(text)
    assert (checked.value, checked.form, checked.level1) == (text, form, level1)
    assert str(checked) == text


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ("", "empty"),
        (" 000.00.00.G22", "surrounding spaces"),
        ("28.22.H17", "NNN.NN.NN.LNN"),
        ("000.00.00.22G", "NNN.NN.NN.LNN"),
        ("001.00.20.JB2", "NNN.NN.NN.LNN"),
        ("000.00.00.g22", "NNN.NN.NN.LNN"),
        ("Z22.01", "level-1 code"),
        ("G2.01", "level-1 code"),
        ("G22..01", "non-empty"),
        ("G22.ab", "0-9 and A-Z"),
        ("G22." + "1" * 40, "Decision 20 allows 35"),
        (
            "\u0660\u0660\u0660.\u0660\u0660.\u0660\u0660.G22",
            "level-1 code",
        ),  # Arabic-Indic digits look alike
        ("000.00.00.G\u0662\u0662", "NNN.NN.NN.LNN"),
    ],
)
def test_invalid_organ_ids_name_the_fault(text: str, fault: str) -> None:
    with pytest.raises(IdentifierError) as refused:
        organ_id(text)
    assert refused.value.code == "identifier.organ_id"
    assert fault in refused.value.message


def test_document_id_keeps_impossible_dates_as_written() -> None:
    checked = document_id("000.00.00.G22,2014/02/30,7806/VPCP-TTĐT")
    assert checked.value == "000.00.00.G22,2014/02/30,7806/VPCP-TTĐT"
    assert checked.date == "2014/02/30"
    assert checked.organ_id.value == "000.00.00.G22"
    assert checked.number_notation == "7806/VPCP-TTĐT"


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ("9fbfbad2-f1f8-4256-a2eb-50fb1061cddb", "three comma-separated parts"),
        ("000.00.00.G22,2015-09-30,7816/VPCP", "yyyy/MM/dd"),
        ("28.22.H17,2015/09/30,7816/VPCP", "NNN.NN.NN.LNN"),
        ("000.00.00.G22,2015/09/30,7816", "Number/Notation"),
        ("000.00.00.G22,2015/09/30,/VPCP", "Number/Notation"),
        ("000.00.00.G22,\u0662\u0660\u0662\u0666/11/21,1/VPCP", "yyyy/MM/dd"),
    ],
)
def test_invalid_document_ids_name_the_fault(text: str, fault: str) -> None:
    with pytest.raises(IdentifierError) as refused:
        document_id(text)
    assert refused.value.code == "identifier.document_id"
    assert fault in refused.value.message


@pytest.mark.parametrize("date", ["2026/02/31", "2026/13/01", "2026/00/10", "2025/02/29", "0000/01/01"])
def test_a_document_id_being_made_needs_a_day_the_calendar_has(date: str) -> None:
    text = f"000.00.00.G22,{date},7806/VPCP-TTĐT"
    assert document_id(text).date == date  # read: a name, kept as written
    with pytest.raises(IdentifierError) as refused:
        document_id(text, calendar=True)
    assert refused.value.code == "identifier.document_id"
    assert f"the date {date!r} is not a day in the calendar" in refused.value.message


def test_in_calendar_checks_days_and_moments() -> None:
    assert in_calendar("2028/02/29") and not in_calendar("2026/02/29")
    assert document_id("000.00.00.G22,2028/02/29,1/VPCP", calendar=True).date == "2028/02/29"
    assert in_calendar("2026/11/21 23:59:59", "%Y/%m/%d %H:%M:%S")
    assert not in_calendar("2026/11/21 99:99:99", "%Y/%m/%d %H:%M:%S")
