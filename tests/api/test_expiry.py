"""A connection ends with its credential: SSE, tickets, the action WebSocket and long-poll.

Each test opens a connection with a token that expires within 2 s against a server with
`SINAL_AUTH_GRACE=0` (one test with a grace), and checks how it ends: an SSE stream with
`event: disconnect` (`expired`, no `id:`), a socket with close code 4001, a long-poll early.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.support import SECRET, ServerProcess, open_stream, publish, token

pytestmark = pytest.mark.anyio

CHANNEL, KIND = "notifications:alice", "notification.created"
EXPIRED = {"reason": "expired", "reconnect": True}


def short_token(sub: str = "alice", ttl_s: int = 2) -> tuple[str, float]:
    """A token that expires within `ttl_s` seconds, and when exactly."""
    value = token(sub, ttl_s=ttl_s)
    return value, float(jwt.decode(value, SECRET, algorithms=["HS256"])["exp"])


async def raw_stream(
    base_url: str,
    headers: dict[str, str],
    params: dict[str, str] | None = None,
    *,
    within: float = 10.0,
    on_ready: Callable[[], Any] | None = None,
) -> str:
    """The whole body of one `/v1/stream` response, read until the server ends it: the raw
    text shows which frames carry an `id:` line (an SSE parser repeats the last id)."""
    text = ""
    with anyio.fail_after(within):
        async with (
            httpx.AsyncClient(base_url=base_url, timeout=None) as client,
            client.stream("GET", "/v1/stream", headers=headers, params=params) as response,
        ):
            assert response.status_code == 200, await response.aread()
            async for chunk in response.aiter_text():
                text += chunk
                if on_ready is not None and "event: ready" in text:
                    await on_ready()
                    on_ready = None
    return text


def frames(text: str) -> list[dict[str, str]]:
    """SSE frames as {field: value}; comments and `retry:`-only frames included."""
    parsed = []
    for block in text.split("\n\n"):
        if block.strip():
            fields: dict[str, str] = {}
            for line in block.split("\n"):
                name, _, value = line.partition(": ")
                fields[name] = value
            parsed.append(fields)
    return parsed


async def test_a_stream_ends_with_disconnect_expired_when_its_token_expires(
    graceless: ServerProcess,
) -> None:
    """Regression: a stream opened with a JWT ran on after the JWT's `exp`. It must end then,
    its last frame `disconnect` with reason `expired` and no `id:` (the cursor does not move),
    and the client resumes from the last id with a fresh token, losing nothing."""
    value, expires_at = short_token()
    async with httpx.AsyncClient(base_url=graceless.url) as client:

        async def publish_one() -> None:
            await publish(client, CHANNEL, KIND, {"n": 1})

        text = await raw_stream(
            graceless.url, {"Authorization": f"Bearer {value}"}, on_ready=publish_one
        )
        ended_at = time.time()
        assert expires_at - 0.1 <= ended_at <= expires_at + 1.5  # at `exp`, not before
        received = frames(text)
        assert received[-1] == {
            "event": "disconnect",
            "data": json.dumps(EXPIRED, separators=(",", ":")),
        }
        published = [frame for frame in received if frame.get("event") == KIND]
        assert len(published) == 1
        cursor = published[0]["id"]

        # Published while the client had no stream: the resume with a fresh token has it.
        await publish(client, CHANNEL, KIND, {"n": 2})
    async with open_stream(
        graceless.url, {"Authorization": f"Bearer {token('alice')}"}, last_event_id=cursor
    ) as (resumed, wait):
        await wait(lambda r: len(r.payloads()) >= 1, 10)
    assert resumed.payloads() == [{"n": 2}]
    assert not resumed.of_type("reset")


async def test_the_grace_is_honoured(spawn: Callable[..., ServerProcess]) -> None:
    """With `SINAL_AUTH_GRACE=1` the stream ends a second after the token's `exp`, not at it."""
    server = spawn({"SINAL_AUTH_GRACE": "1"})
    value, expires_at = short_token()
    text = await raw_stream(server.url, {"Authorization": f"Bearer {value}"})
    assert time.time() >= expires_at + 0.9
    assert frames(text)[-1]["event"] == "disconnect"


async def test_a_ticket_never_outlives_its_token(graceless: ServerProcess) -> None:
    """Regression: a ticket minted from a token about to expire stayed valid for the whole
    `SINAL_TICKET_TTL`, and said so in `expires_in`."""
    value, expires_at = short_token()
    async with httpx.AsyncClient(base_url=graceless.url) as client:
        response = await client.post(
            "/v1/auth/ticket", headers={"Authorization": f"Bearer {value}"}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert 0 <= body["expires_in"] <= 2  # not the 60 s of SINAL_TICKET_TTL
        assert jwt.decode(body["ticket"], options={"verify_signature": False})["exp"] <= expires_at

        await anyio.sleep(max(0.0, expires_at - time.time()) + 0.1)
        refused = await client.get("/v1/notifications/poll", params={"ticket": body["ticket"]})
    assert refused.status_code == 401
    assert "expired" in refused.json()["detail"]


async def test_a_stream_opened_with_a_ticket_ends_when_the_token_behind_it_expires(
    graceless: ServerProcess,
) -> None:
    value, expires_at = short_token()
    async with httpx.AsyncClient(base_url=graceless.url) as client:
        response = await client.post(
            "/v1/auth/ticket", headers={"Authorization": f"Bearer {value}"}
        )
    text = await raw_stream(graceless.url, {}, {"ticket": response.json()["ticket"]})
    assert time.time() >= expires_at - 0.1
    last = frames(text)[-1]
    assert "id" not in last
    assert (last["event"], json.loads(last["data"])) == ("disconnect", EXPIRED)


async def test_a_stream_opened_with_a_ticket_outlives_the_ticket(
    spawn: Callable[..., ServerProcess],
) -> None:
    """A ticket only has to be used soon: the stream it opened lives as long as the token it
    was minted from, not as the ticket (else every stream would reconnect each minute)."""
    server = spawn({"SINAL_TICKET_TTL": "1", "SINAL_AUTH_GRACE": "0"})
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.post(
            "/v1/auth/ticket", headers={"Authorization": f"Bearer {token('alice')}"}
        )
        ticket = response.json()["ticket"]
        async with open_stream(server.url, {}, params={"ticket": ticket}) as (received, wait):
            await anyio.sleep(2.5)  # the ticket has expired meanwhile
            await publish(client, CHANNEL, KIND, {"n": 1})
            await wait(lambda r: len(r.payloads()) == 1, 10)
    assert not received.of_type("disconnect")


async def test_the_action_socket_closes_with_4001_when_its_token_expires(
    graceless: ServerProcess,
) -> None:
    """Regression: an action WebSocket stayed open, and acted, after its JWT's `exp`."""
    value, expires_at = short_token()
    url = graceless.url.replace("http://", "ws://") + "/v1/actions"
    async with connect(url, additional_headers={"Authorization": f"Bearer {value}"}) as socket:
        await socket.send(json.dumps({"op": "ping", "ref": "1"}))
        assert json.loads(await socket.recv())["ref"] == "1"
        with anyio.fail_after(5), contextlib.suppress(ConnectionClosed):
            while True:
                await socket.recv()
    assert time.time() >= expires_at - 0.1
    assert (socket.close_code, socket.close_reason) == (4001, "expired")


async def test_a_long_poll_ends_early_when_its_token_expires(graceless: ServerProcess) -> None:
    """Regression: a long-poll waited its whole `wait` after its JWT had expired. It answers
    at the expiry with what it has; the next request is refused."""
    value, expires_at = short_token()
    headers = {"Authorization": f"Bearer {value}"}
    async with httpx.AsyncClient(base_url=graceless.url, timeout=30) as client:
        first = await client.get("/v1/notifications/poll", headers=headers)
        cursor = first.json()["next_cursor"]
        started = time.monotonic()
        waited = await client.get(
            "/v1/notifications/poll", headers=headers, params={"cursor": cursor, "wait": 25}
        )
        elapsed = time.monotonic() - started
        assert waited.status_code == 200, waited.text
        assert waited.json() == {"events": [], "resets": [], "next_cursor": cursor}
        assert elapsed < 4, f"the long-poll waited {elapsed:.1f} s"
        assert time.time() >= expires_at - 0.1
        after = await client.get(
            "/v1/notifications/poll", headers=headers, params={"cursor": cursor, "wait": 0}
        )
    assert after.status_code == 401


async def test_a_commands_long_poll_ends_early_when_its_token_expires(
    graceless: ServerProcess,
) -> None:
    """The execution service's wait for commands ends with its token too."""
    value = token("svc", "service", ttl_s=2)
    async with httpx.AsyncClient(base_url=graceless.url, timeout=30) as client:
        started = time.monotonic()
        waited = await client.get(
            "/v1/commands",
            headers={"Authorization": f"Bearer {value}"},
            params={"consumer": "worker-1", "wait": 25},
        )
    elapsed = time.monotonic() - started
    assert waited.status_code == 200, waited.text
    assert waited.json() == {"commands": []}
    assert elapsed < 4, f"the wait for commands lasted {elapsed:.1f} s"
