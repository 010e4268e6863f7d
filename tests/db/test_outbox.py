"""The outbox and its relay, the inbox's events and counts, and the retention purge, on SQLite
and PostgreSQL with the memory engine (the Redis side of `publish_once` is in the engine
conformance suite; Redis stopped and restarted is in tests/api/test_notifications.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from piccolo.engine.postgres import PostgresEngine
from piccolo.querystring import QueryString

from db import notifications
from db.engine import Database
from db.inbox import Inbox
from db.notifications import Draft
from db.outbox import OutboxEvent, Relay, backlog, enqueue, pending
from db.retention import Purge
from db.tables import Notification
from streams.cursor import ORIGIN, Position
from streams.engine import Engine, Sequenced
from streams.errors import Unavailable
from streams.event import Event
from streams.memory import MemoryEngine

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("database")]


@pytest.fixture
def db(database: str) -> Database:
    """The engine the tables are bound to: the inbox's transactions must be on it."""
    engine: Database = Notification._meta.db
    return engine


async def log_of(engine: Engine, channel: str) -> list[Event]:
    head = await engine.head(channel)
    return await engine.read_after(channel, Position(head.epoch, ORIGIN.offset), 10_000)


def payloads(events: list[Event]) -> list[Any]:
    return [json.loads(event.data_json) for event in events]


class Delivered:
    """A sink that sets an event when the engine delivers something live."""

    def __init__(self, event: anyio.Event) -> None:
        self.event = event

    def dispatch(self, events: list[Event]) -> None:
        self.event.set()

    def reset(self, channel: str, reason: Any, head: Position) -> None:
        pass


class FlakyEngine(MemoryEngine):
    """The memory engine with an off switch: `down` makes publishes fail as Redis would."""

    down = False
    after_publish: Exception | None = None

    async def publish_once(self, items: Sequence[Sequenced]) -> list[Event | None]:
        if self.down:
            raise Unavailable("engine is down")
        events = await super().publish_once(items)
        if self.after_publish is not None:  # published, but the relay never hears of it
            raise self.after_publish
        return events


async def test_every_change_is_published_with_the_unread_count(db: Database) -> None:
    engine = MemoryEngine()
    relay = Relay(db, engine)
    inbox = Inbox(db, relay, max_event_bytes=65536)
    [(a, _), (b, _)] = await inbox.create(["alice", "bob"], Draft("t", "hello"))
    [(a2, _)] = await inbox.create(["alice"], Draft("t", "again"))
    await inbox.mark_read("alice", [a.id, b.id])  # b is bob's: not alice's to change
    await inbox.dismiss("alice", [a2.id])
    await inbox.mark_read("alice", [a.id])  # no change, no event
    await inbox.mark_unread("alice", [a.id])
    assert await inbox.read_all("alice") == (1, 0)
    assert await pending(db) == 7
    assert await relay.relay_once() == 7
    assert await pending(db) == 0
    alice = await log_of(engine, "notifications:alice")
    assert [e.type for e in alice] == [
        "notification.created",
        "notification.created",
        "notification.read",
        "notification.dismissed",
        "notification.unread",
        "notification.read_all",
    ]
    data = payloads(alice)
    assert [d["unread"] for d in data] == [1, 2, 1, 0, 1, 0]
    assert data[0]["notification"]["id"] == str(a.id)
    assert data[2]["ids"] == [str(a.id)]
    assert data[5] == {"marked": 1, "before": None, "unread": 0}
    bob = await log_of(engine, "notifications:bob")
    assert payloads(bob)[0]["notification"]["id"] == str(b.id)


async def test_concurrent_changes_of_one_user_carry_consecutive_counts(db: Database) -> None:
    """One user's changes take turns, so no two events claim the same count."""
    engine = MemoryEngine()
    relay = Relay(db, engine)
    inbox = Inbox(db, relay, max_event_bytes=65536)
    async with anyio.create_task_group() as group:
        for i in range(20):
            group.start_soon(inbox.create, ["alice"], Draft("t", f"n{i}"))
    while await relay.relay_once():
        pass
    counts = [d["unread"] for d in payloads(await log_of(engine, "notifications:alice"))]
    assert counts == list(range(1, 21))


async def test_relay_waits_out_an_engine_outage_and_keeps_order(db: Database) -> None:
    engine = FlakyEngine()
    relay = Relay(db, engine)
    inbox = Inbox(db, relay, max_event_bytes=65536)
    engine.down = True
    for i in range(5):
        await inbox.create(["alice"], Draft("t", f"n{i}"))
    with pytest.raises(Unavailable):
        await relay.relay_once()
    assert await pending(db) == 5
    engine.down = False
    assert await relay.relay_once() == 5
    titles = [
        d["notification"]["title"] for d in payloads(await log_of(engine, "notifications:alice"))
    ]
    assert titles == [f"n{i}" for i in range(5)]


async def test_an_event_published_but_not_deleted_is_not_published_twice(db: Database) -> None:
    """The relay dies between publishing and deleting: the next run must not repeat it."""
    engine = FlakyEngine()
    relay = Relay(db, engine)
    inbox = Inbox(db, relay, max_event_bytes=65536)
    await inbox.create(["alice"], Draft("t", "once"))
    engine.after_publish = Unavailable("connection lost before the reply")
    with pytest.raises(Unavailable):
        await relay.relay_once()
    assert await pending(db) == 1
    engine.after_publish = None
    restarted = Relay(db, engine)  # a new process: same database, same engine
    assert await restarted.relay_once() == 1
    assert await pending(db) == 0
    assert len(await log_of(engine, "notifications:alice")) == 1


async def test_a_new_database_is_not_mistaken_for_repeats(db: Database) -> None:
    """Outbox ids restart with a new database; the engine must still take its events."""
    engine = MemoryEngine()
    relay = Relay(db, engine)
    await Inbox(db, relay, max_event_bytes=65536).create(["alice"], Draft("t", "old"))
    await relay.relay_once()
    # What a new database looks like to the relay: no identity yet, ids from 1 again.
    await db.run_querystring(QueryString("DELETE FROM sinal_setting"))
    await db.run_querystring(QueryString("DELETE FROM sinal_outbox"))
    if isinstance(db, PostgresEngine):
        restart = "ALTER TABLE sinal_outbox ALTER COLUMN id RESTART WITH 1"
    else:
        restart = "DELETE FROM sqlite_sequence WHERE name = 'sinal_outbox'"
    await db.run_querystring(QueryString(restart))
    await enqueue(db, [OutboxEvent("notifications:alice", "notification.created", b'{"n":1}')])
    assert await Relay(db, engine).relay_once() == 1
    assert len(await log_of(engine, "notifications:alice")) == 2


async def test_relay_task_publishes_on_wake_and_stops(db: Database) -> None:
    engine = MemoryEngine()
    relay = Relay(db, engine, poll_s=60)  # only a wake-up can explain a quick delivery
    inbox = Inbox(db, relay, max_event_bytes=65536)
    relay.start()
    try:
        delivered = anyio.Event()
        await engine.connect(Delivered(delivered))
        await inbox.create(["alice"], Draft("t", "now"))
        with anyio.fail_after(5):
            await delivered.wait()
    finally:
        await relay.stop()
    assert len(await log_of(engine, "notifications:alice")) == 1


async def test_purge_deletes_old_and_expired_in_batches(db: Database) -> None:
    now = datetime.now(UTC)
    for i in range(5):
        await notifications.create("alice", "t", f"old {i}", now=now - timedelta(days=100))
    await notifications.create("alice", "t", "expired", expires_at=now - timedelta(seconds=1))
    kept, _ = await notifications.create("alice", "t", "kept")
    purge = Purge(db, keep_days=90, interval_s=3600, batch=2, pause_s=0)
    assert await purge.run_once(now) == 6
    assert [r.id for r in (await notifications.list_for_user("alice", state=None)).items] == [
        kept.id
    ]
    forever = Purge(db, keep_days=0, interval_s=3600)
    await notifications.create("bob", "t", "ancient", now=now - timedelta(days=10_000))
    assert await forever.run_once(now) == 0


class PoisonEngine(MemoryEngine):
    """Refuses one channel's events as a bug would (not an outage)."""

    async def publish_once(self, items: Sequence[Sequenced]) -> list[Event | None]:
        if any(item.channel == "notifications:poison" for item in items):
            raise ValueError("cannot encode")
        return await super().publish_once(items)


async def test_an_event_the_engine_refuses_is_dropped_not_blocking_the_rest(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    engine = PoisonEngine()
    relay = Relay(db, engine)
    inbox = Inbox(db, relay, max_event_bytes=65536)
    await inbox.create(["alice"], Draft("t", "before"))
    await inbox.create(["poison"], Draft("t", "bad"))
    await inbox.create(["alice"], Draft("t", "after"))
    assert await relay.relay_once() == 3
    assert await pending(db) == 0
    titles = [
        d["notification"]["title"] for d in payloads(await log_of(engine, "notifications:alice"))
    ]
    assert titles == ["before", "after"]
    assert "could not be published; dropped" in caplog.text


async def test_many_concurrent_retries_of_one_create_make_one_event(db: Database) -> None:
    """More retries at once than the pool has connections: each finds the first row on its
    own connection, none waits for a second one."""
    engine = MemoryEngine()
    relay = Relay(db, engine)
    inbox = Inbox(db, relay, max_event_bytes=65536)
    results: list[bool] = []

    async def retry() -> None:
        [(_, created)] = await inbox.create(
            ["alice"], Draft("t", "once"), producer="p", idempotency_key="k"
        )
        results.append(created)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            for _ in range(50):
                group.start_soon(retry)
    assert sorted(results) == [False] * 49 + [True]
    while await relay.relay_once():
        pass
    assert len(await log_of(engine, "notifications:alice")) == 1


async def test_the_backlog_dates_its_oldest_row(db: Database) -> None:
    """For `/metrics` and the alerts: how many rows wait, and since when."""
    assert await backlog(db) == (0, None)
    before = datetime.now(UTC).timestamp()
    await enqueue(db, [OutboxEvent("c", "t.a", b"{}"), OutboxEvent("c", "t.b", b"{}")])
    count, oldest = await backlog(db)
    assert count == 2
    assert oldest is not None
    assert before - 1 <= oldest <= datetime.now(UTC).timestamp() + 1
