"""The open-loop publishing schedule: which events are due now, and when to wake next.

Event `i` (from 0) of a run at `rate` events/s is due at `start + i / rate`, whatever happened
before it: the schedule never drifts, since each due time is computed from the start, not from
the last wake. Events go out in requests of `batch` events (1: one per request); a request is
due when its last event is, the run's last request when the run's last event is (it may be
shorter). A wake releases every request due and not yet released, so a late wake sends exactly
what fell overdue meanwhile, and nothing early.

The times are `time.monotonic()` seconds. Not the event loop's clock: uvloop's `loop.time()`
moves in whole milliseconds, 20 events apart at 20,000 events/s.

An earlier publisher of the ladder woke when the event after the next one fell due, so it sent
events in pairs at half the frequency: bursts that doubled the latency of a server writing each
event as it comes (Nchan) and flattered one that coalesces them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator


class Schedule:
    """`total` events at `rate` per second from `start`, released in requests of `batch`."""

    __slots__ = ("batch", "max_lag", "rate", "released", "start", "total")

    def __init__(self, rate: float, start: float, total: int, batch: int = 1) -> None:
        if rate <= 0 or total < 0 or batch < 1:
            raise ValueError(f"bad schedule: rate {rate}, total {total}, batch {batch}")
        self.rate = rate
        self.start = start
        self.total = total
        self.batch = batch
        self.released = 0  # events handed out by `release`: whole requests, from 0
        self.max_lag = 0.0  # the latest a `release` came after a request fell due (s)

    def due_at(self, index: int) -> float:
        """When event `index` falls due (`index == total`: when the run's time is up)."""
        return self.start + index / self.rate

    @property
    def end(self) -> float:
        return self.due_at(self.total)

    def due(self, now: float) -> int:
        """How many events are due at `now`: those with `due_at(i) <= now`."""
        if now < self.start:
            return 0
        count = min(self.total, int(min(self.total, (now - self.start) * self.rate)) + 1)
        # At a due moment itself, (now - start) * rate may round to just below an integer or
        # just above it: settle the count against `due_at`, the one definition of "due".
        while count < self.total and self.due_at(count) <= now:
            count += 1
        while count > 0 and self.due_at(count - 1) > now:
            count -= 1
        return count

    @property
    def finished(self) -> bool:
        return self.released >= self.total

    def wake(self) -> float | None:
        """When the next request falls due; None once every event is released."""
        if self.finished:
            return None
        return self.due_at(min(self.released + self.batch, self.total) - 1)

    def lag(self, now: float) -> float:
        """How late the next request is at `now` (0 when it is not due yet)."""
        wake = self.wake()
        return 0.0 if wake is None or now <= wake else now - wake

    def release(self, now: float, most: int | None = None) -> range:
        """The events to send at `now`, in order: every request due and not yet released (at
        most `most` requests; the rest stay due for the next call)."""
        self.max_lag = max(self.max_lag, self.lag(now))
        due = self.due(now)
        end = due if due == self.total else due - due % self.batch
        if most is not None:
            end = min(end, self.released + max(0, most) * self.batch)
        released = range(self.released, max(self.released, end))
        self.released = released.stop
        return released


async def released(schedule: Schedule) -> AsyncIterator[int]:
    """Each event of `schedule`, one by one, as it falls due."""
    while (wake := schedule.wake()) is not None:
        await sleep_until(wake)
        for index in schedule.release(time.monotonic()):
            yield index


async def sleep_until(moment: float) -> None:
    """Sleep until `time.monotonic()` reaches `moment` (the event loop may wake a little early:
    a schedule's caller checks again what is due)."""
    delay = moment - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
