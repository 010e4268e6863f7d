"""One SSE connection, from handshake to close, independent of any web framework.

The handshake sends, in this order: the `retry:` hint; a `reset` per reason for channels whose
position cannot be honoured; `ready` with the starting cursor; the replay of every channel from
its position; then live events. Every frame that moves a position carries `id:` with the cursor
*after* it, so a client that drops at any byte resumes exactly where it stopped.

The subscription is open before any position is read, so an event published during the
handshake is both in the replay and in the live buffer: live delivery skips what is not past
the connection's position (no duplicate), and nothing falls between (no loss).

When the server ends the stream (shutdown, the credential's expiry, ...), the last frame is
`event: disconnect` with the reason and no `id:` (streams/disconnect.py). Expiry is one timer on
the loop per connection, set when its subscription opens; the hot path knows nothing of it.

Live, the connection's task only waits for the client to leave. Writes happen in the hub's
wake-up round: the session encodes the buffered batch and runs the ASGI `send` coroutine on
the spot; it finishes without suspending unless the socket is full, and only then is it
resumed later by its own future. Measured (docs/benchmarks.md): a task wake-up per write cost
more than the write itself.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Generator
from typing import Any

from streams.cursor import Position, encode_cursor
from streams.disconnect import DisconnectReason, close_at, disconnect_data
from streams.engine import PositionLost, ResetReason
from streams.event import (
    MAX_ID_PART,
    Event,
    StreamId,
    encode_comment,
    encode_control,
    encode_retry,
    encode_segment,
)
from streams.frames import StreamReady, StreamReset
from streams.hub import HEARTBEAT, CloseReason, Hub, Item, Reset, Subscriber
from streams.metrics import StreamMetrics

log = logging.getLogger("sinal.stream")

Start = Callable[[], Awaitable[None]]
# Writes a body chunk at once and says True, or says False and writes nothing (the socket is
# full, say): then the ASGI `send` writes it. Given by a server that can (api/transport.py).
Direct = Callable[[bytes], bool]
Send = Callable[[Any], Awaitable[None]]  # ASGI send
Receive = Callable[[], Awaitable[Any]]  # ASGI receive

CURSOR_PREFIX = "1."
PING = encode_comment("ping")
REPLAY_PAGE = 500
DRAIN_WAIT_S = 2.0


class StreamSession:
    __slots__ = (
        "_close_early",
        "_direct",
        "_epochs",
        "_in_flight",
        "_index",
        "_offsets",
        "_segments",
        "_send",
        "_subscriber",
        "_task",
        "_write_done",
        "abandoned",
        "channels",
        "deadline",
        "delivered",
        "drain_retry_ms",
        "hub",
        "resume",
        "resume_invalid",
        "retry_ms",
    )

    def __init__(
        self,
        hub: Hub,
        channels: list[str],
        resume: dict[str, Position] | None,
        *,
        resume_invalid: bool = False,
        retry_ms: int = 2000,
        drain_retry_ms: int = 250,
        deadline: float | None = None,
    ) -> None:
        self.hub = hub
        self.channels = channels
        self.resume = resume
        self.resume_invalid = resume_invalid
        self.retry_ms = retry_ms
        self.drain_retry_ms = drain_retry_ms
        # When the credential that opened the stream expires, grace included (epoch seconds).
        self.deadline = deadline
        self._index = {channel: i for i, channel in enumerate(channels)}
        self._epochs: dict[str, str] = {}
        self._offsets: dict[str, StreamId] = {}
        self._segments = [""] * len(channels)
        self._subscriber: Subscriber | None = None
        self._close_early: CloseReason | None = None
        self._task: asyncio.Task[Any] | None = None
        self._send: Send | None = None
        self._direct: Direct | None = None
        self._in_flight: Generator[Any, None, None] | None = None  # a suspended live write
        self._write_done: asyncio.Future[None] | None = None
        self.abandoned = False
        self.delivered = 0  # events written (for the admin API's listings)

    @property
    def cursor(self) -> str:
        return encode_cursor(self._segments)

    def close(self, reason: CloseReason, retry_after: float | None = None) -> None:
        """End the session from outside (client gone, admin disconnect, shutdown)."""
        if self._subscriber is None:
            self._close_early = self._close_early or reason
        else:
            self._subscriber.close(reason, retry_after)

    # -- as a registered connection (streams/registry.py) ---------------------------------------

    def disconnect(self, reason: DisconnectReason, retry_after: float | None = None) -> None:
        self.close(reason, retry_after)

    def ended_by(self) -> str | None:
        subscriber = self._subscriber
        reason = self._close_early if subscriber is None else subscriber.close_reason
        return None if reason == "disconnect" else reason

    def figures(self) -> tuple[int, str | None, int]:
        subscriber = self._subscriber
        buffered = 0 if subscriber is None else len(subscriber.pending)
        return self.delivered, self.cursor if self._epochs else None, buffered

    async def run(
        self, start: Start, send: Send, receive: Receive, direct: Direct | None = None
    ) -> None:
        """Stream until the client leaves or the hub closes the subscriber.

        `start` is awaited once positions are settled and before the first write: until then a
        failure (engine unreachable) raises and can still become an error response. Sets
        `abandoned` when the response cannot be completed (a write to a full socket is pending).
        `direct`, where the server offers one, writes what the socket takes at once, without
        `send`'s per-call costs.
        """
        self._task = asyncio.current_task()
        self._send = send
        self._direct = direct
        async with self.hub.subscription(self.channels) as subscriber:
            self._subscriber = subscriber
            if self._close_early is not None:
                subscriber.close(self._close_early)
            expiry = close_at(self.hub.loop, self.deadline, subscriber.close, "expired")
            try:
                await self._handshake(subscriber, start)
                if not subscriber.closed:
                    # Live: inline, not in a coroutine of its own, whose frame every idle
                    # stream would hold for its whole life.
                    subscriber.on_close = self._on_close
                    subscriber.notify = self._flush
                    self._flush()
                    try:
                        while (await receive())["type"] != "http.disconnect":
                            pass
                        subscriber.close("disconnect")
                    except asyncio.CancelledError:
                        if not subscriber.closed or self._task.cancelling() > 1:
                            raise  # not ours: the server is cancelling the request
                        self._task.uncancel()
                    subscriber.notify = None
                await self._finish(subscriber)
            finally:
                if expiry is not None:
                    expiry.cancel()

    def _on_close(self, reason: CloseReason) -> None:
        # The task waits in `receive()`; wake it so the response can end.
        if reason != "disconnect" and self._task is not None:
            self._task.cancel()

    async def _finish(self, subscriber: Subscriber) -> None:
        """Say why the server ends the stream, where the socket can take it."""
        reason = subscriber.close_reason
        if self._in_flight is not None and reason == "shutdown" and self._write_done is not None:
            # A write to a full socket is pending: give it a moment to drain.
            await asyncio.wait({self._write_done}, timeout=DRAIN_WAIT_S)
        if self._in_flight is not None:
            self.abandoned = True  # never two sends at once: the server closes the connection
            return
        if reason is None or reason == "disconnect" or reason == "slow":
            return  # the client left, or cannot keep up: nothing it would read
        data = disconnect_data(reason, subscriber.retry_after)
        frame = encode_control("disconnect", data)  # no `id:`: the cursor does not move
        if reason == "shutdown":
            # A plain EventSource reconnects by itself: soon, as another process can take it.
            frame = encode_retry(jittered(self.drain_retry_ms)) + frame
        await self._write(frame)

    async def _write(self, body: bytes) -> None:
        if self._direct is not None and self._direct(body):
            return
        assert self._send is not None
        await self._send({"type": "http.response.body", "body": body, "more_body": True})

    # -- handshake ---------------------------------------------------------------------------

    async def _handshake(self, subscriber: Subscriber, start: Start) -> None:
        engine = self.hub.engine
        resets: dict[ResetReason, list[tuple[str, Position]]] = {}
        replay: dict[str, list[Event]] = {}
        positions = [None if self.resume is None else self.resume.get(c) for c in self.channels]
        # Every channel's read at once: reads made together share one round trip to the log.
        reads = [
            engine.head(channel)
            if position is None
            else self.hub.reads.read_after(channel, position, REPLAY_PAGE)
            for channel, position in zip(self.channels, positions, strict=True)
        ]
        if len(reads) == 1:
            try:
                results: list[Any] = [await reads[0]]
            except PositionLost as lost:
                results = [lost]
        else:
            results = await asyncio.gather(*reads, return_exceptions=True)
        for channel, position, result in zip(self.channels, positions, results, strict=True):
            if isinstance(result, PositionLost):
                assert position is not None
                self._move(channel, position)
                resets.setdefault(result.reason, []).append((channel, result.head))
            elif isinstance(result, BaseException):
                raise result
            elif position is None:
                self._move(channel, result)
                if self.resume is not None or self.resume_invalid:
                    resets.setdefault("invalid", []).append((channel, self._position(channel)))
            else:
                replay[channel] = result
                self._move(channel, position)

        metrics = self.hub.metrics
        metrics.resumes["reset" if resets else "resumed" if replay else "fresh"] += 1
        frames = [encode_retry(jittered(self.retry_ms))]
        for reason, moves in resets.items():
            metrics.resets[reason] += len(moves)
            for channel, head in moves:
                self._move(channel, head)
            frames.append(self._reset_frame([channel for channel, _ in moves], reason))
        frames.append(encode_control("ready", StreamReady(self.channels), self.cursor))
        await start()
        await self._write(b"".join(frames))

        for channel, page in replay.items():
            await self._replay(channel, page)
            if subscriber.closed:
                return

    async def _replay(self, channel: str, page: list[Event]) -> None:
        while page:
            self.hub.metrics.replayed += len(page)
            await self._write(self._encode(page))
            if len(page) < REPLAY_PAGE:
                return
            try:
                page = await self.hub.reads.read_after(
                    channel, self._position(channel), REPLAY_PAGE
                )
            except PositionLost as lost:
                self._move(channel, lost.head)
                self.hub.metrics.resets[lost.reason] += 1
                await self._write(self._reset_frame([channel], lost.reason))
                return

    # -- live ----------------------------------------------------------------------------------

    def _flush(self) -> None:
        """Write what the subscriber buffered; called in the hub's wake-up round."""
        subscriber = self._subscriber
        if self._in_flight is not None or subscriber is None or subscriber.closed:
            return  # a pending write flushes again when it completes
        batch, subscriber.pending = subscriber.pending, []
        body = self._encode(batch)
        if body:
            metrics = self.hub.metrics
            metrics.countdown -= len(batch)
            if metrics.countdown <= 0:
                _sample_lag(metrics, batch)
            if self._direct is not None and self._direct(body):
                return
            assert self._send is not None
            message = {"type": "http.response.body", "body": body, "more_body": True}
            self._in_flight = self._send(message).__await__()
            self._step()

    def _step(self, _: object = None) -> None:
        """Run the pending write until it finishes or waits for the socket to drain."""
        assert self._in_flight is not None
        try:
            waiting_on = self._in_flight.send(None)
        except StopIteration:
            self._write_finished()
            return
        except Exception:
            log.exception("writing to a stream failed")
            self._write_finished()
            if self._subscriber is not None:
                self._subscriber.close("disconnect")
            return
        if isinstance(waiting_on, asyncio.Future):
            # What a task does with a future its coroutine awaits: resume once it is done.
            waiting_on._asyncio_future_blocking = False
            waiting_on.add_done_callback(self._step)
            if self._write_done is None:
                self._write_done = self.hub.loop.create_future()
        else:  # a bare `yield`: try again on the next loop iteration
            self.hub.loop.call_soon(self._step)

    def _write_finished(self) -> None:
        self._in_flight = None
        if self._write_done is not None:
            if not self._write_done.done():
                self._write_done.set_result(None)
            self._write_done = None
        subscriber = self._subscriber
        if subscriber is not None and subscriber.pending and not subscriber.scheduled:
            self.hub.schedule(subscriber)

    def _encode(self, batch: list[Item] | list[Event]) -> bytes:
        # The per-connection hot loop: one bytes object for the whole batch.
        epochs, offsets, segments, index = self._epochs, self._offsets, self._segments, self._index
        out: list[bytes] = []
        sent = 0
        for item in batch:
            if item.__class__ is Event:
                event: Event = item
                channel = event.channel
                if event.epoch == epochs[channel]:
                    if event.offset <= offsets[channel]:
                        continue  # already delivered by the replay
                else:
                    # The stream was recreated (Redis lost its data): say so, then go on.
                    self._move(channel, Position(event.epoch, _before(event.offset)))
                    self.hub.metrics.resets["epoch"] += 1
                    out.append(self._reset_frame([channel], "epoch"))
                epochs[channel] = event.epoch
                offsets[channel] = event.offset
                segments[index[channel]] = event.segment
                cursor = CURSOR_PREFIX + ".".join(segments)
                out.append(b"id: " + cursor.encode() + b"\n" + event.frame)
                sent += 1
            elif item is HEARTBEAT:
                out.append(PING)
            elif isinstance(item, Reset):
                self._move(item.channel, item.head)
                self.hub.metrics.resets[item.reason] += 1
                out.append(self._reset_frame([item.channel], item.reason))
        self.delivered += sent
        return b"".join(out)

    # -- positions -----------------------------------------------------------------------------

    def _move(self, channel: str, position: Position) -> None:
        self._epochs[channel] = position.epoch
        self._offsets[channel] = position.offset
        self._segments[self._index[channel]] = encode_segment(
            channel, position.epoch, position.offset
        )

    def _position(self, channel: str) -> Position:
        return Position(self._epochs[channel], self._offsets[channel])

    def _reset_frame(self, channels: list[str], reason: ResetReason) -> bytes:
        return encode_control("reset", StreamReset(channels, reason), self.cursor)


def jittered(base_ms: int) -> int:
    """A `retry:` hint drawn uniformly from [base, 2 x base], per connection: the clients a
    restart or a drain cuts at the same moment then come back spread over a whole `base`
    instead of all at once, and none sooner than `base`."""
    return random.randint(base_ms, 2 * base_ms)


def _sample_lag(metrics: StreamMetrics, batch: list[Item]) -> None:
    """Measure the lag of the batch's newest event (the one just written last)."""
    for item in reversed(batch):
        if item.__class__ is Event:
            metrics.sample_lag(item.offset[0])
            return


def _before(offset: StreamId) -> StreamId:
    ms, seq = offset
    return (ms, seq - 1) if seq > 0 else (ms - 1, MAX_ID_PART)
