"""Slow clients and the connection cap (`api/connections.py`).

Sockets that send nothing, or dribble their headers or their body, are closed by the server
within the configured deadlines while `/healthz` keeps answering; streams and action sockets,
long-lived on purpose, are not cut; past the cap, requests get a 503 problem with `Retry-After`.
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from anyio.abc import SocketStream
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from api.connections import connection_cap
from api.settings import Settings, SettingsError
from tests.support import SERVICE, ServerProcess, bearer, open_stream, publish

pytestmark = pytest.mark.anyio

TIMEOUT_S = 1.0
# Leeway for a loaded machine: the deadline is checked by a timer of the server's event loop.
SLACK_S = 2.0
SOCKETS = 50
HEADERS = b"GET /healthz HTTP/1.1\r\nHost: sinal\r\nUser-Agent: slow\r\n\r\n"
BODY_HEAD = (
    b"POST /v1/publish HTTP/1.1\r\nHost: sinal\r\nContent-Type: application/json\r\n"
    + f"Authorization: {SERVICE['Authorization']}\r\n".encode()
    + b"Content-Length: 1000\r\n\r\n{"
)


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {
        "SINAL_HEADER_TIMEOUT": str(TIMEOUT_S),
        "SINAL_BODY_TIMEOUT": str(TIMEOUT_S),
        "SINAL_HEARTBEAT_INTERVAL": "0.5",
    }
    server = ServerProcess(tmp_path_factory.mktemp("slow"), env).start()
    yield server
    server.stop()


class Outcome:
    """What one slow client saw: when the server closed, and what it answered first."""

    def __init__(self) -> None:
        self.closed_after: float | None = None
        self.answer = b""


async def slow_client(
    server: ServerProcess, first: bytes, dribble: bytes, outcome: Outcome, every_s: float = 0.3
) -> None:
    """Send `first` at once, then `dribble` a byte every `every_s`, until the server closes."""
    started = time.monotonic()
    stream = await anyio.connect_tcp("127.0.0.1", server.port)
    async with stream, anyio.create_task_group() as group:

        async def write() -> None:
            try:
                if first:
                    await stream.send(first)
                for byte in dribble:
                    await anyio.sleep(every_s)
                    await stream.send(bytes([byte]))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                return  # the server closed
            await anyio.sleep_forever()  # all sent: wait to be closed

        group.start_soon(write)
        outcome.answer = await read_all(stream)
        outcome.closed_after = time.monotonic() - started
        group.cancel_scope.cancel()


async def read_all(stream: SocketStream) -> bytes:
    received = b""
    try:
        while True:
            received += await stream.receive()
    except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
        return received


async def test_silent_and_dribbling_sockets_are_closed_while_healthz_answers(
    slow_server: ServerProcess,
) -> None:
    """The bug: a socket that sent nothing, or dribbled headers or a body, was held forever
    (uvicorn has no deadline for reading a request); 1,084 of them exhausted the descriptors
    of a server limited to 1,024."""
    silent = [Outcome() for _ in range(SOCKETS)]
    headers = [Outcome() for _ in range(SOCKETS)]
    bodies = [Outcome() for _ in range(SOCKETS)]
    health: list[float] = []

    async def probe() -> None:
        async with httpx.AsyncClient(base_url=slow_server.url, timeout=5) as client:
            while True:
                started = time.monotonic()
                response = await client.get("/healthz")
                assert response.status_code == 200
                health.append(time.monotonic() - started)
                await anyio.sleep(0.1)

    with anyio.fail_after(TIMEOUT_S + SLACK_S + 10):
        async with anyio.create_task_group() as probing:
            probing.start_soon(probe)
            async with anyio.create_task_group() as clients:  # each ends when it is closed
                for outcome in silent:
                    clients.start_soon(slow_client, slow_server, b"", b"", outcome)
                for outcome in headers:
                    clients.start_soon(slow_client, slow_server, b"G", HEADERS[1:], outcome)
                for outcome in bodies:
                    clients.start_soon(slow_client, slow_server, BODY_HEAD, b"1" * 999, outcome)
            probing.cancel_scope.cancel()

    for outcome in silent + headers + bodies:
        assert outcome.closed_after is not None
        assert TIMEOUT_S * 0.9 <= outcome.closed_after <= TIMEOUT_S + SLACK_S
    # Nothing to answer a socket that said nothing; a 408 problem to the others.
    assert {o.answer for o in silent} == {b""}
    for outcome in headers + bodies:
        head, _, body = outcome.answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 Request Timeout"), outcome.answer
        assert b"content-type: application/problem+json" in head
        assert json.loads(body)["title"] == "Request timeout"
    assert b"headers did not arrive" in headers[0].answer
    assert b"body did not arrive" in bodies[0].answer
    # The server kept answering meanwhile, promptly.
    assert len(health) >= 5
    assert max(health) < 1.0


async def test_the_next_request_on_a_kept_alive_connection_has_a_deadline_too(
    slow_server: ServerProcess,
) -> None:
    """Uvicorn's keep-alive timer is reset by every byte: a client could dribble its second
    request forever."""
    outcome = Outcome()
    with anyio.fail_after(TIMEOUT_S + SLACK_S + 5):
        await slow_client(slow_server, HEADERS + b"G", HEADERS[1:], outcome)
    assert outcome.answer.startswith(b"HTTP/1.1 200 OK")  # the first request was answered
    assert b"HTTP/1.1 408 Request Timeout" in outcome.answer
    assert outcome.closed_after is not None
    assert outcome.closed_after <= TIMEOUT_S + SLACK_S


async def test_a_request_that_arrives_in_time_is_served(slow_server: ServerProcess) -> None:
    """Slowly, but within the deadlines: headers in ~0.6 s, then a body in ~0.6 s."""
    body = json.dumps({"channel": "broadcast", "type": "slow.publish", "data": 1}).encode()
    head = (
        b"POST /v1/publish HTTP/1.1\r\nHost: sinal\r\nContent-Type: application/json\r\n"
        + f"Authorization: {SERVICE['Authorization']}\r\nConnection: close\r\n".encode()
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    stream = await anyio.connect_tcp("127.0.0.1", slow_server.port)
    async with stream:
        with anyio.fail_after(10):
            for part in (head[: len(head) // 2], head[len(head) // 2 :], body[:5], body[5:]):
                await stream.send(part)
                await anyio.sleep(0.3)
            answer = await read_all(stream)
    assert answer.startswith(b"HTTP/1.1 201 Created"), answer


async def test_streams_and_action_sockets_outlive_the_deadlines(
    slow_server: ServerProcess,
) -> None:
    """Only reading a request is timed: a stream and an action socket stay open well past the
    deadlines, and keep working."""
    ws_url = slow_server.url.replace("http://", "ws://") + "/v1/actions"
    async with (
        open_stream(slow_server.url, bearer("patient")) as (received, wait),
        connect(ws_url, additional_headers=bearer("patient")) as socket,
        httpx.AsyncClient(base_url=slow_server.url, timeout=10) as client,
    ):
        # What is under test is that time passes: three times the deadlines.
        await anyio.sleep(3 * TIMEOUT_S)
        await publish(client, "broadcast", "late.event", {"n": 1})
        await wait(lambda r: bool(r.of_type("late.event")), 10)
        await socket.send(json.dumps({"op": "ping", "ref": "late"}))
        with anyio.fail_after(10):
            assert json.loads(await socket.recv())["ref"] == "late"
        assert not received.ended


# -- the connection cap ----------------------------------------------------------------------


async def test_past_the_connection_cap_requests_get_a_clear_503(
    spawn: Callable[..., ServerProcess],
) -> None:
    """Streams count; `/healthz` is still answered; the cap lifts when connections close."""
    server = spawn({"SINAL_MAX_CONNECTIONS": "3"})
    ws_url = server.url.replace("http://", "ws://") + "/v1/actions"
    async with (
        open_stream(server.url, bearer("a")),
        open_stream(server.url, bearer("b")),
        open_stream(server.url, bearer("c")),
    ):
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            response = await client.get("/v1/notifications/unread-count", headers=bearer("d"))
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "5"
            assert response.headers["content-type"] == "application/problem+json"
            assert "limit of 3 open connections" in response.json()["detail"]
            assert (await client.get("/healthz")).status_code == 200
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url, additional_headers=bearer("d")):
                pass
        assert refused.value.response.status_code == 503
    with anyio.fail_after(10):  # the server sees the streams go
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            while True:
                response = await client.get("/v1/notifications/unread-count", headers=bearer("d"))
                if response.status_code == 200:
                    break
                await anyio.sleep(0.1)
    assert "at the connection limit (3, SINAL_MAX_CONNECTIONS)" in server.logs()


def test_start_up_raises_the_open_file_limit_and_says_so(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip(f"needs a finite hard open-file limit above 256 (it is {hard})")
    # The server inherits a low soft limit, as under a default `ulimit -n` of 1024.
    low = min(256, soft)
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:
        server = ServerProcess(tmp_path).start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        assert server.process is not None
        limits = Path(f"/proc/{server.process.pid}/limits").read_text()
        line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
        assert line.split()[3:5] == [str(hard), str(hard)], line
    finally:
        server.stop()
    logs = server.logs()
    assert f"open files: at most {hard} (raised from {low})" in logs
    # The cap was set below what the descriptors allow.
    assert f"connections: at most {min(50_000, hard - 256)}" in logs
    # Regression: with SINAL_MAX_CONNECTIONS unset, every start-up on a host whose limit is
    # below 50,256 warned that the cap was lowered, though nobody had asked for more.
    assert "lowered to" not in logs


def test_a_cap_asked_for_above_the_open_file_limit_is_lowered_with_a_warning(
    tmp_path: Path,
) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard + 1
    server = ServerProcess(tmp_path, {"SINAL_MAX_CONNECTIONS": str(wanted)}).start()
    server.stop()
    lowered = connection_cap(wanted, hard)
    assert f"SINAL_MAX_CONNECTIONS={wanted} lowered to {lowered}" in server.logs()


def test_bad_limits_stop_start_up() -> None:
    for variable, value in (
        ("SINAL_HEADER_TIMEOUT", "0"),
        ("SINAL_BODY_TIMEOUT", "-1"),
        ("SINAL_BODY_TIMEOUT", "inf"),
        ("SINAL_MAX_CONNECTIONS", "0"),
        ("SINAL_MAX_CONNECTIONS", "many"),
    ):
        with pytest.raises(SettingsError) as raised:
            Settings.from_env({variable: value})
        assert raised.value.variable == variable
    settings = Settings.from_env({"SINAL_HEADER_TIMEOUT": "1.5", "SINAL_MAX_CONNECTIONS": "10"})
    assert (settings.header_timeout_s, settings.max_connections) == (1.5, 10)


def test_the_cap_stays_below_the_open_file_limit() -> None:
    assert connection_cap(50_000, 1_048_576) == 50_000
    assert connection_cap(50_000, 1024) == 768
    assert connection_cap(10, 1024) == 10
    assert connection_cap(50_000, 300) == 150  # a tiny limit still leaves room for connections
