"""In-app alerts: the conditions of docs/monitoring.md's "Alerts" table, evaluated inside Sinal.

For deployments without Prometheus. The thresholds and `for` durations are the table's (the
Prometheus rules in deploy/ use the same): the constants just below, then the rules, read
top-down. This module is pure, figures in and decisions out, with the clock passed in, so each
rule is tested with synthetic snapshots; `api/alerting.py` runs it on a node (who evaluates,
the state shared in the database, the notifications).

What a rule sees (`Figures`):
- the recent `Snapshot`s (`api.metrics`) of every live node: this node's own, and the others'
  from their heartbeats (`streams.cluster`). A rate over a window is what PromQL's `rate` works
  out: a counter's increase from the snapshot a window before a node's newest to its newest,
  over their time apart (each node's own clock), summed over the nodes;
- this node's engine connection;
- the nodes this node has heard that went silent without saying goodbye (`NodeWatch`).

A rule's condition must hold at every evaluation for its `for` before the alert fires
(`Evaluator`); it resolves at the first evaluation where it no longer holds.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from api.metrics import Snapshot
from streams.metrics import LAG_BUCKETS, quantile

# -- thresholds and durations (docs/monitoring.md, "Alerts") -----------------------------------

ENGINE_DOWN_FOR_S = 20.0

NODE_DOWN_FOR_S = 60.0
# A node silent this long is no longer watched: its alert resolves (see `node_down`).
NODE_FORGOTTEN_AFTER_S = 3600.0

DELIVERY_LAG_P99_MAX_S = 1.0
DELIVERY_LAG_WINDOW_S = 300.0
DELIVERY_LAG_FOR_S = 300.0

RECONNECT_HANDSHAKES_PER_S = 200.0
RECONNECT_RESETS_PER_S = 20.0
RECONNECT_WINDOW_S = 60.0
RECONNECT_FOR_S = 60.0

SLOW_CLOSES_PER_S = 1.0
SLOW_WINDOW_S = 300.0
SLOW_FOR_S = 300.0

OUTBOX_OLDEST_MAX_S = 60.0
OUTBOX_FOR_S = 120.0

COMMANDS_OLDEST_MAX_S = 300.0
COMMANDS_FOR_S = 300.0

REST_5XX_RATIO_MAX = 0.05
REST_MIN_REQUESTS_PER_S = 1.0
REST_WINDOW_S = 300.0
REST_FOR_S = 300.0

DATABASE_ERRORS_PER_S = 0.1
DATABASE_WINDOW_S = 300.0
DATABASE_FOR_S = 120.0

# Every node evaluates this often; the snapshots it keeps are at least this far apart.
EVALUATE_EVERY_S = 5.0
SAMPLE_EVERY_S = 5.0
LONGEST_WINDOW_S = max(
    DELIVERY_LAG_WINDOW_S, RECONNECT_WINDOW_S, SLOW_WINDOW_S, REST_WINDOW_S, DATABASE_WINDOW_S
)

Severity = Literal["critical", "warning"]


# -- what the rules see --------------------------------------------------------------------------


class History:
    """The recent snapshots of each live node, oldest first: one per `SAMPLE_EVERY_S`, back to
    one at or before the longest window, plus the newest."""

    def __init__(self, keep_s: float = LONGEST_WINDOW_S) -> None:
        self.keep_s = keep_s
        self.nodes: dict[str, list[Snapshot]] = {}

    def add(self, node: str, snapshot: Snapshot) -> None:
        samples = self.nodes.setdefault(node, [])
        if samples and snapshot.at <= samples[-1].at:
            return  # the same heartbeat again
        if len(samples) >= 2 and samples[-1].at - samples[-2].at < SAMPLE_EVERY_S:
            samples[-1] = snapshot  # the newest was kept only as the newest: replaced
        else:
            samples.append(snapshot)
        while len(samples) > 2 and samples[1].at <= snapshot.at - self.keep_s:
            del samples[0]

    def keep_only(self, nodes: Collection[str]) -> None:
        """Forget the nodes not in `nodes` (gone: a node's restart is a new node)."""
        for node in [n for n in self.nodes if n not in nodes]:
            del self.nodes[node]

    def newest(self) -> list[Snapshot]:
        return [samples[-1] for samples in self.nodes.values() if samples]

    def rate(self, counter: Callable[[Snapshot], float], window_s: float) -> float:
        """The cluster's per-second increase of `counter` over the window: each node's, summed
        (a node with fewer than two snapshots adds nothing)."""
        total = 0.0
        for base, newest in self._spans(window_s):
            total += max(0.0, counter(newest) - counter(base)) / (newest.at - base.at)
        return total

    def lag_counts(self, window_s: float) -> list[int]:
        """Delivery lag samples per bucket (`LAG_BUCKETS`, then +Inf) over the window, summed
        over the nodes."""
        counts = [0] * (len(LAG_BUCKETS) + 1)
        for base, newest in self._spans(window_s):
            if len(base.lag_buckets) == len(newest.lag_buckets) == len(counts):
                for i, (before, after) in enumerate(
                    zip(base.lag_buckets, newest.lag_buckets, strict=True)
                ):
                    counts[i] += max(0, after - before)
        return counts

    def _spans(self, window_s: float) -> Iterable[tuple[Snapshot, Snapshot]]:
        """Per node: the newest snapshot at or before the window's start (the oldest one when
        none is that old), and the newest."""
        for samples in self.nodes.values():
            newest = samples[-1]
            base = samples[0]
            for sample in samples:
                if sample.at > newest.at - window_s:
                    break
                base = sample
            if newest.at > base.at:
                yield base, newest


@dataclass(slots=True)
class Known:
    name: str
    last_seen: float
    silent_since: float | None = None


class NodeWatch:
    """The nodes this node has heard, to tell those that went silent without saying goodbye.

    A node is silent once the cluster dropped it (not heard for 3 heartbeats) while this node
    was listening: while this node's own engine connection is down, or in the first moments
    after it came back (`grace_s`), it hears nobody and judges nobody. A node is watched until
    it is heard again, a node of the same name is heard (it restarted: ids change at each
    start, names need not), it said goodbye, or it has been silent `NODE_FORGOTTEN_AFTER_S`.
    """

    def __init__(self, grace_s: float, forget_after_s: float = NODE_FORGOTTEN_AFTER_S) -> None:
        self.grace_s = grace_s
        self.forget_after_s = forget_after_s
        self.known: dict[str, Known] = {}
        self.listening_since: float | None = None

    def update(
        self,
        now: float,
        heard: Iterable[tuple[str, str, float]],
        departed: Collection[str],
        listening: bool,
    ) -> None:
        """`heard`: (id, name, last seen) of the nodes the cluster knows now, this one too."""
        if not listening:
            self.listening_since = None
        elif self.listening_since is None:
            self.listening_since = now
        heard = list(heard)
        ids = {id for id, _, _ in heard}
        names = {name for _, name, _ in heard}
        for id, known in list(self.known.items()):
            restarted = id not in ids and known.name in names
            if id in departed or restarted or now - known.last_seen > self.forget_after_s:
                del self.known[id]
        for id, name, last_seen in heard:
            self.known[id] = Known(name, last_seen)
        if self.trusted(now):
            for id, known in self.known.items():
                if id not in ids and known.silent_since is None:
                    known.silent_since = now

    def trusted(self, now: float) -> bool:
        """Whether this node has listened long enough to have heard every live node."""
        return self.listening_since is not None and now - self.listening_since >= self.grace_s

    def silent(self) -> list[Known]:
        return sorted(
            (known for known in self.known.values() if known.silent_since is not None),
            key=lambda known: known.name,
        )


@dataclass(frozen=True, slots=True)
class Figures:
    """What the rules look at, at `now`."""

    now: float
    node: str  # this node's name
    engine: str  # the engine's name: `redis`, `memory`
    engine_up: bool  # this node's live connection to the engine
    history: History
    silent: list[Known] | None  # None: this node cannot tell now


@dataclass(frozen=True, slots=True)
class Finding:
    """Whether a rule's condition holds, said for people, with the figures behind it."""

    active: bool
    summary: str
    values: dict[str, Any] = field(default_factory=dict)


# -- the rules, as the table reads -----------------------------------------------------------


def engine_down(f: Figures) -> Finding:
    # Evaluated by every node for itself: it must work when the engine, and with it the
    # control bus and the other nodes' figures, is what is down.
    if f.engine_up:
        # Stored only when it resolves, which needs every node that saw it down to see it again.
        return Finding(
            False,
            f"{f.node} reaches the engine ({f.engine}) again, and no node reports it down.",
            {"node": f.node},
        )
    return Finding(
        True,
        f"{f.node} cannot reach the engine ({f.engine}): live events, publishes and node "
        "heartbeats wait for it; notifications are kept in the outbox.",
        {"node": f.node},
    )


def node_down(f: Figures) -> Finding | None:
    if f.silent is None:
        return None
    if not f.silent:
        return Finding(
            False,
            "Every node heard is beating (a node silent for over an hour is no longer watched).",
            {"nodes": []},
        )
    names = ", ".join(known.name for known in f.silent)
    return Finding(
        True,
        f"{_count(len(f.silent), 'node')} stopped beating without saying goodbye: {names}.",
        {"nodes": [known.name for known in f.silent]},
    )


def delivery_lag_high(f: Figures) -> Finding:
    p99 = quantile(LAG_BUCKETS, f.history.lag_counts(DELIVERY_LAG_WINDOW_S), 0.99)
    if p99 is None:
        return Finding(False, "No delivery was sampled in the last 5 min.", {"p99_s": None})
    return Finding(
        p99 > DELIVERY_LAG_P99_MAX_S,
        f"Delivery lag p99 over 5 min is {_n(p99)} s (alert above {_n(DELIVERY_LAG_P99_MAX_S)} s).",
        {"p99_s": round(p99, 4)},
    )


def reconnect_storm(f: Figures) -> Finding:
    handshakes = f.history.rate(lambda s: s.handshakes, RECONNECT_WINDOW_S)
    resets = f.history.rate(lambda s: sum(s.resets.values()), RECONNECT_WINDOW_S)
    return Finding(
        handshakes > RECONNECT_HANDSHAKES_PER_S and resets > RECONNECT_RESETS_PER_S,
        f"{_n(handshakes)} handshakes/s and {_n(resets)} resets/s over 1 min across the cluster "
        f"(alert above {_n(RECONNECT_HANDSHAKES_PER_S)} and {_n(RECONNECT_RESETS_PER_S)}).",
        {"handshakes_per_s": round(handshakes, 3), "resets_per_s": round(resets, 3)},
    )


def slow_consumers(f: Figures) -> Finding:
    closes = f.history.rate(lambda s: s.slow_closes, SLOW_WINDOW_S)
    return Finding(
        closes > SLOW_CLOSES_PER_S,
        f"{_n(closes)} slow-consumer closes/s over 5 min across the cluster "
        f"(alert above {_n(SLOW_CLOSES_PER_S)}).",
        {"closes_per_s": round(closes, 3)},
    )


def outbox_backlog(f: Figures) -> Finding:
    # Every node reads the same shared table: the largest figure, not a sum.
    newest = f.history.newest()
    age = max((s.outbox_oldest_age_s for s in newest), default=0.0)
    pending = max((s.outbox_pending for s in newest), default=0)
    said = (
        f"The oldest event waiting in the outbox is {_n(age)} s old, with {pending} waiting"
        if pending
        else "No event waits in the outbox"
    )
    return Finding(
        age > OUTBOX_OLDEST_MAX_S,
        f"{said} (alert above {_n(OUTBOX_OLDEST_MAX_S)} s).",
        {"oldest_age_s": round(age, 1), "pending": pending},
    )


def commands_unacknowledged(f: Figures) -> Finding:
    newest = f.history.newest()
    age = max((s.commands_oldest_age_s for s in newest), default=0.0)
    pending = max((s.commands_pending for s in newest), default=0)
    said = (
        f"The oldest unacknowledged command is {_n(age)} s old, with {pending} pending"
        if pending
        else "No command waits for its acknowledgement"
    )
    return Finding(
        age > COMMANDS_OLDEST_MAX_S,
        f"{said} (alert above {_n(COMMANDS_OLDEST_MAX_S)} s).",
        {"oldest_age_s": round(age, 1), "pending": pending},
    )


def rest_errors(f: Figures) -> Finding:
    requests = f.history.rate(lambda s: s.http_requests, REST_WINDOW_S)
    errors = f.history.rate(lambda s: s.http_errors, REST_WINDOW_S)
    ratio = errors / requests if requests > 0 else 0.0
    return Finding(
        requests >= REST_MIN_REQUESTS_PER_S and ratio > REST_5XX_RATIO_MAX,
        f"{_n(ratio * 100)} % of REST requests answered 5xx over 5 min, at {_n(requests)} "
        f"requests/s (alert above {_n(REST_5XX_RATIO_MAX * 100)} % at "
        f"{_n(REST_MIN_REQUESTS_PER_S)} request/s or more).",
        {"ratio": round(ratio, 4), "requests_per_s": round(requests, 3)},
    )


def database_errors(f: Figures) -> Finding:
    errors = f.history.rate(lambda s: s.db_errors, DATABASE_WINDOW_S)
    return Finding(
        errors > DATABASE_ERRORS_PER_S,
        f"{_n(errors)} database errors/s over 5 min across the cluster "
        f"(alert above {_n(DATABASE_ERRORS_PER_S)}).",
        {"errors_per_s": round(errors, 3)},
    )


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    title: str  # for people
    severity: Severity
    for_s: float
    check: Callable[[Figures], Finding | None]  # None: cannot tell now
    # Evaluated by every node for itself rather than by the cluster's evaluator.
    local: bool = False


RULES: tuple[Rule, ...] = (
    Rule("SinalEngineDown", "Engine down", "critical", ENGINE_DOWN_FOR_S, engine_down, local=True),
    Rule("SinalNodeDown", "Node down", "critical", NODE_DOWN_FOR_S, node_down),
    Rule("SinalDeliveryLagHigh", "Delivery lag high", "warning", DELIVERY_LAG_FOR_S,
         delivery_lag_high),
    Rule("SinalReconnectStorm", "Reconnect storm", "warning", RECONNECT_FOR_S, reconnect_storm),
    Rule("SinalSlowConsumers", "Slow consumers", "warning", SLOW_FOR_S, slow_consumers),
    Rule("SinalOutboxBacklog", "Outbox backlog", "critical", OUTBOX_FOR_S, outbox_backlog),
    Rule("SinalCommandsUnacknowledged", "Commands unacknowledged", "warning", COMMANDS_FOR_S,
         commands_unacknowledged),
    Rule("SinalRestErrors", "REST errors", "critical", REST_FOR_S, rest_errors),
    Rule("SinalDatabaseErrors", "Database errors", "critical", DATABASE_FOR_S, database_errors),
)  # fmt: skip
RULES_BY_NAME = {rule.name: rule for rule in RULES}


# -- `for`: from what holds to what must change ----------------------------------------------

Action = Literal["quiet", "pending", "fire", "firing", "resolve"]


@dataclass(frozen=True, slots=True)
class Decision:
    """What one evaluation means for one alert:
    `quiet` (does not hold, not firing), `pending` (holds, for less than its `for`), `fire`
    (held for its `for`: it must fire), `firing` (holds and fires), `resolve` (fires but no
    longer holds)."""

    rule: Rule
    action: Action
    finding: Finding
    since: float  # when the condition began to hold (now when it does not)


class Evaluator:
    """The rules and how long each has held, on one node."""

    def __init__(self, rules: Iterable[Rule] = RULES) -> None:
        self.rules = tuple(rules)
        self.holding_since: dict[str, float] = {}

    def evaluate(
        self, figures: Figures, firing: Collection[str], *, cluster: bool
    ) -> list[Decision]:
        """One decision per rule evaluated: the local rules always, the cluster's rules only
        when `cluster` (this node evaluates for the cluster). `firing`: the alerts firing now."""
        decisions = []
        for rule in self.rules:
            if not (rule.local or cluster):
                self.holding_since.pop(rule.name, None)  # another node keeps the count
                continue
            finding = rule.check(figures)
            if finding is not None:
                decisions.append(self._step(rule, finding, figures.now, rule.name in firing))
        return decisions

    def _step(self, rule: Rule, finding: Finding, now: float, firing: bool) -> Decision:
        if not finding.active:
            self.holding_since.pop(rule.name, None)
            return Decision(rule, "resolve" if firing else "quiet", finding, now)
        since = self.holding_since.setdefault(rule.name, now)
        if firing:
            return Decision(rule, "firing", finding, since)
        return Decision(rule, "fire" if now - since >= rule.for_s else "pending", finding, since)


# -- the figures in heartbeats ---------------------------------------------------------------


class _Wire(Snapshot, array_like=True, frozen=True):
    """A snapshot as a heartbeat carries it: a JSON array (its field names would triple it)."""


_encode_wire = msgspec.json.Encoder().encode
_decode_wire = msgspec.json.Decoder(_Wire).decode


def encode_snapshot(snapshot: Snapshot) -> bytes:
    return _encode_wire(_Wire(*msgspec.structs.astuple(snapshot)))


def decode_snapshot(raw: bytes) -> Snapshot | None:
    """The snapshot in a heartbeat; None when it is not one this version reads (a node of
    another version, during a rolling upgrade)."""
    try:
        wire = _decode_wire(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return Snapshot(*msgspec.structs.astuple(wire))


def _n(value: float) -> str:
    """A figure for people: three significant digits at most, no exponent."""
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}" if value >= 0.001 else "0"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
