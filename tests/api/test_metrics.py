"""`GET /metrics` against real server processes: the figures move with what clients do."""

from __future__ import annotations

import json
import re
import shutil
import socket
import uuid
from collections.abc import Callable

import anyio
import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from api.metrics import count_open_fds
from tests.conftest import require_service
from tests.deploy.promql import dashboard_queries, metric_names
from tests.support import ROOT, ServerProcess, bearer, open_stream, publish, stream_until

pytestmark = pytest.mark.anyio

ALICE = bearer("alice")
CHANNEL, KIND = "notifications:alice", "notification.created"
# Every delivery's lag is measured, so a handful of events shows in the histogram.
EVERY_DELIVERY = {"SINAL_METRICS_SAMPLE": "1"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(base_url: str, headers: dict[str, str] | None = None) -> Samples:
    async with httpx.AsyncClient(base_url=base_url) as client:
        response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def until(base_url: str, holds: Callable[[Samples], bool], within: float = 10.0) -> Samples:
    """Scrape until `holds(samples)`; fail with the last scrape after `within` seconds."""
    samples: Samples = {}
    with anyio.move_on_after(within):
        while True:
            samples = await scrape(base_url)
            if holds(samples):
                return samples
            await anyio.sleep(0.05)
    pytest.fail(f"metrics did not reach the expected state: {sorted(samples.items())[:80]}")


async def test_connections_deliveries_lag_and_closes_move_with_a_stream(
    spawn: Callable[..., ServerProcess], engine_env: dict[str, str]
) -> None:
    server = spawn({**engine_env, **EVERY_DELIVERY})
    before = await scrape(server.url)
    assert value(before, "sinal_connections", transport="sse") == 0
    assert value(before, "sinal_engine_up") == 1
    assert value(before, "sinal_build_info", version="0.1.0", engine=server_engine(engine_env))
    async with httpx.AsyncClient(base_url=server.url) as client:
        async with open_stream(server.url, ALICE) as (_, wait):
            await until(server.url, lambda s: value(s, "sinal_connections", transport="sse") == 1)
            for n in range(5):
                await publish(client, CHANNEL, KIND, {"n": n})
            await wait(lambda r: len(r.payloads()) == 5, 10)
            during = await until(server.url, lambda s: value(s, "sinal_deliveries_total") >= 5)
        after = await until(
            server.url,
            lambda s: (
                value(s, "sinal_connections_closed_total", transport="sse", reason="disconnect")
                == 1
            ),
        )
    assert value(during, "sinal_events_published_total") == 5
    assert value(during, "sinal_events_received_total") == 5
    assert value(during, "sinal_delivery_lag_seconds_count") >= 1
    # Published and delivered on one machine within the test's seconds.
    assert value(during, "sinal_delivery_lag_seconds_bucket", le="+Inf") >= 1
    assert value(during, "sinal_delivery_lag_seconds_sum") < 10
    assert value(after, "sinal_connections", transport="sse") == 0
    assert value(after, "sinal_connections_opened_total", transport="sse") == 1
    assert value(after, "sinal_handshakes_total", transport="sse", result="accepted") == 1
    assert value(after, "sinal_handshake_duration_seconds_count", transport="sse") == 1
    assert value(after, "sinal_resumes_total", outcome="fresh") == 1


def server_engine(engine_env: dict[str, str]) -> str:
    return "redis" if "SINAL_REDIS_URL" in engine_env else "memory"


async def test_resumes_resets_and_replays_are_counted_by_outcome_and_reason(
    memory_server: ServerProcess,
) -> None:
    url = memory_server.url
    carol, one = bearer("carol"), {"channel": "notifications:carol"}
    first = await stream_until(url, carol, lambda r: bool(r.of_type("ready")), params=one)
    cursor = first.last_id
    start = await scrape(url)
    async with httpx.AsyncClient(base_url=url) as client:
        for n in range(3):
            await publish(client, "notifications:carol", KIND, {"n": n})
    resumed = await stream_until(
        url, carol, lambda r: len(r.payloads()) == 3, params=one, last_event_id=cursor
    )
    assert not resumed.of_type("reset")
    reset = await stream_until(
        url, carol, lambda r: bool(r.of_type("ready")), params=one, last_event_id="junk"
    )
    assert reset.of_type("reset")
    await stream_until(url, carol, lambda r: bool(r.of_type("ready")), params=one)  # fresh
    samples = await scrape(url)

    def moved(name: str, **labels: str) -> float:
        return value(samples, name, **labels) - value(start, name, **labels)

    assert moved("sinal_resumes_total", outcome="resumed") == 1
    assert moved("sinal_resumes_total", outcome="reset") == 1
    assert moved("sinal_resumes_total", outcome="fresh") == 1
    assert moved("sinal_resets_total", reason="invalid") == 2  # one per channel: carol's, broadcast
    assert moved("sinal_replayed_events_total") == 3


async def test_refused_handshakes_and_action_messages_are_counted(
    memory_server: ServerProcess,
) -> None:
    url = memory_server.url
    start = await scrape(url)
    async with httpx.AsyncClient(base_url=url) as client:
        refused = await client.get("/v1/stream", headers=bearer("dave") | {"Authorization": "x"})
    assert refused.status_code == 401
    ws_url = url.replace("http", "ws", 1) + "/v1/actions"
    async with connect(ws_url, additional_headers=bearer("dave")) as socket:
        await socket.send(json.dumps({"op": "ping", "ref": "a"}))
        assert json.loads(await socket.recv())["ok"] is True
        await socket.send("not json")
        assert json.loads(await socket.recv())["error"]["status"] == 400
    samples = await until(
        url,
        lambda s: (
            value(s, "sinal_connections_closed_total", transport="ws", reason="disconnect")
            > value(start, "sinal_connections_closed_total", transport="ws", reason="disconnect")
        ),
    )

    def moved(name: str, **labels: str) -> float:
        return value(samples, name, **labels) - value(start, name, **labels)

    assert moved("sinal_handshakes_total", transport="sse", result="refused") == 1
    assert moved("sinal_handshakes_total", transport="ws", result="accepted") == 1
    assert moved("sinal_action_messages_total", op="ping", result="ok") == 1
    assert moved("sinal_action_messages_total", op="unparsed", result="invalid") == 1


async def test_the_metrics_token_is_required_when_set(
    spawn: Callable[..., ServerProcess],
) -> None:
    server = spawn({"SINAL_METRICS_TOKEN": "scrape-me"})
    async with httpx.AsyncClient(base_url=server.url) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "scrape-me"}):
            response = await client.get("/metrics", headers=headers)
            assert response.status_code == 401, headers
            assert response.headers["content-type"] == "application/problem+json"
    samples = await scrape(server.url, {"Authorization": "Bearer scrape-me"})
    assert value(samples, "sinal_engine_up") == 1
    assert "scrape-me" not in server.logs()


async def test_metrics_off_answers_404_and_streams_still_work(
    spawn: Callable[..., ServerProcess],
) -> None:
    server = spawn({"SINAL_METRICS": "off"})
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.get("/metrics")
        assert response.status_code == 404
        async with open_stream(server.url, ALICE) as (_, wait):
            await publish(client, CHANNEL, KIND, {"n": 1})
            await wait(lambda r: len(r.payloads()) == 1, 10)


async def test_a_scrape_passes_promtool_check_metrics(memory_server: ServerProcess) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        require_service("promtool", "Debian's prometheus package is not installed")
        return
    async with httpx.AsyncClient(base_url=memory_server.url) as client:
        await publish(client, CHANNEL, KIND, {"n": 1})
        text = (await client.get("/metrics")).text
    checked = await anyio.run_process(
        [promtool, "check", "metrics"], input=text.encode(), check=False
    )
    said = (checked.stdout + checked.stderr).decode()
    assert checked.returncode == 0, said
    assert said.strip() == "", said  # no lint warning either


async def test_every_metric_the_dashboard_and_the_rules_read_is_served(
    memory_server: ServerProcess,
) -> None:
    """deploy/grafana/sinal.json and deploy/prometheus/sinal.rules.yml against a real scrape:
    every metric they name is one this server exposes (or one their rules record, or `up`)."""
    async with httpx.AsyncClient(base_url=memory_server.url) as client:
        text = (await client.get("/metrics")).text
    served = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):  # a family, even one with no sample yet
            _, _, name, kind = line.split()
            suffixes = ("", "_bucket", "_sum", "_count") if kind == "histogram" else ("",)
            served |= {name + suffix for suffix in suffixes}
    rules = yaml.safe_load((ROOT / "deploy/prometheus/sinal.rules.yml").read_text())
    recorded = {
        rule["record"] for group in rules["groups"] for rule in group["rules"] if "record" in rule
    }
    expressions = [
        (f"rule {rule.get('alert') or rule.get('record')}", rule["expr"])
        for group in rules["groups"]
        for rule in group["rules"]
    ]
    dashboard = json.loads((ROOT / "deploy/grafana/sinal.json").read_text())
    expressions += list(dashboard_queries(dashboard))
    assert len(expressions) > 20
    missing = {
        (where, name)
        for where, expr in expressions
        for name in metric_names(str(expr))
        if name not in served and name not in recorded and name != "up"
    }
    assert not missing, sorted(missing)


async def test_rest_requests_are_counted_by_route_template_method_and_status(
    memory_server: ServerProcess,
) -> None:
    url = memory_server.url
    start = await scrape(url)
    async with httpx.AsyncClient(base_url=url) as client:
        await publish(client, CHANNEL, KIND, {"n": 1})
        missing = await client.get(f"/v1/notifications/{uuid.uuid4()}", headers=ALICE)
        assert missing.status_code == 404
        assert (await client.get("/no/such/path")).status_code == 404
    samples = await scrape(url)

    def moved(name: str, **labels: str) -> float:
        return value(samples, name, **labels) - value(start, name, **labels)

    one = "/v1/notifications/{id}"
    assert moved("sinal_http_requests_total", route="/v1/publish", method="POST", status="201") == 1
    assert moved("sinal_http_requests_total", route=one, method="GET", status="404") == 1
    assert moved("sinal_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert moved("sinal_http_request_duration_seconds_count", route=one, method="GET") == 1
    # Bounded labels: no id, user or raw path in any of them.
    routes = {dict(labels)["route"] for name, labels in samples if name.startswith("sinal_http_")}
    assert routes >= {"/v1/publish", one, "unmatched"}
    assert not [route for route in routes if re.search(r"[0-9a-f]{8}-|/no/such", route)], routes


def test_open_descriptors_are_counted() -> None:
    before = count_open_fds()
    assert before is not None
    sockets = [socket.socket() for _ in range(50)]
    try:
        assert count_open_fds() == before + 50
    finally:
        for sock in sockets:
            sock.close()
    assert count_open_fds() == before
