"""Around every request: its id, the access log, and the HTTP metrics.

Each HTTP request and WebSocket handshake gets an id: the caller's `X-Request-ID` when it is a
sensible one (1 to 128 printable ASCII characters), else one made up here. It goes back in the
`X-Request-ID` response header, to every log record written while the request is handled
(`current()`, read by the filter in `api/logs.py`), and to the admin audit log.

When the request is finished, one line goes to the `sinal.access` logger (method, path, status,
duration; route template, request id and the caller's `sub` as fields), and a REST request is
counted in the HTTP metrics by route template, never by raw path. Above a number of lines per
second, the access log is sampled (`AccessSampler`): a line costs about 15 µs, a tenth of a
lean publish.

This runs on every request, `POST /v1/publish` included, whose cost is measured: one small
object per request serves as the request's record and as the `send` that adds the header, the
log line is built only if it will be written, and the stream's writes do not go through it at
all (see `Requests`).
"""

from __future__ import annotations

import logging
import math
import random
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from api.runtime import Runtime

access_log = logging.getLogger("sinal.access")

HEADER = b"x-request-id"
MAX_ID = 128
# The route label of a request no route matched (a 404, a 405): bounded like the others.
UNMATCHED = "unmatched"
# The messages that start a response, and the status each stands for when it carries none.
_STARTS = {
    "http.response.start": None,
    "websocket.http.response.start": None,
    "websocket.accept": 101,
}


class Exchange:
    """One request (or WebSocket), from its arrival to the end of its response: its id, the
    caller once authenticated, and the status it was answered with.

    It is also the `send` the application gets: it notes the status of the response's start
    and adds the `X-Request-ID` header to it.
    """

    __slots__ = (
        "done",
        "header",
        "method",
        "path",
        "request_id",
        "route",
        "scope",
        "send",
        "started",
        "status",
        "sub",
    )

    def __init__(self, scope: Scope, send: Send, route: str | None) -> None:
        self.started = time.perf_counter()
        self.scope = scope
        self.send = send
        # Routing rewrites `scope["path"]` (a mount's remainder): the path as asked is kept.
        self.path: str = scope["path"]
        # A WebSocket's handshake is a GET.
        self.method = scope["method"] if scope["type"] == ScopeType.HTTP else "GET"
        self.route = route
        given = next((value for name, value in scope["headers"] if name == HEADER), None)
        if given is not None and sensible_id(given):
            self.header = given
        else:
            # Unique, not secret: the process's generator (seeded from the system's, reseeded
            # in a forked worker) costs no system call per request, as `os.urandom` did.
            self.header = b"%016x" % random.getrandbits(64)
        self.request_id = self.header.decode()
        self.sub: str | None = None
        self.status: int | None = None
        self.done = False

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind in _STARTS:
            message = self.starting(message, _STARTS[kind])
        elif kind == "websocket.close" and self.status is None:
            self.status = 403  # closed before the handshake: the server answers 403
        await self.send(message)

    def starting(self, message: Any, status: int | None = None) -> Any:
        """`message`, a response's start, with the request id among its headers (a copy: the
        headers may be a shared constant); its status noted."""
        self.status = status or message["status"]
        message = dict(message)
        message["headers"] = [*message.get("headers", ()), (HEADER, self.header)]
        return message

    def route_template(self) -> str | None:
        """The route the request matched, with no parameter's value (`/v1/notifications/{id}`),
        once routed; None when no route matched."""
        return self.route or self.scope.get("path_template")


# Set for the handling of each request. Tasks and callbacks started meanwhile inherit it, and
# may outlive the request (a wake-up scheduled by a publish): `done` tells them it is over.
_current: ContextVar[Exchange | None] = ContextVar("sinal_request", default=None)


def current() -> Exchange | None:
    """The request being handled, if any."""
    exchange = _current.get()
    return None if exchange is None or exchange.done else exchange


def identified(sub: str) -> None:
    """Note the authenticated caller of the request being handled (`api.auth`)."""
    exchange = current()
    if exchange is not None:
        exchange.sub = sub


def sensible_id(value: bytes) -> bool:
    """Whether a caller's `X-Request-ID` may be used as it is: it is logged, stored with audit
    entries and sent back in a header."""
    return 0 < len(value) <= MAX_ID and value.isascii() and value.decode().isprintable()


def response_start(status: int, headers: list[tuple[bytes, bytes]]) -> Any:
    """The `http.response.start` message of a handler that writes its own response (the
    stream, the lean publish; their writes do not go through `Exchange`): with the request
    id, status noted."""
    message = {"type": "http.response.start", "status": status, "headers": headers}
    exchange = current()
    return message if exchange is None else exchange.starting(message)


class AccessSampler:
    """Which finished requests get an access line: every one while the process writes at most
    `lines_per_s` a second; past that, within the second, one request in `k`, whose line says
    `sampled=k` (it stands for `k` requests: itself and the `k - 1` before it that got none).
    `k` follows the previous second's load, so that a second of steady load writes fewer than
    `2 * lines_per_s` lines whatever the rate. A 5xx always gets its line. `lines_per_s` 0:
    every request.

    Why sampling: measured (docs/monitoring.md, "The access log"), a line costs ~15 µs of the
    process's CPU, formatting and the write; handing records to a logging thread moved the work
    but cost ~20 µs in all (the thread shares the core and the GIL with the event loop).
    """

    __slots__ = ("count", "every", "lines_per_s", "second")

    def __init__(self, lines_per_s: int) -> None:
        self.lines_per_s = lines_per_s
        self.second = -1
        self.count = 0  # requests (5xx apart) finished in `second`
        self.every = 2

    def weight(self, status: int, now: float) -> int:
        """How many requests the line of this one stands for: 1 (a line of its own), k > 1
        (a sampled line), or 0 (no line)."""
        limit = self.lines_per_s
        if not limit or status >= 500:
            return 1
        second = int(now)
        if second != self.second:
            # Sampling in the new second follows the last one's load, if it was the one before.
            previous = self.count if second == self.second + 1 else 0
            self.every = max(2, math.ceil(previous / limit))
            self.second = second
            self.count = 0
        self.count += 1
        beyond = self.count - limit
        if beyond <= 0:
            return 1
        return self.every if beyond % self.every == 0 else 0


class Requests:
    """ASGI middleware: an `Exchange` for each HTTP request and WebSocket, then the access line
    and the HTTP metrics.

    A route served before Litestar's routing, with a handler that writes its own response, is
    given as `stream_route` (the SSE stream) or `lean_route` (`POST /v1/publish`): the handler
    gets the server's own `send` (an extra call on each of the stream's writes is what its
    design avoids) and starts its responses with `response_start`, and the route is its
    template. The stream is not counted in the HTTP metrics (streams have their own); a lean
    route is, as Litestar's routes are.
    """

    __slots__ = ("app", "counted", "route", "runtime", "sampler")

    def __init__(
        self,
        app: ASGIApp,
        runtime: Runtime,
        stream_route: str | None = None,
        *,
        lean_route: str | None = None,
        sampler: AccessSampler | None = None,
    ) -> None:
        self.app = app
        self.runtime = runtime
        self.route = stream_route or lean_route
        self.counted = stream_route is None
        self.sampler = sampler  # None: a line for every request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind: str = scope["type"]  # Litestar's `Scope` leaves out the lifespan's
        if kind == "lifespan":
            await self.app(scope, receive, send)
            return
        exchange = Exchange(scope, send, self.route)
        token = _current.set(exchange)
        try:
            await self.app(scope, receive, send if self.route else exchange)
        finally:
            try:
                self.finish(exchange)
            finally:
                exchange.done = True
                _current.reset(token)

    def finish(self, exchange: Exchange) -> None:
        """Log the access line and count the request."""
        now = time.perf_counter()
        seconds = now - exchange.started
        # No response started: the server answers 500 (the app raised or returned without one).
        status = exchange.status or 500
        if self.counted and exchange.scope["type"] == ScopeType.HTTP:
            route = exchange.route_template() or UNMATCHED
            self.runtime.metrics.observe_http(route, exchange.method, status, seconds)
        if not access_log.isEnabledFor(logging.INFO):
            return
        weight = 1 if self.sampler is None else self.sampler.weight(status, now)
        if not weight:
            return
        query = exchange.scope.get("query_string")
        extra: dict[str, Any] = {"status": status, "duration_ms": round(seconds * 1000, 3)}
        if weight > 1:
            extra["sampled"] = weight
        # Made and handled directly: `Logger.info` would look up the caller's file and line
        # in the stack, a sixth of the line's cost, for formats that show neither.
        record = access_log.makeRecord(
            access_log.name,
            logging.INFO,
            __file__,
            0,
            "%s %s%s%s %d %.1fms",
            (
                exchange.method,
                exchange.path,
                "?" if query else "",
                query.decode("latin-1") if query else "",
                status,
                seconds * 1000,
            ),
            None,
            extra=extra,
        )
        access_log.handle(record)
