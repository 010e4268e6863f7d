"""Runtime limits and their buckets (`streams/admission.py`)."""

from __future__ import annotations

from typing import Any

import pytest

from streams.admission import Admission, Limits, stored
from streams.errors import Unprocessable

DEFAULTS = Limits(actions_rate=20.0, actions_burst=40)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"actions_rate": 0}, "actions_rate"),
        ({"actions_rate": float("nan")}, "actions_rate"),
        ({"actions_burst": 2.5}, "actions_burst"),
        ({"streams_per_user": -1}, "streams_per_user"),
        ({"handshakes_per_s": "5"}, "handshakes_per_s"),
        ({"publish_rate": False}, "publish_rate"),
        ({"publish_rate": 1e99}, "publish_rate"),
        ({"nope": 1}, "nope"),
    ],
)
def test_a_bad_value_names_its_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(Unprocessable) as refused:
        DEFAULTS.changed(change)
    assert refused.value.field == field


def test_changes_and_stored_values() -> None:
    changed = DEFAULTS.changed({"streams_per_user": 3, "actions_burst": 5.0})
    assert changed.view() == {
        "actions_rate": 20.0,
        "actions_burst": 5,
        "streams_per_user": 3,
        "handshakes_per_s": 0,
        "publish_rate": 0.0,
    }
    # What does not check is skipped, not fatal: the rest still applies.
    assert stored({"streams_per_user": 2, "actions_rate": -1}, DEFAULTS).streams_per_user == 2
    assert stored(None, DEFAULTS) == DEFAULTS


def test_handshakes_are_admitted_at_the_rate_and_refused_with_a_jittered_wait() -> None:
    clock = Clock()
    admission = Admission(DEFAULTS.changed({"handshakes_per_s": 2}), clock)
    assert admission.handshake() is None
    assert admission.handshake() is None
    waits = {admission.handshake() for _ in range(50)}
    assert all(wait is not None and 2 <= wait <= 6 for wait in waits)
    assert len(waits) > 1  # spread
    clock.now += 0.5
    assert admission.handshake() is None
    admission.apply(DEFAULTS)  # 0: no limit
    assert all(admission.handshake() is None for _ in range(100))


def test_publish_budgets_are_per_principal_and_a_batch_may_go_into_debt() -> None:
    clock = Clock()
    admission = Admission(DEFAULTS.changed({"publish_rate": 10}), clock)
    assert admission.publish("svc", 25) is None  # a full bucket takes a larger batch
    assert admission.publish("svc", 1) == 2  # 15 in debt at 10/s: about 1.6 s
    assert admission.publish("other", 1) is None
    clock.now += 2.0
    assert admission.publish("svc", 1) is None


def test_streams_per_user() -> None:
    admission = Admission(DEFAULTS.changed({"streams_per_user": 2}))
    assert not admission.streams_full(1)
    assert admission.streams_full(2)
    assert not Admission(DEFAULTS).streams_full(10_000)
