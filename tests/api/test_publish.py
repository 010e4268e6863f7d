"""`POST /v1/publish`, and the channel list of `/v1/stream`: what is accepted, what is refused.

Refusals are 4xx `application/problem+json` naming the field; never a 500, never a hang.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import anyio
import httpx
import pytest

from streams.cursor import decode_cursor
from tests.support import (
    ADMIN,
    SERVICE,
    ServerProcess,
    assert_problem,
    bearer,
    open_stream,
    publish,
    stream_response,
)

pytestmark = pytest.mark.anyio

LIMIT = 65536  # SINAL_MAX_PAYLOAD_BYTES default


async def post(server: ServerProcess, body: Any, **kwargs: Any) -> httpx.Response:
    """Publish as a service; `body` is sent as JSON unless it is already bytes."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        return await client.post("/v1/publish", content=content, headers=SERVICE, **kwargs)


def event(**fields: Any) -> dict[str, Any]:
    return {"channel": "broadcast", "type": "broadcast", "data": {"n": 1}, **fields}


# -- the happy path ----------------------------------------------------------------------------


async def test_publish_returns_201_with_cursor_and_time(server: ServerProcess) -> None:
    before = datetime.now().astimezone()
    response = await post(server, event(channel="execution:e1", type="execution.progress"))
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"cursor", "ts"}
    assert body["ts"].endswith("Z")
    ts = datetime.fromisoformat(body["ts"])
    assert abs((ts - before).total_seconds()) < 60
    (position,) = decode_cursor(body["cursor"]).values()
    assert list(decode_cursor(body["cursor"])) == ["execution:e1"]
    assert position.offset[0] == int(ts.timestamp() * 1000)


async def test_data_may_be_omitted_or_any_json_value(memory_server: ServerProcess) -> None:
    for data in (None, 0, "text", [1, 2], {"deep": {"er": [True]}}):
        assert (await post(memory_server, event(data=data))).status_code == 201
    response = await post(memory_server, {"channel": "broadcast", "type": "broadcast"})
    assert response.status_code == 201


async def test_publish_cursor_resumes_a_stream_after_that_event(server: ServerProcess) -> None:
    channel, kind, dora = "notifications:dora", "notification.created", bearer("dora")
    async with httpx.AsyncClient(base_url=server.url) as client:
        cursors = [(await publish(client, channel, kind, {"n": n}))["cursor"] for n in range(5)]
        async with open_stream(server.url, dora, last_event_id=cursors[2]) as (received, wait):
            await wait(lambda r: len(r.payloads()) >= 2, 10)
            await publish(client, channel, kind, {"n": 5})
            await wait(lambda r: {"n": 5} in r.payloads(), 10)
    assert received.payloads() == [{"n": 3}, {"n": 4}, {"n": 5}]
    resets = [frame.json() for frame in received.of_type("reset")]
    assert all(channel not in reset["channels"] for reset in resets), resets


async def test_pretty_printed_data_arrives_as_one_data_line(server: ServerProcess) -> None:
    """Regression: a payload with line breaks between tokens split the SSE `data:` line."""
    raw = (
        b'{"channel": "notifications:erin",\n "type": "note.pretty",\r\n'
        b' "data": {\n  "a": 1,\r\n  "b": "x\\ny"\n }\n}'
    )
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=10) as client,
        client.stream("GET", "/v1/stream", headers=bearer("erin")) as response,
    ):
        text = ""
        with anyio.fail_after(10):
            chunks = response.aiter_text()
            while frame_of(text, "event: ready") is None:
                text += await anext(chunks)
            assert (await post(server, raw)).status_code == 201
            while frame_of(text, "event: note.pretty") is None:
                text += await anext(chunks)
    frame = frame_of(text, "event: note.pretty")
    assert frame is not None
    lines = frame.split("\n")
    assert len(lines) == 2
    assert lines[1].startswith("data: ")
    envelope = json.loads(lines[1].removeprefix("data: "))
    assert envelope["data"] == {"a": 1, "b": "x\ny"}


def frame_of(text: str, first_line: str) -> str | None:
    """The complete SSE frame of `text` that starts with `first_line`, without its `id:`."""
    start = text.find(first_line)
    end = text.find("\n\n", start)
    return text[start:end] if start >= 0 and end >= 0 else None


async def test_payload_of_exactly_the_limit_is_accepted(memory_server: ServerProcess) -> None:
    data = "x" * (LIMIT - 2)  # two bytes of quotes
    assert (await post(memory_server, event(data=data))).status_code == 201


async def test_event_type_of_64_characters_is_accepted(memory_server: ServerProcess) -> None:
    kind = "a." + "b" * 62
    assert (await post(memory_server, event(type=kind))).status_code == 201


# -- refused input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "channel",
    [
        "foo",
        "Broadcast",
        "notifications",  # publishers name the user
        "notifications:",
        "notifications:al ice",
        "notifications:alice:x",
        "execution:x/y",
        "execution:<script>",
        "execution:" + "x" * 129,
        "",
    ],
)
async def test_unknown_or_malformed_channel_is_400(
    memory_server: ServerProcess, channel: str
) -> None:
    body = assert_problem(await post(memory_server, event(channel=channel)), 400, "channel")
    assert "channel" in body["detail"]


@pytest.mark.parametrize("channel", ["broadcast\n", "execution:x\n"])
async def test_channel_with_trailing_line_break_is_400(
    memory_server: ServerProcess, channel: str
) -> None:
    assert_problem(await post(memory_server, event(channel=channel)), 400, "channel")


@pytest.mark.parametrize(
    "kind",
    [
        "ready",
        "reset",
        "message",
        "Notification.created",
        "notification.Created",
        "notification..created",
        ".created",
        "created.",
        "1created",
        "note-created",
        "note created",
        "note.created\n",
        "",
        "a" * 65,
    ],
)
async def test_invalid_or_reserved_event_type_is_400(
    memory_server: ServerProcess, kind: str
) -> None:
    assert_problem(await post(memory_server, event(type=kind)), 400, "type")


async def test_disconnect_is_reserved_too(memory_server: ServerProcess) -> None:
    """A service could publish an event of type `disconnect`, which every client takes for the
    server ending its stream (the browser client stops for good on `"reason": "revoked"`).
    Every type of Sinal's own frames is reserved now."""
    answer = await post(memory_server, event(type="disconnect", data={"reason": "revoked"}))
    assert_problem(answer, 400, "type")


async def test_payload_over_the_limit_is_413(memory_server: ServerProcess) -> None:
    data = "x" * (LIMIT - 1)
    body = assert_problem(await post(memory_server, event(data=data)), 413, "data")
    assert str(LIMIT) in body["detail"]


async def test_body_far_over_the_limit_is_413(memory_server: ServerProcess) -> None:
    huge = event(data="x" * 1_000_000)
    assert_problem(await post(memory_server, huge), 413)


async def test_chunked_body_far_over_the_limit_is_413(memory_server: ServerProcess) -> None:
    """Without Content-Length the limit must hold too, while the body arrives."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"channel": "broadcast", "type": "broadcast", "data": "'
        for _ in range(100):
            yield b"x" * 10_000
        yield b'"}'

    async with httpx.AsyncClient(base_url=memory_server.url, timeout=10) as client:
        response = await client.post("/v1/publish", content=chunks(), headers=SERVICE)
    assert_problem(response, 413)


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"nul",
        b"{'channel': 'broadcast'}",
        b'{"channel": "broadcast", "type": "broadcast",}',
        b'{"channel": "broadcast", "type": "broadcast", "data": {}} trailing',
        b'{"channel": "broadcast", "type": "broadcast", "data": NaN}',
    ],
)
async def test_malformed_json_is_400(memory_server: ServerProcess, raw: bytes) -> None:
    assert "JSON" in assert_problem(await post(memory_server, raw), 400)["detail"]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"channel": "broadcast", "type": "\xff"}',
        b'{"channel": "broadcast", "type": "broadcast", "data": "\xc3\x28"}',
        b'\xfe\xff{"channel": "broadcast", "type": "broadcast"}',
    ],
)
async def test_body_that_is_not_utf8_is_400(memory_server: ServerProcess, raw: bytes) -> None:
    """Regression: invalid UTF-8 raised UnicodeDecodeError (a 500), or passed inside `data`."""
    assert "UTF-8" in assert_problem(await post(memory_server, raw), 400)["detail"]


async def test_empty_body_is_400(memory_server: ServerProcess) -> None:
    assert "empty" in assert_problem(await post(memory_server, b""), 400)["detail"]


@pytest.mark.parametrize("raw", [b"[]", b'"broadcast"', b"null", b"42"])
async def test_body_that_is_not_an_object_is_400(memory_server: ServerProcess, raw: bytes) -> None:
    assert "object" in assert_problem(await post(memory_server, raw), 400)["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "broadcast", "data": {}}, "channel"),
        ({"channel": "broadcast", "data": {}}, "type"),
        ({}, "channel"),
    ],
)
async def test_missing_field_is_400_naming_it(
    memory_server: ServerProcess, body: dict[str, Any], field: str
) -> None:
    assert_problem(await post(memory_server, body), 400, field)


async def test_unknown_field_is_400_naming_it(memory_server: ServerProcess) -> None:
    """Regression: the problem named no field for an unknown one."""
    response = await post(memory_server, event(chanel="broadcast"))
    assert "chanel" in assert_problem(response, 400, "chanel")["detail"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"channel": 1}, "channel"),
        ({"channel": None}, "channel"),
        ({"channel": ["broadcast"]}, "channel"),
        ({"type": {"name": "broadcast"}}, "type"),
        ({"type": True}, "type"),
    ],
)
async def test_wrong_type_is_400_naming_the_field(
    memory_server: ServerProcess, fields: dict[str, Any], field: str
) -> None:
    assert_problem(await post(memory_server, event(**fields)), 400, field)


def nested(depth: int) -> bytes:
    """`data` holding arrays nested so that the whole body is `depth` levels deep."""
    inner = depth - 1  # the body's own object is the first level
    return b'{"channel": "broadcast", "type": "broadcast", "data": ' + (
        b"[" * inner + b"]" * inner + b"}"
    )


@pytest.mark.parametrize("depth", [65, 1000, 30_000])
async def test_json_nested_past_the_limit_is_400_naming_data(
    memory_server: ServerProcess, depth: int
) -> None:
    """Regression: `data` nested 1,000 deep raised RecursionError in the decoder: a 500."""
    body = assert_problem(await post(memory_server, nested(depth)), 400, "data")
    assert "64 levels" in body["detail"]


async def test_json_nested_to_the_limit_is_accepted(memory_server: ServerProcess) -> None:
    assert (await post(memory_server, nested(64))).status_code == 201


@pytest.mark.parametrize(
    ("fields", "field"),
    [({"data": {"note": "a\u0000b"}}, "data"), ({"type": "a\u0000"}, "type")],
)
async def test_nul_in_any_string_is_400_naming_the_field(
    memory_server: ServerProcess, fields: dict[str, Any], field: str
) -> None:
    """NUL is refused in every request, as PostgreSQL would refuse it where it stores text."""
    body = assert_problem(await post(memory_server, event(**fields)), 400, field)
    assert "NUL" in body["detail"]


async def test_an_escaped_backslash_before_u0000_is_plain_text(
    memory_server: ServerProcess,
) -> None:
    assert (await post(memory_server, event(data="C:\\u0000"))).status_code == 201


async def test_refused_publishes_leave_no_event(server: ServerProcess) -> None:
    """Nothing half-published: a stream replaying the channel sees only the valid event."""
    channel = "notifications:fay"
    async with httpx.AsyncClient(base_url=server.url) as client:
        first = await publish(client, channel, "notification.created", {"n": 0})
        for bad in (
            event(channel=channel, type="Bad"),
            event(channel=channel, data="x" * LIMIT),
            b'{"channel": "notifications:fay", "type": "a", "data": "\xff"}',
        ):
            assert (await post(server, bad)).status_code in (400, 413)
        async with open_stream(server.url, bearer("fay"), last_event_id=first["cursor"]) as (
            received,
            wait,
        ):
            await publish(client, channel, "notification.created", {"n": 1})
            await wait(lambda r: len(r.payloads()) >= 1, 10)
    assert received.payloads() == [{"n": 1}]


# -- the channel list of a stream ------------------------------------------------------------------


async def test_stream_with_too_many_channels_is_400(memory_server: ServerProcess) -> None:
    channels = [("channel", f"execution:e{n}") for n in range(17)]
    body = assert_problem(await stream_response(memory_server.url, ADMIN, channels), 400, "channel")
    assert "16" in body["detail"]


async def test_stream_with_as_many_channels_as_allowed_opens(memory_server: ServerProcess) -> None:
    channels = [("channel", f"execution:e{n}") for n in range(16)]
    response = await stream_response(memory_server.url, ADMIN, channels)
    assert response.status_code == 200


async def test_stream_channel_limit_follows_the_setting(spawn: Any) -> None:
    server = spawn({"SINAL_MAX_CHANNELS": "2"})
    channels = [("channel", f"execution:e{n}") for n in range(3)]
    assert_problem(await stream_response(server.url, ADMIN, channels), 400, "channel")
    assert (await stream_response(server.url, ADMIN, channels[:2])).status_code == 200


@pytest.mark.parametrize("channel", ["foo", "execution:x/y", "notifications:", ""])
async def test_stream_with_unknown_channel_is_400(
    memory_server: ServerProcess, channel: str
) -> None:
    response = await stream_response(memory_server.url, ADMIN, {"channel": channel})
    assert_problem(response, 400, "channel")
