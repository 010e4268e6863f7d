"""Reconnect storms: the bound on handshakes in progress, and the jittered `retry:` hint."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import anyio
import httpx
import pytest
import redis

from tests.support import PrivateRedis, ServerProcess, bearer

pytestmark = pytest.mark.anyio

ALICE = bearer("alice")


async def first_lines(client: httpx.AsyncClient) -> tuple[int, str]:
    """A stream's status and what it sent up to `ready` (or the whole body if refused)."""
    async with client.stream("GET", "/v1/stream", headers=ALICE) as response:
        text = ""
        async for chunk in response.aiter_text():
            text += chunk
            if "event: ready" in text:
                break
        return response.status_code, text


async def in_progress(client: httpx.AsyncClient, count: int) -> None:
    """Returns once the server counts `count` handshakes in progress."""
    line = f"sinal_handshakes_in_progress {float(count)}"
    while True:
        if line in (await client.get("/metrics")).text.splitlines():
            return
        await asyncio.sleep(0.02)  # a gauge of another process: nothing to wait on but scrapes


async def test_the_retry_hint_is_jittered_per_connection(memory_server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=memory_server.url, timeout=5) as client:
        with anyio.fail_after(10):
            heads = await asyncio.gather(*(first_lines(client) for _ in range(12)))
    hints = [int(text.split("\n")[0].removeprefix("retry: ")) for _, text in heads]
    assert all(status == 200 for status, _ in heads)
    assert all(2000 <= hint <= 4000 for hint in hints)  # SINAL_RETRY_MS to twice it
    assert len(set(hints)) > 1


async def test_handshakes_past_the_bound_wait_then_get_503(
    spawn: Callable[..., ServerProcess], private_redis: PrivateRedis
) -> None:
    server = spawn({"SINAL_REDIS_URL": private_redis.url, "SINAL_MAX_HANDSHAKES": "2"})
    paused_s = 3.5
    # Redis answers nothing for a while: the handshakes let in stay in progress (subscribing).
    redis.Redis(port=private_redis.port).execute_command("CLIENT", "PAUSE", int(paused_s * 1000))
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        with anyio.fail_after(15):
            started = asyncio.get_running_loop().time()
            admitted = [asyncio.ensure_future(first_lines(client)) for _ in range(2)]
            await in_progress(client, 2)  # both held by the pause
            refused = await client.get("/v1/stream", headers=ALICE)
            waited = asyncio.get_running_loop().time() - started
            outcomes = await asyncio.gather(*admitted)
    # The third waited its turn (2 s in the queue), and none came free: refused.
    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"
    assert 1 <= int(refused.headers["retry-after"]) <= 5
    assert json.loads(refused.text)["status"] == 503
    assert 1.5 <= waited < paused_s
    # Those in progress finish once Redis answers again.
    assert [status for status, _ in outcomes] == [200, 200]
    assert all("event: ready" in text for _, text in outcomes)
    # Their places are free again: the next handshake goes through at once.
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as client:
        with anyio.fail_after(5):
            status, _ = await first_lines(client)
    assert status == 200
