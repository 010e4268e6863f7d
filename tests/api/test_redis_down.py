"""A Redis that goes down under a running server: what still answers, what fails fast and says
when to retry, and that streams work again once it is back."""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import httpx
import pytest

from tests.support import (
    ADMIN,
    PrivateRedis,
    ServerProcess,
    assert_problem,
    bearer,
    stream_response,
    stream_until,
)

pytestmark = pytest.mark.anyio

ALICE = bearer("alice")
# A stream that waited out the subscription timeout took 10 s; failing fast means well under it.
FAST_S = 1.0


async def engine_down(client: httpx.AsyncClient) -> None:
    """Wait until the server has noticed that Redis is gone (its readiness says so)."""
    for _ in range(200):
        if (await client.get("/readyz")).status_code == 503:
            return
        await anyio.sleep(0.05)
    pytest.fail("the server did not notice within 10 s that Redis is down")


async def test_streams_and_long_polls_fail_fast_with_retry_after_and_recover(
    spawn: Callable[..., ServerProcess], private_redis: PrivateRedis
) -> None:
    """Bug: with Redis down, opening a stream (or a long-poll) answered 503 only after the
    hub's 10 s subscription timeout, and with no `Retry-After`."""
    server = spawn({"SINAL_REDIS_URL": private_redis.url})
    async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
        await anyio.to_thread.run_sync(private_redis.stop)
        await engine_down(client)

        started = time.monotonic()
        response = await stream_response(server.url, ALICE)
        elapsed = time.monotonic() - started
        assert_problem(response, 503)
        assert response.headers["retry-after"] == "1"
        assert elapsed < FAST_S, f"the stream took {elapsed:.1f} s to refuse"

        started = time.monotonic()
        response = await client.get("/v1/notifications/poll", headers=ALICE, params={"wait": 5})
        elapsed = time.monotonic() - started
        assert_problem(response, 503)
        assert response.headers["retry-after"] == "1"
        assert elapsed < FAST_S, f"the long-poll took {elapsed:.1f} s to refuse"

        await anyio.to_thread.run_sync(private_redis.start)
        # The reader reconnects with a backoff of at most 5 s: streams open again after it.
        deadline = time.monotonic() + 15
        while (await stream_response(server.url, ALICE)).status_code == 503:
            assert time.monotonic() < deadline, "streams did not recover once Redis was back"
            await anyio.sleep(0.1)
        received = await stream_until(server.url, ALICE, lambda r: bool(r.of_type("ready")))
        assert received.of_type("ready")[0].json()["channels"] == [
            "notifications:alice",
            "broadcast",
        ]


async def test_admin_stats_answer_while_redis_is_down(
    spawn: Callable[..., ServerProcess], private_redis: PrivateRedis
) -> None:
    """Bug: `/v1/admin/stats` answered 503 while Redis was down, exactly when its
    `outbox_pending` (events committed, not yet published) matters."""
    server = spawn({"SINAL_REDIS_URL": private_redis.url})
    async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
        up = (await client.get("/v1/admin/stats", headers=ADMIN)).json()
        assert up["engine"] == "redis"
        assert up["commands_pending"] == 0

        await anyio.to_thread.run_sync(private_redis.stop)
        await engine_down(client)
        created = await client.post(
            "/v1/notifications",
            json={"user": "alice", "type": "test.note", "title": "While Redis is down"},
            headers=bearer("svc", "service"),
        )
        assert created.status_code == 201, created.text

        response = await client.get("/v1/admin/stats", headers=ADMIN)
        assert response.status_code == 200, response.text
        down = response.json()
        assert down["engine"] == "unreachable"
        assert down["commands_pending"] is None
        assert down["outbox_pending"] >= 1
        assert down.keys() == up.keys()
