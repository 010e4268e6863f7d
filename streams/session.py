"""One SSE connection, from handshake to close, independent of any web framework.

The handshake sends, in this order: the `retry:` hint; a `reset` per reason for channels whose
position cannot be honoured; `ready` with the starting cursor; the replay of every channel from
its position; then live events. Every frame that moves a position carries `id:` with the cursor
*after* it, so a client that drops at any byte resumes exactly where it stopped.

The subscription is open before any position is read, so an event published during the
handshake is both in the replay and in the live buffer: the live loop skips what is not past
the connection's position (no duplicate), and nothing falls between (no loss).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from streams.cursor import Position, encode_cursor
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
from streams.hub import HEARTBEAT, CloseReason, Hub, Reset, Subscriber

Write = Callable[[bytes], Awaitable[None]]
Start = Callable[[], Awaitable[None]]
Send = Callable[[Any], Awaitable[None]]  # ASGI send

CURSOR_PREFIX = "1."
PING = encode_comment("ping")
REPLAY_PAGE = 500
MAX_SEQ = MAX_ID_PART


class StreamSession:
    __slots__ = (
        "_close_early",
        "_epochs",
        "_index",
        "_offsets",
        "_segments",
        "_subscriber",
        "_task",
        "_writing",
        "abandoned",
        "channels",
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
    ) -> None:
        self.hub = hub
        self.channels = channels
        self.resume = resume
        self.resume_invalid = resume_invalid
        self.retry_ms = retry_ms
        self.drain_retry_ms = drain_retry_ms
        self._index = {channel: i for i, channel in enumerate(channels)}
        self._epochs: dict[str, str] = {}
        self._offsets: dict[str, StreamId] = {}
        self._segments = [""] * len(channels)
        self._subscriber: Subscriber | None = None
        self._close_early: CloseReason | None = None
        self._task: asyncio.Task[object] | None = None
        self._writing = False
        self.abandoned = False

    @property
    def cursor(self) -> str:
        return encode_cursor(self._segments)

    def close(self, reason: CloseReason) -> None:
        """End the session from outside (client gone, admin disconnect, shutdown)."""
        if self._subscriber is None:
            self._close_early = self._close_early or reason
        else:
            self._subscriber.close(reason)

    async def run(self, start: Start, send: Send) -> None:
        """Stream until the subscriber closes. Sets `abandoned` when a stuck write was cut off.

        `start` is awaited once positions are settled and before the first write: until then a
        failure (engine unreachable) raises and can still become an error response. `send` is
        the ASGI send callable; the session emits `http.response.body` messages with it.
        """

        async def write(body: bytes) -> None:
            await send({"type": "http.response.body", "body": body, "more_body": True})

        self._task = asyncio.current_task()
        try:
            async with self.hub.subscription(self.channels) as subscriber:
                self._subscriber = subscriber
                subscriber.on_close = self._on_close
                if self._close_early is not None:
                    subscriber.close(self._close_early)
                await self._handshake(subscriber, start, write)
                await self._live(subscriber, send)
                if subscriber.close_reason == "shutdown":
                    await self._write(write, encode_retry(self.drain_retry_ms))
        except asyncio.CancelledError:
            if not self.abandoned or self._task is None:
                raise
            self._task.uncancel()

    def _on_close(self, reason: CloseReason) -> None:
        # A writer blocked on a client that stopped reading would hold the connection forever.
        if self._writing and reason != "disconnect" and self._task is not None:
            self.abandoned = True
            self._task.cancel()

    async def _write(self, write: Write, body: bytes) -> None:
        self._writing = True
        try:
            await write(body)
        finally:
            self._writing = False

    # -- handshake ---------------------------------------------------------------------------

    async def _handshake(self, subscriber: Subscriber, start: Start, write: Write) -> None:
        engine = self.hub.engine
        resets: dict[ResetReason, list[tuple[str, Position]]] = {}
        replay: dict[str, list[Event]] = {}
        for channel in self.channels:
            position = None if self.resume is None else self.resume.get(channel)
            if position is None:
                self._move(channel, await engine.head(channel))
                if self.resume is not None or self.resume_invalid:
                    resets.setdefault("invalid", []).append((channel, self._position(channel)))
                continue
            try:
                replay[channel] = await engine.read_after(channel, position, REPLAY_PAGE)
                self._move(channel, position)
            except PositionLost as lost:
                self._move(channel, position)
                resets.setdefault(lost.reason, []).append((channel, lost.head))

        frames = [encode_retry(self.retry_ms)]
        for reason, moves in resets.items():
            for channel, head in moves:
                self._move(channel, head)
            frames.append(self._reset_frame([channel for channel, _ in moves], reason))
        frames.append(encode_control("ready", {"channels": self.channels}, self.cursor))
        await start()
        await self._write(write, b"".join(frames))

        for channel, page in replay.items():
            await self._replay(channel, page, write)
            if subscriber.closed:
                return

    async def _replay(self, channel: str, page: list[Event], write: Write) -> None:
        engine = self.hub.engine
        while page:
            await self._write(write, b"".join(self._deliver(event) for event in page))
            if len(page) < REPLAY_PAGE:
                return
            try:
                page = await engine.read_after(channel, self._position(channel), REPLAY_PAGE)
            except PositionLost as lost:
                self._move(channel, lost.head)
                await self._write(write, self._reset_frame([channel], lost.reason))
                return

    # -- live ----------------------------------------------------------------------------------

    async def _live(self, subscriber: Subscriber, send: Send) -> None:
        # The per-connection hot loop: no helper coroutines between the batch and `send`.
        epochs, offsets, segments, index = self._epochs, self._offsets, self._segments, self._index
        while True:
            batch = await subscriber.next_batch()
            if not batch:
                return
            out: list[bytes] = []
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
                        out.append(self._reset_frame([channel], "epoch"))
                    epochs[channel] = event.epoch
                    offsets[channel] = event.offset
                    segments[index[channel]] = event.segment
                    cursor = CURSOR_PREFIX + ".".join(segments)
                    out.append(b"id: " + cursor.encode() + b"\n" + event.frame)
                elif item is HEARTBEAT:
                    out.append(PING)
                elif isinstance(item, Reset):
                    self._move(item.channel, item.head)
                    out.append(self._reset_frame([item.channel], item.reason))
            if out:
                self._writing = True
                await send({"type": "http.response.body", "body": b"".join(out), "more_body": True})
                self._writing = False

    # -- positions -----------------------------------------------------------------------------

    def _deliver(self, event: Event) -> bytes:
        channel = event.channel
        self._epochs[channel] = event.epoch
        self._offsets[channel] = event.offset
        self._segments[self._index[channel]] = event.segment
        cursor = CURSOR_PREFIX + ".".join(self._segments)
        return b"id: " + cursor.encode() + b"\n" + event.frame

    def _move(self, channel: str, position: Position) -> None:
        self._epochs[channel] = position.epoch
        self._offsets[channel] = position.offset
        self._segments[self._index[channel]] = encode_segment(
            channel, position.epoch, position.offset
        )

    def _position(self, channel: str) -> Position:
        return Position(self._epochs[channel], self._offsets[channel])

    def _reset_frame(self, channels: list[str], reason: ResetReason) -> bytes:
        return encode_control("reset", {"channels": channels, "reason": reason}, self.cursor)


def _before(offset: StreamId) -> StreamId:
    ms, seq = offset
    return (ms, seq - 1) if seq > 0 else (ms - 1, MAX_SEQ)
