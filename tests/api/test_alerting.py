"""In-app alerts against real processes: two nodes on a private Redis and PostgreSQL, as in
production. The Redis is stopped under them, then started again on the same port.

"Engine down" must show on the admin API and reach the administrator as one notification
within the rule's `for` (plus an evaluation), though both nodes see it and keep evaluating;
and resolve, once, after Redis is back. Both notifications also arrive live on the
administrator's open stream (the first one waited in the outbox while Redis was down).

The nodes run the real rules, with the real 20 s `for`: the test takes about a minute.
"""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from api.alerts import ENGINE_DOWN_FOR_S, EVALUATE_EVERY_S
from tests.conftest import POSTGRES_URL, reset_postgres
from tests.support import PrivateRedis, ServerProcess, bearer, open_stream

pytestmark = pytest.mark.anyio

OPS = bearer("ops-alerts", "admin")
# Beyond the `for` and one evaluation interval: the nodes notice the lost connection at once
# (the server is killed), and a transition is one database transaction.
SLACK_S = 3.0


@pytest.fixture
async def two_nodes(
    private_redis: PrivateRedis, tmp_path: Path
) -> AsyncIterator[tuple[ServerProcess, ServerProcess]]:
    await reset_postgres()
    env = {
        "SINAL_REDIS_URL": private_redis.url,
        "SINAL_DATABASE_URL": POSTGRES_URL,
        "SINAL_NODE_HEARTBEAT": "0.5",
    }
    nodes = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        nodes.append(ServerProcess(tmp_path / name, {**env, "SINAL_NODE_NAME": f"node-{name}"}))
    try:
        for node in nodes:
            node.launch()
        yield nodes[0].ready(), nodes[1].ready()
    finally:
        for node in nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.send_signal(signal.SIGCONT)
            node.stop()


async def get(server: ServerProcess, path: str, **params: Any) -> Any:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        response = await client.get(path, headers=OPS, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def engine_alert(server: ServerProcess) -> dict[str, Any] | None:
    answer = await get(server, "/v1/admin/alerts")
    return next((a for a in answer["alerts"] if a["name"] == "SinalEngineDown"), None)


async def alert_until(
    server: ServerProcess, done: Callable[[dict[str, Any] | None], bool], within: float
) -> dict[str, Any]:
    with anyio.fail_after(within):
        while True:
            alert = await engine_alert(server)
            if done(alert):
                assert alert is not None
                return alert
            await anyio.sleep(0.2)


async def alert_notifications(server: ServerProcess) -> list[dict[str, Any]]:
    """The administrator's notification history of alerts, oldest first."""
    page = await get(server, "/v1/notifications", limit=50)
    found = [n for n in page["notifications"] if n["type"].startswith("alert.")]
    return found[::-1]


async def test_engine_down_fires_once_within_its_for_and_resolves_once(
    two_nodes: tuple[ServerProcess, ServerProcess], private_redis: PrivateRedis
) -> None:
    a, b = two_nodes
    # The admin page's first call records its administrator as a recipient.
    assert (await get(a, "/v1/admin/alerts"))["alerts"] == []
    async with open_stream(a.url, OPS, params={"channel": "admin"}) as (received, wait):
        stopped = time.monotonic()
        stopped_at = time.time()
        await anyio.to_thread.run_sync(private_redis.stop)

        firing = await alert_until(
            b, lambda alert: alert is not None and alert["state"] == "firing", 60
        )
        fired_after = time.monotonic() - stopped
        assert ENGINE_DOWN_FOR_S <= fired_after <= ENGINE_DOWN_FOR_S + EVALUATE_EVERY_S + SLACK_S
        assert (firing["severity"], firing["title"], firing["resolved_at"]) == (
            "critical",
            "Engine down",
            None,
        )
        assert firing["node"] in ("node-a", "node-b")
        assert "cannot reach the engine (redis)" in firing["summary"]
        assert datetime.fromisoformat(firing["since"]).timestamp() >= stopped_at - 1
        assert await engine_alert(a) == firing  # one state, shared

        # A node's gauge is the shared state as of its own last evaluation: the node that did
        # not fire it shows it at its next one, at most an interval later.
        firing_line = 'sinal_alerts_firing{alertname="SinalEngineDown"} 1.0'
        async with httpx.AsyncClient(base_url=a.url, timeout=10) as client:
            with anyio.fail_after(EVALUATE_EVERY_S + SLACK_S):
                while True:
                    if firing_line in (await client.get("/metrics")).text:
                        break
                    await anyio.sleep(0.2)

        [fired] = await alert_notifications(a)
        assert (fired["type"], fired["severity"], fired["link"]) == (
            "alert.firing",
            "error",
            "/app/admin#alerts",
        )
        assert fired["data"]["alert"] == "SinalEngineDown"
        # Both nodes keep seeing it, and keep evaluating: still one notification.
        await anyio.sleep(2 * EVALUATE_EVERY_S)
        assert [n["type"] for n in await alert_notifications(b)] == ["alert.firing"]

        restarted = time.monotonic()
        await anyio.to_thread.run_sync(private_redis.start)
        resolved = await alert_until(
            a, lambda alert: alert is not None and alert["state"] == "resolved", 60
        )
        assert time.monotonic() - restarted <= 30  # reconnects (backoff up to 5 s), evaluations
        assert resolved["since"] == firing["since"]
        assert resolved["resolved_at"] is not None

        # Live on the stream too: the firing one waited in the outbox until Redis was back.
        def created(r: Any) -> list[str]:
            return [
                p["notification"]["type"]
                for p in r.payloads("notification.created")
                if p["notification"]["type"].startswith("alert.")
            ]

        await wait(lambda r: created(r) == ["alert.firing", "alert.resolved"], 30)
        await wait(lambda r: len(r.payloads("admin.alert")) == 2, 10)
        assert [e["state"] for e in received.payloads("admin.alert")] == ["firing", "resolved"]

        await anyio.sleep(2 * EVALUATE_EVERY_S)  # both nodes evaluating again, Redis up
    history = await alert_notifications(a)
    assert [(n["type"], n["severity"]) for n in history] == [
        ("alert.firing", "error"),
        ("alert.resolved", "success"),
    ]
    assert created(received) == ["alert.firing", "alert.resolved"]
    assert (await engine_alert(b) or {}).get("state") == "resolved"
