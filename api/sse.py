"""`GET /v1/stream`: the Server-Sent Events endpoint, as a lean ASGI handler.

Measured (docs/benchmarks.md): per-delivery work decides throughput, so the application routes
this path to `stream` directly, with the server's own `send`, instead of through Litestar's
request machinery. Everything per connection (auth, channels, cursor) happens once, in
`open_session`; the connection's lifetime is `streams.session.StreamSession`.

Lifecycle: see `streams/session.py`; one task per connection, which waits for the client to
leave while the hub writes.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qsl

from litestar.types import HTTPScope, Receive, Send

from api.problems import problem, render, send_problem
from api.remote import remote_address
from api.requests import response_start
from api.runtime import Runtime
from api.transport import chunk_writer
from streams.access import Principal, authorized_channels
from streams.admission import STREAMS_RETRY_AFTER_S, Admission
from streams.cursor import InvalidCursor, Position, decode_cursor
from streams.disconnect import deadline, disconnect_data
from streams.errors import BadRequest, SinalError, TooManyRequests, Unavailable
from streams.event import encode_control, encode_retry
from streams.metrics import StreamMetrics
from streams.registry import Connection
from streams.session import StreamSession

log = logging.getLogger("sinal.stream")

PATH = "/v1/stream"
STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


async def stream(scope: HTTPScope, receive: Receive, send: Send, runtime: Runtime) -> None:
    # Only what the whole stream needs stays in this frame (every idle stream holds it): the
    # request's parsed headers and query die with `admit`.
    if scope["method"] != "GET":
        await send_problem(send, problem(405, f"use GET for {PATH}"), {"Allow": "GET"})
        return
    # Admission first: it is what keeps a reconnect storm from costing a token check each.
    began = time.perf_counter()
    metrics = runtime.hub.metrics
    admission = runtime.admission
    wait = await admission.begin_handshake()
    if wait is not None:
        metrics.handshake("sse", None)
        await _refuse_handshake(send, StreamRequest(scope), wait)
        return
    # Admitted: this handshake holds one of the places in progress until its response starts.
    try:
        session, connection = await admit(StreamRequest(scope), runtime)
    except BaseException as error:
        admission.end_handshake()
        if not isinstance(error, Exception):
            raise
        metrics.handshake("sse", None)
        await send_problem(send, *render(error, f"GET {PATH}"))
        return
    # The request's headers were read (`StreamRequest`), and the app's state is not used: the
    # scope, which the server keeps for the stream's whole life, need not hold them (~0.8 KB).
    scope["headers"].clear()  # type: ignore[attr-defined]
    scope.pop("state", None)  # type: ignore[misc]
    start = _Start(send, admission, metrics, began)
    try:
        await session.run(start, send, receive, chunk_writer(send))
    except Exception as error:
        if not start.started:
            metrics.handshake("sse", None)
            await send_problem(send, *render(error, f"GET {PATH}"))
            return
        if not isinstance(error, SinalError):
            raise
        # Mid-stream (engine lost during a replay): end the stream; the client resumes.
        log.warning("stream ended early: %s", error.detail)
    finally:
        if start.handshaking:
            admission.end_handshake()
        runtime.registry.remove(connection)
    if not session.abandoned:
        with contextlib.suppress(OSError):
            await send({"type": "http.response.body", "body": b"", "more_body": False})


class _Start:
    """Starts the response once the session's positions are settled (`StreamSession.run`).

    An object with slots rather than a closure over the handler's locals: every idle stream
    holds it for its whole life, and the closure's cells and function cost five times more."""

    __slots__ = ("admission", "began", "handshaking", "metrics", "send", "started")

    def __init__(self, send: Send, admission: Admission, metrics: StreamMetrics, began: float):
        self.send = send
        self.admission = admission
        self.metrics = metrics
        self.began = began
        self.started = False
        self.handshaking = True  # holding a place among the handshakes in progress

    async def __call__(self) -> None:
        self.handshaking = False
        self.admission.end_handshake()
        await self.send(response_start(200, STREAM_HEADERS))
        self.started = True
        self.metrics.handshake("sse", time.perf_counter() - self.began)


async def admit(request: StreamRequest, runtime: Runtime) -> tuple[StreamSession, Connection]:
    """Open the session and register the connection, or raise why not."""
    principal, session = await open_session(request, runtime)
    registry = runtime.registry
    # Checked and registered with no await between: a burst cannot slip past the count.
    if runtime.admission.streams_full(registry.count_of(principal.sub, "sse")):
        raise TooManyRequests(
            f"this user already holds {runtime.admission.limits.streams_per_user} streams "
            "on this server, the limit; close one (the client shares one per browser)",
            retry_after_s=STREAMS_RETRY_AFTER_S,
        )
    remote = remote_address(
        request.scope.get("client"),
        request.headers.get("x-forwarded-for"),
        runtime.settings.trusted_proxies,
    )
    connection = registry.add(
        principal,
        "sse",
        session.channels,
        session,
        remote=remote,
        user_agent=request.headers.get("user-agent"),
    )
    return session, connection


class StreamRequest:
    """What `open_session` reads of the request; parsed once, then dropped."""

    def __init__(self, scope: HTTPScope) -> None:
        self.scope = scope
        self.headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            self.headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
        self.query = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
        self.cookies: dict[str, str] = {}
        if "cookie" in self.headers:
            jar: SimpleCookie = SimpleCookie()
            with contextlib.suppress(CookieError):
                jar.load(self.headers["cookie"])
            self.cookies = {name: morsel.value for name, morsel in jar.items()}

    def param(self, name: str) -> str | None:
        return next((value for key, value in self.query if key == name), None)

    def params(self, name: str) -> list[str]:
        return [value for key, value in self.query if key == name]


async def open_session(request: StreamRequest, runtime: Runtime) -> tuple[Principal, StreamSession]:
    """Authenticate, resolve and authorize channels, and parse the resume cursor."""
    settings = runtime.settings
    if runtime.hub.draining:
        raise Unavailable("the server is shutting down; reconnect to another instance")
    principal = runtime.auth.authenticate(request.headers, request.cookies, request.param("ticket"))
    channels = await authorized_channels(
        runtime.policy, principal, request.params("channel"), settings.max_channels
    )

    resume: dict[str, Position] | None = None
    resume_invalid = False
    query_cursor = request.param("last_event_id")
    header_cursor = request.headers.get("last-event-id")
    # The header wins: EventSource sends it on reconnect, with the newest id it received.
    if header_cursor:
        try:
            resume = decode_cursor(header_cursor)
        except InvalidCursor:
            resume_invalid = True
    elif query_cursor:
        try:
            resume = decode_cursor(query_cursor)
        except InvalidCursor as error:
            raise BadRequest(f"last_event_id: {error}", field="last_event_id") from None
    return principal, StreamSession(
        runtime.hub,
        channels,
        resume,
        resume_invalid=resume_invalid,
        retry_ms=settings.retry_ms,
        deadline=deadline(principal.expires_at, settings.auth_grace_s),
    )


async def _refuse_handshake(send: Send, request: StreamRequest, wait: float) -> None:
    """Over the handshake rate: a 503 with `Retry-After`; to an `EventSource` (which gives up
    on any status but 200), a stream that only says when to come back, jittered so that the
    refused clients of a storm return spread out."""
    retry_after = {"Retry-After": str(math.ceil(wait))}
    if "text/event-stream" not in request.headers.get("accept", ""):
        detail = "too many new connections right now; retry after the time in Retry-After"
        await send_problem(send, problem(503, detail, retry_after=math.ceil(wait)), retry_after)
        return
    body = encode_retry(int(wait * 1000)) + encode_control(
        "disconnect", disconnect_data("limit", wait)
    )
    headers = [*STREAM_HEADERS, (b"retry-after", retry_after["Retry-After"].encode())]
    await send(response_start(200, headers))
    await send({"type": "http.response.body", "body": body, "more_body": False})
