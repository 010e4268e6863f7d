"""The in-app alerts' shared state: one row per alert, and who receives them.

Every node may evaluate an alert (the cluster's evaluator for the cluster-wide rules; each node
for its own engine), possibly at the same moment as another. The row decides: a change of state
is a compare-and-set (`fire` changes only a row that is not firing, `resolve` only one that
is), and only the caller whose statement changed the row gets it back, and so sends the
notifications. Each runs in the caller's write transaction, so the notifications commit with
the transition or not at all.

A condition that each node judges for itself (the engine being down) is held by *sources*:
one row per node that sees it, refreshed at each of its evaluations. Such an alert resolves
only once no node has reported it recently: the first node to see the engine again must not
resolve what another still sees.

Administrators: Sinal has no user table. `note_admin` records a user the admin API let in;
`admins` lists those seen lately.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from piccolo.querystring import QueryString

from db.engine import Database
from db.times import aware, now_or

State = Literal["firing", "resolved"]
_COLUMNS = "name, state, severity, since, resolved_at, updated, summary, alert_values, node"


@dataclass(frozen=True, slots=True)
class AlertRow:
    name: str
    state: State
    severity: str
    since: datetime  # when its condition began to hold, for the last time it fired
    resolved_at: datetime | None  # None while it fires
    updated: datetime  # the last write of its summary and values
    summary: str
    values: dict[str, Any]
    node: str  # the node that wrote it last

    @property
    def firing(self) -> bool:
        return self.state == "firing"


async def states(database: Database) -> dict[str, AlertRow]:
    """Every alert that ever fired, by name."""
    rows = await _run(database, f"SELECT {_COLUMNS} FROM sinal_alert")
    return {row.name: row for row in map(_row, rows)}


async def listed(database: Database, resolved_since: datetime) -> list[AlertRow]:
    """The alerts firing now, then those resolved since `resolved_since` (newest first)."""
    rows = await _run(
        database,
        f"SELECT {_COLUMNS} FROM sinal_alert WHERE state = 'firing' OR resolved_at >= {{}}",
        aware(resolved_since, "resolved_since"),
    )
    return sorted(map(_row, rows), key=_listing_order)


def _listing_order(alert: AlertRow) -> tuple[bool, float]:
    """Firing first, each part newest first (by when it began firing, or resolved)."""
    when = alert.since if alert.resolved_at is None else alert.resolved_at
    return not alert.firing, -when.timestamp()


async def fire(
    database: Database,
    name: str,
    *,
    severity: str,
    since: datetime,
    summary: str,
    values: Mapping[str, Any],
    node: str,
    now: datetime | None = None,
) -> AlertRow | None:
    """Make `name` firing; the new row if this call changed it, None if it was firing already."""
    now = now_or(now)
    rows = await _run(
        database,
        f"""
        INSERT INTO sinal_alert ({_COLUMNS}) VALUES ({{}}, 'firing', {{}}, {{}}, NULL, {{}}, {{}},
                                                     {{}}, {{}})
        ON CONFLICT (name) DO UPDATE SET
            state = 'firing', severity = excluded.severity, since = excluded.since,
            resolved_at = NULL, updated = excluded.updated, summary = excluded.summary,
            alert_values = excluded.alert_values, node = excluded.node
        WHERE sinal_alert.state <> 'firing'
        RETURNING {_COLUMNS}
        """,
        name, severity, aware(since, "since"), now, summary, json.dumps(dict(values)), node,
    )  # fmt: skip
    return _row(rows[0]) if rows else None


async def resolve(
    database: Database,
    name: str,
    *,
    summary: str,
    values: Mapping[str, Any],
    node: str,
    sources_after: datetime,
    now: datetime | None = None,
) -> AlertRow | None:
    """Make `name` resolved, unless a node reported it after `sources_after`; the new row if
    this call changed it, None if it was not firing (or is still reported)."""
    now = now_or(now)
    rows = await _run(
        database,
        f"""
        UPDATE sinal_alert SET state = 'resolved', resolved_at = {{}}, updated = {{}},
            summary = {{}}, alert_values = {{}}, node = {{}}
        WHERE name = {{}} AND state = 'firing' AND NOT EXISTS (
            SELECT 1 FROM sinal_alert_source WHERE alert = {{}} AND reported > {{}})
        RETURNING {_COLUMNS}
        """,
        now, now, summary, json.dumps(dict(values)), node, name, name,
        aware(sources_after, "sources_after"),
    )  # fmt: skip
    return _row(rows[0]) if rows else None


async def refresh(
    database: Database,
    name: str,
    *,
    summary: str,
    values: Mapping[str, Any],
    now: datetime | None = None,
) -> None:
    """New figures for an alert that keeps firing (no change of state)."""
    await _run(
        database,
        "UPDATE sinal_alert SET summary = {}, alert_values = {}, updated = {} "
        "WHERE name = {} AND state = 'firing'",
        summary, json.dumps(dict(values)), now_or(now), name,
    )  # fmt: skip


async def report(database: Database, alert: str, node: str, now: datetime | None = None) -> None:
    """`node` sees the condition of `alert` now."""
    await _run(
        database,
        "INSERT INTO sinal_alert_source (alert, node, reported) VALUES ({}, {}, {}) "
        "ON CONFLICT (alert, node) DO UPDATE SET reported = excluded.reported",
        alert, node, now_or(now),
    )  # fmt: skip


async def withdraw(
    database: Database, alert: str, node: str, *, stale_before: datetime | None = None
) -> None:
    """`node` no longer sees the condition of `alert`; with `stale_before`, the reports of
    `alert` not refreshed since then go too (their nodes died or restarted)."""
    await _run(
        database, "DELETE FROM sinal_alert_source WHERE alert = {} AND node = {}", alert, node
    )
    if stale_before is not None:
        await _run(
            database,
            "DELETE FROM sinal_alert_source WHERE alert = {} AND reported <= {}",
            alert,
            aware(stale_before, "stale_before"),
        )


async def note_admin(database: Database, user: str, now: datetime | None = None) -> None:
    """Record that `user`, an administrator, used the admin API now."""
    now = now_or(now)
    await _run(
        database,
        "INSERT INTO sinal_admin (user_id, first_seen, last_seen) VALUES ({}, {}, {}) "
        "ON CONFLICT (user_id) DO UPDATE SET last_seen = excluded.last_seen",
        user, now, now,
    )  # fmt: skip


async def admins(database: Database, seen_since: datetime) -> list[str]:
    """The administrators seen on the admin API since `seen_since`, by id."""
    rows = await _run(
        database,
        "SELECT user_id FROM sinal_admin WHERE last_seen >= {} ORDER BY user_id",
        aware(seen_since, "seen_since"),
    )
    return [row["user_id"] for row in rows]


def _row(row: Mapping[str, Any]) -> AlertRow:
    values = json.loads(row["alert_values"])
    return AlertRow(
        name=row["name"],
        state=row["state"],
        severity=row["severity"],
        since=_time(row["since"]),
        resolved_at=None if row["resolved_at"] is None else _time(row["resolved_at"]),
        updated=_time(row["updated"]),
        summary=row["summary"],
        values=values if isinstance(values, dict) else {},
        node=row["node"],
    )


def _time(value: datetime | str) -> datetime:
    # SQLite hands back its stored text where it cannot tell the column's type (RETURNING).
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


async def _run(database: Database, sql: str, *args: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = await database.run_querystring(QueryString(sql, *args))
    return rows
