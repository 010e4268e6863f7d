"""The request wrapper (`api/requests.py`) on its own: ids, statuses, metrics, and the context.

Against a real server, see `tests/api/test_logs.py`; here the ASGI messages themselves.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from api import requests
from api.requests import AccessSampler, Requests

pytestmark = pytest.mark.anyio


class Metrics:
    def __init__(self) -> None:
        self.observed: list[tuple[str, str, int]] = []

    def observe_http(self, route: str, method: str, status: int, seconds: float) -> None:
        assert seconds >= 0
        self.observed.append((route, method, status))


class Runtime:
    def __init__(self) -> None:
        self.metrics = Metrics()


def http_scope(headers: list[tuple[bytes, bytes]] | None = None, path: str = "/v1/x") -> Any:
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": b"",
        "headers": headers or [],
    }


async def call(app: Any, scope: Any, runtime: Any = None) -> list[Any]:
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    await Requests(app, runtime or Runtime())(scope, receive, send)
    return sent


def answer(status: int, template: str | None = None) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if template is not None:
            scope["path_template"] = template  # as Litestar's routing does
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app


def request_id_of(sent: list[Any]) -> str:
    [value] = [value for name, value in sent[0]["headers"] if name == b"x-request-id"]
    return bytes(value).decode()


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        (b"abc-123", True),
        (b"a b c", True),
        (b"x" * 128, True),
        (b"x" * 129, False),
        (b"", False),
        ("caf\u00e9".encode(), False),
        (b"tab\there", False),
    ],
)
async def test_a_sensible_request_id_is_kept_else_one_is_made(given: bytes, kept: bool) -> None:
    sent = await call(answer(200), http_scope([(b"x-request-id", given)]))
    request_id = request_id_of(sent)
    if kept:
        assert request_id == given.decode()
    else:
        assert len(request_id) == 16
        int(request_id, 16)


async def test_rest_requests_are_counted_by_route_template() -> None:
    runtime = Runtime()
    await call(
        answer(200, "/v1/notifications/{id}"), http_scope(path="/v1/notifications/42"), runtime
    )
    await call(answer(404), http_scope(path="/v1/nowhere"), runtime)
    assert runtime.metrics.observed == [
        ("/v1/notifications/{id}", "GET", 200),
        ("unmatched", "GET", 404),
    ]


async def test_a_request_without_a_response_counts_as_500() -> None:
    async def fails(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("bug")

    runtime = Runtime()
    with pytest.raises(RuntimeError):
        await call(fails, http_scope(), runtime)
    assert runtime.metrics.observed == [("unmatched", "GET", 500)]


async def test_a_websocket_is_not_counted_and_gets_the_id_on_its_accept() -> None:
    async def accepts(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "websocket.accept"})

    runtime = Runtime()
    scope = {**http_scope([(b"x-request-id", b"ws-1")]), "type": "websocket"}
    del scope["method"]
    sent = await call(accepts, scope, runtime)
    assert sent[0]["headers"] == [(b"x-request-id", b"ws-1")]
    assert runtime.metrics.observed == []


async def test_the_stream_starts_its_own_response_and_is_not_counted() -> None:
    async def stream(scope: Any, receive: Any, send: Any) -> None:
        await send(requests.response_start(200, [(b"content-type", b"text/event-stream")]))

    runtime = Runtime()
    sent = await call_stream(stream, runtime)
    assert sent[0]["headers"][0] == (b"content-type", b"text/event-stream")
    assert request_id_of(sent) == "stream-1"
    assert runtime.metrics.observed == []


async def call_stream(app: Any, runtime: Any) -> list[Any]:
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.disconnect"}

    scope = http_scope([(b"x-request-id", b"stream-1")], path="/v1/stream")
    await Requests(app, runtime, stream_route="/v1/stream")(scope, receive, send)
    return sent


async def test_a_task_that_outlives_its_request_is_not_taken_for_it() -> None:
    """A task or callback started while a request is handled inherits its context; once the
    request is finished, what it logs must not carry that request's id."""
    later = asyncio.Event()
    seen: list[Any] = []
    tasks: list[asyncio.Task[None]] = []

    async def outlived() -> None:
        seen.append(requests.current())
        await later.wait()
        seen.append(requests.current())

    async def app(scope: Any, receive: Any, send: Any) -> None:
        tasks.append(asyncio.create_task(outlived()))
        await asyncio.sleep(0)
        await answer(200)(scope, receive, send)

    await call(app, http_scope([(b"x-request-id", b"req-1")]))
    later.set()
    await tasks[0]
    assert seen[0] is not None
    assert seen[0].request_id == "req-1"
    assert seen[1] is None


# -- sampling the access log -------------------------------------------------------------------


def weights(sampler: AccessSampler, second: float, count: int, status: int = 200) -> list[int]:
    return [sampler.weight(status, second) for _ in range(count)]


def test_under_the_rate_every_request_gets_a_line() -> None:
    sampler = AccessSampler(5)
    assert weights(sampler, 100, 5) == [1] * 5
    assert weights(sampler, 101, 5) == [1] * 5
    assert weights(AccessSampler(0), 100, 1000) == [1] * 1000  # 0: never sampled


def test_over_the_rate_one_request_in_k_is_logged_for_k() -> None:
    sampler = AccessSampler(3)
    # The first second over the rate: one line every second request.
    assert weights(sampler, 100, 9) == [1, 1, 1, 0, 2, 0, 2, 0, 2]
    # The next second follows that load (9 requests, 3 lines a second: one line in 3)...
    assert weights(sampler, 101, 30) == [1, 1, 1] + [0, 0, 3] * 9
    # ... and the one after it, this second's (30: one in 10). The lines stand for every
    # request, and a second's lines stay within about twice the rate.
    again = weights(sampler, 102, 33)
    assert again == [1, 1, 1] + [0] * 9 + [10] + [0] * 9 + [10] + [0] * 9 + [10]
    assert sum(again) == 33
    assert sum(1 for weight in again if weight) <= 2 * 3
    # After a quiet second the load is not known: one in two again.
    assert weights(sampler, 110, 5) == [1, 1, 1, 0, 2]


def test_a_server_error_always_gets_its_line() -> None:
    sampler = AccessSampler(1)
    assert weights(sampler, 100, 3) == [1, 0, 2]
    assert weights(sampler, 100.99, 3, status=503) == [1, 1, 1]
    assert weights(sampler, 100.999, 2) == [0, 2]  # and is not counted against the rest


async def test_a_sampled_line_says_how_many_requests_it_stands_for(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runtime = Runtime()
    sampler = AccessSampler(2)
    caplog.set_level(logging.INFO, logger="sinal.access")
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    wrapper = Requests(answer(201, "/v1/publish"), runtime, sampler=sampler)
    for _ in range(6):  # well within one second
        await wrapper(http_scope(path="/v1/publish"), receive, send)
    records = [record for record in caplog.records if record.name == "sinal.access"]
    assert [getattr(record, "sampled", None) for record in records] == [None, None, 2, 2]
    assert len(runtime.metrics.observed) == 6  # the metrics count every request
