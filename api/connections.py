"""Connection limits uvicorn does not have: request read deadlines, and a cap per process.

Uvicorn's keep-alive timeout covers the idle time between two requests only, is not armed before
a connection's first request, and any byte resets it: a socket that sent nothing, or dribbled its
headers or its body, held a descriptor forever, and 1,084 of them exhausted a server limited to
1,024. An ASGI middleware cannot help: the app is called once the headers are in. So
`GuardedHttpProtocol`, a subclass of uvicorn's httptools protocol (the one `uvicorn[standard]`
selects), gives each request

- `SINAL_HEADER_TIMEOUT` seconds from the connection (on a kept-alive one, from the request's
  first bytes) to the end of its headers;
- `SINAL_BODY_TIMEOUT` seconds from there to the end of its body, not counting the time the
  server itself stops reading because the app has not taken what came yet;

after which it answers 408 and closes (a socket that sent nothing is just closed). Responses are
not timed: streams, long-polls and the action WebSocket are long-lived on purpose; a WebSocket's
handshake request is timed like any other.

Past `SINAL_MAX_CONNECTIONS` open connections (streams and sockets count), a new connection's
request is answered 503 with `Retry-After` and the connection closed, before it reaches the app;
`/healthz` excepted, so that a liveness probe does not get a full process restarted.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar

from uvicorn._types import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.problems import PROBLEM_JSON, encode_problem, problem

log = logging.getLogger("sinal.connections")

# Descriptors kept for what is not a client connection: the Redis pool (up to 100), the
# database pool, SQLite's files, the listening socket and the event loop's own.
RESERVED_DESCRIPTORS = 256
# The cap when SINAL_MAX_CONNECTIONS is unset, where the open-file limit allows as many.
DEFAULT_MAX_CONNECTIONS = 50_000
RETRY_AFTER_S = 5
# Paths served even past the connection cap.
EXEMPT_PATHS = frozenset({"/healthz"})
# At most one "at its connection limit" warning per this many seconds.
WARN_EVERY_S = 10.0

HEADERS, BODY = "headers", "body"


@dataclass(frozen=True)
class Limits:
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int


def raise_descriptor_limit() -> tuple[int, int]:
    """Raise this process's open-file soft limit to its hard limit: (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit cannot be the soft one (Linux caps it at fs.nr_open).
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as error:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, error)
            return soft, soft
    return soft, max(soft, target)


def connection_cap(wanted: int, descriptors: int) -> int:
    """At most `wanted`, and below what the descriptors allow: a clear 503 rather than
    `accept()` failing for lack of descriptors."""
    return max(1, min(wanted, max(descriptors - RESERVED_DESCRIPTORS, descriptors // 2)))


def guarded_protocol(limits: Limits) -> type[GuardedHttpProtocol]:
    """The protocol class to give `uvicorn.Config(http=...)`."""
    attributes = {
        "limits": limits,
        "_reading": {},
        "_sweeper": None,
        # A deadline is kept to within a tenth of itself.
        "_sweep_every_s": min(limits.header_timeout_s, limits.body_timeout_s) / 10,
    }
    return type("GuardedHttpProtocol", (GuardedHttpProtocol,), attributes)


def _response(status: int, detail: str, *headers: str) -> bytes:
    body = encode_problem(problem(status, detail))
    head = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        f"content-type: {PROBLEM_JSON}",
        f"content-length: {len(body)}",
        "connection: close",
        *headers,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class GuardedHttpProtocol(HttpToolsProtocol):
    """One HTTP connection, with read deadlines and the cap (see the module's docstring).

    The httptools parser calls `on_message_begin`, `on_headers_complete` and
    `on_message_complete` from `data_received`. A connection still reading a request waits in
    `_reading` with its deadline, and one timer per process sweeps it (`_sweep`), so that no
    connection holds a timer of its own: an idle stream's memory is what a server of many
    streams spends (docs/benchmarks.md).
    """

    limits: ClassVar[Limits]
    # Set by `guarded_protocol`: the connections reading a request, each with the loop time its
    # phase must end by; the timer that sweeps them; how often it does.
    _reading: ClassVar[dict[GuardedHttpProtocol, float]]
    _sweeper: ClassVar[asyncio.TimerHandle | None]
    _sweep_every_s: ClassVar[float]
    _last_warning: ClassVar[float] = 0.0

    # Slots: uvicorn's protocol keeps its state in an instance dict whose keys its instances
    # share; three more keys set after creation made every connection's dict a private one,
    # about 1.4 KB of each idle stream (measured with loadtests.fanout's idle phase).
    __slots__ = ("_began", "_phase", "_refusing")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn's pipeline `deque` preallocates a block of 64 slots (~760 bytes) for the
        # pipelined requests a browser never sends; a list does the same job in 56.
        self.pipeline = _Pipeline()  # type: ignore[assignment]
        self._phase: str | None = None  # HEADERS or BODY while a request is being read
        self._began = False  # bytes of the current request have come
        self._refusing = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Likewise `asyncio.Event`, which holds a `deque` for its waiters from birth: a
        # connection has two (the request's and the flow control's), held for a stream's life.
        writable = LeanEvent()
        writable.set()
        self.flow._is_writable_event = writable  # type: ignore[assignment]
        if len(self.connections) > self.limits.max_connections:
            self._refuse()
        self._phase = HEADERS
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._phase = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if (
            self._phase is not None
            and self not in self._reading
            and not self.transport.is_closing()
        ):
            self._arm()

    # -- parser callbacks ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase = HEADERS  # keeps the deadline of a new connection's first request
        self._began = True

    def on_headers_complete(self) -> None:
        before = self.cycle
        super().on_headers_complete()
        if self.cycle is not before:  # a new request (its task is created, not yet started)
            self.cycle.message_event = LeanEvent()  # type: ignore[assignment]
        self._disarm()
        upgrading = self.parser.should_upgrade() and self._should_upgrade()
        self._phase = None if upgrading else BODY  # a WebSocket is not timed from here

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()
        self._phase = None
        self._began = False

    # -- deadlines -----------------------------------------------------------------------------

    def _arm(self) -> None:
        limits = self.limits
        timeout = limits.header_timeout_s if self._phase == HEADERS else limits.body_timeout_s
        self._reading[self] = self.loop.time() + timeout
        cls = type(self)
        if cls._sweeper is None:
            cls._sweeper = self.loop.call_later(cls._sweep_every_s, cls._sweep, self.loop)

    def _disarm(self) -> None:
        self._reading.pop(self, None)

    @classmethod
    def _sweep(cls, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        due = [connection for connection, when in cls._reading.items() if when <= now]
        for connection in due:
            del cls._reading[connection]
            connection._expired()  # it may wait again (`_arm`): the server holds its body
        cls._sweeper = (
            loop.call_later(cls._sweep_every_s, cls._sweep, loop) if cls._reading else None
        )

    def _expired(self) -> None:
        if self._phase is None or self.transport.is_closing():
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        if self._phase == HEADERS:
            if not self._began:  # e.g. a browser's speculative preconnection: nothing to answer
                log.debug("closed %s: no request within %s s", client, self.limits.header_timeout_s)
                self.transport.close()
                return
            limit = f"{self.limits.header_timeout_s:g} s"
            self._time_out(f"the request headers did not arrive within {limit}")
            log.info("closed %s: request headers not complete within %s", client, limit)
            return
        cycle = self.cycle
        if cycle.response_complete:  # answered without the body, which never came
            self.transport.close()
            return
        if self.flow.read_paused:  # the server holds what came; the app has not taken it yet
            self._arm()
            return
        limit = f"{self.limits.body_timeout_s:g} s"
        # The app waiting for the body sees a disconnect; what it answers is not sent.
        response_started = cycle.response_started
        cycle.disconnected = True
        cycle.message_event.set()
        if response_started:
            self.transport.close()
        else:
            self._time_out(f"the request body did not arrive within {limit}")
        log.info("closed %s: request body not complete within %s", client, limit)

    def _time_out(self, detail: str) -> None:
        self.transport.write(_response(408, detail))
        self.transport.close()

    # -- the connection cap --------------------------------------------------------------------

    def _refuse(self) -> None:
        """Answer this connection's request with 503, whatever it asks (but `EXEMPT_PATHS`)."""
        self._refusing = True
        self.app = _Refusal(self.app, self.limits.max_connections)
        now = time.monotonic()
        if now - GuardedHttpProtocol._last_warning >= WARN_EVERY_S:
            GuardedHttpProtocol._last_warning = now
            log.warning(
                "at the connection limit (%d, SINAL_MAX_CONNECTIONS): refusing new requests "
                "with 503",
                self.limits.max_connections,
            )

    def _should_upgrade_to_ws(self) -> bool:
        # A refused WebSocket handshake gets the 503 like any request.
        return not self._refusing and super()._should_upgrade_to_ws()

    def _unsupported_upgrade_warning(self) -> None:
        if not self._refusing:
            super()._unsupported_upgrade_warning()


class LeanEvent:
    """`asyncio.Event` as uvicorn uses it (`set`, `clear`, `is_set`, `wait`), with its waiters in
    a list made on the first wait: an idle stream holds two events for its whole life, and an
    `asyncio.Event` costs a 760-byte `deque` before anything waits on it."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[bool]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        for waiter in self._waiters or ():
            if not waiter.done():
                waiter.set_result(True)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            self._waiters.remove(waiter)


class _Pipeline(list[Any]):
    """The queue of pipelined requests, as uvicorn's protocol uses it: `appendleft` to queue,
    `pop` the oldest."""

    __slots__ = ()

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)


class _Refusal:
    """The ASGI app of a connection past the cap."""

    def __init__(self, app: ASGI3Application, cap: int) -> None:
        self.app = app
        self.body = encode_problem(
            problem(
                503,
                f"this server process has reached its limit of {cap} open connections; "
                f"retry in {RETRY_AFTER_S} s",
            )
        )

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "http" and scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = [
            (b"content-type", PROBLEM_JSON.encode()),
            (b"content-length", str(len(self.body)).encode()),
            (b"retry-after", str(RETRY_AFTER_S).encode()),
            (b"connection", b"close"),
        ]
        start: Any = {"type": "http.response.start", "status": 503, "headers": headers}
        await send(start)
        await send({"type": "http.response.body", "body": self.body, "more_body": False})
