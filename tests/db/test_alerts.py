"""The in-app alerts' shared state on SQLite and PostgreSQL: a change of state is made once,
whoever else tries it at the same moment; a condition some node still reports does not
resolve."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from piccolo.querystring import QueryString

from db import alerts
from db.alerts import AlertRow
from db.engine import Database, write_transaction
from db.tables import Notification

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
S = timedelta(seconds=1)
NAME = "SinalEngineDown"


@pytest.fixture
def db(database: str) -> Database:
    engine: Database = Notification._meta.db
    return engine


async def fire(db: Database, at: datetime, node: str = "web-1") -> AlertRow | None:
    async with write_transaction(db):
        return await alerts.fire(
            db, NAME, severity="critical", since=at - 20 * S, summary=f"down on {node}",
            values={"node": node}, node=node, now=at,
        )  # fmt: skip


async def resolve(db: Database, at: datetime, node: str = "web-1") -> AlertRow | None:
    async with write_transaction(db):
        return await alerts.resolve(
            db, NAME, summary="up", values={}, node=node, sources_after=at - 15 * S, now=at
        )


async def test_fire_and_resolve_change_the_row_once_each(db: Database) -> None:
    fired = await fire(db, T0)
    assert fired is not None
    assert (fired.state, fired.since, fired.resolved_at) == ("firing", T0 - 20 * S, None)
    assert (fired.summary, fired.values) == ("down on web-1", {"node": "web-1"})
    assert fired.node == "web-1"
    assert await fire(db, T0 + S) is None  # it keeps firing: no second transition
    assert (await alerts.states(db))[NAME] == fired

    resolved = await resolve(db, T0 + 60 * S)
    assert resolved is not None
    assert (resolved.state, resolved.since, resolved.resolved_at) == (
        "resolved",
        T0 - 20 * S,  # when it began firing stays, for the listing
        T0 + 60 * S,
    )
    assert await resolve(db, T0 + 61 * S) is None

    again = await fire(db, T0 + 120 * S)
    assert again is not None
    assert (again.since, again.resolved_at) == (T0 + 100 * S, None)


async def test_nothing_resolves_what_never_fired(db: Database) -> None:
    assert await resolve(db, T0) is None
    assert await alerts.states(db) == {}


async def test_two_nodes_firing_at_once_make_one_transition(db: Database) -> None:
    results = await asyncio.gather(*(fire(db, T0, f"web-{n}") for n in range(4)))
    assert sum(result is not None for result in results) == 1
    results = await asyncio.gather(*(resolve(db, T0 + 60 * S, f"web-{n}") for n in range(4)))
    assert sum(result is not None for result in results) == 1


async def test_a_fresh_report_holds_the_alert_and_a_stale_one_does_not(db: Database) -> None:
    await fire(db, T0)
    await alerts.report(db, NAME, "node-a", T0)
    await alerts.report(db, NAME, "node-b", T0 + 10 * S)
    await alerts.withdraw(db, NAME, "node-a")
    assert await resolve(db, T0 + 20 * S) is None  # node-b reported 10 s ago: it still sees it
    # node-b died without withdrawing: 15 s later its report no longer counts.
    resolved = await resolve(db, T0 + 26 * S)
    assert resolved is not None
    await alerts.withdraw(db, NAME, "node-c", stale_before=T0 + 11 * S)
    rows = await db.run_querystring(QueryString("SELECT node FROM sinal_alert_source"))
    assert rows == []


async def test_refresh_changes_the_figures_of_a_firing_alert_only(db: Database) -> None:
    await fire(db, T0)
    await alerts.refresh(db, NAME, summary="worse", values={"n": 2}, now=T0 + 5 * S)
    row = (await alerts.states(db))[NAME]
    assert (row.summary, row.values, row.updated, row.state) == ("worse", {"n": 2}, T0 + 5 * S,
                                                                  "firing")  # fmt: skip
    await resolve(db, T0 + 60 * S)
    await alerts.refresh(db, NAME, summary="ignored", values={}, now=T0 + 65 * S)
    assert (await alerts.states(db))[NAME].summary == "up"


async def test_the_listing_shows_firing_then_recently_resolved(db: Database) -> None:
    async def at(name: str, fired: datetime, resolved: datetime | None) -> None:
        async with write_transaction(db):
            await alerts.fire(db, name, severity="warning", since=fired, summary=name, values={},
                              node="n", now=fired)  # fmt: skip
        if resolved is not None:
            await alerts.resolve(db, name, summary=name, values={}, node="n",
                                 sources_after=resolved, now=resolved)  # fmt: skip

    await at("OldResolved", T0 - timedelta(days=3), T0 - timedelta(days=2))
    await at("Resolved", T0 - 600 * S, T0 - 60 * S)
    await at("ResolvedLater", T0 - 600 * S, T0 - 30 * S)
    await at("Firing", T0 - 300 * S, None)
    await at("FiringLater", T0 - 100 * S, None)
    listed = await alerts.listed(db, resolved_since=T0 - timedelta(days=1))
    assert [a.name for a in listed] == ["FiringLater", "Firing", "ResolvedLater", "Resolved"]


async def test_administrators_seen_lately(db: Database) -> None:
    await alerts.note_admin(db, "root", T0 - timedelta(days=40))
    await alerts.note_admin(db, "ops", T0 - timedelta(days=40))
    await alerts.note_admin(db, "ops", T0 - timedelta(days=1))  # seen again
    await alerts.note_admin(db, "alice", T0)
    assert await alerts.admins(db, T0 - timedelta(days=30)) == ["alice", "ops"]
