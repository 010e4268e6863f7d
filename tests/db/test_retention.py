"""One retention pass, on SQLite and PostgreSQL: it deletes what is due in every table it
keeps (notifications, audit entries, revocations, announcements) and nothing else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from db import announcements, audit, notifications, revocations
from db.engine import Database
from db.retention import Purge
from db.tables import Notification

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture
def db(database: str) -> Database:
    engine: Database = Notification._meta.db
    return engine


async def entry(db: Database, at: datetime) -> audit.AuditEntry:
    return await audit.record(db, actor="root", action="broadcast", target="all", params={},
                              result={}, node="n1", at=at)  # fmt: skip


async def test_one_pass_deletes_what_is_due_everywhere_and_keeps_the_rest(db: Database) -> None:
    await notifications.create("alice", "t", "old", now=NOW - 100 * DAY)
    kept_notification, _ = await notifications.create("alice", "t", "kept", now=NOW - DAY)
    for i in range(3):
        await entry(db, NOW - 400 * DAY - i * timedelta(seconds=1))
    kept_entry = await entry(db, NOW - 300 * DAY)
    await revocations.revoke(db, "alice", NOW - 2 * DAY, NOW - DAY, "root")
    await revocations.revoke(db, "bob", NOW - DAY, NOW + DAY, "root")
    await announcements.create(db, title="gone", expires_at=NOW, by="root", now=NOW - DAY)
    kept_announcement = await announcements.create(db, title="kept", by="root", now=NOW - DAY)

    purge = Purge(db, keep_days=90, audit_keep_days=365, interval_s=3600, batch=2, pause_s=0)
    assert await purge.run_once(NOW) == 1 + 3 + 1 + 1
    assert (purge.deleted, purge.audit_deleted) == (1, 3)
    assert (purge.revocations_deleted, purge.announcements_deleted) == (1, 1)

    page = await notifications.list_for_user("alice", now=NOW)
    assert [r.id for r in page.items] == [kept_notification.id]
    assert (await audit.list_entries(db))[0] == [kept_entry]
    assert await revocations.active(db, now=NOW - 3 * DAY) == {"bob": NOW - DAY}
    assert await announcements.active(db, now=NOW - 2 * DAY) == [kept_announcement]
    assert await purge.run_once(NOW) == 0


@pytest.mark.parametrize("audit_keep_days", [0, 1e300])
async def test_audit_entries_kept_forever(db: Database, audit_keep_days: float) -> None:
    """0 keeps them; so does a span reaching back past year 1 (it raised OverflowError)."""
    ancient = await entry(db, datetime(1990, 1, 1, tzinfo=UTC))
    purge = Purge(db, keep_days=1e300, audit_keep_days=audit_keep_days, interval_s=3600)
    assert await purge.run_once(NOW) == 0
    assert (await audit.list_entries(db))[0] == [ancient]
