"""The hub's wake-up rounds, on their own (no network)."""

from __future__ import annotations

import asyncio
import random

import pytest

from streams.event import Event
from streams.hub import Hub, Item
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


async def test_coalescing_window_batches_wake_ups() -> None:
    hub = Hub(MemoryEngine(), coalesce_s=0.05)
    await hub.start()
    try:
        async with hub.subscription(["broadcast"]) as subscriber:
            hub.dispatch([event(0)])
            first = await subscriber.next_batch()  # after an idle spell: at once
            for n in range(1, 6):
                hub.dispatch([event(n)])
                await asyncio.sleep(0.001)
            second = await subscriber.next_batch()  # within the window: one round
        assert len(first) == 1
        assert len(second) == 5
    finally:
        await hub.stop()
