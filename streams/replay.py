"""Shared replay reads: one read from the engine for many resumes of the same channel.

When a process restarts, its clients come back at once, each with a cursor, and most of them
resume the same channels (`broadcast`, a busy execution) at the same or nearby positions. Read
one by one, that is a read per connection per channel; shared, it is a few reads per channel.

`SharedReads.read_after` answers exactly what `Engine.read_after` would (the same events, the
same `PositionLost`), so the cursor contract is kept by construction, and a caller cannot tell
whether its read was shared:

- A resume joins the *next* read of its channel, never one already in flight. A read already
  sent may have missed an event published before the resume's subscription opened; the live
  buffer did not get that event either, so joining would lose it. The next read is sent after
  every one of its waiters subscribed, which keeps the handshake's "subscribe, then read" order.
- While a channel has a read in flight, the resumes that arrive gather; when it ends, one read
  starts from the furthest-back waiter, with the largest limit asked. Each waiter takes the
  suffix after its own position. A page that was full may stop before a waiter's share is
  complete: that waiter reads the rest (itself shared). A channel with no read in flight reads
  at once, so a lone resume waits for nothing.
- A position the shared read cannot vouch for is read alone: after `PositionLost` on the shared
  start (trimmed there says nothing of a later position), or past the end of what it found (that
  position may be invalid). An epoch change or an invalid start holds for every waiter of the
  batch (they share the epoch, and their positions are at or after the start): they all get it.

Waiters of different epochs of one channel never share a read.
"""

from __future__ import annotations

import asyncio
import bisect

from streams.cursor import Position
from streams.engine import Engine, PositionLost
from streams.event import Event

Key = tuple[str, str]  # (channel, epoch)
Page = list[Event]


class _Batch:
    """Resumes of one channel and epoch waiting for the same read."""

    __slots__ = ("done", "limit", "start", "waiters")

    def __init__(self, start: Position, limit: int) -> None:
        self.start = start
        self.limit = limit
        self.waiters = 0
        self.done: asyncio.Future[Page] = asyncio.get_running_loop().create_future()


class SharedReads:
    """`read_after` for the handshakes of one process, sharing concurrent reads of a channel."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.reads = 0  # reads sent to the engine for resumes
        self.saved = 0  # reads that did not go to the engine because a shared one answered
        self._in_flight: dict[Key, asyncio.Task[Page]] = {}
        self._next: dict[Key, _Batch] = {}

    async def read_after(self, channel: str, position: Position, limit: int) -> list[Event]:
        """What `engine.read_after(channel, position, limit)` returns, or raises."""
        if limit <= 0:
            return []
        key = (channel, position.epoch)
        if key not in self._in_flight:
            batch = _Batch(position, limit)
            self._send(key, batch)
        else:
            batch = self._next.get(key) or self._next.setdefault(key, _Batch(position, limit))
            if position.offset < batch.start.offset:
                batch.start = position
            batch.limit = max(batch.limit, limit)
        batch.waiters += 1
        try:
            page = await asyncio.shield(batch.done)
        except PositionLost as lost:
            if lost.reason != "trimmed" or position == batch.start:
                raise PositionLost(lost.reason, lost.head) from None
            return await self._alone(channel, position, limit)
        return await self._share(channel, position, limit, batch, page)

    async def _share(
        self, channel: str, position: Position, limit: int, batch: _Batch, page: Page
    ) -> Page:
        """This waiter's answer out of the batch's page."""
        if position == batch.start and limit == batch.limit:
            return page
        full = len(page) >= batch.limit
        last = page[-1].offset if page else batch.start.offset
        if position.offset > last:
            if full:  # past the page: what follows was not read yet
                return await self.read_after(channel, position, limit)
            return await self._alone(channel, position, limit)  # maybe invalid: the engine says
        first = bisect.bisect_right(page, position.offset, key=_offset)
        mine = page[first : first + limit]
        if len(mine) == limit or not full:
            return mine  # complete, or the log ends here
        try:
            rest = await self.read_after(channel, Position(position.epoch, last), limit - len(mine))
        except PositionLost:
            return await self._alone(channel, position, limit)  # trimmed meanwhile: start over
        return mine + rest

    async def _alone(self, channel: str, position: Position, limit: int) -> Page:
        self.reads += 1
        return await self.engine.read_after(channel, position, limit)

    def _send(self, key: Key, batch: _Batch) -> None:
        self.reads += 1
        task = asyncio.ensure_future(self.engine.read_after(key[0], batch.start, batch.limit))
        self._in_flight[key] = task
        task.add_done_callback(lambda done: self._landed(key, batch, done))

    def _landed(self, key: Key, batch: _Batch, task: asyncio.Task[Page]) -> None:
        del self._in_flight[key]
        self.saved += max(0, batch.waiters - 1)
        if task.cancelled():
            batch.done.cancel()
        elif (error := task.exception()) is not None:
            batch.done.set_exception(error)
        else:
            batch.done.set_result(task.result())
        if not batch.done.cancelled():
            batch.done.exception()  # retrieved: a batch whose waiters all left logs nothing
        following = self._next.pop(key, None)
        if following is not None:
            self._send(key, following)

    async def close(self) -> None:
        """Cancel the reads in flight and those waiting to be sent (the hub is stopping)."""
        for batch in self._next.values():
            batch.done.cancel()
        self._next.clear()
        for task in list(self._in_flight.values()):
            task.cancel()
        await asyncio.gather(*self._in_flight.values(), return_exceptions=True)


def _offset(event: Event) -> tuple[int, int]:
    return event.offset
