"""Announcements on SQLite and PostgreSQL: each is stored with its `broadcast` outbox event in
one transaction (the caller's when there is one); the active ones are listed newest first."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from piccolo.querystring import QueryString

from db import announcements, audit
from db.engine import Database, write_transaction
from db.outbox import pending
from db.tables import Notification

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture
def db(database: str) -> Database:
    engine: Database = Notification._meta.db
    return engine


async def outbox(db: Database) -> list[dict[str, object]]:
    rows = await db.run_querystring(
        QueryString("SELECT channel, type, data FROM sinal_outbox ORDER BY id")
    )
    return [dict(row) for row in rows]


async def test_create_writes_the_row_and_one_broadcast_event(db: Database) -> None:
    made = await announcements.create(
        db, title="Maintenance", body="At 22:00 UTC", severity="warning",
        link="https://status.example.com", expires_at=T0 + DAY, by="root", now=T0,
    )  # fmt: skip
    assert await announcements.active(db, now=T0) == [made]
    view = {
        "id": str(made.id),
        "title": "Maintenance",
        "body": "At 22:00 UTC",
        "severity": "warning",
        "link": "https://status.example.com",
        "created": "2026-11-01T12:00:00Z",
        "expires_at": "2026-11-02T12:00:00Z",
    }
    assert made.view() == view
    [event] = await outbox(db)
    assert (event["channel"], event["type"]) == ("broadcast", "broadcast")
    assert json.loads(str(event["data"])) == {"announcement": view}


async def test_defaults_and_a_bad_severity(db: Database) -> None:
    made = await announcements.create(db, title="Hello", by="root")
    assert (made.body, made.severity, made.link, made.expires_at) == ("", "info", None, None)
    assert made.view()["expires_at"] is None
    with pytest.raises(ValueError, match="critical"):
        await announcements.create(db, title="x", severity="critical", by="root")
    assert await pending(db) == 1


async def test_a_failing_caller_transaction_rolls_back_the_row_and_its_event(
    db: Database,
) -> None:
    async def failing_act() -> None:
        async with write_transaction(db):
            await announcements.create(db, title="Hello", by="root")
            await audit.record(db, actor="root", action="broadcast", target="all", params={},
                               result={}, node="n1")  # fmt: skip
            raise RuntimeError("the admin act failed")

    with pytest.raises(RuntimeError):
        await failing_act()
    assert await announcements.active(db) == []
    assert await pending(db) == 0
    assert (await audit.list_entries(db))[0] == []
    async with write_transaction(db):  # the same, committed: all three are there
        await announcements.create(db, title="Hello", by="root")
        await audit.record(db, actor="root", action="broadcast", target="all", params={},
                           result={}, node="n1")  # fmt: skip
    assert (len(await announcements.active(db)), await pending(db)) == (1, 1)


async def test_active_leaves_out_expired_ones_newest_first(db: Database) -> None:
    old = await announcements.create(db, title="old", by="root", now=T0 - 2 * DAY)
    await announcements.create(db, title="gone", expires_at=T0, by="root", now=T0 - DAY)
    new = await announcements.create(db, title="new", expires_at=T0 + DAY, by="root", now=T0)
    just_before = T0 - timedelta(microseconds=1)
    assert [a.title for a in await announcements.active(db, now=just_before)] == [
        "new",
        "gone",
        "old",
    ]
    assert await announcements.active(db, now=T0) == [new, old]
    assert await announcements.active(db, now=T0, limit=1) == [new]
    assert await announcements.purge(db, now=just_before) == 0
    assert await announcements.purge(db, now=T0) == 1
    assert await announcements.active(db, now=just_before) == [new, old]
