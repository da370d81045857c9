"""The console in a real browser (Debian's Chromium, driven by Playwright) against a real
``axis serve``: an administrator runs the axis day to day and an auditor makes the report, with
no terminal. Screenshots of each page are written to ``test-artifacts/console/``."""

from __future__ import annotations

import csv
import io
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.demo import NGHE_AN
from axis.server.console import Sessions
from axis.server.runtime import start
from tests.server.conftest import G22, H41, Client, Network

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not CHROMIUM.exists():
        if os.environ.get("AXIS_REQUIRE_BROWSER") == "1":
            pytest.fail("no Chromium at /usr/bin/chromium (.ci/run installs Debian's chromium)")
        pytest.skip("no Chromium at /usr/bin/chromium (apt-get install chromium; .ci/run does)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            yield launched
        finally:
            await launched.close()


async def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def sign_in(browser: Any, url: str, token: str) -> Any:
    context = await browser.new_context(accept_downloads=True)
    page = await context.new_page()
    await page.goto(f"{url}/console/")
    assert page.url.endswith("/console/sign-in")
    await page.fill("#token", token)
    await page.click("#sign-in")
    await page.wait_for_url("**/console/overview")
    return page


async def test_an_administrator_and_an_auditor_work_in_the_console(
    network: Network, session: aiohttp.ClientSession, browser: Any, tmp_path: Path
) -> None:
    sender_token, recipient_token = network.endpoint("vpcp", [G22]), network.endpoint("nghe-an", [H41])
    axis = await start(network.settings)
    try:
        sender, recipient = Client(session, axis.url, sender_token), Client(session, axis.url, recipient_token)
        document = network.document(recipients=(NGHE_AN,))
        status, delivered = await sender.submit(network.sign(document))
        assert status == 202
        await recipient.request("POST", f"/v1/messages/{delivered['message_id']}/ack")
        status, dead = await sender.submit(network.sign(network.document(recipients=(NGHE_AN,))))
        assert status == 202
        status, _, _ = await recipient.request("POST", f"/v1/messages/{dead['message_id']}/refuse", json_body={"reason": "không mở được"})
        assert status == 200

        admin = await sign_in(browser, axis.url, network.admin_token)
        assert await admin.inner_text("#month-sent") == "2"
        await shot(admin, "overview")
        cookies = await admin.context.cookies()
        (cookie,) = [c for c in cookies if c["name"] == "axis_console"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert network.admin_token not in str(cookies)  # the token itself never reaches the browser

        # agencies: add one, suspend the sender and see its packages refused, resume it
        await admin.goto(f"{axis.url}/console/agencies")
        await admin.fill("#organ_id", "000.00.00.G12")
        await admin.fill("#name", "Bộ Tư pháp")
        await admin.click("#add")
        await admin.wait_for_selector("text=Bộ Tư pháp")
        await admin.goto(f"{axis.url}/console/agencies?q={G22}")
        await admin.click(f'[id="suspend-{G22}"]')
        await admin.wait_for_selector(f'[id="resume-{G22}"]')
        await shot(admin, "agencies")
        vpcp_row = await admin.locator("tr", has_text="vpcp").first.inner_text()
        assert f"{time.gmtime().tm_year}-" in vpcp_row  # its last contact with this node
        status, refused = await sender.submit(network.sign(network.document(recipients=(NGHE_AN,))))
        assert (status, refused["code"]) == (403, "sender.suspended"), refused
        await admin.click(f'[id="resume-{G22}"]')
        await admin.wait_for_selector(f'[id="suspend-{G22}"]')

        # messages: find the delivered one and open its trail, receipts verified on the page
        await admin.goto(f"{axis.url}/console/messages")
        await admin.fill("#document_id", document.document_id)
        await admin.click("#find")
        await admin.click(f"text={document.document_id}")
        await admin.wait_for_selector("#trail")
        trail = await admin.inner_text("#trail")
        assert "message.accepted" in trail and "delivery.delivered" in trail
        assert "Hợp lệ" in await admin.inner_text("#receipts")
        await shot(admin, "message")

        # dead letters: requeue the refused one, and see it delivered
        await admin.goto(f"{axis.url}/console/dead-letters")
        await shot(admin, "dead-letters")
        assert "không mở được" in await admin.inner_text("#dead-letters")
        await admin.check("input[name=delivery]")
        await admin.click("#requeue")
        await admin.wait_for_selector("text=Không có.")
        status, _, _ = await recipient.request("POST", f"/v1/messages/{dead['message_id']}/ack")
        assert status == 200
        status, trail_json, _ = await Client(session, axis.url, network.admin_token).request(
            "GET", f"/v1/messages/{dead['message_id']}/trail"
        )
        assert [d["state"] for d in trail_json["deliveries"]] == ["delivered"]

        # a form posted without the session's CSRF token is refused
        forged = await admin.context.request.post(
            f"{axis.url}/console/agencies", form={"organ_id": "000.00.00.G10", "name": "Bộ Nội vụ"}
        )
        assert forged.status == 403
        odd = await admin.context.request.post(f"{axis.url}/console/agencies", form={"csrf": "é", "organ_id": "x", "name": "x"})
        assert odd.status == 403  # refused, not a 500
        status, agencies, _ = await Client(session, axis.url, network.admin_token).request("GET", "/v1/agencies")
        assert "000.00.00.G10" not in {a["organ_id"] for a in agencies["items"]}

        # the auditor: makes the report, cannot reach an administrator's action
        auditor = await sign_in(browser, axis.url, network.auditor_token)
        await auditor.goto(f"{axis.url}/console/agencies")
        assert await auditor.query_selector("#add") is None
        csrf = await auditor.get_attribute("input[name=csrf]", "value")
        attempt = await auditor.context.request.post(
            f"{axis.url}/console/agencies", form={"csrf": csrf or "", "organ_id": "000.00.00.G10", "name": "Bộ Nội vụ"}
        )
        assert attempt.status == 403
        await auditor.goto(f"{axis.url}/console/reports")
        await auditor.select_option("#format", "csv")
        await shot(auditor, "reports")
        async with auditor.expect_download() as waiting:
            await auditor.click("#download")
        download = await waiting.value
        saved = tmp_path / "report.csv"
        await download.save_as(str(saved))
        rows = list(csv.reader(io.StringIO(saved.read_bytes().decode("utf-8-sig"))))
        by_id = {row[0]: row for row in rows if row and row[0].startswith("000.")}
        assert by_id[G22][2] == "2" and by_id[H41][3] == "2"  # sent by VPCP, received by Nghệ An

        # signed out, the old session is refused
        await admin.click("#sign-out")
        await admin.wait_for_url("**/console/sign-in")
        stale = await admin.context.request.post(
            f"{axis.url}/console/agencies", form={"csrf": "x", "organ_id": "000.00.00.G10", "name": "x"},
            headers={"Cookie": f"axis_console={cookie['value']}"},
        )
        assert stale.status == 401
    finally:
        await axis.stop()
    if os.environ.get("CI"):
        shutil.make_archive(str(ARTIFACTS), "zip", ARTIFACTS)


def test_a_session_ends_after_its_timeout() -> None:
    sessions = Sessions(timeout=0.05)
    session = sessions.start("admin", "admin", "digest")
    assert sessions.find(session.id) is session
    time.sleep(0.1)
    assert sessions.find(session.id) is None
    assert sessions.find("forged") is None
