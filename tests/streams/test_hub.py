"""The hub's wake-up rounds, on their own (no network)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable

import anyio
import pytest

from streams.event import Event
from streams.hub import PAUSE_RATIO, ROUND_SLICE, Hub, Item, Pacer, Subscriber
from streams.memory import MemoryEngine

pytestmark = pytest.mark.anyio


def event(n: int) -> Event:
    return Event("broadcast", "test.event", b'{"n":%d}' % n, "e", (n + 1, 0))


@pytest.mark.parametrize("coalesce_s", [0.0, 0.002])
async def test_next_batch_returns_nothing_only_when_closed(coalesce_s: float) -> None:
    """Regression: a subscriber woken twice in a row got an empty batch, and its stream ended.

    Events arrive in random interleavings with the writer: sometimes several before it runs,
    sometimes while it is between a wake-up and taking its batch.
    """
    hub = Hub(MemoryEngine(), buffer_size=100_000, coalesce_s=coalesce_s)
    await hub.start()
    rng = random.Random(7)
    total = 3000
    try:
        async with hub.subscription(["broadcast"]) as subscriber:
            received: list[Item] = []

            async def write() -> None:
                while len(received) < total:
                    batch = await subscriber.next_batch()
                    assert batch, "an open subscriber got an empty batch"
                    received.extend(batch)
                    for _ in range(rng.randrange(3)):
                        await asyncio.sleep(0)  # a write that takes a while

            writer = asyncio.create_task(write())
            for n in range(total):
                hub.dispatch([event(n)])
                for _ in range(rng.randrange(3)):
                    await asyncio.sleep(0)
            async with asyncio.timeout(10):
                await writer
        assert [e.offset[0] for e in received if isinstance(e, Event)] == list(range(1, total + 1))
    finally:
        await hub.stop()


async def read_batches(
    subscriber: Subscriber, want: int, batches: list[int], got: anyio.Event
) -> None:
    """Read as a connection does; record each batch's number of events."""
    seen = 0
    while seen < want:
        batch = [item for item in await subscriber.next_batch() if isinstance(item, Event)]
        batches.append(len(batch))
        seen += len(batch)
        got.set()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_pause_is_a_share_of_the_last_round_s_wall_time() -> None:
    clock = Clock(100.0)
    pacer = Pacer(0.030, clock)
    assert pacer.delay() <= 0  # nothing written yet: the first round goes at once
    pacer.begin()
    clock.now = 100.010  # a round of 10 ms
    pacer.end()
    assert pacer.delay() == pytest.approx(PAUSE_RATIO * 0.010)
    clock.now = 100.012
    assert pacer.delay() == pytest.approx(PAUSE_RATIO * 0.010 - 0.002)
    clock.now = 100.5  # news after an idle spell: at once
    assert pacer.delay() <= 0


def test_the_pause_never_exceeds_the_cap() -> None:
    clock = Clock(5.0)
    pacer = Pacer(0.030, clock)
    pacer.begin()
    clock.now = 6.0  # a round of a second (a huge one, or a starved loop)
    pacer.end()
    assert pacer.delay() == pytest.approx(0.030)
    unpaced = Pacer(0.0, clock)
    unpaced.begin()
    clock.now = 7.0
    unpaced.end()
    assert unpaced.delay() == 0.0


def session_like(subscriber: Subscriber, written: list[int], cost_s: float = 0.0) -> None:
    """Write from the round itself, as a stream session does: take the buffer (and spend
    `cost_s` of wall time on it, as a socket write of a big batch would)."""

    def notify() -> None:
        batch, subscriber.pending = subscriber.pending, []
        written.extend(item.offset[0] for item in batch if isinstance(item, Event))
        if cost_s:
            time.sleep(cost_s)

    subscriber.notify = notify


async def test_while_rounds_are_costly_the_next_one_collects_what_came_meanwhile() -> None:
    hub = Hub(MemoryEngine(), coalesce_s=0.5)
    await hub.start()
    try:
        async with contextlib.AsyncExitStack() as stack:
            written: list[list[int]] = []
            writes = [0]
            for _ in range(ROUND_SLICE):
                subscriber = await stack.enter_async_context(hub.subscription(["broadcast"]))
                written.append([])
                # A round of 256 writes of 0.4 ms or more: the pause after it is >= 51 ms.
                session_like(subscriber, written[-1], 0.0004)
            counting = hub.subscribers()[0].notify
            assert counting is not None

            def count() -> None:
                writes[0] += 1
                counting()

            hub.subscribers()[0].notify = count
            hub.dispatch([event(0)])  # after an idle spell: at once
            await until(lambda: writes[0] == 1)
            for n in range(1, 6):  # each gives the loop a pass: unpaced, each a round
                hub.dispatch([event(n)])
                await asyncio.sleep(0)
            await until(lambda: all(len(got) == 6 for got in written))
        assert writes[0] == 2  # the first event, then the five together
        assert all(got == [1, 2, 3, 4, 5, 6] for got in written)
    finally:
        await hub.stop()


async def test_a_big_round_is_written_in_slices_with_the_loop_running_between() -> None:
    """Every subscriber gets every event once, in order, while events keep arriving during
    sliced rounds; other work runs between slices, not before a slice is done."""
    hub = Hub(MemoryEngine(), buffer_size=10_000, coalesce_s=0.002)
    await hub.start()
    loop = asyncio.get_running_loop()
    log: list[str] = []
    total = 200
    try:
        async with contextlib.AsyncExitStack() as stack:
            written: list[list[int]] = []
            for _ in range(ROUND_SLICE * 3 + 17):
                subscriber = await stack.enter_async_context(hub.subscription(["broadcast"]))
                written.append([])
                session_like(subscriber, written[-1])
                subscriber.notify = logged(subscriber.notify, log, loop)
            for n in range(total):
                hub.dispatch([event(n)])
                if n % 7 == 0:
                    await asyncio.sleep(0)
            await until(lambda: all(len(got) == total for got in written))
        assert all(got == list(range(1, total + 1)) for got in written)
        assert log.index("other work") == ROUND_SLICE
    finally:
        await hub.stop()


def logged(
    notify: Callable[[], None] | None, log: list[str], loop: asyncio.AbstractEventLoop
) -> Callable[[], None]:
    """`notify`, logged; the very first write also asks the loop for other work."""
    assert notify is not None

    def write() -> None:
        if not log:
            loop.call_soon(log.append, "other work")
        log.append("write")
        notify()

    return write


async def until(done: Callable[[], bool], within: float = 10.0) -> None:
    with anyio.fail_after(within):
        while not done():  # noqa: ASYNC110 (a condition no event stands for)
            await asyncio.sleep(0.001)


async def test_a_small_round_does_not_hold_back_the_next() -> None:
    """One subscriber per round (per-user channels): no whole window between rounds."""
    hub = Hub(MemoryEngine(), coalesce_s=5.0)
    await hub.start()
    try:
        async with hub.subscription(["broadcast"]) as subscriber:
            hub.dispatch([event(0)])
            assert len(await subscriber.next_batch()) == 1
            hub.dispatch([event(1)])
            with anyio.fail_after(1):  # far less than the 5 s window
                assert len(await subscriber.next_batch()) == 1
    finally:
        await hub.stop()
