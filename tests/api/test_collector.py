"""The collector's pacing (api/collector.py): survivors of a full collection are left out of
later passes, and a cycle among them is still collected at the next refresh."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from api.collector import THRESHOLDS, Collector

pytestmark = pytest.mark.anyio


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector can free it


@pytest.fixture
def collector() -> Iterator[Collector]:
    before = gc.get_threshold()
    collector = Collector(refresh_s=0.05)
    try:
        yield collector
    finally:
        collector.stop()
        gc.unfreeze()
        gc.set_threshold(*before)


async def test_survivors_are_frozen_and_a_cycle_among_them_waits_for_the_refresh(
    collector: Collector,
) -> None:
    collector.start(asyncio.get_running_loop())
    assert gc.get_threshold() == THRESHOLDS
    node = Node()
    alive = weakref.ref(node)
    freed = asyncio.Event()
    weakref.finalize(node, freed.set)
    gc.collect()  # a full collection: `node` survives it, and is frozen
    assert gc.get_freeze_count() > 0
    del node
    gc.collect()
    assert alive() is not None  # frozen: no pass looks at it any more
    refreshes = collector.refreshes
    async with asyncio.timeout(5):
        await freed.wait()
    assert collector.refreshes > refreshes  # the refresh collected it


async def test_a_cycle_made_after_the_freeze_is_collected_as_usual(collector: Collector) -> None:
    collector.start(asyncio.get_running_loop())
    alive = weakref.ref(Node())
    gc.collect()
    assert alive() is None


async def test_stop_ends_the_freezing(collector: Collector) -> None:
    collector.start(asyncio.get_running_loop())
    collector.stop()
    assert collector._collected not in gc.callbacks
    gc.unfreeze()
    gc.collect()
    assert gc.get_freeze_count() == 0  # nothing frozen after a full collection any more
