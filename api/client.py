"""An async client for the execution service side of Sinal: report progress, consume commands.

A service that runs team executions reports what they do (steps, progress, logs, errors, the
final status) and obeys the commands people send (retry, cancel)::

    from api.client import ExecutionClient

    async with ExecutionClient("http://127.0.0.1:8000", service_token) as client:
        run = await client.create(team="ml", owner="alice", name="nightly build", total_steps=2)
        run.step_started(1, "checkout", total_steps=2)
        run.log("cloned", step=1, data={"commit": "4f2a9c1"})
        run.progress(50)
        run.step_finished(1)
        run.step_started(2, "compile")
        run.step_finished(2, outcome="failed")
        run.fail(code="E_COMPILE", message="3 errors", step=2, details={"exit_code": 2})
        await run.flush()  # everything above is now stored by the server

        async for command in client.commands(consumer="worker-1"):
            ...  # handle command.command ("cancel" or "retry") idempotently
            await command.ack()

Why it is shaped like this:

- Emitters (`run.progress(...)`, `run.log(...)`, ...) are synchronous and cheap: they number
  the event (`seq` 1, 2, 3, ... per execution) and buffer it. One sender task per client sends
  what is buffered on ticks, one every `flush_interval_s` while there is something to send
  (and at once when an execution has `batch_size` events waiting, or someone flushes): ONE
  request (`POST /v1/executions/events`) carries the buffered events of every execution that
  has some, up to `batch_size` events (and 1 MB) each; past the server's limits for a request
  (1000 executions, 5000 events, 4 MiB) the tick sends several. An execution has one batch in
  flight at a time, so that its order holds: one whose previous batch is still unanswered
  waits for the next tick. An event so waits at most `flush_interval_s`, plus the answer to
  its execution's batch in flight. Code that runs the work never waits on the network.
- Nothing is lost and nothing is doubled by a retry. Network errors, 5xx and 429 are retried
  with exponential backoff and jitter, resending the same events with the same numbers; the
  server ignores the ones it already has. An execution's id is chosen here (uuid4), so a
  retried `create` is idempotent too.
- The server answers for each execution of a request on its own: a gap or a refused event in
  one execution's batch refuses that batch only, and the others are stored. A batch the server
  refuses (409 invalid transition, any other 4xx) is a bug in the caller, not a network
  problem: it is reported as `ExecutionRejected` by the next `flush()` or emit of that
  execution. Where the server names the offending event (the `seq` of an invalid
  transition, the `field` "events[i]" of a bad payload) only that event is dropped; the events
  around it are renumbered and sent, so a progress tick after the execution finished costs
  that tick, not the log lines next to it. A bad event that makes the server refuse the whole
  request ("batches[i].events[j]") costs the same; the other executions' batches are sent
  again. What the client can check itself (ranges, sizes, JSON-serialisable `data`) raises
  `ValueError` at the emit instead.
- Back-pressure is explicit: an execution buffers at most `max_buffer` events. Past that, an
  emit raises `BufferFull` (the event is not buffered): `await run.flush()` and emit again.
- When the server stays unreachable for `max_retries` attempts, sending stops for the
  executions of that request and their `flush()` raises `ServerUnavailable`; the events stay
  buffered, and the next emit or flush of an execution tries again.
- A server without the bulk endpoint (404 or 405 to it) is sent one request per execution
  (`POST /v1/executions/{id}/events`) instead, with the same guarantees.
- Commands are delivered at least once: a command not acknowledged in time (the server's
  `SINAL_COMMAND_ACK_TIMEOUT`) is delivered again, possibly to another consumer. Handlers must
  be idempotent (cancelling a finished execution, or starting an attempt that already runs,
  does nothing) and ack after handling.

Emitters and `flush()` belong to the event loop that runs the client; they are not thread-safe.

The same client publishes events of the service's own on any channel (`publish`, and
`publish_many` for a list: up to 1,000 events per request, in one round trip to the engine).
Publishing has no sequence numbers for the server to recognise a repeat by, so it is retried
only where nothing was published (429, a connection never made); see `publish_many`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

import httpx

log = logging.getLogger("sinal.client")

Level = Literal["debug", "info", "warning", "error"]
Outcome = Literal["succeeded", "failed", "skipped"]
FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
MAX_BATCH = 500  # the server takes 1..500 events per execution and request
MAX_BATCH_BYTES = 1_000_000  # an execution's events in a request (the single endpoint: 1 MiB)
MAX_REQUEST_EXECUTIONS = 1000  # the bulk endpoint: executions per request
MAX_REQUEST_EVENTS = 5000  # events per request, all executions
MAX_REQUEST_BYTES = 4_000_000  # bodies up to 4 MiB: leave room for the envelope
MAX_PUBLISH_BATCH = 1000  # `POST /v1/publish`: events per request
MAX_PUBLISH_BYTES = 1_000_000  # and a list's body (the server takes 1 MiB)
BULK_PATH = "/v1/executions/events"
JSON = {"Content-Type": "application/json"}
MAX_MESSAGE = 4096
MAX_DATA_BYTES = 16 * 1024  # a log line's `data`, an error's `details`, as JSON
MAX_BACKOFF_S = 5.0


# -- errors ----------------------------------------------------------------------------------


class ExecutionClientError(Exception):
    """Base of everything this client raises on purpose."""


class RequestRejected(ExecutionClientError):
    """The server refused a request (a 4xx): retrying it unchanged cannot help.

    `problem` is the RFC 9457 body (`status`, `detail`, and `field` for a bad payload).
    """

    def __init__(self, what: str, status_code: int, problem: Mapping[str, Any]) -> None:
        super().__init__(f"{what}: {status_code} {problem.get('detail', '')}".rstrip())
        self.status_code = status_code
        self.problem = dict(problem)


class ExecutionRejected(RequestRejected):
    """The server refused events of an execution; `events` are the ones dropped for it."""

    def __init__(
        self,
        execution: str,
        status_code: int,
        problem: Mapping[str, Any],
        events: list[dict[str, Any]],
    ) -> None:
        super().__init__(f"execution {execution}: events refused", status_code, problem)
        self.execution = execution
        self.events = events


class PublishRejected(RequestRejected):
    """The server refused a publish. A list of more events than one request carries goes in
    several, each all or nothing: `published` are the events of the requests before the
    refused one, which went out; `index` is the refused event's place in the caller's list,
    when the server named one."""

    def __init__(
        self,
        status_code: int,
        problem: Mapping[str, Any],
        published: list[Published],
        index: int | None,
    ) -> None:
        where = "" if index is None else f" (event {index})"
        super().__init__(f"publish{where}", status_code, problem)
        self.published = published
        self.index = index


class ServerUnavailable(ExecutionClientError):
    """The server could not be reached, or kept answering 5xx / 429, `max_retries` times.

    Nothing was dropped: buffered events stay buffered and are sent by the next emit or flush.
    """


class BufferFull(ExecutionClientError):
    """An execution has `max_buffer` unsent events: `await run.flush()`, then emit again."""


# -- events and executions -------------------------------------------------------------------


@dataclass(slots=True)
class _Event:
    ordinal: int  # the order of emission, never changed (what `flush()` waits for)
    seq: int  # the number sent to the server; renumbered only after a refused batch
    body: dict[str, Any]
    encoded: bytes  # `body` as JSON, encoded once, at the emit (which so finds bad data)

    def wire(self) -> dict[str, Any]:
        return {**self.body, "seq": self.seq}

    def json(self) -> bytes:
        return b'{"seq":%d,%s' % (self.seq, self.encoded[1:])


def _encode(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Published:
    """An event published with `publish`: its position in its channel (`cursor`), and its
    time as subscribers see it (`ts`)."""

    channel: str
    cursor: str
    ts: str


class Run:
    """One execution as its producer sees it: emitters that buffer, `flush()` that waits.

    Get one from `ExecutionClient.create` or `ExecutionClient.attach`, never construct it.
    `view` is the server's ExecutionView as of create/attach; `status` is the status the
    server reported last (create, attach, or the answer to a batch).
    """

    def __init__(self, client: ExecutionClient, view: Mapping[str, Any]) -> None:
        self._client = client
        self.view: dict[str, Any] = dict(view)
        self.id: str = str(view["id"])
        self.status: str = str(view["status"])
        self.next_seq: int = int(view["next_seq"])  # the number the next emit gets
        self._started = self.status != "queued"  # or this producer reported a start
        self._buffer: list[_Event] = []  # unacknowledged events; the head is in flight
        self._ordinal = 0  # of the last event emitted
        self._in_flight = False  # the head of the buffer is in a request not yet answered
        self._send_at = 0.0  # loop time after which a partial batch is sent
        self._flushing = 0  # flush() calls waiting: send partial batches at once
        self._stalled: ServerUnavailable | None = None
        self._rejections: list[ExecutionRejected] = []
        self._changed = asyncio.Event()

    def __repr__(self) -> str:
        return f"<Run {self.id} {self.status} pending={self.pending}>"

    @property
    def pending(self) -> int:
        """Events emitted and not yet answered by the server."""
        return len(self._buffer)

    # -- emitters (sync: number and buffer the event) --------------------------------------

    def start(self) -> None:
        """The execution is running (any progress or step event also starts it)."""
        self._emit({"type": "status", "status": "running"})

    def progress(self, percent: int) -> None:
        """Overall progress, 0..100."""
        _check(0 <= percent <= 100, "progress must be between 0 and 100")
        self._emit({"type": "progress", "progress": int(percent)})

    def step_started(self, step: int, name: str, *, total_steps: int | None = None) -> None:
        _check(step >= 1, "step must be >= 1")
        _check(1 <= len(name) <= 256, "step name must be 1-256 characters")
        self._emit({"type": "step_started", "step": step, "name": name, "total_steps": total_steps})

    def step_finished(self, step: int, outcome: Outcome = "succeeded") -> None:
        _check(step >= 1, "step must be >= 1")
        self._emit({"type": "step_finished", "step": step, "outcome": outcome})

    def log(
        self,
        message: str,
        *,
        level: Level = "info",
        step: int | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        """A log line; the server stamps the time it receives it."""
        _check(len(message) <= MAX_MESSAGE, f"log message is longer than {MAX_MESSAGE}")
        _check(level in ("debug", "info", "warning", "error"), f"unknown log level {level!r}")
        body = {"type": "log", "message": message, "level": level, "step": step}
        self._emit(body | {"data": _small(data, "data")})

    def fail(
        self,
        *,
        code: str,
        message: str,
        step: int | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """The execution failed (final): an error code, a message, the step, any details."""
        _check(1 <= len(code) <= 128, "error code must be 1-128 characters")
        _check(len(message) <= MAX_MESSAGE, f"error message is longer than {MAX_MESSAGE}")
        body = {"type": "error", "code": code, "message": message, "step": step}
        self._emit(body | {"details": _small(details, "details")})

    def succeed(self) -> None:
        """The execution succeeded (final; progress becomes 100).

        The server takes no queued → succeeded, so a run that never reported a start (a
        status, progress or step event) is started first.
        """
        if not self._started:
            self.start()
        self._emit({"type": "status", "status": "succeeded"})

    def cancelled(self) -> None:
        """The execution stopped because it was cancelled (final)."""
        self._emit({"type": "status", "status": "cancelled"})

    # -- waiting -----------------------------------------------------------------------------

    async def flush(self) -> None:
        """Wait until the server has answered for every event emitted so far.

        Raises `ExecutionRejected` for a refused batch (once per refusal) and
        `ServerUnavailable` when the server stayed unreachable for `max_retries` attempts.
        """
        target = self._ordinal
        if self._buffer:
            self._client._check_open()
        self._stalled = None  # a flush is a new chance for a sender that gave up
        self._flushing += 1
        self._client._schedule(self, urgent=True)
        try:
            while self._buffer and self._buffer[0].ordinal <= target:
                if self._stalled is not None:
                    raise self._stalled
                changed = self._changed
                await changed.wait()
        finally:
            self._flushing -= 1
        self._raise_rejection()

    # -- what the sender calls ---------------------------------------------------------------

    def _emit(self, body: dict[str, Any]) -> None:
        self._raise_rejection()
        self._client._check_open()
        if len(self._buffer) >= self._client.max_buffer:
            raise BufferFull(
                f"execution {self.id} has {len(self._buffer)} unsent events: await run.flush()"
            )
        self._ordinal += 1
        self._buffer.append(_Event(self._ordinal, self.next_seq, body, _encode(body)))
        self.next_seq += 1
        self._started = self._started or body["type"] != "log"
        stalled, self._stalled = self._stalled, None  # an emit is a new chance too
        self._client._schedule(self, urgent=stalled is not None)

    def _raise_rejection(self) -> None:
        if self._rejections:
            raise self._rejections.pop(0)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _settle(self, count: int) -> None:
        """The first `count` buffered events are done with (stored, or dropped as refused)."""
        del self._buffer[:count]
        self._notify()

    def _renumber(self, first_seq: int) -> None:
        """Number the buffer from `first_seq`: a refused batch left nothing applied there."""
        for offset, event in enumerate(self._buffer):
            event.seq = first_seq + offset
        self.next_seq = first_seq + len(self._buffer)

    def _stall(self, error: ServerUnavailable) -> None:
        self._stalled = error
        self._notify()

    def _accepted(self, count: int, answer: Mapping[str, Any]) -> None:
        self.status = str(answer.get("status", self.status))
        self._settle(count)

    def _refused(self, batch: list[_Event], status_code: int, problem: Mapping[str, Any]) -> None:
        """Drop what the server refused, keep the rest in order, renumbered where it expects.

        The server applies nothing of a refused batch. A 409 names `expected_seq` (where to
        resend from) and, for an invalid transition, the `seq` of the event it cannot take; a
        400 may name one event (`field` "events[3]"). Only that event is dropped; when none
        is named, the whole batch is.
        """
        expected = problem.get("expected_seq")
        if status_code == 409 and isinstance(expected, int):
            applied = sum(1 for event in batch if event.seq < expected)  # stored by a retry
            self._settle(applied)
            rest, offending = batch[applied:], problem.get("seq")
            if isinstance(offending, int):
                bad = [event for event in rest if event.seq == offending] or rest
                self._drop(bad, status_code, problem)
            elif rest and rest[0].seq > expected:
                # The server lacks events it once acknowledged (another producer, a restored
                # database): they cannot be resent, so say so and continue from where it is.
                self._reject([], status_code, problem)
            self._renumber(expected)
        else:
            index = _event_index(problem.get("field"))
            named = index is not None and index < len(batch)
            self._drop([batch[index]] if named and index is not None else batch, status_code,
                       problem)  # fmt: skip
            self._renumber(batch[0].seq)
        self._notify()

    def _drop(self, events: list[_Event], status_code: int, problem: Mapping[str, Any]) -> None:
        self._reject(events, status_code, problem)
        dropped = {event.ordinal for event in events}
        self._buffer = [event for event in self._buffer if event.ordinal not in dropped]

    def _reject(self, events: list[_Event], status_code: int, problem: Mapping[str, Any]) -> None:
        error = ExecutionRejected(self.id, status_code, problem, [e.wire() for e in events])
        log.warning("%s", error)
        self._rejections.append(error)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _small(value: Mapping[str, Any] | None, name: str) -> dict[str, Any] | None:
    """A copy of `value`, checked here for what the server would refuse later."""
    if value is None:
        return None
    try:
        size = len(_encode(value))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be JSON-serialisable: {error}") from None
    _check(size <= MAX_DATA_BYTES, f"{name} is {size} bytes as JSON; at most {MAX_DATA_BYTES}")
    return dict(value)


def _batch_index(field: Any) -> int | None:
    """3 for the bulk request's problem field "batches[3]" or "batches[3].events[0].seq"."""
    match = re.match(r"batches\[(\d+)\]", field) if isinstance(field, str) else None
    return None if match is None else int(match.group(1))


def _unprefixed(problem: Mapping[str, Any]) -> dict[str, Any]:
    """The problem as the single-execution endpoint words it: the `field` "batches[3].events[0]"
    of a bulk request becomes "events[0]" (a refused execution's problem names its events)."""
    field = problem.get("field")
    match = re.match(r"batches\[\d+\]\.?", field) if isinstance(field, str) else None
    if match is None or not isinstance(field, str):
        return dict(problem)
    return {**problem, "field": field[match.end() :]}


def _status(problem: Mapping[str, Any], default: int) -> int:
    status = problem.get("status")
    return status if isinstance(status, int) and not isinstance(status, bool) else default


_JSON = {"Content-Type": "application/json"}


def _publish_item(channel: str, type: str, data: Any) -> bytes:
    """One event of `POST /v1/publish`, as JSON; ValueError for `data` that is not JSON."""
    _check(isinstance(channel, str) and isinstance(type, str), "channel and type are strings")
    try:
        return _encode({"channel": channel, "type": type, "data": data})
    except (TypeError, ValueError) as error:
        raise ValueError(f"data is not JSON: {error}") from None


def _list_index(field: Any) -> int | None:
    """3 for the problem field "[3]" or "[3].type" of a refused list."""
    match = re.match(r"\[(\d+)\]", field) if isinstance(field, str) else None
    return None if match is None else int(match.group(1))


def _event_index(field: Any) -> int | None:
    """3 for the problem field "events[3]" or "events[3].level"."""
    match = re.match(r"events\[(\d+)\]", field) if isinstance(field, str) else None
    return None if match is None else int(match.group(1))


# -- commands --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Command:
    """A command for the execution service, as delivered to one consumer.

    `command` is "cancel" or "retry"; for a retry, `retry_execution` is the new attempt
    (queued) to run. `deliveries` counts how often it was delivered: above 1, an earlier
    delivery was not acknowledged in time and may have been handled already.
    """

    delivery: str
    deliveries: int
    id: str
    command: str
    execution: str
    team: str
    by: str
    retry_execution: str | None
    created: str
    _client: ExecutionClient = field(repr=False, compare=False)

    async def ack(self) -> None:
        """Acknowledge it: it will not be delivered again."""
        await self._client.ack(self)


# -- the client ------------------------------------------------------------------------------


class ExecutionClient:
    """The execution service's connection to Sinal; use it as an async context manager.

    `token` is a JWT with the `service` role. Leaving the context sends what is buffered
    (waiting for it) and stops the sender; errors found then are raised unless another
    exception is already on its way out, in which case they are logged.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        batch_size: int = 100,
        flush_interval_s: float = 0.05,
        max_retries: int = 8,
        max_buffer: int = 10_000,
        timeout_s: float = 10.0,
        backoff_s: float = 0.1,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        _check(1 <= batch_size <= MAX_BATCH, f"batch_size must be between 1 and {MAX_BATCH}")
        _check(max_buffer >= batch_size, "max_buffer must be at least batch_size")
        _check(flush_interval_s >= 0 and max_retries >= 0, "negative interval or retries")
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.max_retries = max_retries
        self.max_buffer = max_buffer
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}", "User-Agent": "sinal-client"},
            timeout=timeout_s,
            transport=transport,
        )
        self._active: set[Run] = set()  # runs with events to send or refusals to report
        self._deliveries: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._closed = False
        self._last_tick = float("-inf")  # loop time of the sender's last send
        self._bulk = True  # False once the server answered 404/405 to the bulk endpoint

    async def __aenter__(self) -> Self:
        self._sender = asyncio.create_task(self._send_loop(), name="sinal-client-sender")
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose(raise_errors=error is None)

    async def aclose(self, *, raise_errors: bool = True) -> None:
        """Send what is buffered, stop the sender and close the connections."""
        if self._closed:
            return
        problems: list[ExecutionClientError] = []
        try:
            runs = list(self._active)
            flushed = await asyncio.gather(*(run.flush() for run in runs), return_exceptions=True)
            for run, result in zip(runs, flushed, strict=True):
                if isinstance(result, ExecutionClientError):
                    problems.append(result)
                elif isinstance(result, BaseException):
                    raise result
                problems += run._rejections
                run._rejections.clear()
        finally:
            self._closed = True
            tasks = [*self._deliveries, *([self._sender] if self._sender else [])]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._http.aclose()
        for problem in problems[1:] if raise_errors else problems:
            log.warning("on close: %s", problem)
        if problems and raise_errors:
            raise problems[0]

    # -- executions --------------------------------------------------------------------------

    async def create(
        self,
        *,
        team: str,
        owner: str,
        name: str,
        kind: str = "",
        total_steps: int | None = None,
        id: str | uuid.UUID | None = None,
    ) -> Run:
        """Create an execution (queued) and return its `Run`.

        The id is chosen here when not given, so a create retried after a lost answer finds
        the execution it made; creating an id that exists with the same team, owner, name
        and kind returns it (resuming at its `next_seq`), with other fields `RequestRejected`.
        """
        body = {
            "id": str(id or uuid.uuid4()),
            "team": team,
            "owner": owner,
            "name": name,
            "kind": kind,
            "total_steps": total_steps,
        }
        response = await self._request("POST", "/v1/executions", json=body)
        return Run(self, self._answer(response, "create execution", (200, 201)))

    async def attach(self, id: str | uuid.UUID) -> Run:
        """A `Run` for an existing execution, numbering from its `next_seq`: to resume one,
        or to run a retry's new attempt."""
        return Run(self, await self.get(id))

    async def get(self, id: str | uuid.UUID) -> dict[str, Any]:
        """The execution's current ExecutionView."""
        response = await self._request("GET", f"/v1/executions/{id}")
        return self._answer(response, f"get execution {id}", (200,))

    async def flush(self) -> None:
        """`flush()` every execution with something to send; raises the first problem."""
        results = await asyncio.gather(
            *(run.flush() for run in list(self._active)), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    # -- publishing --------------------------------------------------------------------------

    async def publish(self, channel: str, type: str, data: Any = None) -> Published:
        """Publish one event (`POST /v1/publish`): on `channel`, of `type`, carrying `data`
        (any JSON value). For what `publish_many` says of retries and refusals."""
        body = _publish_item(channel, type, data)
        answer = await self._publish_request(body, 0, [])
        return Published(channel, str(answer["cursor"]), str(answer["ts"]))

    async def publish_many(self, events: Iterable[Mapping[str, Any]]) -> list[Published]:
        """Publish `events` (each `{"channel", "type", "data"}`, `data` optional) in order, a
        list per request: one round trip for up to 1,000 events (and 1 MB), several for more.

        Each request is all or nothing: a refused one (a 4xx, a bug in the caller) raises
        `PublishRejected`, naming the event at fault and holding what earlier requests
        published. Retried, with backoff: `429` (over the publish rate: nothing was published)
        and a connection that could not be made. Not retried, since the events may have gone
        out: a `5xx` or a connection lost with the request sent; they raise
        `ServerUnavailable`, and publishing again may publish some events twice.
        """
        events = list(events)
        items = [_publish_item(e["channel"], e["type"], e.get("data")) for e in events]
        published: list[Published] = []
        start = 0
        while start < len(items):
            end, size = start, 2
            while end < len(items) and end - start < MAX_PUBLISH_BATCH:
                if end > start and size + len(items[end]) + 1 > MAX_PUBLISH_BYTES:
                    break
                size += len(items[end]) + 1
                end += 1
            body = b"[" + b",".join(items[start:end]) + b"]"
            answer = await self._publish_request(body, start, published)
            cursors, times = answer["cursors"], answer["ts"]
            if not (len(cursors) == len(times) == end - start):
                raise ValueError(f"{end - start} events published, answered by {answer!r:.200}")
            for event, cursor, ts in zip(events[start:end], cursors, times, strict=True):
                published.append(Published(str(event["channel"]), str(cursor), str(ts)))
            start = end
        return published

    async def _publish_request(
        self, body: bytes, first: int, published: list[Published]
    ) -> dict[str, Any]:
        response = await self._request(
            "POST", "/v1/publish", content=body, headers=_JSON, idempotent=False
        )
        if response.status_code != 201:
            problem = _problem(response)
            index = _list_index(problem.get("field"))
            raise PublishRejected(
                response.status_code,
                problem,
                list(published),
                None if index is None else first + index,
            )
        answer: dict[str, Any] = response.json()
        return answer

    # -- commands ----------------------------------------------------------------------------

    async def commands(
        self, consumer: str, *, wait_s: float = 25.0, limit: int = 100
    ) -> AsyncIterator[Command]:
        """Commands for the execution service, forever, long-polling `wait_s` at a time.

        Outages are ridden out (retried with backoff, logged); only a refusal (a bad token,
        a missing role: `RequestRejected`) ends the iteration. Ack each command after
        handling it; unacknowledged ones come back. Break out with `contextlib.aclosing`
        to stop at once.
        """
        params: dict[str, Any] = {"consumer": consumer, "wait": wait_s, "limit": limit}
        while True:
            try:
                response = await self._request(
                    "GET", "/v1/commands", params=params, timeout=wait_s + self.timeout_s
                )
            except ServerUnavailable as error:
                log.warning("%s; polling again", error)
                continue
            for entry in self._answer(response, "poll commands", (200,))["commands"]:
                yield self._command(entry)

    async def ack(self, *commands: Command) -> int:
        """Acknowledge deliveries; returns how many the server still held."""
        body = {"deliveries": [command.delivery for command in commands]}
        response = await self._request("POST", "/v1/commands/ack", json=body)
        return int(self._answer(response, "ack commands", (200,))["acked"])

    def _command(self, entry: Mapping[str, Any]) -> Command:
        command = entry["command"]
        retry = command.get("retry_execution")
        return Command(
            delivery=str(entry["delivery"]),
            deliveries=int(entry.get("deliveries", 1)),
            id=str(command["id"]),
            command=str(command["command"]),
            execution=str(command["execution"]),
            team=str(command.get("team", "")),
            by=str(command.get("by", "")),
            retry_execution=None if retry is None else str(retry),
            created=str(command.get("created", "")),
            _client=self,
        )

    # -- the sender --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ExecutionClientError("the client is closed")
        if self._sender is None:
            raise ExecutionClientError("use the client as `async with ExecutionClient(...)`")

    def _schedule(self, run: Run, *, urgent: bool) -> None:
        """Called on each emit and flush: wake the sender only when it has something to do
        now (an idle execution got an event, a batch filled, someone waits), not per event."""
        self._active.add(run)
        if len(run._buffer) == 1 and not run._in_flight:
            run._send_at = self._next_tick(asyncio.get_running_loop().time(), fresh=True)
            self._wake.set()
        elif urgent or len(run._buffer) == self.batch_size:
            self._wake.set()

    def _next_tick(self, now: float, *, fresh: bool) -> float:
        """When an execution's events go: at the next tick of the series the sender is in (one
        every `flush_interval_s` while there is something to send); when there is none, a
        `fresh` event `flush_interval_s` from now, and events that waited for a batch in flight
        at once."""
        tick = self._last_tick + self.flush_interval_s
        if tick > now:
            return tick
        return now + self.flush_interval_s if fresh else now

    async def _send_loop(self) -> None:
        """Tick when an execution's events are due (or one is urgent), and then send every
        execution that has events and no batch in flight: due or not, they share the request."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            ready: list[Run] = []
            due = False
            deadline: float | None = None
            for run in list(self._active):
                if run._in_flight or run._stalled is not None:
                    continue
                if not run._buffer:
                    if not run._rejections:
                        self._active.discard(run)
                    continue
                ready.append(run)
                urgent = run._flushing or self._closed or len(run._buffer) >= self.batch_size
                if urgent or run._send_at <= now:
                    due = True
                else:
                    deadline = run._send_at if deadline is None else min(deadline, run._send_at)
            if due:
                self._last_tick = now
                self._send(ready)
                deadline = None  # what is left is in flight: its answer wakes the sender
            self._wake.clear()
            timeout = None if deadline is None else max(0.0, deadline - now)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    def _send(self, runs: list[Run]) -> None:
        """One tick: the head of each run's buffer, in as few requests as the server's limits
        allow (one, unless they are many or large)."""
        batches = [(run, *self._batch(run)) for run in runs]
        for run in runs:
            run._in_flight = True
        if not self._bulk:
            for run, events, items in batches:
                self._start(self._deliver_one(run, events, b'{"events":[%s]}' % items))
            return
        request: list[tuple[Run, list[_Event]]] = []
        parts: list[bytes] = []
        envelope = len(b'{"batches":[]}')
        size, count = envelope, 0
        for run, events, items in batches:
            part = b'{"execution":"%s","events":[%s]}' % (run.id.encode(), items)
            full = (
                len(request) >= MAX_REQUEST_EXECUTIONS
                or count + len(events) > MAX_REQUEST_EVENTS
                or size + len(part) + 1 > MAX_REQUEST_BYTES
            )
            if request and full:
                self._start(self._deliver(request, b'{"batches":[%s]}' % b",".join(parts)))
                request, parts, size, count = [], [], envelope, 0
            request.append((run, events))
            parts.append(part)
            size += len(part) + 1
            count += len(events)
        if request:
            self._start(self._deliver(request, b'{"batches":[%s]}' % b",".join(parts)))

    def _start(self, delivery: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(delivery, name="sinal-client-send")
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def _deliver(self, batches: list[tuple[Run, list[_Event]]], body: bytes) -> None:
        """Send one bulk request (with retries); settle each execution's batch by its result."""
        runs = [run for run, _ in batches]
        try:
            response = await self._request("POST", BULK_PATH, content=body, headers=JSON)
            if response.status_code == 200:
                results = _results(response, runs)
                for (run, events), result in zip(batches, results, strict=True):
                    error = result.get("error")
                    if isinstance(error, Mapping):
                        problem = _unprefixed(error)
                        run._refused(events, _status(problem, 400), problem)
                    else:
                        run._accepted(len(events), result)
            elif response.status_code in (404, 405):
                # A server from before the bulk endpoint: nothing was applied; these batches,
                # and all from now on, go one request per execution.
                log.warning("%s: %d; sending per execution", BULK_PATH, response.status_code)
                self._bulk = False
            else:
                self._refused_request(batches, response.status_code, _problem(response))
        except ServerUnavailable as error:
            log.warning("%d execution(s): %s", len(runs), error)
            for run in runs:
                run._stall(error)
        except Exception as error:  # a bug here must not kill the sender silently
            log.exception("sending the events of %d execution(s) failed", len(runs))
            for run in runs:
                run._stall(ServerUnavailable(f"sending failed: {error!r}"))
        finally:
            self._release(runs)

    @staticmethod
    def _refused_request(
        batches: list[tuple[Run, list[_Event]]], status_code: int, problem: Mapping[str, Any]
    ) -> None:
        """The whole request was refused, nothing of it applied. A 400 naming a batch
        ("batches[3].events[0].seq") is that execution's problem: its batch is refused as the
        single endpoint would have, and the others go again. Anything else (a bad token, a
        missing role) is every execution's."""
        index = _batch_index(problem.get("field")) if status_code == 400 else None
        if index is not None and index < len(batches):
            run, events = batches[index]
            run._refused(events, status_code, _unprefixed(problem))
            return
        for run, events in batches:
            run._refused(events, status_code, problem)

    async def _deliver_one(self, run: Run, batch: list[_Event], body: bytes) -> None:
        """Send the head of `run`'s buffer once (with retries) and settle what was answered:
        to a server without the bulk endpoint."""
        try:
            response = await self._request(
                "POST", f"/v1/executions/{run.id}/events", content=body, headers=JSON
            )
            if response.status_code == 200:
                run._accepted(len(batch), response.json())
            else:
                run._refused(batch, response.status_code, _problem(response))
        except ServerUnavailable as error:
            log.warning("execution %s: %s", run.id, error)
            run._stall(error)
        except Exception as error:  # a bug here must not kill the sender silently
            log.exception("execution %s: sending failed", run.id)
            run._stall(ServerUnavailable(f"sending failed: {error!r}"))
        finally:
            self._release([run])

    def _release(self, runs: list[Run]) -> None:
        """Their batches were answered (or given up): what they buffered meanwhile goes at
        the next tick, or at once if it has passed."""
        now = asyncio.get_running_loop().time()
        for run in runs:
            run._in_flight = False
            if run._buffer:
                run._send_at = self._next_tick(now, fresh=False)
        self._wake.set()

    def _batch(self, run: Run) -> tuple[list[_Event], bytes]:
        """The head of the buffer: up to `batch_size` events and `MAX_BATCH_BYTES` of JSON
        (at least one event), and their JSON array's items; resent unchanged on a retry."""
        batch: list[_Event] = []
        parts: list[bytes] = []
        size = len(b'{"execution":"","events":[]}') + len(run.id)
        for event in run._buffer[: self.batch_size]:
            part = event.json()
            size += len(part) + 1
            if batch and size > MAX_BATCH_BYTES:
                break
            batch.append(event)
            parts.append(part)
        return batch, b",".join(parts)

    # -- HTTP --------------------------------------------------------------------------------

    async def _request(
        self, method: str, path: str, *, idempotent: bool = True, **options: Any
    ) -> httpx.Response:
        """Send, retrying network errors, 5xx and 429; any other answer is returned.

        Every attempt sends the same request: the server recognises a repeat (the same seq
        numbers, the same execution id), so a retry after a lost answer changes nothing.
        A request that is not `idempotent` (a publish) is retried only where the server surely
        did nothing: a 429, or a connection never made; other failures raise at once.
        """
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                response = await self._http.request(method, path, **options)
            except httpx.TransportError as error:
                failure = f"{type(error).__name__}: {error}"
                unsent = isinstance(error, httpx.ConnectError | httpx.ConnectTimeout)
                if not idempotent and not unsent:
                    raise ServerUnavailable(
                        f"{method} {path}: {failure} (with the request sent: not retried)"
                    ) from error
            else:
                if response.status_code < 500 and response.status_code != 429:
                    return response
                failure = f"{response.status_code} {_problem(response).get('detail', '')}"
                retry_after = _retry_after(response)
                if not idempotent and response.status_code != 429:
                    raise ServerUnavailable(f"{method} {path}: {failure.strip()} (not retried)")
            if attempt >= self.max_retries:
                raise ServerUnavailable(
                    f"{method} {path}: {failure.strip()} (after {attempt + 1} attempts)"
                )
            await asyncio.sleep(self._backoff(attempt, retry_after))
            attempt += 1

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Exponential with full jitter, so that many producers do not retry in step; a
        server's Retry-After is a floor."""
        ceiling = min(MAX_BACKOFF_S, self.backoff_s * 2**attempt)
        delay = random.uniform(ceiling / 2, ceiling)
        return max(delay, retry_after or 0.0)

    @staticmethod
    def _answer(response: httpx.Response, what: str, ok: tuple[int, ...]) -> dict[str, Any]:
        if response.status_code not in ok:
            raise RequestRejected(what, response.status_code, _problem(response))
        body: dict[str, Any] = response.json()
        return body


def _problem(response: httpx.Response) -> dict[str, Any]:
    """The problem+json body, or one made from whatever the answer was."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        return body
    return {"status": response.status_code, "detail": response.text[:500]}


def _results(response: httpx.Response, runs: list[Run]) -> list[Mapping[str, Any]]:
    """The bulk answer's results, one per batch sent and in its order (checked)."""
    results = response.json().get("results")
    if not isinstance(results, list) or len(results) != len(runs):
        raise ValueError(f"{len(runs)} batches sent, answered by {results!r:.200}")
    for run, result in zip(runs, results, strict=True):
        if not isinstance(result, dict) or str(result.get("execution")) != run.id:
            raise ValueError(f"the result for execution {run.id} is {result!r:.200}")
    return results


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return min(float(response.headers.get("retry-after", "")), 60.0)
    except ValueError:
        return None
