"""A Redis server that restarts empty: open streams and resuming clients are told, not misled."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import httpx
import pytest

from tests.support import PrivateRedis, ServerProcess, bearer, open_stream, publish, stream_until

pytestmark = pytest.mark.anyio

ALICE = bearer("alice")
CHANNEL, KIND = "notifications:alice", "notification.created"


async def test_open_stream_gets_epoch_reset_then_new_events(
    spawn: Callable[..., ServerProcess], private_redis: PrivateRedis
) -> None:
    server = spawn({"SINAL_REDIS_URL": private_redis.url})
    async with (
        httpx.AsyncClient(base_url=server.url) as client,
        open_stream(server.url, ALICE) as (received, wait),
    ):
        await publish(client, CHANNEL, KIND, {"n": 0})
        await wait(lambda r: len(r.payloads()) == 1)
        before = received.last_id
        await anyio.to_thread.run_sync(private_redis.stop)
        await anyio.to_thread.run_sync(private_redis.start)
        # Publishing works again once the pools reconnect; until then it answers 503.
        for _ in range(100):
            response = await client.post(
                "/v1/publish",
                json={"channel": CHANNEL, "type": KIND, "data": {"n": 1}},
                headers=bearer("svc", "service"),
            )
            if response.status_code == 201:
                break
            assert response.status_code == 503, response.text
            await anyio.sleep(0.1)
        else:
            pytest.fail("publishing did not recover within 10 s of Redis coming back")
        await wait(lambda r: bool(r.of_type("reset")) and len(r.payloads()) == 2, 15)
    assert received.of_type("reset")[0].json() == {"channels": [CHANNEL], "reason": "epoch"}
    assert [p["n"] for p in received.payloads()] == [0, 1]

    # A client resuming from before the restart is told too.
    resumed = await stream_until(
        server.url, ALICE, lambda r: bool(r.of_type("ready")), last_event_id=before
    )
    reasons = {event.json()["reason"] for event in resumed.of_type("reset")}
    assert reasons == {"epoch"}
