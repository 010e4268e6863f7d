"""Shared replay reads: many concurrent resumes of a channel, few engine reads, the same answers."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from streams.cursor import Position
from streams.engine import PositionLost, Retention
from streams.event import Event
from streams.memory import MemoryEngine
from streams.replay import SharedReads

pytestmark = pytest.mark.anyio

CHANNEL = "broadcast"


class CountingEngine(MemoryEngine):
    """The memory engine, counting reads; the first read waits at a gate, so that resumes
    arriving meanwhile find a read in flight (what a storm looks like to the engine)."""

    def __init__(self, retention: Retention | None = None) -> None:
        super().__init__(retention)
        self.reads = 0
        self.gate = asyncio.Event()

    async def read_after(self, channel: str, position: Position, limit: int) -> list[Event]:
        self.reads += 1
        if self.reads == 1:
            await self.gate.wait()
        return await super().read_after(channel, position, limit)

    async def direct(self, position: Position, limit: int) -> list[Event] | PositionLost:
        try:
            return await MemoryEngine.read_after(self, CHANNEL, position, limit)
        except PositionLost as lost:
            return lost


async def positions(engine: MemoryEngine, count: int) -> list[Position]:
    """The position before the first of `count` published events, then after each."""
    found = [await engine.head(CHANNEL)]
    for n in range(count):
        event = await engine.publish(CHANNEL, "test.event", b'{"n":%d}' % n)
        found.append(Position(event.epoch, event.offset))
    return found


async def storm(
    engine: CountingEngine, shared: SharedReads, resumes: list[Position], limit: int
) -> list[list[Event] | PositionLost]:
    """Every resume at once while the first read is held in flight; what each one got."""

    async def one(position: Position) -> list[Event] | PositionLost:
        try:
            return await shared.read_after(CHANNEL, position, limit)
        except PositionLost as lost:
            return lost

    with anyio.fail_after(5):
        tasks = [asyncio.ensure_future(one(position)) for position in resumes]
        await asyncio.sleep(0)  # every resume has asked: the first read is at the gate
        engine.gate.set()
        return list(await asyncio.gather(*tasks))


def same(got: list[Event] | PositionLost, expected: list[Event] | PositionLost) -> bool:
    if isinstance(expected, PositionLost):
        return isinstance(got, PositionLost) and (got.reason, got.head) == (
            expected.reason,
            expected.head,
        )
    return got == expected


@pytest.mark.parametrize("spread", [1, 10])
async def test_concurrent_resumes_at_nearby_positions_share_one_read(spread: int) -> None:
    engine = CountingEngine()
    known = await positions(engine, 40)
    # 1 resume first (its read is in flight), then 99 at positions within `spread` events.
    resumes = [known[5]] + [known[5 + n % spread] for n in range(99)]
    expected = [await engine.direct(position, 500) for position in resumes]
    shared = SharedReads(engine)

    got = await storm(engine, shared, resumes, 500)

    assert [len(g) for g in got if isinstance(g, list)] == [
        40 - 5 - n % spread for n in [0, *list(range(99))]
    ]
    assert all(same(g, e) for g, e in zip(got, expected, strict=True))
    # The first read, then one for all who came while it was in flight.
    assert engine.reads == 2
    assert (shared.reads, shared.saved) == (2, 98)


async def test_a_full_page_tops_up_the_waiters_it_cut_short() -> None:
    engine = CountingEngine()
    known = await positions(engine, 30)
    resumes = [known[0], known[0], known[3], known[7], known[12], known[29], known[30]]
    expected = [await engine.direct(position, 5) for position in resumes]

    got = await storm(engine, SharedReads(engine), resumes, 5)

    assert all(same(g, e) for g, e in zip(got, expected, strict=True))
    assert [len(g) for g in got if isinstance(g, list)] == [5, 5, 5, 5, 5, 1, 0]


async def test_trimmed_epoch_and_invalid_positions_still_reset_each_connection() -> None:
    engine = CountingEngine(Retention(max_len=10))
    known = await positions(engine, 30)  # events 1..20 trimmed: positions before 20 are lost
    stale_epoch = Position("0ld3p0ch", known[25].offset)
    beyond = Position(known[30].epoch, (known[30].offset[0] + 1, 0))
    resumes = [known[2], known[2], known[25], known[20], stale_epoch, stale_epoch, beyond]
    expected = [await engine.direct(position, 500) for position in resumes]
    assert [e.reason for e in expected if isinstance(e, PositionLost)] == [
        "trimmed",
        "trimmed",
        "epoch",
        "epoch",
        "invalid",
    ]

    got = await storm(engine, SharedReads(engine), resumes, 500)

    assert all(same(g, e) for g, e in zip(got, expected, strict=True))
    assert got[2] == expected[2]
    assert len(got[2]) == 5


async def test_a_lone_resume_reads_at_once() -> None:
    engine = CountingEngine()
    engine.gate.set()
    known = await positions(engine, 3)
    shared = SharedReads(engine)
    with anyio.fail_after(5):
        assert await shared.read_after(CHANNEL, known[1], 500) == await engine.direct(known[1], 500)
    assert (shared.reads, shared.saved) == (1, 0)
