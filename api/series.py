"""The admin dashboard's series: this process's figures, second by second, for 15 minutes.

At each whole second of the wall clock, the sampler takes `Metrics.snapshot()` and keeps what
happened since the previous one as a `SeriesPoint`, in a ring of the last `POINTS`. Counters
become per-second rates (their difference over the time between the two snapshots); the
delivery-lag quantiles come from the difference of the two lag histograms, so they describe
that second alone. Whole seconds of the wall clock, so that the points of every node fall on
the same seconds and the admin page adds them up second by second.

The page reads every node's ring once (`GET /v1/admin/series`, a survey: api/admin.py), then
gets each node's newest point once a second in its `admin.stats` event (api/control.py), which
is paced by this sampler (`next_point`) so that no point is sent twice or skipped.

Cost: nothing on the fan-out path (the snapshot reads the counters the hot path keeps anyway);
one snapshot (a few small dicts and a list of 15 integers) and one point a second; the ring
holds at most 900 points, about 0.25 MB per process (measured with tracemalloc).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import msgspec

from streams.metrics import LAG_BUCKETS, quantile
from streams.tasks import cancel_and_wait

if TYPE_CHECKING:
    from api.metrics import Snapshot

INTERVAL_S = 1
POINTS = 900  # 15 minutes at 1 s


def _item(name: str, description: str) -> msgspec.Meta:
    return msgspec.Meta(title=name, description=description)


PER_S = "per second"


class SeriesPoint(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One second of one node, as an array of numbers in the order of `fields`."""

    # Connections are the gauge at the end of the second; the other members are per second
    # over it, but the lag quantiles, in seconds, which are null when no delivery of that
    # second was sampled (one in `SINAL_METRICS_SAMPLE` is; none with `SINAL_METRICS=off`).

    at: Annotated[int, _item("at", "the second it ends, in seconds since the epoch")]
    sse: Annotated[int, _item("sse", "SSE streams open")]
    longpoll: Annotated[int, _item("longpoll", "long-polls waiting")]
    ws: Annotated[int, _item("ws", "action WebSockets open")]
    published: Annotated[float, _item("published", f"events published to the engine, {PER_S}")]
    events_in: Annotated[float, _item("events_in", f"events the engine brought live, {PER_S}")]
    deliveries: Annotated[float, _item("deliveries", f"events handed to connections, {PER_S}")]
    lag_p50: Annotated[float | None, _item("lag_p50", "delivery lag median, seconds")]
    lag_p99: Annotated[float | None, _item("lag_p99", "delivery lag 99th percentile, seconds")]
    resets_trimmed: Annotated[float, _item("resets_trimmed", f"resets (trimmed), {PER_S}")]
    resets_epoch: Annotated[float, _item("resets_epoch", f"resets (epoch), {PER_S}")]
    resets_invalid: Annotated[float, _item("resets_invalid", f"resets (invalid), {PER_S}")]
    http_requests: Annotated[float, _item("http_requests", f"REST requests, {PER_S}")]
    http_errors: Annotated[float, _item("http_errors", f"REST 5xx answers, {PER_S}")]
    handshakes: Annotated[float, _item("handshakes", f"stream and socket handshakes, {PER_S}")]
    slow_closes: Annotated[float, _item("slow_closes", f"slow-consumer closes, {PER_S}")]


FIELDS: tuple[str, ...] = SeriesPoint.__struct_fields__


def between(before: Snapshot, after: Snapshot, at: int) -> SeriesPoint | None:
    """What happened from `before` to `after` (two snapshots of one process), as the point of
    second `at`; None when the clock did not move forward between them."""
    seconds = after.at - before.at
    if seconds <= 0:
        return None

    def rate(now: int, then: int) -> float:
        # Rounded: a rate over 1.0004 s is not worth 17 digits in every answer.
        return round(max(0, now - then) / seconds, 2) if now != then else 0.0

    lag = [max(0, n - m) for n, m in zip(after.lag_buckets, before.lag_buckets, strict=True)]
    resets = {
        reason: rate(after.resets.get(reason, 0), before.resets.get(reason, 0))
        for reason in ("trimmed", "epoch", "invalid")
    }
    connections = after.connections
    return SeriesPoint(
        at=at,
        sse=connections.get("sse", 0),
        longpoll=connections.get("longpoll", 0),
        ws=connections.get("ws", 0),
        published=rate(after.events_published, before.events_published),
        events_in=rate(after.events_in, before.events_in),
        deliveries=rate(after.deliveries, before.deliveries),
        lag_p50=_seconds(quantile(LAG_BUCKETS, lag, 0.5)),
        lag_p99=_seconds(quantile(LAG_BUCKETS, lag, 0.99)),
        resets_trimmed=resets["trimmed"],
        resets_epoch=resets["epoch"],
        resets_invalid=resets["invalid"],
        http_requests=rate(after.http_requests, before.http_requests),
        http_errors=rate(after.http_errors, before.http_errors),
        handshakes=rate(after.handshakes, before.handshakes),
        slow_closes=rate(after.slow_closes, before.slow_closes),
    )


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 5)  # 10 µs: below the first bucket's 1 ms


class Series:
    """The ring of this process's last `POINTS` points and the task that fills it; owned by the
    app's lifespan (`start`, `stop`)."""

    def __init__(self, snapshot: Callable[[], Snapshot], size: int = POINTS) -> None:
        self.snapshot = snapshot
        self.points: deque[SeriesPoint] = deque(maxlen=size)
        self._task: asyncio.Task[None] | None = None
        self._fresh = asyncio.Event()  # set when a point is added, then replaced

    @property
    def latest(self) -> SeriesPoint | None:
        return self.points[-1] if self.points else None

    def add(self, point: SeriesPoint) -> None:
        self.points.append(point)
        fresh, self._fresh = self._fresh, asyncio.Event()
        fresh.set()

    async def next_point(self, timeout_s: float) -> None:
        """Return when the next point is added, or after `timeout_s` (the sampler is not
        running, or the event loop is too busy to keep time)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._fresh.wait()

    # -- the sampler -------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sinal-series")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def _run(self) -> None:
        before = self.snapshot()
        second = math.floor(before.at) + 1
        while True:
            await asyncio.sleep(max(0.0, second - time.time()))
            after = self.snapshot()
            point = between(before, after, second)
            if point is not None:
                self.add(point)
            before = after
            # A loop held up for longer than a second skips the seconds it missed: the point
            # it took covers them, and the next one falls on a whole second again.
            second = max(second + 1, math.floor(after.at) + 1)
