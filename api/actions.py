"""`GET /v1/actions`: the WebSocket action channel, from client to server.

A page sends small actions (mark read, dismiss, retry, ...) over one socket instead of a request
each. Every message gets one reply carrying the message's `ref`: the result the equivalent REST
call returns, or the problem it answers with. The actions run the very functions the REST
handlers run (`api/notifications.py`, `api/executions.py`), so their effects reach every device
over SSE as usual. Nothing but replies flows from server to client here.

Lifecycle: the handler's own task reads, performs and answers one message at a time, so a
socket has at most one action in flight while the server holds the next frame unread (uvicorn
stops reading until it is taken). No other task is created. Waiting for a message is bounded by
the idle timeout; shutdown (`ActionSockets.close_all`) and the credential's expiry (one timer)
cut that wait short, never an action in hand: the socket closes after its reply, with the code
of the reason (streams/disconnect.py: 1001 shutdown, 4001 expired, ...).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections import deque
from datetime import UTC, datetime
from typing import Annotated, Any, assert_never, cast

import msgspec
from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect
from litestar.types import Message as AsgiMessage

from api import executions, notifications
from api.body import decode_json
from api.csrf import check_origin, cookie_authenticated
from api.notifications import MAX_IDS, ManyChanged
from api.problems import PROBLEM_JSON, encode_problem, headers_of, problem, problem_of, render
from api.remote import remote_address
from api.runtime import Runtime
from streams.access import Principal
from streams.disconnect import CLOSE_CODES, DisconnectReason, close_at, close_text, deadline
from streams.errors import BadRequest, SinalError, Unavailable

log = logging.getLogger("sinal.actions")

PATH = "/v1/actions"
MAX_MESSAGE_BYTES = 16 * 1024
# The server's limit for one frame (`api/server.py`): larger ones close the socket with 1009.
MAX_FRAME_BYTES = 4 * MAX_MESSAGE_BYTES
# A client that sends more invalid messages than this within the window is closed: past a few,
# it is broken or probing, and each costs a reply.
MAX_INVALID = 20
INVALID_WINDOW_S = 10.0
# How long shutdown waits for sockets to finish the action in hand and close.
SHUTDOWN_GRACE_S = 2.0

# Close codes (RFC 6455, section 7.4.1); those of the server's own disconnects are in
# streams/disconnect.py.
NORMAL = 1000
POLICY_VIOLATION = 1008
REASON_OF_CODE = {code: reason for reason, code in CLOSE_CODES.items()}
# The `op` label of messages refused before their op was read (metrics).
UNPARSED = "unparsed"

Ref = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Ids = Annotated[list[uuid.UUID], msgspec.Meta(min_length=1, max_length=MAX_IDS)]


# -- messages --------------------------------------------------------------------------------


class Action(msgspec.Struct, tag_field="op", forbid_unknown_fields=True):
    ref: Ref  # chosen by the client, echoed in the reply


class Ping(Action, tag="ping"):
    pass


class MarkRead(Action, tag="mark_read"):
    ids: Ids


class MarkUnread(Action, tag="mark_unread"):
    ids: Ids


class Dismiss(Action, tag="dismiss"):
    ids: Ids


class MarkAllRead(Action, tag="mark_all_read"):
    # The newest notification the client has shown: its `cursor`, or its `created` time.
    before: str | None = None


class RetryExecution(Action, tag="retry_execution"):
    execution: uuid.UUID


class CancelExecution(Action, tag="cancel_execution"):
    execution: uuid.UUID


Message = Ping | MarkRead | MarkUnread | Dismiss | MarkAllRead | RetryExecution | CancelExecution


class _RefOnly(msgspec.Struct):
    """What a refused message still tells: its `ref`, when that much of it is valid."""

    ref: Ref | None = None


REF_ONLY = msgspec.json.Decoder(_RefOnly)


class Pong(msgspec.Struct):
    pong: datetime


class Ok(msgspec.Struct):
    ref: str
    ok: bool
    result: Any


class Failed(msgspec.Struct):
    ref: str | None  # None: the message had none, or it could not be read
    error: dict[str, Any]  # the problem body REST would answer with


ENCODER = msgspec.json.Encoder()


async def perform(runtime: Runtime, principal: Principal, message: Message) -> msgspec.Struct:
    """Run one action; raises what the REST call would raise."""
    user = principal.sub
    match message:
        case Ping():
            return Pong(datetime.now(UTC))
        case MarkRead(ids=ids):
            return ManyChanged.of(await runtime.inbox.mark_read(user, ids))
        case MarkUnread(ids=ids):
            return ManyChanged.of(await runtime.inbox.mark_unread(user, ids))
        case Dismiss(ids=ids):
            return ManyChanged.of(await runtime.inbox.dismiss(user, ids))
        case MarkAllRead(before=before):
            return await notifications.mark_all_read(runtime, principal, before)
        case RetryExecution(execution=id):
            return await executions.retry(runtime, principal, id)
        case CancelExecution(execution=id):
            return await executions.cancel(runtime, principal, id)
    assert_never(message)


# -- the socket ------------------------------------------------------------------------------


@websocket(PATH)
async def actions(socket: WebSocket[Any, Any, Any]) -> None:
    runtime: Runtime = socket.app.state.sinal
    began = time.perf_counter()
    admission = runtime.admission
    wait = await admission.begin_handshake()
    try:
        if wait is not None:
            raise Unavailable(
                "too many new connections right now; retry after the time in Retry-After",
                retry_after_s=math.ceil(wait),
                extra={"retry_after": math.ceil(wait)},
            )
        principal = _authenticate(socket, runtime)
    except SinalError as error:
        if wait is None:
            admission.end_handshake()
        runtime.hub.metrics.handshake("ws", None)
        await _deny(socket, problem_of(error), headers_of(error))
        return
    except BaseException:
        if wait is None:
            admission.end_handshake()
        raise
    session = ActionSession(socket, runtime, principal)
    ends = deadline(principal.expires_at, runtime.settings.auth_grace_s)
    expiry = close_at(asyncio.get_running_loop(), ends, session.disconnect, "expired")
    remote = remote_address(
        socket.scope.get("client"),
        socket.headers.get("x-forwarded-for"),
        runtime.settings.trusted_proxies,
    )
    with (
        runtime.actions.opened(principal.sub, session),
        runtime.registry.opened(
            principal, "ws", [], session, remote=remote, user_agent=socket.headers.get("user-agent")
        ),
    ):
        try:
            try:
                await socket.accept()
            finally:
                admission.end_handshake()
            runtime.hub.metrics.handshake("ws", time.perf_counter() - began)
            await session.run()
        except (WebSocketDisconnect, OSError):
            pass  # the client left while a reply or the close was on its way
        finally:
            if expiry is not None:
                expiry.cancel()


def _authenticate(socket: WebSocket[Any, Any, Any], runtime: Runtime) -> Principal:
    if runtime.hub.draining or runtime.actions.closing:
        raise Unavailable("the server is shutting down; reconnect to another instance")
    headers, cookies = socket.headers, socket.cookies
    principal = runtime.auth.authenticate(headers, cookies, socket.query_params.get("ticket"))
    # A browser sends the cookie with a WebSocket opened by any site (no CORS applies to the
    # handshake), and every browser sends `Origin` with it.
    if cookie_authenticated(headers, cookies):
        check_origin(headers, socket.scope["scheme"], runtime.settings.allowed_origins)
    return principal


async def _deny(
    socket: WebSocket[Any, Any, Any],
    details: dict[str, Any],
    extra_headers: dict[str, str] | None = None,
) -> None:
    """Refuse the upgrade: with the problem as an HTTP response where the server can send one
    (uvicorn can), else with a bare close, which the server turns into a 403."""
    await socket.receive()  # websocket.connect (`accept` takes it itself)
    extensions = socket.scope.get("extensions") or {}
    if "websocket.http.response" not in extensions:
        await socket.close(POLICY_VIOLATION, details["detail"][:120])
        return
    body = encode_problem(details)
    headers = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    headers += [
        (name.lower().encode(), value.encode()) for name, value in (extra_headers or {}).items()
    ]
    start = {
        "type": "websocket.http.response.start",
        "status": details["status"],
        "headers": headers,
    }
    await socket.send(cast(AsgiMessage, start))
    await socket.send(cast(AsgiMessage, {"type": "websocket.http.response.body", "body": body}))


class ActionSession:
    """One accepted socket: read, perform, answer, until the client leaves or a limit is hit."""

    __slots__ = ("_close", "_socket", "_strikes", "_wait", "answered", "principal", "runtime")

    def __init__(
        self, socket: WebSocket[Any, Any, Any], runtime: Runtime, principal: Principal
    ) -> None:
        self._socket = socket
        self.runtime = runtime
        self.principal = principal
        self._close: tuple[int, str] | None = None  # set: close with this code and reason
        self._wait: asyncio.Timeout | None = None  # set while waiting for a message
        self._strikes: deque[float] = deque()  # when recent invalid messages came
        self.answered = 0  # replies sent (for the admin API's listings)

    def disconnect(self, reason: DisconnectReason, retry_after: float | None = None) -> None:
        """End soon, for one of the server's reasons, with its close code."""
        self.stop(CLOSE_CODES[reason], close_text(reason, retry_after))

    def figures(self) -> tuple[int, str | None, int]:
        return self.answered, None, 0

    def ended_by(self) -> str | None:
        return None if self._close is None else REASON_OF_CODE.get(self._close[0])

    def stop(self, code: int, reason: str) -> None:
        if self._close is None:
            self._close = (code, reason)
        if self._wait is not None:  # waiting for a message: stop waiting now
            self._wait.reschedule(asyncio.get_running_loop().time())

    async def run(self) -> None:
        idle_s = self.runtime.settings.actions_idle_timeout_s
        while self._close is None:
            frame = await self._receive(idle_s)
            if frame is None:
                break
            reply = await self._answer(frame)
            if reply is not None:
                await self._socket.send_text(reply)
                self.answered += 1
        if self._close is not None:
            await self._socket.close(*self._close)

    async def _receive(self, idle_s: float) -> dict[str, Any] | None:
        """The next frame; None when the client left, or it is time to close."""
        try:
            async with asyncio.timeout(idle_s) as wait:
                self._wait = wait
                if self._close is not None:
                    return None
                event = await self._socket.receive()
        except TimeoutError:
            if self._close is None:
                self._close = (NORMAL, "idle")
            return None
        finally:
            self._wait = None
        if event["type"] != "websocket.receive":
            return None  # websocket.disconnect
        return cast(dict[str, Any], event)

    async def _answer(self, frame: dict[str, Any]) -> str | None:
        """The reply to one frame, or None when the socket closes instead."""
        if not self.runtime.actions.take(self.principal.sub):
            # Over the runtime limit: closed with `limit`, and when a message fits again.
            self.disconnect("limit", 1 / self.runtime.actions.rate)
            self.runtime.control.over_limit(self.principal, "ws")
            self.runtime.actions.messages[UNPARSED, "limited"] += 1
            return None
        text = frame.get("text")
        if text is None:
            return self._bad_input(None, problem(400, "binary frames are not read; send JSON text"))
        raw = text.encode()
        if len(raw) > MAX_MESSAGE_BYTES:
            detail = f"message is larger than {MAX_MESSAGE_BYTES} bytes"
            return self._bad_input(None, problem(413, detail))
        if not raw.strip():
            return self._bad_input(None, problem(400, "message is empty; send a JSON object"))
        try:
            message: Message = decode_json(raw, Message)
        except BadRequest as error:
            return self._bad_input(_ref_of(raw), problem_of(error))
        return await self._perform(message)

    async def _perform(self, message: Message) -> str:
        op = str(message.__struct_config__.tag)
        try:
            result = await perform(self.runtime, self.principal, message)
        except Exception as error:  # answered as REST would answer it; the socket stays open
            details, _ = render(error, f"action {op}")
            self.runtime.actions.messages[op, "error"] += 1
            return _failed(message.ref, details)
        self.runtime.actions.messages[op, "ok"] += 1
        return ENCODER.encode(Ok(message.ref, True, result)).decode()

    def _bad_input(self, ref: str | None, details: dict[str, Any]) -> str | None:
        """The error reply to an invalid message, or None once there were too many."""
        self.runtime.actions.messages[UNPARSED, "invalid"] += 1
        now = time.monotonic()
        self._strikes.append(now)
        while self._strikes[0] <= now - INVALID_WINDOW_S:
            self._strikes.popleft()
        if len(self._strikes) > MAX_INVALID:
            self._close = (POLICY_VIOLATION, "too many invalid messages")
            return None
        return _failed(ref, details)


def _ref_of(raw: bytes) -> str | None:
    try:
        return REF_ONLY.decode(raw).ref
    except (msgspec.DecodeError, RecursionError):  # the message may be nested past any limit
        return None


def _failed(ref: str | None, details: dict[str, Any]) -> str:
    return ENCODER.encode(Failed(ref, details)).decode()


async def close_all(runtime: Runtime) -> None:
    """Shutdown: close every action socket with 1001 (uvicorn's own would be 1012), after the
    action each has in hand."""
    await runtime.actions.close_all(
        CLOSE_CODES["shutdown"], close_text("shutdown"), SHUTDOWN_GRACE_S
    )
