"""Resume across reconnects, restarts, trimming, lost Redis data and server processes."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import httpx
import pytest
import redis

from tests.support import (
    ServerProcess,
    bearer,
    open_stream,
    publish,
    stream_until,
)

pytestmark = pytest.mark.anyio

ALICE = bearer("alice")
CHANNEL, KIND = "notifications:alice", "notification.created"


async def publish_range(base_url: str, numbers: range) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        for n in numbers:
            await publish(client, CHANNEL, KIND, {"n": n})


async def cursor_after(base_url: str, count: int) -> str:
    """Publish `count` events while connected and return the cursor after them."""
    async with open_stream(base_url, ALICE) as (received, wait):
        await publish_range(base_url, range(count))
        await wait(lambda r: len(r.payloads()) == count)
    assert received.last_id is not None
    return received.last_id


def numbers(payloads: list[dict[str, int]]) -> list[int]:
    return [payload["n"] for payload in payloads]


async def test_resume_after_server_restart(
    spawn: Callable[..., ServerProcess], engine_env: dict[str, str]
) -> None:
    server = spawn(engine_env)
    cursor = await cursor_after(server.url, 3)
    await publish_range(server.url, range(3, 6))  # published, never seen by the client
    await anyio.to_thread.run_sync(server.restart)
    await publish_range(server.url, range(6, 9))
    resumed = await stream_until(
        server.url,
        ALICE,
        lambda r: len(r.payloads()) == 6 or bool(r.of_type("reset")),
        last_event_id=cursor,
    )
    if "SINAL_REDIS_URL" in engine_env:
        assert numbers(resumed.payloads()) == list(range(3, 9))
        assert not resumed.of_type("reset")
    else:
        # The embedded engine keeps its log in memory: a restart loses it, and says so.
        reset = resumed.of_type("reset")[0].json()
        assert reset == {"channels": [CHANNEL, "broadcast"], "reason": "epoch"}


async def test_trimmed_position_resets_then_continues_live(
    spawn: Callable[..., ServerProcess], engine_env: dict[str, str]
) -> None:
    server = spawn({**engine_env, "SINAL_STREAM_MAX_LEN": "10"})
    cursor = await cursor_after(server.url, 1)
    await publish_range(server.url, range(1, 400))  # Redis trims in whole nodes of 100
    async with open_stream(server.url, ALICE, last_event_id=cursor) as (resumed, wait):
        await publish_range(server.url, range(400, 403))
        await wait(lambda r: len(r.payloads()) >= 3)
    assert [event.json() for event in resumed.of_type("reset")] == [
        {"channels": [CHANNEL], "reason": "trimmed"}
    ]
    assert numbers(resumed.payloads()) == [400, 401, 402]


async def test_lost_redis_data_resets_with_epoch(
    spawn: Callable[..., ServerProcess], redis_url: str
) -> None:
    server = spawn({"SINAL_REDIS_URL": redis_url})
    cursor = await cursor_after(server.url, 2)
    redis.Redis.from_url(redis_url).flushdb()
    await publish_range(server.url, range(2, 4))
    resumed = await stream_until(
        server.url, ALICE, lambda r: bool(r.of_type("ready")), last_event_id=cursor
    )
    resets = [event.json() for event in resumed.of_type("reset")]
    assert {"channels": [CHANNEL, "broadcast"], "reason": "epoch"} in resets or resets == [
        {"channels": [CHANNEL], "reason": "epoch"},
        {"channels": ["broadcast"], "reason": "epoch"},
    ]


async def test_two_processes_share_one_redis(
    spawn: Callable[..., ServerProcess], redis_url: str
) -> None:
    first = spawn({"SINAL_REDIS_URL": redis_url})
    second = spawn({"SINAL_REDIS_URL": redis_url})
    async with open_stream(first.url, ALICE) as (on_first, wait):
        await publish_range(second.url, range(5))
        await wait(lambda r: len(r.payloads()) == 5)
    assert numbers(on_first.payloads()) == list(range(5))

    # The client moves to the other process with its cursor while events keep coming.
    await publish_range(first.url, range(5, 10))
    async with open_stream(second.url, ALICE, last_event_id=on_first.last_id) as (moved, wait):
        await publish_range(first.url, range(10, 15))
        await wait(lambda r: len(r.payloads()) == 10)
    assert numbers(moved.payloads()) == list(range(5, 15))
    assert not moved.of_type("reset")


async def test_shutdown_drains_streams_and_clients_resume_elsewhere(
    spawn: Callable[..., ServerProcess], redis_url: str
) -> None:
    leaving = spawn({"SINAL_REDIS_URL": redis_url})
    staying = spawn({"SINAL_REDIS_URL": redis_url})
    async with open_stream(leaving.url, ALICE) as (before, wait):
        await publish_range(staying.url, range(3))
        await wait(lambda r: len(r.payloads()) == 3)
        with anyio.fail_after(15):
            code = await anyio.to_thread.run_sync(leaving.stop)
        await wait(lambda r: r.ended, 5)
    # Uvicorn re-raises the signal it handled once shutdown is complete.
    assert code == -15
    logs = leaving.logs()
    assert "Application shutdown complete" in logs
    assert "Cancel" not in logs  # no stream had to be cut off
    assert before.retries[-1] < 2000  # told to come back quickly
    # ... and why, last: a client that knows the event reconnects at once, with its cursor.
    assert before.events[-1].event == "disconnect"
    assert before.events[-1].json() == {"reason": "shutdown", "reconnect": True}

    await publish_range(staying.url, range(3, 6))
    resumed = await stream_until(
        staying.url, ALICE, lambda r: len(r.payloads()) == 3, last_event_id=before.last_id
    )
    assert numbers(resumed.payloads()) == [3, 4, 5]
