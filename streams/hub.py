"""The local fan-out hub: one per process, fed by the engine's single reader.

Each connection is a `Subscriber` with a bounded buffer. Delivering an event to it is an append.
Writing is batched: the hub runs one *wake-up round* for every subscriber that has something new.
In the round a subscriber's `notify` writes its whole buffer (stream sessions), or its waiting
task is woken (`next_batch`). Measured (docs/benchmarks.md): the per-wake-up and per-write costs,
not the per-event ones, decide fan-out throughput.

Rounds are paced by their own cost (`Pacer`): a round starts at once after an idle spell, and
while busy the next one waits `PAUSE_RATIO` times the wall time the last one took to write,
never more than the coalescing cap (`SINAL_COALESCE_MS`). A round that reaches a few
connections is cheap, so the next follows almost at once and adds no latency; one that writes
to thousands takes long, so the next waits long enough for every connection to have collected
several events, and the write per connection, not per event, keeps throughput. A big round is
written in slices of `ROUND_SLICE` subscribers with a pass of the event loop between them, so
the engine's reader and the requests are not held up, and the first slices' bytes leave early.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from streams.cursor import Position
from streams.disconnect import DisconnectReason
from streams.engine import Engine, ResetReason
from streams.errors import Unavailable
from streams.event import Event
from streams.metrics import StreamMetrics
from streams.replay import SharedReads
from streams.tasks import cancel_and_wait

log = logging.getLogger("sinal.hub")

# "disconnect": the client left; "slow": it fell a buffer behind; the others are the server's
# own initiative, announced to the client where the socket can take it (streams/disconnect.py).
CloseReason = Literal["disconnect", "slow"] | DisconnectReason


class Heartbeat:
    """Marker pushed to idle subscribers; their writer sends an SSE comment."""


HEARTBEAT = Heartbeat()
# The pause before the next wake-up round, as a share of the wall time the last one took.
PAUSE_RATIO = 0.5
# A round writes to this many subscribers, then lets the event loop run before the next slice.
# Measured on the broadcast ladder (docs/benchmarks.md): with 256, a publish waited behind whole
# slices at each of its hops through the loop (request, Redis reply, live message), and its
# p99 was 40-60 ms; with 32, 5-10 ms, and the deliveries' p99 fell with it.
ROUND_SLICE = 32
# Heartbeats are written this many streams at a time, spread over the heartbeat interval.
HEARTBEAT_SLICE = 200


@dataclass(frozen=True, slots=True)
class Reset:
    """A channel's position could not be kept; it continues from `head`."""

    channel: str
    reason: ResetReason
    head: Position


Item = Event | Reset | Heartbeat


class Subscriber:
    """One connection's view of the hub: a bounded buffer and a way to sleep until it fills."""

    __slots__ = (
        "channels",
        "close_reason",
        "hub",
        "limit",
        "notify",
        "on_close",
        "pending",
        "retry_after",
        "scheduled",
        "waiter",
    )

    def __init__(self, hub: Hub, channels: list[str], limit: int) -> None:
        self.hub = hub
        self.channels = channels
        self.limit = limit
        self.pending: list[Item] = []
        self.waiter: asyncio.Future[None] | None = None
        self.scheduled = False  # waiting in the hub's next wake-up round
        # Set by a consumer that writes from the wake-up round itself instead of a waiting task.
        self.notify: Callable[[], None] | None = None
        self.close_reason: CloseReason | None = None
        self.retry_after: float | None = None  # with reason "limit": when to come back
        # Called once when the subscriber closes, so a writer stuck on a full socket can be freed.
        self.on_close: Callable[[CloseReason], None] | None = None

    @property
    def closed(self) -> bool:
        return self.close_reason is not None

    async def __aenter__(self) -> Subscriber:
        await self.hub._open(self)
        return self

    async def __aexit__(self, *_: object) -> None:
        self.hub._release(self)

    def push(self, item: Item) -> bool:
        """Buffer an item; False when the buffer was full and the subscriber is closed."""
        if self.close_reason is not None:
            return True
        if len(self.pending) >= self.limit:
            self.close("slow")
            return False
        self.pending.append(item)
        if not self.scheduled and (self.waiter is not None or self.notify is not None):
            self.hub.schedule(self)
        return True

    def close(self, reason: CloseReason, retry_after: float | None = None) -> None:
        if self.close_reason is not None:
            return
        self.close_reason = reason
        self.retry_after = retry_after
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self.on_close is not None:
            self.on_close(reason)

    async def next_batch(self) -> list[Item]:
        """Everything buffered since the last call, at the hub's next wake-up round.

        Returns an empty list once the subscriber is closed, and only then: a wake-up can find
        the buffer already taken (woken twice in a row), and then it waits again.
        """
        while self.close_reason is None:
            waiter = self.waiter = self.hub.loop.create_future()
            if self.pending and not self.scheduled:
                self.hub.schedule(self)
            try:
                await waiter
            finally:
                self.waiter = None
            if self.pending and self.close_reason is None:
                batch, self.pending = self.pending, []
                return batch
        return []


@dataclass(slots=True)
class HubStats:
    connections: int = 0
    connections_total: int = 0
    slow_consumer_closes: int = 0
    events_in: int = 0
    # Events handed to connections' buffers (counted per event: one addition, not one per
    # connection, on the hot loop).
    deliveries: int = 0
    resets: int = 0


class Pacer:
    """When the next wake-up round may start: `PAUSE_RATIO` times the wall time the last round took
    (from its first write to its last, slices and the loop's passes between them included),
    at most `cap_s` after it ended. Times are `clock()` seconds."""

    __slots__ = ("cap_s", "clock", "next_at", "started")

    def __init__(self, cap_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.cap_s = cap_s
        self.clock = clock
        self.started = 0.0
        self.next_at = 0.0  # when the next round may start

    def begin(self) -> None:
        """A round starts writing."""
        self.started = self.clock()

    def end(self) -> None:
        """The round wrote its last subscriber."""
        now = self.clock()
        self.next_at = now + min(self.cap_s, PAUSE_RATIO * (now - self.started))

    def delay(self) -> float:
        """How long from now until the next round may start (0: at once)."""
        return self.next_at - self.clock()


class Hub:
    def __init__(
        self,
        engine: Engine,
        *,
        buffer_size: int = 1024,
        heartbeat_s: float = 15.0,
        coalesce_s: float = 0.0,
        watch_timeout_s: float = 10.0,
        live_wait_s: float = 0.5,
        metrics: StreamMetrics | None = None,
    ) -> None:
        self.engine = engine
        self.buffer_size = buffer_size
        self.heartbeat_s = heartbeat_s
        self.coalesce_s = coalesce_s
        self.watch_timeout_s = watch_timeout_s
        self.live_wait_s = live_wait_s
        self.stats = HubStats()
        self.metrics = metrics or StreamMetrics()
        # Resumes read the log through it: a reconnect storm's replays share their reads.
        self.reads = SharedReads(engine)
        self._by_channel: dict[str, set[Subscriber]] = {}
        self._all: set[Subscriber] = set()
        self._draining = False
        self._drained = asyncio.Event()
        self._heartbeat: asyncio.Task[None] | None = None
        self._ready: list[Subscriber] = []
        # The next round's callback, or the running round's next slice.
        self._wake: asyncio.Handle | None = None
        self.pacer = Pacer(coalesce_s)
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    async def start(self) -> None:
        self._draining = False
        self._drained = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        await self.engine.connect(self)
        self._heartbeat = asyncio.create_task(self._beat(), name="sinal-hub-heartbeat")

    async def stop(self) -> None:
        self.drain()
        if self._heartbeat is not None:
            await cancel_and_wait(self._heartbeat)
            self._heartbeat = None
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        await self.reads.close()
        await self.engine.close()

    def drain(self) -> None:
        """Close every stream with a reconnect hint and refuse new ones (graceful shutdown)."""
        self._draining = True
        self._drained.set()
        for subscriber in list(self._all):
            subscriber.close("shutdown")

    @property
    def draining(self) -> bool:
        return self._draining

    async def wait_drained(self) -> None:
        """Returns once the server starts draining: long waits end then."""
        await self._drained.wait()

    def subscription(self, channels: list[str]) -> Subscriber:
        """`async with hub.subscription(channels) as subscriber`: live events of `channels`
        buffer into the subscriber from the moment the block starts, until it ends.

        The subscriber is its own context manager, not an async generator's: every idle stream
        would hold the generator and its frame for its whole life (about 0.4 KB)."""
        return Subscriber(self, channels, self.buffer_size)

    async def _open(self, subscriber: Subscriber) -> None:
        if self._draining:
            raise Unavailable("the server is shutting down; reconnect to another instance")
        # With the engine's live connection lost, a subscription would wait out the whole
        # watch timeout before failing: a lost connection is known at once, so say so now
        # (a reconnect under way gets a moment to finish).
        if not await self.engine.wait_live(self.live_wait_s):
            raise Unavailable("the event engine is unreachable; retry shortly")
        channels = subscriber.channels
        self._all.add(subscriber)
        self.stats.connections = len(self._all)
        self.stats.connections_total += 1
        try:
            for channel in channels:
                self._by_channel.setdefault(channel, set()).add(subscriber)
            try:
                async with asyncio.timeout(self.watch_timeout_s):
                    for channel in channels:
                        await self.engine.watch(channel)
            except TimeoutError:
                raise Unavailable("the event engine did not confirm the subscription") from None
        except BaseException:
            self._release(subscriber)
            raise

    def _release(self, subscriber: Subscriber) -> None:
        self._all.discard(subscriber)
        self.stats.connections = len(self._all)
        for channel in subscriber.channels:
            targets = self._by_channel.get(channel)
            if targets is not None:
                targets.discard(subscriber)
                if not targets:
                    del self._by_channel[channel]
                    self.engine.unwatch(channel)

    def subscribers(self) -> list[Subscriber]:
        return list(self._all)

    def watched(self, channel: str) -> bool:
        """Whether a connection of this process carries `channel`."""
        return channel in self._by_channel

    # -- waking writers ------------------------------------------------------------------------

    def schedule(self, subscriber: Subscriber) -> None:
        """Put a subscriber with news in the next wake-up round."""
        subscriber.scheduled = True
        self._ready.append(subscriber)
        if self._wake is None:  # no round under way or waiting to start
            loop = self.loop
            delay = self.pacer.delay()
            self._wake = (
                loop.call_later(delay, self._wake_ready)
                if delay > 0
                else loop.call_soon(self._wake_ready)
            )

    def _wake_ready(self) -> None:
        """Start a round for every subscriber with news so far."""
        ready, self._ready = self._ready, []
        self.pacer.begin()
        self._write(ready, 0)

    def _write(self, ready: list[Subscriber], start: int) -> None:
        """Write one slice of the round; schedule the next, or end the round.

        A subscriber waiting for a later slice keeps collecting events meanwhile (it is still
        `scheduled`) and gets them all in its write; one already written that gets news goes
        into the next round, in order either way.
        """
        end = start + ROUND_SLICE
        for subscriber in ready[start:end]:
            subscriber.scheduled = False
            if subscriber.notify is not None:
                try:
                    subscriber.notify()
                except Exception:  # one broken connection must not stop the round
                    log.exception("delivering to a subscriber failed")
                    subscriber.close("disconnect")
                continue
            waiter = subscriber.waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        if end < len(ready):
            self._wake = self.loop.call_soon(self._write, ready, end)
            return
        self.pacer.end()
        self._wake = None
        if self._ready:  # news that came during the round: the next one, paced
            delay = self.pacer.delay()
            self._wake = self.loop.call_later(delay, self._wake_ready)

    # -- the engine's sink -------------------------------------------------------------------

    def dispatch(self, events: list[Event]) -> None:
        # The hot loop of the process: `Subscriber.push`, inlined.
        by_channel = self._by_channel
        slow = 0
        deliveries = 0
        for event in events:
            targets = by_channel.get(event.channel)
            if not targets:
                continue
            deliveries += len(targets)
            for subscriber in targets:
                if subscriber.close_reason is not None:
                    continue
                pending = subscriber.pending
                if len(pending) >= subscriber.limit:
                    subscriber.close("slow")
                    slow += 1
                    continue
                pending.append(event)
                if not subscriber.scheduled and (
                    subscriber.waiter is not None or subscriber.notify is not None
                ):
                    self.schedule(subscriber)
        self.stats.events_in += len(events)
        self.stats.deliveries += deliveries - slow
        if slow:
            self.stats.slow_consumer_closes += slow
            log.info("closed %d slow consumer(s); they resume from their cursor", slow)

    def reset(self, channel: str, reason: ResetReason, head: Position) -> None:
        self.stats.resets += 1
        item = Reset(channel, reason, head)
        for subscriber in self._by_channel.get(channel, ()):
            subscriber.push(item)

    async def _beat(self) -> None:
        """Every subscriber gets a heartbeat once per `heartbeat_s`, in slices spread over the
        interval: one pass over 10,000 streams held the loop for 200-300 ms, and even in
        slices back to back, it slowed every request of that moment."""
        while True:
            subscribers = list(self._all)
            slices = max(1, -(-len(subscribers) // HEARTBEAT_SLICE))
            for start in range(0, slices * HEARTBEAT_SLICE, HEARTBEAT_SLICE):
                await asyncio.sleep(self.heartbeat_s / slices)
                for subscriber in subscribers[start : start + HEARTBEAT_SLICE]:
                    if not subscriber.pending:
                        subscriber.push(HEARTBEAT)  # a closed one ignores it
