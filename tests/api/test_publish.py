"""`POST /v1/publish`, and the channel list of `/v1/stream`: what is accepted, what is refused.

Refusals are 4xx `application/problem+json` naming the field; never a 500, never a hang.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import anyio
import httpx
import pytest
import redis

from streams.cursor import decode_cursor
from tests.support import (
    ADMIN,
    SERVICE,
    Received,
    ServerProcess,
    assert_problem,
    bearer,
    open_stream,
    publish,
    stream_response,
)

pytestmark = pytest.mark.anyio

LIMIT = 65536  # SINAL_MAX_PAYLOAD_BYTES default


async def post(
    server: ServerProcess, body: Any, headers: dict[str, str] = SERVICE, **kwargs: Any
) -> httpx.Response:
    """Publish as a service (or as `headers` say); `body` is sent as JSON unless it is
    already bytes."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        return await client.post("/v1/publish", content=content, headers=headers, **kwargs)


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


# -- a list of events ------------------------------------------------------------------------------


async def post_list(server: ServerProcess, items: list[Any], **kwargs: Any) -> httpx.Response:
    return await post(server, items, **kwargs)


def items_of(channel: str, count: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"channel": channel, "type": "note.batch", "data": {"n": n}}
        for n in range(start, start + count)
    ]


async def test_a_list_is_published_in_order_and_answered_with_each_cursor(
    server: ServerProcess,
) -> None:
    """Events of one channel and of several, mixed: each gets its cursor and time in the order
    sent; per channel the positions increase; a stream sees them all, in the order sent."""
    channels = ["notifications:gus", "broadcast", "execution:ex-1", "notifications:gus"]
    items = [
        {"channel": channels[n % 4], "type": f"note.n{n % 3}", "data": {"n": n}} for n in range(40)
    ]
    watcher = bearer("gus", "admin")  # admins may watch any execution
    async with open_stream(server.url, watcher, params={"channel": "execution:ex-1"}) as (
        received,
        wait,
    ):
        response = await post_list(server, items)
        assert response.status_code == 201, response.text
        await wait(lambda r: len(r.payloads()) >= len(items), 10)
    answer = response.json()
    assert set(answer) == {"cursors", "ts"}
    assert len(answer["cursors"]) == len(answer["ts"]) == len(items)
    assert received.payloads() == [item["data"] for item in items]
    types = sorted({str(item["type"]) for item in items})
    assert [event.event for event in received.of_type(*types)] == [item["type"] for item in items]
    last: dict[str, tuple[int, int]] = {}
    for item, cursor, ts in zip(items, answer["cursors"], answer["ts"], strict=True):
        [(channel, position)] = decode_cursor(cursor).items()
        assert channel == item["channel"]
        assert position.offset > last.get(channel, (0, 0))
        last[channel] = position.offset
        assert ts.endswith("Z")
        assert position.offset[0] == int(datetime.fromisoformat(ts).timestamp() * 1000)


async def test_each_cursor_of_a_list_resumes_right_after_its_event(server: ServerProcess) -> None:
    channel = "notifications:hal"
    response = await post_list(server, items_of(channel, 5))
    assert response.status_code == 201, response.text
    cursors = response.json()["cursors"]
    later: list[Any] = []  # single publishes after the list, one per resume
    for index in (0, 2, 4):
        async with open_stream(server.url, bearer("hal"), last_event_id=cursors[index]) as (
            received,
            wait,
        ):
            later.append({"n": f"after {index}"})
            async with httpx.AsyncClient(base_url=server.url) as client:
                await publish(client, channel, "note.batch", later[-1])
            await wait(holds(later[-1]), 10)
        assert received.payloads() == [{"n": n} for n in range(index + 1, 5)] + later
        resets = [frame.json() for frame in received.of_type("reset")]
        assert all(channel not in reset["channels"] for reset in resets), resets


def holds(payload: Any) -> Callable[[Received], bool]:
    return lambda received: payload in received.payloads()


def stored(server: ServerProcess, channel: str) -> int | None:
    """How many events the Redis engine holds for `channel`; None on the memory engine."""
    url = server.env.get("SINAL_REDIS_URL")
    if url is None:
        return None
    client = redis.Redis.from_url(url)
    try:
        return int(client.xlen(f"sinal:{{{channel}}}:log"))
    finally:
        client.close()


DEEP = b'{"channel": "notifications:ivy", "type": "note.batch", "data": ' + b"[" * 70 + b"]" * 70
BAD_ITEMS: list[tuple[dict[str, Any] | bytes, int, str]] = [
    ({"channel": "notifications:ivy", "type": "Bad"}, 400, "[3].type"),
    ({"channel": "notifications:ivy", "type": "reset"}, 400, "[3].type"),
    ({"channel": "nowhere", "type": "note.batch"}, 400, "[3].channel"),
    ({"channel": "notifications:ivy", "type": "note.batch", "data": "x" * LIMIT}, 413, "[3].data"),
    ({"chanel": "notifications:ivy", "type": "note.batch"}, 400, "[3].chanel"),
    ({"channel": "notifications:ivy"}, 400, "[3].type"),
    ({"channel": "notifications:ivy", "type": 7}, 400, "[3].type"),
    ({"channel": "notifications:ivy", "type": "t", "data": {"a": "\u0000"}}, 400, "[3].data"),
    (DEEP + b"}", 400, "[3].data"),
    (b'"notifications:ivy"', 400, "[3]"),
]  # fmt: skip


async def test_a_refused_item_is_named_and_nothing_of_its_list_is_published(
    server: ServerProcess,
) -> None:
    """All or nothing: the items before and after the bad one stay unpublished, as the stream
    (a replay from before) and the engine's log both show."""
    channel = "notifications:ivy"
    async with httpx.AsyncClient(base_url=server.url) as client:
        first = await publish(client, channel, "note.batch", {"n": "first"})
    held = stored(server, channel)
    for bad, status, field in BAD_ITEMS:
        good = [json.dumps(item).encode() for item in items_of(channel, 6)]
        raw = bad if isinstance(bad, bytes) else json.dumps(bad).encode()
        body = b"[" + b",".join([*good[:3], raw, *good[3:]]) + b"]"
        problem = assert_problem(await post(server, body), status, field)
        assert problem["detail"], problem
    assert stored(server, channel) == held
    async with open_stream(server.url, bearer("ivy"), last_event_id=first["cursor"]) as (
        received,
        wait,
    ):
        async with httpx.AsyncClient(base_url=server.url) as client:
            await publish(client, channel, "note.batch", {"n": "last"})
        await wait(lambda r: {"n": "last"} in r.payloads(), 10)
    assert received.payloads() == [{"n": "last"}]


async def test_a_list_needs_the_service_role(server: ServerProcess) -> None:
    channel = "notifications:jan"
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        body = items_of(channel, 3)
        refused = await client.post("/v1/publish", json=body)
        assert assert_problem(refused, 401)["detail"].startswith("credentials are missing")
        assert refused.headers["www-authenticate"] == "Bearer"
        for caller in (bearer("jan"), bearer("root", "admin")):
            assert_problem(await client.post("/v1/publish", json=body, headers=caller), 403)
        first = await publish(client, channel, "note.batch", {"n": "first"})
    assert stored(server, channel) in (None, 1)
    async with open_stream(server.url, bearer("jan"), last_event_id=first["cursor"]) as (
        received,
        wait,
    ):
        async with httpx.AsyncClient(base_url=server.url) as client:
            await publish(client, channel, "note.batch", {"n": "last"})
        await wait(lambda r: {"n": "last"} in r.payloads(), 10)
    assert received.payloads() == [{"n": "last"}]


async def test_the_publish_rate_counts_each_event_of_a_list(
    spawn: Callable[..., ServerProcess], engine_env: dict[str, str]
) -> None:
    """One event per 100 s, and a full budget holds one: a list of five on a full budget goes
    out and leaves a debt of four events, which the next refusal's `Retry-After` shows."""
    server = spawn(engine_env)
    channel = "notifications:kim"
    other = bearer("svc2", "service")  # each service has its own budget
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        limits = await client.put("/v1/admin/limits", headers=ADMIN, json={"publish_rate": 0.01})
        assert limits.status_code == 200, limits.text
        assert (await post_list(server, items_of(channel, 5))).status_code == 201
        after_five = assert_problem(await post(server, event(channel=channel)), 429)
        assert after_five["retry_after"] >= 400
        assert (await post(server, event(channel=channel), headers=other)).status_code == 201
        refused = await post_list(server, items_of(channel, 2), headers=other)
        after_one = assert_problem(refused, 429)
        assert "carries 2 events" in after_one["detail"]
        assert after_one["retry_after"] == int(refused.headers["retry-after"])
        assert 1 <= after_one["retry_after"] <= 101
    assert stored(server, channel) in (None, 6)


async def test_the_bounds_of_a_list(memory_server: ServerProcess) -> None:
    channel = "notifications:lou"
    most = await post_list(memory_server, items_of(channel, 1000))
    assert most.status_code == 201, most.text
    assert len(most.json()["cursors"]) == 1000
    over = assert_problem(await post_list(memory_server, items_of(channel, 1001)), 413)
    assert "1000" in over["detail"]
    empty = assert_problem(await post_list(memory_server, []), 400)
    assert "object" in empty["detail"]
    # The body of a list may reach 1 MiB: fifteen events of the largest data fit...
    largest = [event(channel=channel, data="x" * (LIMIT - 2)) for _ in range(15)]
    assert (await post_list(memory_server, largest)).status_code == 201
    # ... and no more, though each event is within its own limit.
    assert_problem(await post_list(memory_server, largest + largest[:2]), 413)


async def test_one_event_keeps_its_own_body_limit(memory_server: ServerProcess) -> None:
    """A single event's body may be the payload limit + 16384 bytes, as before lists came:
    the larger limit of a list does not apply to it."""
    one = json.dumps(event(data="x" * 1000)).encode()
    padded = one[:-1] + b" " * (LIMIT + 16384) + b"}"
    problem = assert_problem(await post(memory_server, padded), 413)
    assert "one event" in problem["detail"]
    assert (await post(memory_server, b"[" + padded + b"]")).status_code == 201


async def test_the_lean_route_and_litestar_answer_alike(memory_server: ServerProcess) -> None:
    """`POST /v1/publish` is served before Litestar; `/v1/publish/` by Litestar's route. Both
    run the same checks and give the same answers, the request id included."""
    cases: list[tuple[Any, dict[str, str]]] = [
        (event(), SERVICE),
        (items_of("notifications:max", 3), SERVICE),
        ([event(), event(type="Bad")], SERVICE),
        ([event(), event(data="x" * LIMIT)], SERVICE),
        (b"{", SERVICE),
        (event(), {}),
        (event(), bearer("max")),
    ]
    async with httpx.AsyncClient(base_url=memory_server.url, timeout=10) as client:
        for body, headers in cases:
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            answers: list[tuple[int, str, Any]] = []
            for path in ("/v1/publish", "/v1/publish/"):
                sent = {**headers, "X-Request-ID": f"same-{len(answers)}"}
                response = await client.post(path, content=content, headers=sent)
                assert response.headers["x-request-id"] == sent["X-Request-ID"]
                answer = response.json()
                if response.status_code == 201:
                    answer = set(answer)  # new cursors, same shape
                answers.append((response.status_code, response.headers["content-type"], answer))
            assert answers[0] == answers[1], (body, answers)


async def test_answers_keep_a_connection_usable_pipelined_and_closed_on_request(
    memory_server: ServerProcess,
) -> None:
    """Answers are written whole (status, headers and body at once, api/transport.py): on one
    connection, pipelined requests get their answers in order, a refusal among them too, each
    with its length and the server's headers; `Connection: close` gets the last and the close."""
    auth = SERVICE["Authorization"]

    def request(body: bytes, *extra: str) -> bytes:
        head = [
            "POST /v1/publish HTTP/1.1",
            "Host: x",
            f"Authorization: {auth}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            *extra,
        ]
        return "\r\n".join(head).encode() + b"\r\n\r\n" + body

    good = json.dumps(event()).encode()
    sock = await anyio.connect_tcp("127.0.0.1", memory_server.port)
    await sock.send(request(good) + request(b"{") + request(good, "X-Request-ID: third"))
    await sock.send(request(good, "Connection: close"))
    raw = b""
    with anyio.fail_after(10):
        while True:
            try:
                raw += await sock.receive()
            except anyio.EndOfStream:
                break
    await sock.aclose()
    answers: list[tuple[int, dict[str, str], Any]] = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        status_line, *lines = head.decode().split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines)
        length = int(headers["content-length"])
        answers.append((int(status_line.split()[1]), headers, json.loads(rest[:length])))
        raw = rest[length:]
    assert [status for status, _, _ in answers] == [201, 400, 201, 201]
    assert all("date" in headers and "x-request-id" in headers for _, headers, _ in answers)
    assert answers[1][1]["content-type"] == "application/problem+json"
    assert answers[2][1]["x-request-id"] == "third"
    assert set(answers[3][2]) == {"cursor", "ts"}
    assert answers[3][1]["connection"] == "close"


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
