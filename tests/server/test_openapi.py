"""Property-based run against the OpenAPI document: no 5xx, and every answer matches the schema.

Hypothesis generates requests for every operation in docs/openapi.yaml: path parameters (real
ids and junk), query parameters (in and out of their bounds), bodies (signed packages, mutated
ones, random bytes, JSON objects with the right names and wrong types) and every kind of token.
Each answer must be a status the document lists for the operation, never a 5xx, and its body
must validate against the documented schema.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from axis.server.runtime import Running, start
from tests.conftest import REPO
from tests.server.conftest import G22, H41, Network, make_network

SPEC = yaml.safe_load((REPO / "docs" / "openapi.yaml").read_text())


def resolve(node: Any) -> Any:
    """Inline $refs and turn OpenAPI 3.0 ``nullable`` into JSON Schema."""
    if isinstance(node, dict):
        if "$ref" in node:
            target: Any = SPEC
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target[part]
            return resolve(target)
        out = {k: resolve(v) for k, v in node.items() if k not in ("nullable", "format", "example")}
        if node.get("nullable") and "type" in out:
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        elif node.get("nullable"):  # nullable beside allOf/$ref: null or the schema
            out = {"anyOf": [{"type": "null"}, out]}
        return out
    if isinstance(node, list):
        return [resolve(v) for v in node]
    return node


OPERATIONS = [
    (path, method, {**operation, "parameters": resolve([*item.get("parameters", []), *operation.get("parameters", [])])})
    for path, item in SPEC["paths"].items()
    for method, operation in item.items()
    if method in ("get", "post", "delete")
]


class Server:
    """An axis on its own event loop in a thread, so hypothesis can drive it synchronously."""

    def __init__(self, network: Network) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.running: Running = asyncio.run_coroutine_threadsafe(start(network.settings), self.loop).result(60)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.running.stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    network = make_network(tmp_path_factory.mktemp("openapi"))
    tokens = {
        "endpoint": network.endpoint("vpcp", [G22]),
        "recipient": network.endpoint("nghe-an", [H41]),
        "admin": network.admin_token,
        "auditor": network.auditor_token,
        "invalid": "x" * 43,
        "none": "",
    }
    server = Server(network)
    package = network.sign(network.document())
    ids = {"message": [], "delivery": ["1", "2"], "fingerprint": [], "organ_id": [G22, H41]}
    request = urllib.request.Request(
        server.running.url + "/v1/messages", data=package, method="POST",
        headers={"Authorization": f"Bearer {tokens['endpoint']}", "Content-Type": "application/xml"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (our own server)
        ids["message"].append(json.loads(response.read())["message_id"])
    ids["fingerprint"] = [c.fingerprint for c in server.running.axis.store.certificates()]
    yield {"server": server, "tokens": tokens, "ids": ids, "packages": [package, network.sign(network.document())], "network": network}
    server.stop()


def call(url: str, method: str, token: str, body: bytes | None, content_type: str | None) -> tuple[int, dict[str, str], bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if content_type:
        headers["Content-Type"] = content_type
    request = urllib.request.Request(url, data=body, method=method.upper(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (our own server)
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


SEEN: Counter[tuple[str, int]] = Counter()
"""(operation, status) pairs the run produced; test_coverage checks the run reached far enough."""

JUNK = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="/?#"), min_size=1, max_size=40)


def value_for(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    kind = schema.get("type")
    if "enum" in schema:
        return st.one_of(st.sampled_from(schema["enum"]), JUNK)
    if kind == "integer":
        return st.one_of(st.integers(-5, 2000), JUNK)
    if kind == "number":
        return st.one_of(st.floats(-5, 100, allow_nan=False), st.integers(0, 3), JUNK)
    return st.one_of(JUNK, st.sampled_from(["2026-01-01", "2026-13-45", G22, H41]))


@st.composite
def requests(draw: st.DrawFn, world: dict[str, Any]) -> tuple[str, str, str, bytes | None, str | None, dict[str, Any]]:
    path, method, operation = draw(st.sampled_from(OPERATIONS))
    concrete = path
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "path":
            name = parameter["name"]
            pool = {"message_id": "message", "delivery_id": "delivery", "fingerprint": "fingerprint", "organ_id": "organ_id"}
            real = world["ids"].get(pool.get(name, ""), [])
            value = draw(st.one_of(st.sampled_from(real), JUNK) if real else JUNK)
            if name == "action":
                value = draw(st.sampled_from(["suspend", "resume"]))
            concrete = concrete.replace("{" + name + "}", urllib.parse.quote(str(value), safe=""))
    query = {}
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "query" and draw(st.booleans()):
            query[parameter["name"]] = draw(value_for(parameter.get("schema", {})))
    if "wait" in query:
        query["wait"] = 0  # long-polls would only slow the run down
    body: bytes | None = None
    content_type: str | None = None
    if "requestBody" in operation:
        content = operation["requestBody"]["content"]
        content_type = draw(st.sampled_from([*content, "application/json", "text/plain"]))
        if content_type == "application/json":
            names = list(resolve(content.get("application/json", {}).get("schema", {})).get("properties", {}))
            fields = draw(st.dictionaries(st.sampled_from(names or ["x"]), st.one_of(st.none(), st.integers(), JUNK, st.lists(JUNK, max_size=3)), max_size=4))
            body = json.dumps(fields).encode()
        else:
            package = draw(st.sampled_from(world["packages"]))
            body = draw(
                st.one_of(
                    st.just(package),
                    st.binary(max_size=200),
                    st.integers(0, len(package) - 1).map(lambda i: package[:i]),
                    st.integers(0, len(package) - 1).map(lambda i: package[:i] + b"X" + package[i + 1 :]),
                )
            )
    token = world["tokens"][draw(st.sampled_from(list(world["tokens"])))]
    url = world["server"].running.url + concrete + ("?" + urllib.parse.urlencode(query) if query else "")
    return url, method, token, body, content_type, operation


def test_every_route_is_documented(world: dict[str, Any]) -> None:
    app = world["server"].running.runner.app
    served = {
        (r.resource.canonical.replace("{action:suspend|resume}", "{action}"), r.method.lower())  # type: ignore[union-attr]
        for r in app.router.routes()
        if r.method != "HEAD" and not r.resource.canonical.startswith("/console/")  # type: ignore[union-attr]  # pages: docs/console.md
    }
    documented = {(p, m) for p, m, _ in OPERATIONS}
    assert served == documented


def test_served_openapi_is_the_document(world: dict[str, Any]) -> None:
    status, _, body = call(world["server"].running.url + "/v1/openapi.json", "get", "", None, None)
    assert status == 200 and json.loads(body) == SPEC


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_no_5xx_and_answers_match_the_schema(world: dict[str, Any], data: st.DataObject) -> None:
    url, method, token, body, content_type, operation = data.draw(requests(world))
    status, headers, raw = call(url, method, token, body, content_type)
    SEEN[(operation["operationId"], status)] += 1
    assert status < 500, (method, url, status, raw[:500])
    documented = operation["responses"]
    assert str(status) in documented, (method, url, status, raw[:300])
    media = headers.get("Content-Type", "").split(";")[0]
    content = documented[str(status)].get("$ref") and resolve(documented[str(status)]) or documented[str(status)]
    content = resolve(content).get("content", {})
    assert media in content, (method, url, status, media, list(content))
    if media in ("application/json", "application/problem+json"):
        jsonschema.validate(json.loads(raw), content[media]["schema"])


def test_the_run_reached_successes_and_refusals() -> None:
    """Guard against a generator that only ever produces 401s: the run saw both kinds of answer."""
    statuses = {status for _, status in SEEN}
    operations = {operation for operation, _ in SEEN}
    print(sorted(SEEN.items()))
    assert {200, 401, 403, 404} <= statuses and len(operations) >= len(OPERATIONS) - 2
    assert any(status in (200, 201, 202) for (operation, status) in SEEN if operation in ("submitMessage", "addAgency", "addEndpoint", "ackMessage", "listInbox"))
