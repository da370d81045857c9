"""``/metrics`` through prometheus-client, and the example alert rules in docs/alerts.yml: every
rule parses and names only series a running axis exposes."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from adapters.demo import NGHE_AN
from axis.server.runtime import start
from tests.server.conftest import G22, H41, Client, Network

RULES = Path(__file__).resolve().parents[2] / "docs" / "alerts.yml"


async def test_the_series_and_the_alert_rules_that_name_them(network: Network, session: aiohttp.ClientSession) -> None:
    sender_token, recipient_token = network.endpoint("vpcp", [G22]), network.endpoint("nghe-an", [H41])
    axis = await start(network.settings)
    try:
        sender, recipient = Client(session, axis.url, sender_token), Client(session, axis.url, recipient_token)
        status, body = await sender.submit(network.sign(network.document(recipients=(NGHE_AN,))))
        assert status == 202
        await recipient.request("POST", f"/v1/messages/{body['message_id']}/ack")
        assert (await sender.submit(b"<edXML"))[0] == 422
        async with session.get(axis.url + "/metrics") as response:
            assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
    finally:
        await axis.stop()
    families = list(text_string_to_metric_families(text))  # the library's own parser reads it back
    samples = {sample.name for family in families for sample in family.samples}
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}
    assert values[("axis_delivery_seconds_count", ())] == 1.0  # the delivery's time was observed
    assert values[("axis_refusals_total", (("code", "xml.malformed"),))] == 1.0
    assert values[("axis_queue_deliveries", (("state", "delivered"),))] == 1.0
    assert values[("axis_certificate_expiry_timestamp_seconds", (("organ_id", G22),))] > 0
    assert any(name == "axis_crl_next_update_timestamp_seconds" for name, _ in values)
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    assert len(rules) >= 6
    for rule in rules:
        assert rule["alert"] and rule["expr"] and rule["annotations"]["summary"]
        for name in re.findall(r"\baxis_[a-z0-9_]+", rule["expr"]):
            assert name in samples, f"{rule['alert']} names {name}, which /metrics does not expose"
