"""The embedded engine: every channel's log lives in this process's memory.

Nothing to install and nothing shared: it serves exactly one process, and a restart loses the
logs. The epoch is drawn anew at every start, so a cursor from before a restart gets `reset`
(reason `epoch`) instead of a silent gap.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import secrets
import time
from collections import deque
from collections.abc import Iterator, Sequence

from streams.commands import CommandQueue, MemoryCommands
from streams.cursor import Position
from streams.engine import (
    Engine,
    Publication,
    Retention,
    Sequenced,
    Sink,
    check_node_id,
    check_position,
)
from streams.event import Event, StreamId


class _Log:
    __slots__ = ("events", "last", "max_deleted", "relayed")

    def __init__(self) -> None:
        self.events: deque[Event] = deque()
        self.last: StreamId = (0, 0)
        self.max_deleted: StreamId = (0, 0)
        self.relayed: tuple[str, int] | None = None  # the last (source, sequence) taken


class MemoryEngine(Engine):
    name = "memory"

    def __init__(self, retention: Retention | None = None) -> None:
        self.retention = retention or Retention()
        self.epoch = secrets.token_hex(4)
        self._logs: dict[str, _Log] = {}
        self._sink: Sink | None = None
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._commands: MemoryCommands | None = None

    async def connect(self, sink: Sink) -> None:
        self._sink = sink

    async def close(self) -> None:
        self._sink = None
        self._control = None

    async def publish(self, channel: str, type: str, data_json: bytes) -> Event:
        event = self._append(channel, type, data_json)
        self._published([event])
        return event

    async def publish_many(self, items: Sequence[Publication]) -> list[Event]:
        events = [self._append(item.channel, item.type, item.data_json) for item in items]
        self._published(events)
        return events

    async def publish_once(self, items: Sequence[Sequenced]) -> list[Event | None]:
        results: list[Event | None] = []
        for item in items:
            log = self._logs.get(item.channel)
            if log is not None and log.relayed is not None:
                last_source, last_sequence = log.relayed
                if last_source == item.source and last_sequence >= item.sequence:
                    results.append(None)
                    continue
            results.append(self._append(item.channel, item.type, item.data_json))
            self._logs[item.channel].relayed = (item.source, item.sequence)
        self._published([event for event in results if event is not None])
        return results

    def _append(self, channel: str, type: str, data_json: bytes) -> Event:
        log = self._logs.get(channel)
        if log is None:
            log = self._logs[channel] = _Log()
        now_ms = time.time_ns() // 1_000_000
        # Ids never go backwards, even if the wall clock does.
        offset = (now_ms, 0) if now_ms > log.last[0] else (log.last[0], log.last[1] + 1)
        event = Event(channel, type, data_json, self.epoch, offset)
        self.events_published += 1
        log.events.append(event)
        log.last = offset
        self._trim(log, now_ms)
        return event

    def _published(self, events: list[Event]) -> None:
        """Hand appended events to the sink, all in one call, and wake internal consumers."""
        if not events:
            return
        if self._sink is not None:
            self._sink.dispatch(events)
        for channel in {event.channel for event in events}:
            for waiter in self._waiters.get(channel, ()):
                waiter.set()

    async def head(self, channel: str) -> Position:
        log = self._logs.get(channel)
        return Position(self.epoch, log.last if log else (0, 0))

    async def read_after(self, channel: str, position: Position, limit: int) -> list[Event]:
        log = self._logs.get(channel) or _Log()
        self._trim(log, time.time_ns() // 1_000_000)
        check_position(position, self.epoch, log.last, trimmed=log.max_deleted > position.offset)
        start = bisect.bisect_right(log.events, position.offset, key=lambda e: e.offset)
        return [log.events[i] for i in range(start, min(start + limit, len(log.events)))]

    def held(self, channel: str) -> Sequence[Event]:
        """The events of `channel` still held, oldest first, without `read_after`'s resume
        checks: for internal consumers (the command queue) that take whatever is left."""
        log = self._logs.get(channel)
        if log is None:
            return ()
        self._trim(log, time.time_ns() // 1_000_000)
        return log.events

    @contextlib.contextmanager
    def published(self, channel: str) -> Iterator[asyncio.Event]:
        """An event that every publish to `channel` sets while the block runs, so that internal
        consumers wait for new entries instead of polling the log."""
        waiter = asyncio.Event()
        waiters = self._waiters.setdefault(channel, set())
        waiters.add(waiter)
        try:
            yield waiter
        finally:
            waiters.discard(waiter)
            if not waiters:
                del self._waiters[channel]

    async def watch(self, channel: str) -> None:
        """Every publish already reaches the sink: there is nothing to subscribe to."""

    def unwatch(self, channel: str) -> None:
        pass

    async def ping(self) -> None:
        pass

    async def control_send(self, message: bytes, to: str | None = None) -> None:
        """This process is the only node: its handler, if `to` is this node or every node."""
        self._control_received(None if to is None else check_node_id(to), message)

    def commands(self) -> CommandQueue:
        # One queue per engine: it holds the consumer group's state, as Redis does for its own.
        if self._commands is None:
            self._commands = MemoryCommands(self)
        return self._commands

    def _trim(self, log: _Log, now_ms: int) -> None:
        events = log.events
        # A max age of 0 means no age limit, as in the Redis engine.
        max_age_ms = int(self.retention.max_age_s * 1000)
        oldest_ms = now_ms - max_age_ms if max_age_ms > 0 else 0
        while events and (len(events) > self.retention.max_len or events[0].offset[0] < oldest_ms):
            log.max_deleted = events.popleft().offset
