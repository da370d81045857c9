"""The periodic report on sending and receiving electronic documents (the report an office hands
in under Circular 01/2020/TT-VPCP): per agency, and per parent agency with its units rolled up,
for a month, a quarter, a half-year or a year; as a table (JSON), CSV, or an XLSX workbook laid
out to be filed, titled, dated, and carrying the digest of the latest signed checkpoint of the
audit log, so that the state of the log lands on paper.

Counted for the documents accepted in the period: sent (by the agency), received (delivered or
waiting for it), statuses the agency sent, delivered / failed (dead letters) / pending, overdue
(past their DueDate on the day the report is made, not finished with status 06), and the median
and 95th percentile of the time from acceptance to delivery.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from axis import checkpoints
from axis.errors import RequestRefused
from axis.store import Agency, Store

COUNTS = ("sent", "received", "statuses", "delivered", "failed", "pending", "overdue")
COLUMNS = {
    "organ_id": "Mã định danh",
    "name": "Cơ quan, đơn vị",
    "sent": "Văn bản đã gửi",
    "received": "Văn bản đã nhận",
    "statuses": "Trạng thái đã gửi",
    "delivered": "Đã chuyển thành công",
    "failed": "Chuyển không thành công",
    "pending": "Đang chờ nhận",
    "overdue": "Quá hạn xử lý",
    "median_seconds": "Thời gian chuyển trung vị (giây)",
    "p95_seconds": "Thời gian chuyển 95% (giây)",
}
TITLE = "BÁO CÁO KẾT QUẢ GỬI, NHẬN VĂN BẢN ĐIỆN TỬ"


@dataclass(frozen=True)
class Period:
    label: str
    start: date
    end: date
    """Exclusive."""

    @classmethod
    def parse(cls, text: str) -> Period:
        """``2026-11`` (a month), ``2026-Q3``, ``2026-H1`` or ``2026``; ``request.invalid`` otherwise."""
        match = re.fullmatch(r"([0-9]{4})(?:-(?:([0-9]{2})|Q([1-4])|H([12])))?", text.strip())
        if not match or not 2000 <= int(match[1]) <= 9998:
            raise RequestRefused("request.invalid", f"a period is 2026-11, 2026-Q3, 2026-H1 or 2026, not {text!r}")
        year = int(match[1])
        if match[2]:
            first, months = int(match[2]), 1
            if not 1 <= first <= 12:
                raise RequestRefused("request.invalid", f"{text!r}: there is no month {first}")
        elif match[3]:
            first, months = 3 * int(match[3]) - 2, 3
        elif match[4]:
            first, months = 6 * int(match[4]) - 5, 6
        else:
            first, months = 1, 12
        after = first + months
        end = date(year + (after - 1) // 12, (after - 1) % 12 + 1, 1)
        return cls(text.strip(), date(year, first, 1), end)


@dataclass
class Report:
    period: Period
    made_at: str
    rows: list[dict[str, Any]]
    """One per agency (``rollup`` False), and one per parent agency with its units (``rollup`` True)."""
    totals: dict[str, Any]
    checkpoint: dict[str, Any] | None = None
    agency: str | None = None
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "title": TITLE, "period": self.period.label, "from": self.period.start.isoformat(),
            "to": self.period.end.isoformat(), "made_at": self.made_at, "agency": self.agency,
            "rows": self.rows, "totals": self.totals, "checkpoint": self.checkpoint,
        }


def _percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of sorted ``values``."""
    if not values:
        return None
    return round(values[max(0, math.ceil(fraction * len(values)) - 1)], 3)


def _row(agency: Agency, counts: dict[str, int], times: list[float], rollup: bool) -> dict[str, Any]:
    return {
        "organ_id": agency.organ_id, "name": agency.name, "parent": agency.parent, "rollup": rollup,
        **{c: counts.get(c, 0) for c in COUNTS},
        "median_seconds": _percentile(times, 0.5), "p95_seconds": _percentile(times, 0.95),
    }


def build(store: Store, period: Period, agency: str | None = None, now: datetime | None = None) -> Report:
    """The report of ``period`` for every agency, or for ``agency`` and its units, with the
    latest signed checkpoint of the audit log."""
    now = now or datetime.now(UTC)
    latest = checkpoints.latest(store)
    start, end = period.start.isoformat(), period.end.isoformat()
    counts: dict[str, dict[str, int]] = {}
    for row in store.stats(start, end, 0, now.strftime("%Y/%m/%d")):
        counts[row["agency"]] = {c: int(row[c]) for c in COUNTS}
    times = store.delivery_times(start, end)
    agencies = {a.organ_id: a for a in store.agencies()}
    if agency is not None and agency not in agencies:
        raise RequestRefused("request.invalid", f"{agency} is not a registered agency")
    children: dict[str, list[str]] = {}
    for a in agencies.values():
        if a.parent:
            children.setdefault(a.parent, []).append(a.organ_id)

    def family(organ_id: str) -> list[str]:
        found, waiting = [], [organ_id]
        while waiting:
            current = waiting.pop()
            if current not in found:
                found.append(current)
                waiting.extend(children.get(current, []))
        return found

    shown = family(agency) if agency else sorted(agencies)
    rows = []
    for organ_id in sorted(shown):
        a = agencies[organ_id]
        rows.append(_row(a, counts.get(organ_id, {}), times.get(organ_id, []), rollup=False))
        if children.get(organ_id):
            members = family(organ_id)
            summed = {c: sum(counts.get(m, {}).get(c, 0) for m in members) for c in COUNTS}
            merged = sorted(t for m in members for t in times.get(m, []))
            rows.append(_row(a, summed, merged, rollup=True))
    own = [r for r in rows if not r["rollup"]]
    everything = sorted(t for r in own for t in times.get(r["organ_id"], []))
    totals = {c: sum(r[c] for r in own) for c in COUNTS}
    totals.update(median_seconds=_percentile(everything, 0.5), p95_seconds=_percentile(everything, 0.95))
    checkpoint = latest.checkpoint.summary() if latest else None
    return Report(period, now.isoformat(timespec="seconds"), rows, totals, checkpoint, agency)


FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    """A text cell a spreadsheet will not read as a formula (names come from agencies' software too)."""
    if isinstance(value, str) and value.startswith(FORMULA):
        return "'" + value
    return value


def _label(row: dict[str, Any]) -> str:
    return f"{row['name']} (gồm đơn vị trực thuộc)" if row["rollup"] else row["name"]


def _footer(report: Report) -> list[str]:
    lines = [f"Lập lúc {report.made_at} (UTC) bởi trục liên thông văn bản"]
    if report.checkpoint:
        lines.append(
            f"Điểm kiểm tra nhật ký số {report.checkpoint['number']} ({report.checkpoint['events']} sự kiện),"
            f" mã băm {report.checkpoint['digest']}"
        )
    return lines


def to_csv(report: Report) -> bytes:
    """UTF-8 with a byte-order mark, so that a spreadsheet opens the Vietnamese text as it is."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([TITLE])
    writer.writerow([f"Kỳ báo cáo {report.period.label}: từ {report.period.start} đến trước {report.period.end}"])
    writer.writerow(list(COLUMNS.values()))
    for row in report.rows:
        writer.writerow([_cell(row["organ_id"]), _cell(_label(row)), *(row[c] for c in list(COLUMNS)[2:])])
    writer.writerow(["", "Tổng cộng", *(report.totals[c] for c in list(COLUMNS)[2:])])
    for line in _footer(report):
        writer.writerow([line])
    return ("\ufeff" + out.getvalue()).encode()


def to_xlsx(report: Report) -> bytes:
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Border, Font, PatternFill, Side
    from openpyxl.utils import get_column_letter

    book = Workbook()
    sheet = book.create_sheet(index=0)
    book.remove(book.worksheets[1])  # the empty sheet a new workbook starts with
    sheet.title = f"Báo cáo {report.period.label}"[:31]
    width = len(COLUMNS)
    last = get_column_letter(width)
    sheet.merge_cells(f"A1:{last}1")
    sheet["A1"] = TITLE
    sheet["A1"].font = Font(bold=True, size=14)
    sheet["A1"].alignment = Alignment(horizontal="center")
    sheet.merge_cells(f"A2:{last}2")
    sheet["A2"] = f"Kỳ báo cáo {report.period.label}: từ ngày {report.period.start:%d/%m/%Y} đến hết ngày {_day_before(report.period.end):%d/%m/%Y}"
    sheet["A2"].alignment = Alignment(horizontal="center")
    thin = Side(style="thin")
    box = Border(left=thin, right=thin, top=thin, bottom=thin)
    for column, heading in enumerate(COLUMNS.values(), start=1):
        cell = sheet.cell(row=4, column=column, value=heading)
        cell.font, cell.border = Font(bold=True), box
        cell.alignment = Alignment(wrap_text=True, vertical="center", horizontal="center")
        cell.fill = PatternFill("solid", fgColor="DDEBF7")
        sheet.column_dimensions[get_column_letter(column)].width = 40 if column == 2 else 16
    line = 5
    for row in report.rows:
        values = [row["organ_id"], _label(row), *(row[c] for c in list(COLUMNS)[2:])]
        for column, value in enumerate(values, start=1):
            cell = sheet.cell(row=line, column=column, value=value)
            if isinstance(value, str):
                cell.data_type = "s"  # text, never a formula
            cell.border = box
            if row["rollup"]:
                cell.font = Font(italic=True)
        line += 1
    for column, value in enumerate(["", "Tổng cộng", *(report.totals[c] for c in list(COLUMNS)[2:])], start=1):
        cell = sheet.cell(row=line, column=column, value=value)
        cell.font, cell.border = Font(bold=True), box
    for text in _footer(report):
        line += 2 if text == _footer(report)[0] else 1
        sheet.cell(row=line, column=1, value=text)
    sheet.freeze_panes = "C5"
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def render(report: Report, form: str) -> bytes:
    """The report as ``json``, ``csv`` or ``xlsx`` bytes."""
    if form == "json":
        return json.dumps(report.as_json(), ensure_ascii=False, indent=2).encode()
    if form == "csv":
        return to_csv(report)
    if form == "xlsx":
        return to_xlsx(report)
    raise RequestRefused("request.invalid", "format must be json, csv or xlsx")


MEDIA_TYPES = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def _day_before(day: date) -> date:
    return date.fromordinal(day.toordinal() - 1)
