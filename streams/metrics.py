"""Plain counters of the stream path, read at scrape time.

The hot path only adds to integers and lists of bucket counts; `api/metrics.py` turns them into
Prometheus families when `/metrics` is scraped. Histograms on the data path are sampled: one
delivery in `sample` has its lag measured, so fan-out pays a subtraction per write, not a clock
read per event.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence

# Publish → written to the socket. Sub-millisecond rounds to multi-second backlogs.
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Request received → stream ready (auth, channel checks, engine reads of a resume).
HANDSHAKE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
DEFAULT_SAMPLE = 64


class Histogram:
    """Fixed buckets, counted per bucket (not cumulative) so an observation is one addition."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """`(le, count)` pairs as Prometheus wants them, `+Inf` last."""
        pairs: list[tuple[str, int]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            pairs.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return pairs


def quantile(bounds: Sequence[float], counts: Sequence[int], q: float) -> float | None:
    """The `q` quantile of per-bucket `counts` (a histogram or the difference of two), by linear
    interpolation inside the bucket as PromQL's `histogram_quantile` does; None when empty."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    below = 0
    lower = 0.0
    for bound, count in zip(bounds, counts, strict=False):
        if count and below + count >= rank:
            return lower + (bound - lower) * (rank - below) / count
        below += count
        lower = bound
    return bounds[-1] if bounds else None  # in +Inf: the highest finite bound, as PromQL says


class StreamMetrics:
    """What the stream path counts. One per hub; `enabled=False` skips the sampled histograms."""

    __slots__ = (
        "countdown",
        "enabled",
        "handshake_seconds",
        "handshakes",
        "lag",
        "replayed",
        "resets",
        "resumes",
        "sample",
    )

    def __init__(self, *, enabled: bool = True, sample: int = DEFAULT_SAMPLE) -> None:
        self.enabled = enabled
        self.sample = max(1, sample)
        # Deliveries until the next lag sample (never reaches zero while disabled).
        self.countdown = self.sample if enabled else 2**62
        self.lag = Histogram(LAG_BUCKETS)
        self.handshakes: Counter[tuple[str, str]] = Counter()  # (transport, result)
        self.handshake_seconds = {
            transport: Histogram(HANDSHAKE_BUCKETS) for transport in ("sse", "ws")
        }
        self.resumes: Counter[str] = Counter()  # fresh | resumed | reset
        self.resets: Counter[str] = Counter()  # by reset reason, one per channel reset
        self.replayed = 0

    def sample_lag(self, published_ms: int) -> None:
        """Called by a writer when `countdown` ran out: one lag observation, then count again."""
        self.countdown = self.sample
        self.lag.observe(max(0.0, time.time() - published_ms / 1000))

    def handshake(self, transport: str, seconds: float | None) -> None:
        """A handshake ended: accepted after `seconds`, or refused (None)."""
        if seconds is None:
            self.handshakes[transport, "refused"] += 1
            return
        self.handshakes[transport, "accepted"] += 1
        if self.enabled:
            self.handshake_seconds[transport].observe(seconds)
