"""The in-app alerts on one node: who evaluates what, the shared state, the notifications.

Every node evaluates the rules of `api/alerts.py` every `EVALUATE_EVERY_S`:

- **the cluster's rules** on one node only, the *evaluator*: the live node with the smallest id
  among those the cluster knows, once it has listened long enough to know them all (a node whose
  engine connection is down, or just came back, knows nobody and evaluates none). It sees every
  node's figures in their heartbeats (`Cluster.figures`);
- **the engine being down** on every node, for itself: the engine is also the control bus, so
  when it is down no node hears the others, and each can only judge its own connection.

What fires is decided in the database (`db.alerts`), shared by every node: a change of state is
a compare-and-set, and only the node whose statement changed the row announces it, in the same
transaction: a notification to every administrator (through the outbox, so it is delivered live
when the engine allows and kept in their history either way) and an `admin.alert` event on the
`admin` channel for the admin page. Two nodes evaluating at once, or one evaluating again while
an alert keeps firing, make one notification per change of state, not more.

Who are the administrators: Sinal has no user table, so the admin API's guard records each
admin it lets in (`admin_seen`, a write at most once per process per user), and
`SINAL_ALERT_RECIPIENTS` names more. Those seen in the last `ADMINS_SEEN_WITHIN_S` receive the
alerts: someone who lost the role stops receiving them after that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from api.alerts import (
    EVALUATE_EVERY_S,
    RULES,
    RULES_BY_NAME,
    Decision,
    Evaluator,
    Figures,
    History,
    NodeWatch,
    decode_snapshot,
    encode_snapshot,
)
from db import alerts as stored
from db.alerts import AlertRow
from db.engine import DATABASE_ERRORS, note_database_error, write_transaction
from db.notifications import Draft
from db.outbox import OutboxEvent, enqueue
from db.tables import Severity
from streams.channels import ADMIN
from streams.cluster import GONE_AFTER
from streams.errors import Unavailable
from streams.tasks import finish_or_cancel

if TYPE_CHECKING:
    from api.runtime import Runtime

log = logging.getLogger("sinal.alerts")

# Administrators seen on the admin API this recently receive the alerts.
ADMINS_SEEN_WITHIN_S = 30 * 86400.0
# A node's report of a condition it sees counts this long after it was last refreshed (it is
# refreshed at each evaluation): a node that died while it saw the engine down stops counting.
SOURCE_FRESH_S = 3 * EVALUATE_EVERY_S
# Resolved alerts the admin API lists, besides those firing.
RECENT_S = 86400.0
ALERT_EVENT = "admin.alert"
LINK = "/app/admin#alerts"
NOTIFIED_SEVERITY: dict[str, Severity] = {"critical": Severity.error, "warning": Severity.warning}
STOP_WAIT_S = 5.0
# Waited out: the database being down (the engine is not needed).
_TRANSIENT: tuple[type[Exception], ...] = (Unavailable, *DATABASE_ERRORS)


class AlertView(msgspec.Struct):
    """An alert as the admin API lists it and the `admin.alert` event carries it."""

    name: str  # e.g. `SinalEngineDown`, as in docs/monitoring.md
    title: str  # for people
    severity: Literal["critical", "warning"]
    state: Literal["firing", "resolved"]
    since: datetime  # when its condition began to hold, the last time it fired
    resolved_at: datetime | None  # None while it fires
    updated: datetime  # its summary and values were last written then
    summary: str
    values: dict[str, Any]
    node: str  # the node that wrote it last

    @classmethod
    def of(cls, row: AlertRow) -> AlertView:
        rule = RULES_BY_NAME.get(row.name)
        return cls(
            name=row.name,
            title=rule.title if rule else row.name,
            severity="warning" if row.severity == "warning" else "critical",
            state=row.state,
            since=row.since,
            resolved_at=row.resolved_at,
            updated=row.updated,
            summary=row.summary,
            values=row.values,
            node=row.node,
        )


_encode = msgspec.json.Encoder().encode


class Alerting:
    """The in-app alerts of one node; owned by the app's lifespan (`start`, `stop`)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        cluster = runtime.cluster
        self.history = History()
        self.watch = NodeWatch(grace_s=(GONE_AFTER + 1) * cluster.heartbeat_s)
        self.evaluator = Evaluator()
        # Whether this node evaluated the cluster's rules at its last evaluation.
        self.evaluating = False
        # The alerts firing, as this node last read them.
        self.firing: set[str] = set()
        # The alerts this node holds a report of (`db.alerts.report`).
        self.reported: set[str] = set()
        self._decoded: dict[str, bytes] = {}  # each node's figures last decoded
        self._admins: set[str] = set()  # recorded by this process
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        cluster.figures = lambda: encode_snapshot(runtime.metrics.snapshot())

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="sinal-alerts")

    async def stop(self) -> None:
        # The step in hand finishes: a transition cut off midway would hold a connection.
        if self._task is not None:
            await finish_or_cancel(self._task, self._stopping, STOP_WAIT_S)
            self._task = None

    async def _run(self) -> None:
        failing = False
        while not self._stopping.is_set():
            try:
                await self.evaluate()
                if failing:
                    log.info("alerts evaluated again")
                    failing = False
            except _TRANSIENT as error:
                if isinstance(error, DATABASE_ERRORS):
                    note_database_error()
                if not failing:
                    log.warning("alerts not evaluated, will retry: %s", error)
                    failing = True
            except Exception:
                # The loop must outlive a surprise: it is what tells the admins something is wrong.
                log.exception("alert evaluation failed; will retry")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), EVALUATE_EVERY_S)

    # -- one evaluation ----------------------------------------------------------------------

    async def evaluate(self, now: float | None = None) -> None:
        """Gather the figures, read the shared state, and act on each rule's decision."""
        now = time.time() if now is None else now
        figures, cluster_wide = self._observe(now)
        rows = await stored.states(self.runtime.database)
        self.firing = {name for name, row in rows.items() if row.firing}
        for decision in self.evaluator.evaluate(figures, self.firing, cluster=cluster_wide):
            await self._act(decision, rows.get(decision.rule.name), now)

    def _observe(self, now: float) -> tuple[Figures, bool]:
        runtime = self.runtime
        cluster, engine = runtime.cluster, runtime.engine
        seen = cluster.nodes()
        me = cluster.node_id
        self.history.add(me, runtime.metrics.snapshot())
        for node in seen:
            raw = node.figures
            if node.info.id == me or raw is None:
                continue
            if self._decoded.get(node.info.id) == raw:
                continue  # no heartbeat since the last evaluation
            self._decoded[node.info.id] = raw
            snapshot = decode_snapshot(raw)
            if snapshot is not None:
                self.history.add(node.info.id, snapshot)
        ids = {node.info.id for node in seen}
        self.history.keep_only(ids)
        self._decoded = {id: raw for id, raw in self._decoded.items() if id in ids}
        self.watch.update(
            now,
            ((node.info.id, node.info.name, node.last_seen) for node in seen),
            cluster.take_departed(),
            engine.live,
        )
        trusted = self.watch.trusted(now)
        self.evaluating = trusted and me == min(ids)
        figures = Figures(
            now=now,
            node=cluster.info.name,
            engine=engine.name,
            engine_up=engine.live,
            history=self.history,
            silent=self.watch.silent() if trusted else None,
        )
        return figures, self.evaluating

    async def _act(self, decision: Decision, row: AlertRow | None, now: float) -> None:
        rule, finding = decision.rule, decision.finding
        database = self.runtime.database
        at = datetime.fromtimestamp(now, UTC)
        match decision.action:
            case "fire" | "resolve":
                await self._transition(decision, at)
            case "firing" if rule.local:
                # Each node that sees it keeps it firing; the summary stays the first node's.
                await stored.report(database, rule.name, self.runtime.cluster.node_id, at)
                self.reported.add(rule.name)
            case "firing" if row is not None and row.summary != finding.summary:
                await stored.refresh(
                    database, rule.name, summary=finding.summary, values=finding.values, now=at
                )
            case "quiet" | "pending" if rule.name in self.reported:
                await stored.withdraw(database, rule.name, self.runtime.cluster.node_id)
                self.reported.discard(rule.name)

    async def _transition(self, decision: Decision, at: datetime) -> None:
        rule, finding = decision.rule, decision.finding
        runtime = self.runtime
        database, node_id, node = runtime.database, runtime.cluster.node_id, runtime.cluster.info
        async with write_transaction(database):
            if decision.action == "fire":
                if rule.local:
                    await stored.report(database, rule.name, node_id, at)
                row = await stored.fire(
                    database,
                    rule.name,
                    severity=rule.severity,
                    since=datetime.fromtimestamp(decision.since, UTC),
                    summary=finding.summary,
                    values=finding.values,
                    node=node.name,
                    now=at,
                )
            else:
                fresh_after = at - timedelta(seconds=SOURCE_FRESH_S)
                if rule.local:
                    await stored.withdraw(database, rule.name, node_id, stale_before=fresh_after)
                row = await stored.resolve(
                    database,
                    rule.name,
                    summary=finding.summary,
                    values=finding.values,
                    node=node.name,
                    sources_after=fresh_after,
                    now=at,
                )
            if row is not None:
                await self._announce(row, at)
        if rule.local:
            if decision.action == "fire":
                self.reported.add(rule.name)
            else:
                self.reported.discard(rule.name)
        if row is None:
            return  # another node made the change first, or another node still sees it
        runtime.relay.wake()
        if row.firing:
            self.firing.add(row.name)
            log.warning("alert %s firing: %s", row.name, row.summary)
        else:
            self.firing.discard(row.name)
            log.info("alert %s resolved: %s", row.name, row.summary)

    async def _announce(self, row: AlertRow, at: datetime) -> None:
        """The transition's notifications and admin-page event, in its transaction."""
        view = AlertView.of(row)
        users = await self.recipients(at)
        if users:
            await self.runtime.inbox.create(users, _draft(view))
        else:
            log.warning("alert %s %s, and no administrator to tell", row.name, row.state)
        await enqueue(self.runtime.database, [OutboxEvent(ADMIN, ALERT_EVENT, _encode(view))])

    async def recipients(self, at: datetime) -> list[str]:
        seen = await stored.admins(
            self.runtime.database, at - timedelta(seconds=ADMINS_SEEN_WITHIN_S)
        )
        return sorted({*seen, *self.runtime.settings.alert_recipients})

    # -- administrators ----------------------------------------------------------------------

    async def admin_seen(self, user: str) -> None:
        """Record `user` as an administrator, once per process; a failure is retried at their
        next request rather than failing this one."""
        if user in self._admins:
            return
        try:
            await stored.note_admin(self.runtime.database, user)
        except DATABASE_ERRORS as error:
            note_database_error()
            log.debug("administrator %s not recorded: %s", user, error)
            return
        self._admins.add(user)

    # -- `/metrics` --------------------------------------------------------------------------

    def firing_states(self) -> dict[str, int] | None:
        """`sinal_alerts_firing` by alert: on the node that evaluates the cluster's rules, and
        on a node whose engine is down (it cannot tell which node that is); else None."""
        if not (self.evaluating or not self.runtime.engine.live):
            return None
        return {rule.name: int(rule.name in self.firing) for rule in RULES}


async def listed(runtime: Runtime, now: datetime | None = None) -> list[AlertView]:
    """The alerts firing, then those resolved in the last `RECENT_S`."""
    now = datetime.now(UTC) if now is None else now
    rows = await stored.listed(runtime.database, now - timedelta(seconds=RECENT_S))
    return [AlertView.of(row) for row in rows]


def _draft(view: AlertView) -> Draft:
    since = view.since.strftime("%Y-%m-%d %H:%M:%S UTC")
    if view.state == "firing":
        title = f"Alert: {view.title}"
        body = f"{view.summary} Since {since}."
        severity = NOTIFIED_SEVERITY[view.severity]
    else:
        title = f"Resolved: {view.title}"
        lasted = (view.resolved_at or view.updated) - view.since
        body = f"{view.summary} It had fired since {since} ({_duration(lasted)})."
        severity = Severity.success
    return Draft(
        type=f"alert.{view.state}",
        title=title,
        body=body,
        data={
            "alert": view.name,
            "state": view.state,
            "severity": view.severity,
            "since": view.since.isoformat(),
            "resolved_at": None if view.resolved_at is None else view.resolved_at.isoformat(),
            "values": view.values,
        },
        severity=severity,
        link=LINK,
    )


def _duration(delta: timedelta) -> str:
    seconds = max(0, round(delta.total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"
