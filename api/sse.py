"""`GET /v1/stream`: the Server-Sent Events endpoint, as a lean ASGI handler.

Measured (DESIGN.md): per-delivery work decides throughput, so this handler talks ASGI directly
instead of going through a streaming response class. Everything per connection (auth, channels,
cursor) happens once, here; the connection's lifetime is `streams.session.StreamSession`.

Lifecycle: the session task writes; a sibling task waits for `http.disconnect` and closes the
session. Whichever ends first ends the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from litestar import Request, asgi
from litestar.types import Receive, Scope, Send

from api.problems import PROBLEM_JSON, encode_problem, problem, problem_of
from api.runtime import Runtime
from streams.channels import subscription_channels
from streams.cursor import InvalidCursor, Position, decode_cursor
from streams.errors import BadRequest, Forbidden, SinalError, Unavailable
from streams.session import StreamSession

log = logging.getLogger("sinal.stream")

STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


@asgi("/v1/stream", copy_scope=False, include_in_schema=False)
async def stream(scope: Scope, receive: Receive, send: Send) -> None:
    request: Request[Any, Any, Any] = Request(scope, receive)
    runtime: Runtime = request.app.state.sinal
    if request.method != "GET":
        await _send_problem(send, problem(405, "use GET for /v1/stream"))
        return
    try:
        session = await open_session(request, runtime)
    except SinalError as error:
        await _send_problem(send, problem_of(error))
        return
    started = False

    async def start() -> None:
        nonlocal started
        await send({"type": "http.response.start", "status": 200, "headers": STREAM_HEADERS})
        started = True

    async def write(body: bytes) -> None:
        await send({"type": "http.response.body", "body": body, "more_body": True})

    watcher = asyncio.create_task(_close_on_disconnect(receive, session))
    try:
        await session.run(start, write)
    except SinalError as error:
        if not started:
            await _send_problem(send, problem_of(error))
            return
        # Mid-stream (engine lost during a replay): end the stream; the client resumes.
        log.warning("stream ended early: %s", error.detail)
    finally:
        watcher.cancel()
    if not session.abandoned:
        with contextlib.suppress(OSError):
            await send({"type": "http.response.body", "body": b"", "more_body": False})


async def open_session(request: Request[Any, Any, Any], runtime: Runtime) -> StreamSession:
    """Authenticate, resolve and authorize channels, and parse the resume cursor."""
    settings = runtime.settings
    if runtime.hub.draining:
        raise Unavailable("the server is shutting down; reconnect to another instance")
    principal = runtime.auth.authenticate(
        request.headers, request.cookies, request.query_params.get("ticket")
    )
    channels = subscription_channels(
        principal.sub, request.query_params.getall("channel", []), settings.max_channels
    )
    for channel in channels:
        if not await runtime.policy.can_subscribe(principal, channel):
            raise Forbidden(f"not allowed to subscribe to {channel!r}", field="channel")

    resume: dict[str, Position] | None = None
    resume_invalid = False
    query_cursor = request.query_params.get("last_event_id")
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
    return StreamSession(
        runtime.hub,
        channels,
        resume,
        resume_invalid=resume_invalid,
        retry_ms=settings.retry_ms,
    )


async def _close_on_disconnect(receive: Receive, session: StreamSession) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            session.close("disconnect")
            return


async def _send_problem(send: Send, details: dict[str, Any]) -> None:
    body = encode_problem(details)
    headers = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    if details["status"] == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": details["status"], "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
