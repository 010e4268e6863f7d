"""The progress throttle: at most one tick per execution per interval, the rest due later."""

from __future__ import annotations

import uuid

from db.tracking import ProgressThrottle

A, B = uuid.uuid4(), uuid.uuid4()


def test_one_tick_per_interval_and_the_held_back_one_is_due_when_it_ends() -> None:
    throttle = ProgressThrottle(0.1)
    assert throttle.admit(A, now=10.0)
    assert not throttle.admit(A, now=10.03)
    assert not throttle.admit(A, now=10.06)  # still one held back, due at the first's end
    assert throttle.admit(B, now=10.06)  # executions have their own intervals
    # Due at 10.1, when the interval ends: the execution's next batch carries it...
    assert not throttle.catch_up(A, now=10.09)
    assert throttle.catch_up(A, now=10.1)
    assert not throttle.catch_up(A, now=10.11)  # once
    # ... or, if no batch comes, the publisher task does, a grace period (an interval) later.
    assert not throttle.admit(A, now=10.15)
    due_in = throttle.due_in(now=10.15)
    assert due_in is not None
    assert abs(due_in - 0.15) < 1e-9
    assert throttle.take_due(now=10.29) == []
    assert throttle.take_due(now=10.3) == [A]
    assert not throttle.has_pending()
    # Published at 10.3 by the publisher: the next tick waits for that interval.
    assert not throttle.admit(A, now=10.35)
    assert throttle.admit(A, now=10.45)
    assert not throttle.has_pending()  # admitted: nothing held back any more


def test_a_finished_execution_is_forgotten_and_a_failed_publish_is_retried() -> None:
    throttle = ProgressThrottle(0.1)
    throttle.admit(A, now=1.0)
    assert not throttle.admit(A, now=1.05)
    throttle.forget(A)
    assert throttle.due_in(now=1.05) is None
    assert throttle.admit(A, now=1.06)  # nothing remembered
    throttle.hold([B])
    assert throttle.has_pending()


def test_quiet_executions_are_pruned() -> None:
    throttle = ProgressThrottle(0.1)
    throttle.PRUNE_AT = 3
    quiet = [uuid.uuid4() for _ in range(3)]
    for id in quiet:
        assert throttle.admit(id, now=1.0)
    assert throttle.admit(A, now=5.0)  # over the limit: the quiet ones are forgotten
    assert throttle.remembered() == 1
