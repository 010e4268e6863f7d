"""`GET /v1/notifications/poll`: long-poll with the SSE cursor."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest

from tests.support import (
    ServerProcess,
    assert_problem,
    bearer,
    open_stream,
    publish,
    stream_until,
)

pytestmark = pytest.mark.anyio

ALICE = bearer("alice")
CHANNEL, KIND = "notifications:alice", "notification.created"


async def poll(
    client: httpx.AsyncClient, headers: dict[str, str] = ALICE, **params: Any
) -> dict[str, Any]:
    response = await client.get("/v1/notifications/poll", params=params, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def numbers(reply: dict[str, Any]) -> list[int]:
    return [event["data"]["n"] for event in reply["events"]]


async def test_without_cursor_answers_the_current_position_at_once(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        await publish(client, CHANNEL, KIND, {"n": 0})
        started = time.monotonic()
        first = await poll(client, wait=20)
        assert time.monotonic() - started < 5
        assert first["events"] == []
        await publish(client, CHANNEL, KIND, {"n": 1})
        second = await poll(client, cursor=first["next_cursor"], wait=20)
    assert numbers(second) == [1]
    assert second["events"][0]["id"] == second["next_cursor"]
    assert second["events"][0]["channel"] == CHANNEL


async def test_returns_at_once_when_events_are_due_in_order(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        start = (await poll(client, wait=0))["next_cursor"]
        for n in range(5):
            await publish(client, CHANNEL, KIND, {"n": n})
        await publish(client, "broadcast", "broadcast", {"n": 99})
        reply = await poll(client, cursor=start, wait=20)
        again = await poll(client, cursor=reply["next_cursor"], wait=0)
    assert numbers(reply) == [0, 1, 2, 3, 4, 99]
    assert again["events"] == []


async def test_waits_and_returns_early_on_an_event(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        start = (await poll(client, wait=0))["next_cursor"]
        reply: dict[str, Any] = {}

        async def waiting() -> None:
            reply.update(await poll(client, cursor=start, wait=20))

        started = time.monotonic()
        async with anyio.create_task_group() as group:
            group.start_soon(waiting)
            await anyio.sleep(0.3)  # the poll is waiting now (a later publish is fine too)
            await publish(client, CHANNEL, KIND, {"n": 7})
        assert time.monotonic() - started < 10
    assert numbers(reply) == [7]


async def test_times_out_empty_after_wait(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        start = (await poll(client, wait=0))["next_cursor"]
        started = time.monotonic()
        reply = await poll(client, cursor=start, wait=0.5)
        elapsed = time.monotonic() - started
    assert reply["events"] == []
    assert reply["resets"] == []
    assert 0.4 < elapsed < 5
    assert reply["next_cursor"] == start


async def test_switches_between_sse_and_long_poll_without_loss_or_duplicate(
    server: ServerProcess,
) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        async with open_stream(server.url, ALICE) as (sse, wait):
            await publish(client, CHANNEL, KIND, {"n": 0})
            await wait(lambda r: len(r.payloads()) == 1)
        await publish(client, CHANNEL, KIND, {"n": 1})
        polled = await poll(client, cursor=sse.last_id, wait=5)
        await publish(client, CHANNEL, KIND, {"n": 2})
        back = await stream_until(
            server.url,
            ALICE,
            lambda r: len(r.payloads()) >= 1,
            last_event_id=polled["next_cursor"],
        )
    assert numbers(polled) == [1]
    assert [p["n"] for p in back.payloads()] == [2]


async def test_trimmed_cursor_signals_reset(
    spawn: Callable[..., ServerProcess], engine_env: dict[str, str]
) -> None:
    server = spawn({**engine_env, "SINAL_STREAM_MAX_LEN": "10"})
    async with httpx.AsyncClient(base_url=server.url) as client:
        await publish(client, CHANNEL, KIND, {"n": 0})
        start = (await poll(client, wait=0))["next_cursor"]
        for n in range(1, 400):
            await publish(client, CHANNEL, KIND, {"n": n})
        reply = await poll(client, cursor=start, wait=5)
    assert reply["resets"] == [{"channels": [CHANNEL], "reason": "trimmed"}]
    assert reply["events"] == []


async def test_ticket_is_accepted(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        ticket = (await client.post("/v1/auth/ticket", headers=ALICE)).json()["ticket"]
        reply = await poll(client, headers={}, ticket=ticket, wait=0)
    assert reply["next_cursor"].startswith("1.")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"wait": "-1"}, "wait"),
        ({"wait": "31"}, "wait"),
        ({"wait": "1e9"}, "wait"),
        ({"wait": "soon"}, "wait"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"channel": "nonsense"}, "channel"),
    ],
)
async def test_bad_input_is_400_naming_the_field(
    server: ServerProcess, params: dict[str, str], field: str
) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.get("/v1/notifications/poll", params=params, headers=ALICE)
    assert_problem(response, 400, field=field)


async def test_isolation_and_auth(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        anonymous = await client.get("/v1/notifications/poll", params={"wait": "0"})
        other = await client.get(
            "/v1/notifications/poll",
            params={"wait": "0", "channel": "notifications:bob"},
            headers=ALICE,
        )
        await publish(client, "notifications:bob", KIND, {"n": 1})
        mine = await poll(client, wait=0)
        mine = await poll(client, cursor=mine["next_cursor"], wait=0.3)
    assert_problem(anonymous, 401)
    assert_problem(other, 403, field="channel")
    assert mine["events"] == []
