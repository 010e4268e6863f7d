"""`GET /v1/stream` end to end: a real server process and a streaming HTTP client."""

from __future__ import annotations

import json
from collections.abc import Callable

import anyio
import httpx
import pytest

from tests.support import ServerProcess, bearer, open_stream, publish, stream_until

pytestmark = pytest.mark.anyio

ALICE = bearer("alice")


async def test_delivers_events_in_order_with_cursor_ids(server: ServerProcess) -> None:
    async with (
        httpx.AsyncClient(base_url=server.url) as client,
        open_stream(server.url, ALICE) as (received, wait),
    ):
        for n in range(20):
            await publish(client, "notifications:alice", "notification.created", {"n": n})
        await wait(lambda r: len(r.payloads()) == 20)
    assert [p["n"] for p in received.payloads()] == list(range(20))
    ids = [event.id for event in received.of_type("notification.created")]
    assert len(set(ids)) == 20
    assert all(i.startswith("1.") for i in ids)


async def test_handshake_headers_retry_and_ready(server: ServerProcess) -> None:
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=5) as client,
        client.stream("GET", "/v1/stream", headers=ALICE) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        text = ""
        async for chunk in response.aiter_text():
            text += chunk
            if "event: ready" in text:
                break
    # The hint is jittered per connection (tests/api/test_storm.py): SINAL_RETRY_MS to twice it.
    assert text.startswith("retry: ")
    assert 2000 <= int(text.split("\n")[0].removeprefix("retry: ")) <= 4000
    assert '"channels":["notifications:alice","broadcast"]' in text


async def test_fan_out_to_many_subscribers_and_channels(server: ServerProcess) -> None:
    headers = bearer("ops", "admin")
    params = [("channel", "execution:e1")]
    async with (
        httpx.AsyncClient(base_url=server.url) as client,
        open_stream(server.url, headers, params=params) as (first, wait_first),
        open_stream(server.url, headers, params=params) as (second, wait_second),
        open_stream(server.url, ALICE) as (alice, wait_alice),
    ):
        await publish(client, "execution:e1", "execution.progress", {"progress": 10})
        await publish(client, "broadcast", "broadcast", {"text": "maintenance"})
        await publish(client, "notifications:ops", "notification.created", {"n": 1})
        for wait in (wait_first, wait_second):
            await wait(lambda r: len(r.payloads()) == 3)
        await wait_alice(lambda r: len(r.payloads()) == 1)
    for received in (first, second):
        assert sorted(e.event for e in received.events if e.event != "ready") == [
            "broadcast",
            "execution.progress",
            "notification.created",
        ]
    assert alice.payloads() == [{"text": "maintenance"}]


async def test_resume_has_no_loss_and_no_duplicate_while_events_flow(
    server: ServerProcess,
) -> None:
    """Receive some events, drop, keep publishing, reconnect with the last id mid-flow."""
    channel, kind = "notifications:alice", "notification.created"
    async with httpx.AsyncClient(base_url=server.url) as client:
        async with open_stream(server.url, ALICE) as (first, wait):
            for n in range(10):
                await publish(client, channel, kind, {"n": n})
            await wait(lambda r: len(r.payloads()) == 10)
        for n in range(10, 60):  # nobody listens
            await publish(client, channel, kind, {"n": n})
        async with open_stream(server.url, ALICE, last_event_id=first.last_id) as (resumed, wait):
            for n in range(60, 120):
                await publish(client, channel, kind, {"n": n})
            await wait(lambda r: len(r.payloads()) >= 110)
    assert [p["n"] for p in first.payloads()] == list(range(10))
    assert [p["n"] for p in resumed.payloads()] == list(range(10, 120))
    assert not resumed.of_type("reset")


async def test_resume_from_query_parameter(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        before = await stream_until(server.url, ALICE, lambda r: bool(r.of_type("ready")))
        await publish(client, "notifications:alice", "notification.created", {"n": 1})
        resumed = await stream_until(
            server.url,
            ALICE,
            lambda r: len(r.payloads()) == 1,
            params={"last_event_id": before.last_id},
        )
    assert resumed.payloads() == [{"n": 1}]


async def test_garbage_cursor_in_header_resets_invalid(server: ServerProcess) -> None:
    received = await stream_until(
        server.url, ALICE, lambda r: bool(r.of_type("ready")), last_event_id="not-a-cursor"
    )
    resets = [event.json() for event in received.of_type("reset")]
    assert resets == [{"channels": ["notifications:alice", "broadcast"], "reason": "invalid"}]


async def test_garbage_cursor_in_query_is_400(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.get("/v1/stream", params={"last_event_id": "1.%%%"}, headers=ALICE)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["field"] == "last_event_id"


async def test_idle_stream_gets_heartbeat_comments(spawn: Callable[..., ServerProcess]) -> None:
    server = spawn({"SINAL_HEARTBEAT_INTERVAL": "0.2"})
    text = ""
    with anyio.fail_after(10):
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=5) as client,
            client.stream("GET", "/v1/stream", headers=ALICE) as response,
        ):
            async for chunk in response.aiter_text():
                text += chunk
                if text.count(": ping\n\n") >= 2:
                    break
    assert text.index("event: ready") < text.index(": ping")


async def test_reader_that_pauses_gets_every_event_once_in_order(server: ServerProcess) -> None:
    """Live writes go straight to the transport while the socket takes them, and through the
    ASGI `send` (which waits for it to drain) once its buffer is full: the chunks of both ways
    interleave in one correctly framed body, in order, none lost or repeated."""
    paused = await anyio.connect_tcp("127.0.0.1", server.port)
    request = (
        f"GET /v1/stream HTTP/1.1\r\nHost: x\r\nAuthorization: {ALICE['Authorization']}\r\n\r\n"
    )
    await paused.send(request.encode())
    raw = await paused.receive()  # the response has started; now it reads nothing for a while
    blob = "x" * 50_000
    events = 200  # 10 MB: more than the socket buffers of both ends hold
    async with httpx.AsyncClient(base_url=server.url) as client:
        for n in range(events):
            data = {"n": n, "b": blob}
            await publish(client, "notifications:alice", "notification.created", data)
    frames: list[str] = []
    with anyio.fail_after(30):
        while sum("event: notification.created" in frame for frame in frames) < events:
            raw += await paused.receive()
            head, _, body = raw.partition(b"\r\n\r\n")
            frames = _unchunk(body).decode().split("\n\n")
    await paused.aclose()
    delivered = [f for f in frames if "event: notification.created" in f]
    numbers = [json.loads(f.split("data: ", 1)[1])["data"]["n"] for f in delivered]
    assert numbers == list(range(events))
    ids = [f.split("\n", 1)[0] for f in delivered]
    assert all(i.startswith("id: 1.") for i in ids)
    assert len(set(ids)) == events
    assert b"transfer-encoding: chunked" in head.lower()


def _unchunk(body: bytes) -> bytes:
    """The complete chunks of a chunked body so far, joined (a partial last one left out)."""
    out: list[bytes] = []
    while True:
        size_line, crlf, rest = body.partition(b"\r\n")
        if not crlf:
            return b"".join(out)
        size = int(size_line, 16)
        if len(rest) < size + 2:
            return b"".join(out)
        assert rest[size : size + 2] == b"\r\n", "a chunk's data must end with CRLF"
        out.append(rest[:size])
        body = rest[size + 2 :]


async def test_client_that_stops_reading_is_cut_off_and_counted(
    spawn: Callable[..., ServerProcess],
) -> None:
    """A slow consumer is closed (it would resume by cursor); nothing of it stays behind."""
    server = spawn({"SINAL_BUFFER_SIZE": "8"})
    stuck = await anyio.connect_tcp("127.0.0.1", server.port)
    request = (
        f"GET /v1/stream HTTP/1.1\r\nHost: x\r\nAuthorization: {ALICE['Authorization']}\r\n\r\n"
    )
    await stuck.send(request.encode())
    await stuck.receive()  # the response has started; from now on this client reads nothing
    admin = bearer("root", "admin")
    big = {"blob": "x" * 60_000}
    async with httpx.AsyncClient(base_url=server.url) as client:
        with anyio.fail_after(20):
            while True:
                stats = (await client.get("/v1/admin/stats", headers=admin)).json()
                if stats["slow_consumer_closes"] >= 1 and stats["connections"] == 0:
                    break
                await publish(client, "notifications:alice", "notification.created", big)
    await stuck.aclose()
    assert "Traceback" not in server.logs()
