"""The open-loop publishing schedule: due counts at exact moments, wake times, catching up."""

from __future__ import annotations

import math
import random

import pytest

from loadtests.schedule import Schedule


@pytest.mark.parametrize("rate", [3.0, 7.0, 25.0, 200.0, 3_333.0, 20_000.0])
def test_an_event_is_due_exactly_at_its_moment_and_not_a_hair_before(rate: float) -> None:
    schedule = Schedule(rate, start=1234.5678, total=5_000)
    for index in range(schedule.total):
        moment = schedule.due_at(index)
        assert schedule.due(moment) == index + 1
        assert schedule.due(math.nextafter(moment, -math.inf)) == index
    assert schedule.due(math.inf) == schedule.total
    assert schedule.due(schedule.start - 1) == 0


def test_a_publisher_woken_on_time_sends_one_event_per_wake_not_pairs() -> None:
    """The ladder's publisher woke when the event after the next one was due: it sent events
    two at a time at half the frequency."""
    schedule = Schedule(25.0, start=10.0, total=100)
    sends: list[tuple[float, range]] = []
    while (wake := schedule.wake()) is not None:
        sends.append((wake, schedule.release(wake)))
    assert [len(released) for _, released in sends] == [1] * 100
    assert [released.start for _, released in sends] == list(range(100))
    assert [at for at, _ in sends] == [10.0 + index / 25.0 for index in range(100)]


def test_a_batch_goes_when_its_last_event_is_due_and_the_last_one_may_be_short() -> None:
    schedule = Schedule(100.0, start=0.0, total=25, batch=10)
    assert schedule.wake() == schedule.due_at(9)
    assert schedule.release(schedule.due_at(8)) == range(0)  # 9 due: not a whole batch
    assert schedule.release(schedule.due_at(9)) == range(0, 10)
    assert schedule.wake() == schedule.due_at(19)
    assert schedule.release(schedule.due_at(19)) == range(10, 20)
    assert schedule.wake() == schedule.due_at(24)  # the run's last event
    assert schedule.release(schedule.due_at(24)) == range(20, 25)
    assert schedule.finished
    assert schedule.wake() is None
    assert schedule.release(math.inf) == range(25, 25)


def test_a_late_wake_releases_exactly_the_overdue_events() -> None:
    schedule = Schedule(100.0, start=0.0, total=1_000)
    assert schedule.release(0.0) == range(0, 1)
    # Woken 45.5 ms late: events 1..5 (due at 10, 20, 30, 40, 50 ms) are overdue, 6 is not.
    late = 0.0555
    assert schedule.lag(late) == pytest.approx(0.0455)
    assert schedule.release(late) == range(1, 6)
    assert schedule.max_lag == pytest.approx(0.0455)
    assert schedule.wake() == schedule.due_at(6)
    assert schedule.lag(late) == 0.0
    # Back on time: one at a time again.
    assert schedule.release(schedule.due_at(6)) == range(6, 7)


def test_an_early_wake_releases_nothing_and_keeps_the_wake_time() -> None:
    schedule = Schedule(200.0, start=5.0, total=10)
    schedule.release(5.0)
    wake = schedule.wake()
    assert wake == 5.005
    assert schedule.release(wake - 0.0004) == range(1, 1)
    assert schedule.wake() == wake


def test_requests_held_back_stay_due_for_the_next_call() -> None:
    schedule = Schedule(1_000.0, start=0.0, total=100, batch=4)
    assert schedule.release(0.0199, most=2) == range(0, 8)  # 20 due: five whole batches
    assert schedule.wake() == schedule.due_at(11)  # overdue: the caller comes back soon
    assert schedule.release(0.0199, most=0) == range(8, 8)
    assert schedule.release(0.0199) == range(8, 20)


def test_over_a_long_run_with_jittery_wakes_the_rate_is_the_offered_one() -> None:
    rate, seconds = 200.0, 120.0
    schedule = Schedule(rate, start=50.0, total=round(rate * seconds))
    jitter = random.Random(15)
    sent_at: list[float] = []
    while (wake := schedule.wake()) is not None:
        # Wakes come up to half a millisecond early (uvloop) or up to 12 ms late.
        now = wake + jitter.uniform(-0.0005, 0.012)
        released = schedule.release(now)
        assert released.stop == schedule.due(now)  # all that is due, nothing more
        sent_at.extend(now for _ in released)
        assert all(schedule.due_at(index) <= now for index in released)
    assert len(sent_at) == schedule.total
    # Event i is never sent before its time, and never more than one late wake after it.
    lateness = [at - schedule.due_at(index) for index, at in enumerate(sent_at)]
    assert min(lateness) >= 0
    assert max(lateness) <= 0.012
    # Counted over any 10 s window, the rate is the offered one (to a send or two).
    for window_start in range(0, int(seconds), 10):
        low, high = 50.0 + window_start, 50.0 + window_start + 10
        in_window = sum(1 for at in sent_at if low <= at < high)
        assert abs(in_window - rate * 10) <= 3


def test_nonsense_is_refused() -> None:
    for rate, total, batch in [(0.0, 1, 1), (-1.0, 1, 1), (1.0, -1, 1), (1.0, 1, 0)]:
        with pytest.raises(ValueError, match="bad schedule"):
            Schedule(rate, 0.0, total, batch)
