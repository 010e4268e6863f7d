"""Python's cycle collector, paced for a server of many long-lived connections.

A full collection rescans every object the collector tracks, and a server holding 10,000
streams holds some 700,000 of them: measured on the unicast ladder (docs/benchmarks.md), each
full collection stalled the event loop for about 50 ms, every 20-30 s, and those stalls were the
tail of the deliveries' latency. So:

- young objects are collected less often (thresholds 50,000 / 20 / 20 instead of 700 / 10 / 10:
  under the defaults, the collector took 16 % of a busy server's CPU);
- what start-up made, and what survives each full collection (alive at that moment: nearly
  all of it the state of open connections), is frozen, left out of later passes. A frozen
  object is still freed by reference counting when it is released, as nearly everything is;
- what reference counting cannot free is a cycle, and a frozen cycle is never collected: so
  every `refresh_s` everything is given back to the collector and collected in one pass (one
  stall every ten minutes, not three a minute), and such a cycle lives at most that long.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

THRESHOLDS = (50_000, 20, 20)
REFRESH_S = 600.0


class Collector:
    """Started once the server is up (`start`), stopped at shutdown (`stop`)."""

    def __init__(self, refresh_s: float = REFRESH_S) -> None:
        self.refresh_s = refresh_s
        self.refreshes = 0
        self._timer: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        gc.set_threshold(*THRESHOLDS)
        gc.freeze()
        if self._collected not in gc.callbacks:
            gc.callbacks.append(self._collected)
        self._timer = loop.call_later(self.refresh_s, self._refresh, loop)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._collected in gc.callbacks:
            gc.callbacks.remove(self._collected)

    def _collected(self, phase: str, info: dict[str, Any]) -> None:
        # Called by the collector itself, in whichever thread allocated: right after a full
        # collection, every tracked object is a survivor of it.
        if phase == "stop" and info["generation"] == 2:
            gc.freeze()

    def _refresh(self, loop: asyncio.AbstractEventLoop) -> None:
        gc.unfreeze()
        gc.collect()  # and `_collected` freezes what survives
        self.refreshes += 1
        self._timer = loop.call_later(self.refresh_s, self._refresh, loop)
