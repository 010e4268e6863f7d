"""The dashboard's series (api/series.py): points from two snapshots, the ring, the sampler."""

from __future__ import annotations

import time
from typing import Any, get_args

import anyio
import msgspec
import pytest

from api.metrics import Snapshot
from api.series import FIELDS, POINTS, Series, SeriesPoint, between
from streams.engine import ResetReason
from streams.metrics import LAG_BUCKETS
from streams.registry import TRANSPORTS


def snapshot(at: float, **figures: Any) -> Snapshot:
    """A snapshot at `at` with every counter 0 but `figures`."""
    base: dict[str, Any] = {
        "connections": dict.fromkeys(TRANSPORTS, 0),
        "handshakes": 0,
        "resets": {},
        "events_in": 0,
        "events_published": 0,
        "deliveries": 0,
        "slow_closes": 0,
        "lag_buckets": [0] * (len(LAG_BUCKETS) + 1),
        "http_requests": 0,
        "http_errors": 0,
        "db_errors": 0,
        "engine_up": True,
        "outbox_pending": 0,
        "outbox_oldest_age_s": 0.0,
        "commands_pending": 0,
        "commands_oldest_age_s": 0.0,
    }
    return Snapshot(at=at, **{**base, **figures})


def lag(**by_bucket: int) -> list[int]:
    """Lag bucket counts: `b2=100` puts 100 samples in bucket 2 (2.5 ms to 5 ms)."""
    counts = [0] * (len(LAG_BUCKETS) + 1)
    for name, count in by_bucket.items():
        counts[int(name[1:])] = count
    return counts


def test_a_point_holds_per_second_rates_over_the_time_between_two_snapshots() -> None:
    before = snapshot(
        100.0,
        deliveries=1000,
        events_in=10,
        events_published=4,
        handshakes=7,
        resets={"trimmed": 3},
        http_requests=50,
        http_errors=1,
        slow_closes=2,
    )
    after = snapshot(
        102.0,  # two seconds later: a loop held up for a second
        connections={"sse": 5, "longpoll": 1, "ws": 2},
        deliveries=1201,
        events_in=30,
        events_published=8,
        handshakes=13,
        resets={"trimmed": 7, "invalid": 1},
        http_requests=60,
        http_errors=2,
        slow_closes=2,
    )
    point = between(before, after, 102)
    assert point == SeriesPoint(
        at=102,
        sse=5,
        longpoll=1,
        ws=2,
        published=2.0,
        events_in=10.0,
        deliveries=100.5,
        lag_p50=None,  # nothing sampled in between
        lag_p99=None,
        resets_trimmed=2.0,
        resets_epoch=0.0,
        resets_invalid=0.5,
        http_requests=5.0,
        http_errors=0.5,
        handshakes=3.0,
        slow_closes=0.0,
    )
    assert between(after, after, 103) is None  # the clock did not move
    assert between(after, before, 103) is None


def test_lag_quantiles_are_of_the_samples_taken_between_the_two_snapshots() -> None:
    # Before: 1,000 samples of 5 to 10 s, that must not weigh on this second's figures.
    before = snapshot(10.0, lag_buckets=lag(b12=1000))
    # In this second: 100 samples of 2.5 to 5 ms and 2 of 1 to 2.5 s.
    after = snapshot(11.0, lag_buckets=lag(b2=100, b10=2, b12=1000))
    point = between(before, after, 11)
    assert point is not None
    # Interpolated inside the bucket, as PromQL's histogram_quantile does.
    assert point.lag_p50 == pytest.approx(0.0025 + 0.0025 * (51 / 100), abs=1e-5)
    assert point.lag_p99 == pytest.approx(1.0 + 1.5 * ((0.99 * 102 - 100) / 2), abs=1e-5)
    # Over the highest bound: the highest finite bound, not infinity.
    slow = between(after, snapshot(12.0, lag_buckets=lag(b2=100, b10=2, b12=1000, b14=1)), 12)
    assert slow is not None
    assert (slow.lag_p50, slow.lag_p99) == (LAG_BUCKETS[-1], LAG_BUCKETS[-1])


def test_a_point_is_a_short_array_of_numbers_in_the_order_of_its_fields() -> None:
    point = between(snapshot(0.0), snapshot(1.0004, deliveries=3, connections={"sse": 1}), 1)
    assert point is not None
    encoded = msgspec.json.decode(msgspec.json.encode(point))
    assert len(encoded) == len(FIELDS)
    assert dict(zip(FIELDS, encoded, strict=True))["deliveries"] == 3.0  # rounded to 0.01
    assert dict(zip(FIELDS, encoded, strict=True))["sse"] == 1
    assert all(value is None or isinstance(value, int | float) for value in encoded)
    assert msgspec.convert(encoded, SeriesPoint) == point
    # Every transport and every reset reason has its member.
    assert {f"resets_{reason}" for reason in get_args(ResetReason)} <= set(FIELDS)
    assert set(TRANSPORTS) <= set(FIELDS)


def test_the_ring_keeps_the_last_900_points() -> None:
    series = Series(lambda: snapshot(time.time()))
    zero = between(snapshot(0.0), snapshot(1.0), 0)
    assert zero is not None
    for second in range(POINTS + 100):
        series.add(msgspec.structs.replace(zero, at=second))
    assert len(series.points) == POINTS == 900
    assert [series.points[0].at, series.points[-1].at] == [100, POINTS + 99]
    latest = series.latest
    assert latest is not None
    assert latest.at == POINTS + 99


@pytest.mark.anyio
async def test_the_sampler_adds_a_point_at_each_whole_second() -> None:
    calls = 0

    def take() -> Snapshot:
        nonlocal calls
        calls += 1
        return snapshot(time.time(), deliveries=10 * calls, connections={"ws": calls})

    series = Series(take)
    with anyio.fail_after(1.5):
        await series.next_point(timeout_s=0.1)  # not running: times out, returns
    series.start()
    try:
        with anyio.fail_after(5):
            while len(series.points) < 3:
                await series.next_point(timeout_s=5)
    finally:
        await series.stop()
    first, second, third = list(series.points)[:3]
    assert second.at == first.at + 1
    assert third.at == second.at + 1
    assert abs(first.at - time.time()) < 5
    assert [p.ws for p in (first, second, third)] == [2, 3, 4]
    # Ten deliveries between snapshots about a second apart.
    assert all(8 <= point.deliveries <= 12 for point in (second, third)), series.points
