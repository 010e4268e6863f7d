"""The hub's wake-up rounds, on their own (no network)."""

from __future__ import annotations

import asyncio
import contextlib
import random

import anyio
import pytest

from streams.event import Event
from streams.hub import FULL_ROUND, Hub, Item, Subscriber
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


async def test_coalescing_window_batches_wake_ups_of_large_rounds() -> None:
    hub = Hub(MemoryEngine(), coalesce_s=0.05)
    await hub.start()
    try:
        async with contextlib.AsyncExitStack() as stack, anyio.create_task_group() as readers:
            batches: list[list[int]] = []
            first_round = anyio.Event()
            for _ in range(FULL_ROUND):
                subscriber = await stack.enter_async_context(hub.subscription(["broadcast"]))
                batches.append([])
                readers.start_soon(read_batches, subscriber, 6, batches[-1], first_round)
            await asyncio.sleep(0)  # every reader waits for news
            hub.dispatch([event(0)])  # after an idle spell: at once
            with anyio.fail_after(5):
                await first_round.wait()
            for n in range(1, 6):  # within the window that follows a full round: one round
                hub.dispatch([event(n)])
                await asyncio.sleep(0.001)
        assert all(got == [1, 5] for got in batches), batches[0]
    finally:
        await hub.stop()


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
