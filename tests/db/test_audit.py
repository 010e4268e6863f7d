"""The audit log on SQLite and PostgreSQL: appended in the caller's transaction, listed newest
first with filters and keyset pages, purged by age."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from db import audit
from db.audit import AuditEntry
from db.engine import Database, write_transaction
from db.notifications import InvalidCursor
from db.tables import Notification

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def db(database: str) -> Database:
    engine: Database = Notification._meta.db
    return engine


async def entry(
    db: Database,
    at: datetime,
    *,
    actor: str = "root",
    action: str = "user.disconnect",
    target: str = "user:alice",
) -> AuditEntry:
    return await audit.record(
        db, actor=actor, action=action, target=target, params={"revoke": True},
        result={"closed": 2}, node="n1", at=at,
    )  # fmt: skip


async def listed(
    db: Database,
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    since: datetime | None = None,
) -> list[uuid.UUID]:
    entries, _ = await audit.list_entries(
        db, actor=actor, action=action, target=target, since=since
    )
    return [e.id for e in entries]


async def test_record_round_trips_every_field_and_its_view(db: Database) -> None:
    at = datetime(2026, 11, 1, 13, 0, 0, 250_000, tzinfo=timezone(timedelta(hours=2)))
    recorded = await audit.record(
        db, actor="root", action="broadcast", target="all", params={"title": "Hi", "n": [1, 2]},
        result={"id": "a1"}, node="node-1", request_id="req-9", at=at,
    )  # fmt: skip
    entries, next_cursor = await audit.list_entries(db)
    assert entries == [recorded]
    assert next_cursor is None
    assert recorded.view() == {
        "id": str(recorded.id),
        "at": "2026-11-01T11:00:00.250000Z",
        "actor": "root",
        "action": "broadcast",
        "target": "all",
        "params": {"title": "Hi", "n": [1, 2]},
        "result": {"id": "a1"},
        "node": "node-1",
        "request_id": "req-9",
    }
    bare = await audit.record(
        db, actor="root", action="limits.update", target="limits", params={}, result={}, node="n"
    )
    assert bare.request_id is None
    assert bare.at.tzinfo is not None


async def test_list_is_newest_first_and_every_filter_applies(db: Database) -> None:
    a = await entry(db, T0, actor="root", action="user.disconnect", target="user:alice")
    b = await entry(db, T0 + timedelta(seconds=1), actor="ops", action="broadcast", target="all")
    c = await entry(db, T0 + timedelta(seconds=2), actor="root", action="broadcast", target="all")
    d = await entry(db, T0 + timedelta(seconds=3), actor="ops", action="user.disconnect",
                    target="user:bob")  # fmt: skip
    assert await listed(db) == [d.id, c.id, b.id, a.id]
    assert await listed(db, actor="root") == [c.id, a.id]
    assert await listed(db, action="broadcast") == [c.id, b.id]
    assert await listed(db, target="user:bob") == [d.id]
    assert await listed(db, actor="ops", action="broadcast", target="all") == [b.id]
    assert await listed(db, since=T0 + timedelta(seconds=2)) == [d.id, c.id]  # inclusive
    assert await listed(db, actor="nobody") == []


async def test_pages_follow_each_other_across_entries_sharing_a_time(db: Database) -> None:
    """Seven entries, five of them at one instant: pages of two neither skip nor repeat one."""
    made = [await entry(db, T0) for _ in range(5)]
    made += [await entry(db, T0 + timedelta(seconds=1)), await entry(db, T0 - timedelta(days=1))]
    expected = [e.id for e in sorted(made, key=lambda e: (e.at, e.id), reverse=True)]
    seen: list[uuid.UUID] = []
    cursor: str | None = None
    pages = 0
    while True:
        entries, cursor = await audit.list_entries(db, cursor=cursor, limit=2)
        seen += [e.id for e in entries]
        pages += 1
        if cursor is None:
            break
    assert seen == expected
    assert pages == 4
    # A filter holds on every page.
    first, cursor = await audit.list_entries(db, since=T0, limit=3)
    rest, end = await audit.list_entries(db, since=T0, cursor=cursor, limit=3)
    assert [e.id for e in first + rest] == expected[:6]
    assert end is None


async def test_limit_is_clamped(db: Database) -> None:
    for i in range(3):
        await entry(db, T0 + timedelta(seconds=i))
    entries, cursor = await audit.list_entries(db, limit=0)
    assert len(entries) == 1
    assert cursor is not None
    entries, cursor = await audit.list_entries(db, limit=10_000)
    assert (len(entries), cursor) == (3, None)


@pytest.mark.parametrize("bad", ["nope", "v1.", "v2.AAAA", "v1.!!!!", "v1." + "A" * 40])
async def test_a_cursor_it_did_not_produce_is_a_bad_request_naming_cursor(
    db: Database, bad: str
) -> None:
    with pytest.raises(InvalidCursor) as raised:
        await audit.list_entries(db, cursor=bad)
    assert (raised.value.status, raised.value.field) == (400, "cursor")


async def test_an_entry_is_rolled_back_with_the_callers_transaction(db: Database) -> None:
    """`record` writes on the caller's connection: the act and its entry commit together."""

    async def failing_act() -> None:
        async with write_transaction(db):
            await entry(db, T0)
            raise RuntimeError("the admin act failed")

    with pytest.raises(RuntimeError):
        await failing_act()
    assert await listed(db) == []
    async with write_transaction(db):
        kept = await entry(db, T0)
    assert await listed(db) == [kept.id]


async def test_naive_times_are_refused(db: Database) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await entry(db, datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        await audit.list_entries(db, since=datetime(2026, 1, 1))


async def test_purge_deletes_entries_older_than_the_bound_in_batches(db: Database) -> None:
    old = [await entry(db, T0 - timedelta(days=400, seconds=i)) for i in range(5)]
    kept = await entry(db, T0 - timedelta(days=10))
    assert old
    assert await audit.purge(db, T0 - timedelta(days=365), batch=2) == 5
    assert await listed(db) == [kept.id]
    assert await audit.purge(db, T0 - timedelta(days=365)) == 0
