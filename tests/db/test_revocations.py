"""Token revocations on SQLite and PostgreSQL: a revoke keeps the later times, expired rows
are no longer in force and are purged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from db import revocations
from db.engine import Database, write_transaction
from db.tables import Notification

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture
def db(database: str) -> Database:
    engine: Database = Notification._meta.db
    return engine


async def test_revoke_then_read_it_back(db: Database) -> None:
    before = T0 + timedelta(microseconds=250)
    assert await revocations.revoke(db, "alice", before, T0 + HOUR, "root") == before
    assert await revocations.revoked_before(db, "alice", now=T0) == before
    assert await revocations.revoked_before(db, "bob", now=T0) is None
    assert await revocations.active(db, now=T0) == {"alice": before}


async def test_a_second_revoke_keeps_the_later_before_and_the_later_expiry(db: Database) -> None:
    await revocations.revoke(db, "alice", T0, T0 + 2 * HOUR, "root")
    # Earlier `before`, later expiry: the first `before` stays, the expiry moves out.
    assert await revocations.revoke(db, "alice", T0 - HOUR, T0 + 3 * HOUR, "ops") == T0
    assert await revocations.revoked_before(db, "alice", now=T0 + 150 * timedelta(minutes=1)) == T0
    # Later `before` (given in another zone), earlier expiry: the `before` moves, the expiry stays.
    later = (T0 + timedelta(seconds=1, microseconds=5)).astimezone(timezone(timedelta(hours=-5)))
    assert await revocations.revoke(db, "alice", later, T0 + HOUR, "ops") == later
    assert await revocations.active(db, now=T0 + 170 * timedelta(minutes=1)) == {"alice": later}
    assert await revocations.active(db, now=T0 + 3 * HOUR) == {}


async def test_expired_rows_are_not_in_force_and_are_purged(db: Database) -> None:
    await revocations.revoke(db, "alice", T0, T0 + HOUR, "root")
    await revocations.revoke(db, "bob", T0, T0 + 2 * HOUR, "root")
    now = T0 + HOUR  # alice's expires exactly now
    assert await revocations.active(db, now=now) == {"bob": T0}
    assert await revocations.revoked_before(db, "alice", now=now) is None
    assert await revocations.purge(db, now=now) == 1
    assert await revocations.active(db, now=T0) == {"bob": T0}
    assert await revocations.purge(db, now=now) == 0


async def test_revoke_runs_in_the_callers_transaction(db: Database) -> None:
    async def failing_act() -> None:
        async with write_transaction(db):
            await revocations.revoke(db, "alice", T0, T0 + HOUR, "root")
            raise RuntimeError("the admin act failed")

    with pytest.raises(RuntimeError):
        await failing_act()
    assert await revocations.active(db, now=T0) == {}


async def test_naive_times_are_refused(db: Database) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await revocations.revoke(db, "alice", datetime(2026, 1, 1), T0, "root")
