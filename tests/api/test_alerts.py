"""The in-app alert rules (`api/alerts.py`) on synthetic snapshots, with the clock passed in.

Each rule fires once its condition has held for its `for`, not before; stays quiet just under
its threshold, and when the condition holds for less than its `for`; and resolves when the
condition no longer holds. Nodes are simulated: each evaluation adds one snapshot per node whose
counters grew at the given rates since the one before.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import msgspec
import pytest

from api import alerts
from api.alerts import (
    EVALUATE_EVERY_S,
    RULES_BY_NAME,
    Evaluator,
    Figures,
    History,
    NodeWatch,
    Rule,
    decode_snapshot,
    encode_snapshot,
)
from api.metrics import Snapshot
from streams.metrics import LAG_BUCKETS

T0 = 1_800_000_000.0
STEP = EVALUATE_EVERY_S


@dataclass(frozen=True)
class Load:
    """What one node does per second (counters), and its gauges."""

    handshakes: float = 0.0
    resets: float = 0.0
    slow_closes: float = 0.0
    http_requests: float = 0.0
    http_errors: float = 0.0
    db_errors: float = 0.0
    lag_samples: float = 0.0  # delivery lag samples per second, all of `lag_s`
    lag_s: float = 0.01
    outbox_age_s: float = 0.0
    commands_age_s: float = 0.0
    engine_up: bool = True


COUNTERS = ("handshakes", "resets", "slow_closes", "http_requests", "http_errors", "db_errors")


@dataclass
class Node:
    """A node's cumulative counters, grown by `Load`s."""

    totals: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0.0))
    lag: list[int] = field(default_factory=lambda: [0] * (len(LAG_BUCKETS) + 1))

    def after(self, load: Load, seconds: float, at: float) -> Snapshot:
        for name in COUNTERS:
            self.totals[name] += getattr(load, name) * seconds
        bucket = next((i for i, bound in enumerate(LAG_BUCKETS) if load.lag_s <= bound), -1)
        self.lag[bucket] += round(load.lag_samples * seconds)
        t = {name: int(value) for name, value in self.totals.items()}
        return snapshot(
            at,
            handshakes=t["handshakes"],
            resets={"trimmed": t["resets"]},
            slow_closes=t["slow_closes"],
            http_requests=t["http_requests"],
            http_errors=t["http_errors"],
            db_errors=t["db_errors"],
            lag_buckets=list(self.lag),
            outbox_oldest_age_s=load.outbox_age_s,
            outbox_pending=10 if load.outbox_age_s else 0,
            commands_oldest_age_s=load.commands_age_s,
            commands_pending=2 if load.commands_age_s else 0,
            engine_up=load.engine_up,
        )


def snapshot(at: float, **values: object) -> Snapshot:
    base = Snapshot(
        at=at, connections={}, handshakes=0, resets={}, events_in=0, events_published=0,
        deliveries=0, slow_closes=0, lag_buckets=[0] * (len(LAG_BUCKETS) + 1), http_requests=0,
        http_errors=0, db_errors=0, engine_up=True, outbox_pending=0, outbox_oldest_age_s=0.0,
        commands_pending=0, commands_oldest_age_s=0.0,
    )  # fmt: skip
    return msgspec.structs.replace(base, **values)


def simulate(
    rule: Rule, phases: Sequence[tuple[float, Load]], nodes: int = 1, *, cluster: bool = True
) -> list[tuple[float, str]]:
    """Evaluate `rule` every STEP seconds while each phase's load runs for its seconds, on
    `nodes` identical nodes; (seconds since the start, action) per evaluation. A `fire`
    makes the alert firing and a `resolve` ends it, as the shared state would."""
    history, evaluator = History(), Evaluator([rule])
    simulated = [Node() for _ in range(nodes)]
    firing: set[str] = set()
    actions = []
    t = 0.0
    for seconds, load in phases:
        end = t + seconds
        while t < end:
            for n, node in enumerate(simulated):
                history.add(f"n{n}", node.after(load, STEP if t else 0.0, T0 + t))
            figures = Figures(T0 + t, "web-1", "redis", load.engine_up, history, silent=[])
            for decision in evaluator.evaluate(figures, firing, cluster=cluster):
                actions.append((t, decision.action))
                if decision.action == "fire":
                    firing.add(rule.name)
                elif decision.action == "resolve":
                    firing.discard(rule.name)
            t += STEP
    return actions


def fired_at(actions: Iterable[tuple[float, str]]) -> float | None:
    return next((t for t, action in actions if action == "fire"), None)


# Per rule: a load over its threshold; loads just under it (or meeting one of two conditions);
# and phases over which the condition holds, but for less than the rule's `for` (a rate over a
# window lingers after a burst: the bursts are sized so the windowed figure drops back in time).
CASES: dict[str, tuple[Load, list[Load], list[tuple[float, Load]]]] = {
    "SinalEngineDown": (
        Load(engine_up=False),
        [Load(engine_up=True)],
        [(60, Load()), (15, Load(engine_up=False)), (60, Load())],
    ),
    "SinalDeliveryLagHigh": (
        Load(lag_samples=100, lag_s=1.5),
        [Load(lag_samples=100, lag_s=0.99)],  # every sample in the bucket up to 1 s
        [(600, Load(lag_samples=100)), (10, Load(lag_samples=100, lag_s=1.5)),
         (600, Load(lag_samples=1000))],
    ),
    "SinalReconnectStorm": (
        Load(handshakes=250, resets=25),
        [Load(handshakes=250, resets=15), Load(handshakes=150, resets=40)],
        [(600, Load(handshakes=250)), (30, Load(handshakes=250, resets=50)),
         (600, Load(handshakes=250))],
    ),
    "SinalSlowConsumers": (
        Load(slow_closes=1.5),
        [Load(slow_closes=0.8)],
        [(600, Load(slow_closes=0.9)), (60, Load(slow_closes=2)), (600, Load())],
    ),
    "SinalOutboxBacklog": (
        Load(outbox_age_s=61),
        [Load(outbox_age_s=59)],
        [(60, Load()), (115, Load(outbox_age_s=61)), (60, Load(outbox_age_s=59))],
    ),
    "SinalCommandsUnacknowledged": (
        Load(commands_age_s=301),
        [Load(commands_age_s=299)],
        [(60, Load()), (295, Load(commands_age_s=301)), (60, Load())],
    ),
    "SinalRestErrors": (
        Load(http_requests=10, http_errors=1),
        [Load(http_requests=10, http_errors=0.4), Load(http_requests=0.8, http_errors=0.8)],
        [(600, Load(http_requests=10, http_errors=0.45)),
         (30, Load(http_requests=10, http_errors=2)), (600, Load(http_requests=10))],
    ),
    "SinalDatabaseErrors": (
        Load(db_errors=0.2),
        [Load(db_errors=0.08)],
        [(600, Load(db_errors=0.09)), (30, Load(db_errors=0.3)), (600, Load())],
    ),
}  # fmt: skip


def test_every_rule_of_the_docs_table_is_here_with_its_for_and_severity() -> None:
    """The table of docs/monitoring.md, "Alerts", is the contract: the same names, `for`
    durations and severities."""
    table = {
        "SinalEngineDown": (20, "critical"),
        "SinalNodeDown": (60, "critical"),
        "SinalDeliveryLagHigh": (300, "warning"),
        "SinalReconnectStorm": (60, "warning"),
        "SinalSlowConsumers": (300, "warning"),
        "SinalOutboxBacklog": (120, "critical"),
        "SinalCommandsUnacknowledged": (300, "warning"),
        "SinalRestErrors": (300, "critical"),
        "SinalDatabaseErrors": (120, "critical"),
    }
    assert {r.name: (r.for_s, r.severity) for r in alerts.RULES} == table
    assert set(CASES) | {"SinalNodeDown"} == set(table)


@pytest.mark.parametrize("name", list(CASES))
def test_a_rule_fires_once_its_condition_held_for_its_for(name: str) -> None:
    rule = RULES_BY_NAME[name]
    hot, _, _ = CASES[name]
    actions = simulate(rule, [(rule.for_s * 3, hot)])
    pending = [t for t, action in actions if action == "pending"]
    assert pending, actions
    first = pending[0]
    assert first <= STEP  # a rate needs two snapshots: it holds from the second evaluation
    # Held at every evaluation since, it fires at exactly its `for`, then keeps firing.
    assert fired_at(actions) == first + rule.for_s
    assert {a for t, a in actions if first <= t < first + rule.for_s} == {"pending"}
    assert {a for t, a in actions if t > first + rule.for_s} == {"firing"}


@pytest.mark.parametrize("name", list(CASES))
def test_a_rule_stays_quiet_under_its_threshold(name: str) -> None:
    rule = RULES_BY_NAME[name]
    _, cools, _ = CASES[name]
    for cool in cools:
        actions = simulate(rule, [(rule.for_s * 3, cool)])
        assert {action for _, action in actions} == {"quiet"}, cool


@pytest.mark.parametrize("name", list(CASES))
def test_a_rule_that_holds_for_less_than_its_for_does_not_fire(name: str) -> None:
    rule = RULES_BY_NAME[name]
    _, _, brief = CASES[name]
    actions = simulate(rule, brief)
    assert fired_at(actions) is None
    held = [t for t, action in actions if action == "pending"]
    assert held, actions  # it did hold, for a while
    assert 0 < len(held) < rule.for_s / STEP
    assert actions[-1][1] == "quiet"


@pytest.mark.parametrize("name", list(CASES))
def test_a_firing_rule_resolves_when_its_condition_ends(name: str) -> None:
    rule = RULES_BY_NAME[name]
    hot, [cool, *_], _ = CASES[name]
    actions = simulate(rule, [(rule.for_s * 2, hot), (900, cool)])
    fired = fired_at(actions)
    resolved = next(t for t, action in actions if action == "resolve")
    assert fired is not None
    assert resolved > fired
    assert {a for t, a in actions if t > resolved} == {"quiet"}


def test_rates_are_summed_over_the_cluster() -> None:
    """Two nodes at 0.06 database errors/s each: 0.12/s for the cluster, over the 0.1."""
    rule = RULES_BY_NAME["SinalDatabaseErrors"]
    assert fired_at(simulate(rule, [(400, Load(db_errors=0.06))], nodes=1)) is None
    assert fired_at(simulate(rule, [(400, Load(db_errors=0.06))], nodes=2)) is not None


def test_a_node_that_does_not_evaluate_for_the_cluster_evaluates_its_engine_only() -> None:
    for name, (hot, _, _) in CASES.items():
        actions = simulate(RULES_BY_NAME[name], [(400, hot)], cluster=False)
        assert (actions != []) == (name == "SinalEngineDown"), name


def test_the_count_restarts_when_the_condition_stops_holding() -> None:
    """Prometheus's `for`: every evaluation in between must hold; one that does not starts
    the count again."""
    rule = RULES_BY_NAME["SinalEngineDown"]
    down, up = Load(engine_up=False), Load()
    actions = simulate(rule, [(15, down), (5, up), (25, down)])
    assert fired_at(actions) == 20 + rule.for_s


def test_delivery_lag_p99_comes_from_the_samples_of_the_window_only() -> None:
    """An hour of fast deliveries does not dilute five slow minutes: the p99 is of the
    window's samples, not of everything since start."""
    rule = RULES_BY_NAME["SinalDeliveryLagHigh"]
    fast, slow = Load(lag_samples=1000, lag_s=0.002), Load(lag_samples=50, lag_s=3)
    actions = simulate(rule, [(3600, fast), (700, slow)])
    assert fired_at(actions) is not None


# -- nodes that stop beating -----------------------------------------------------------------


class Bus:
    """The cluster's table as a node sees it over time; `watch` judges it."""

    def __init__(self) -> None:
        self.watch = NodeWatch(grace_s=8.0)
        self.evaluator = Evaluator([RULES_BY_NAME["SinalNodeDown"]])
        self.firing: set[str] = set()

    def at(
        self,
        t: float,
        heard: Iterable[tuple[str, str]],
        departed: Iterable[str] = (),
        listening: bool = True,
    ) -> str | None:
        now = T0 + t
        self.watch.update(now, [(id, name, now) for id, name in heard], set(departed), listening)
        silent = self.watch.silent() if self.watch.trusted(now) else None
        figures = Figures(now, "web-1", "redis", listening, History(), silent)
        decisions = self.evaluator.evaluate(figures, self.firing, cluster=True)
        if not decisions:
            return None
        [decision] = decisions
        if decision.action == "fire":
            self.firing.add("SinalNodeDown")
        elif decision.action == "resolve":
            self.firing.discard("SinalNodeDown")
        return decision.action

    def run(
        self, start: float, end: float, heard: list[tuple[str, str]], **options: object
    ) -> dict[float, str | None]:
        return {
            t: self.at(t, heard, **options)  # type: ignore[arg-type]
            for t in [start + STEP * k for k in range(int((end - start) / STEP))]
        }


ME, B = ("me", "web-1"), ("b1", "web-2")


def test_a_node_that_stops_beating_is_down_after_a_minute_until_it_is_back() -> None:
    bus = Bus()
    assert set(bus.run(0, 30, [ME, B]).values()) <= {None, "quiet"}
    # b stops beating: the cluster drops it; from then on it counts as silent.
    actions = bus.run(30, 120, [ME])
    assert actions[30] == "pending"
    assert [t for t, a in actions.items() if a == "fire"] == [90.0]
    summary = bus.evaluator.rules[0].check(
        Figures(T0 + 95, "web-1", "redis", True, History(), bus.watch.silent())
    )
    assert summary is not None
    assert "web-2" in summary.summary
    # It restarts: a new id under the same name. The alert resolves.
    assert bus.at(120, [ME, ("b2", "web-2")]) == "resolve"
    assert bus.at(125, [ME, ("b2", "web-2")]) == "quiet"


def test_a_node_that_said_goodbye_is_not_down() -> None:
    bus = Bus()
    bus.run(0, 30, [ME, B])
    assert bus.at(30, [ME], departed=["b1"]) == "quiet"
    assert set(bus.run(35, 200, [ME]).values()) == {"quiet"}


def test_nobody_is_judged_while_this_node_cannot_hear_the_others() -> None:
    """While this node's engine is down it hears nobody: that is not every other node down.
    After it comes back, it first waits long enough to have heard every live node."""
    bus = Bus()
    bus.run(0, 30, [ME, B])
    assert set(bus.run(30, 200, [ME], listening=False).values()) == {None}
    # Back: b's first heartbeat arrives within the grace, and nothing fired meanwhile.
    assert bus.at(200, [ME]) is None
    assert bus.at(205, [ME, B]) is None
    assert bus.at(210, [ME, B]) == "quiet"
    # A node that died during the outage is silent only once the grace has passed.
    bus = Bus()
    bus.run(0, 30, [ME, B])
    bus.run(30, 200, [ME], listening=False)
    actions = bus.run(200, 300, [ME])
    assert actions[205] is None
    assert actions[210] == "pending"
    assert [t for t, a in actions.items() if a == "fire"] == [270.0]


def test_a_node_silent_for_an_hour_is_no_longer_watched() -> None:
    bus = Bus()
    bus.run(0, 30, [ME, B])
    actions = bus.run(30, 30 + alerts.NODE_FORGOTTEN_AFTER_S + 20, [ME])
    assert "fire" in actions.values()
    assert list(actions.values())[-1] == "quiet"
    assert "resolve" in actions.values()


# -- snapshots in heartbeats -----------------------------------------------------------------


def test_a_snapshot_crosses_a_heartbeat_intact_and_compact() -> None:
    original = snapshot(T0, connections={"sse": 3}, resets={"epoch": 2}, handshakes=9)
    raw = encode_snapshot(original)
    assert raw.startswith(b"[")  # positional: a third of the named form
    assert decode_snapshot(raw) == original
    assert decode_snapshot(b'{"not": "a snapshot"}') is None
    assert decode_snapshot(b"[1, 2]") is None


def test_history_keeps_one_snapshot_per_sample_interval_over_the_longest_window() -> None:
    history = History()
    for second in range(3600):
        history.add("n", snapshot(T0 + second, handshakes=second))
    samples = history.nodes["n"]
    assert samples[-1].at == T0 + 3599  # the newest is always there
    assert len(samples) <= alerts.LONGEST_WINDOW_S / alerts.SAMPLE_EVERY_S + 3
    assert samples[0].at <= T0 + 3599 - alerts.LONGEST_WINDOW_S < samples[1].at
    assert history.rate(lambda s: s.handshakes, 60) == pytest.approx(1.0)
    history.keep_only(["other"])
    assert history.nodes == {}
