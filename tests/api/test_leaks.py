"""Connections and tasks return to baseline after clients leave, on both engines.

The server reports its own counts (`GET /v1/admin/stats`): open stream connections and live
asyncio tasks. A thousand clients come and go, some of them refused and some leaving before
the handshake ends; then the counts must settle back where they started.
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from tests.support import ADMIN, ServerProcess, bearer

pytestmark = pytest.mark.anyio

CYCLES = 1000
CONCURRENCY = 20


async def stats(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/v1/admin/stats", headers=ADMIN)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def settled(client: httpx.AsyncClient, baseline: dict[str, Any]) -> dict[str, Any]:
    """The stats once connections and tasks are back at `baseline`; fails after a deadline."""
    current = await stats(client)
    with anyio.move_on_after(20):
        while (current["connections"], current["tasks"]) != (
            baseline["connections"],
            baseline["tasks"],
        ):
            await anyio.sleep(0.05)
            current = await stats(client)
    return current


async def cycle(client: httpx.AsyncClient, n: int) -> None:
    """One client: most read until `ready` and leave; some leave early; some are refused."""
    user = f"user{n % 37}"
    headers, params, expected = bearer(user), [("channel", "notifications")], 200
    if n % 5 == 0:  # several connections share an execution channel, then let go of it
        headers, params = bearer(user, "admin"), [("channel", f"execution:e{n % 3}")]
    if n % 50 == 7:  # refused before the stream starts
        params, expected = [("channel", "notifications:someone-else")], 403
    async with client.stream("GET", "/v1/stream", headers=headers, params=params) as response:
        assert response.status_code == expected
        if expected != 200 or n % 10 == 3:  # gone before reading the handshake
            return
        async for line in response.aiter_lines():
            if line == "event: ready":
                return
        pytest.fail("the stream ended before `ready`")


async def test_connect_disconnect_cycles_leave_no_connection_or_task(
    server: ServerProcess,
) -> None:
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=0)
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=10) as client,
        httpx.AsyncClient(base_url=server.url, timeout=10, limits=limits) as clients,
    ):
        baseline = await stats(client)
        assert baseline["connections"] == 0

        counter = iter(range(CYCLES))

        async def worker() -> None:
            for n in counter:
                await cycle(clients, n)

        with anyio.fail_after(120):
            async with anyio.create_task_group() as group:
                for _ in range(CONCURRENCY):
                    group.start_soon(worker)

        after = await settled(client, baseline)
    refused = len([n for n in range(CYCLES) if n % 50 == 7])
    assert after["connections_total"] - baseline["connections_total"] == CYCLES - refused
    assert after["connections"] == baseline["connections"], (baseline, after)
    assert after["tasks"] == baseline["tasks"], (baseline, after)
