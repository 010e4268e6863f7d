"""The transactional outbox: events written with the change they describe, relayed afterwards.

A state change and its event commit in one database transaction (`enqueue`); the `Relay`
publishes committed events to the stream engine and deletes them. When the engine is down
(Redis stopped) events wait in the table, in order, and go out when it is back.

Exactly once per cursor: the relay may publish an event and crash before deleting it, or lose
the reply of a publish that happened. Each event is published with `Engine.publish_once`, keyed
by the outbox id and this database's identity, so a repeat is dropped by the engine instead of
appearing twice in the stream.

Order: events of one channel must reach it in outbox id order. The writers of a channel take
turns (one user's changes are serialised by `db.inbox`), so a channel's ids commit in order;
and on PostgreSQL only one relay at a time works, whatever the number of processes.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from piccolo.engine.postgres import PostgresEngine
from piccolo.querystring import QueryString

from db.engine import DATABASE_ERRORS, Database, note_database_error
from streams.engine import Engine, Sequenced
from streams.errors import Unavailable
from streams.tasks import finish_or_cancel

log = logging.getLogger("sinal.outbox")

# Any fixed number, distinct from the migration lock: the relay of one process at a time.
_RELAY_LOCK = 0x5167_6E61_6C01
_SOURCE_SETTING = "outbox_source"
# Failures the relay waits out: the engine or the database being down.
_TRANSIENT: tuple[type[Exception], ...] = (Unavailable, *DATABASE_ERRORS)


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    channel: str
    type: str
    data_json: bytes


async def enqueue(database: Database, events: Sequence[OutboxEvent]) -> None:
    """Write `events` in the caller's transaction; they are published once it commits."""
    if not events:
        return
    if isinstance(database, PostgresEngine):  # one statement text whatever the count
        await database.run_querystring(
            QueryString(
                "INSERT INTO sinal_outbox (channel, type, data) "
                "SELECT * FROM unnest({}::text[], {}::text[], {}::text[])",
                [e.channel for e in events],
                [e.type for e in events],
                [e.data_json.decode() for e in events],
            )
        )
        return
    values = ", ".join("({}, {}, {})" for _ in events)
    args = [value for e in events for value in (e.channel, e.type, e.data_json.decode())]
    await database.run_querystring(
        QueryString(f"INSERT INTO sinal_outbox (channel, type, data) VALUES {values}", *args)
    )


async def pending(database: Database) -> int:
    """How many events wait to be published."""
    return (await backlog(database))[0]


async def backlog(database: Database) -> tuple[int, float | None]:
    """How many events wait to be published, and when the oldest was written (epoch seconds;
    None when none waits)."""
    rows = await database.run_querystring(
        QueryString("SELECT count(*) AS n, min(created_ms) AS oldest FROM sinal_outbox")
    )
    oldest = rows[0]["oldest"]
    return int(rows[0]["n"]), None if oldest is None else int(oldest) / 1000


class Relay:
    """Publishes committed outbox events; one per process, owned by the app's lifespan.

    `wake()` after a commit sends its events at once; otherwise the table is polled every
    `poll_s` (events written by other processes, or left over from a crash). While the engine
    or the database is down the relay retries with backoff, keeping the order.
    """

    def __init__(
        self,
        database: Database,
        engine: Engine,
        *,
        batch: int = 2000,
        poll_s: float = 1.0,
        max_backoff_s: float = 5.0,
    ) -> None:
        self.database = database
        self.engine = engine
        self.batch = batch
        self.poll_s = poll_s
        self.max_backoff_s = max_backoff_s
        self.relayed = 0
        self._source: str | None = None
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def start(self) -> None:
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="sinal-outbox-relay")

    async def stop(self, timeout_s: float = 5.0) -> None:
        if self._task is not None:
            await finish_or_cancel(self._task, self._stopping, timeout_s)
            self._task = None

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        backoff = 0.05
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                moved = await self.relay_once()
            except _TRANSIENT as error:
                if isinstance(error, DATABASE_ERRORS):
                    note_database_error()
                if not self._failing:
                    log.warning("outbox relay paused, will retry: %s", error)
                    self._failing = True
                await self._pause(backoff, self._stopping)  # commits do not hurry a retry
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            if self._failing:
                log.info("outbox relay resumed")
                self._failing = False
            backoff = 0.05
            if moved < 0:  # another process's relay holds the turn: look again soon
                await self._pause(0.02, self._stopping)
            elif moved < self.batch:
                await self._pause(self.poll_s, self._wake, self._stopping)

    async def _pause(self, seconds: float, *until: asyncio.Event) -> None:
        """Wait `seconds`, or less if one of `until` is set."""
        waits = [asyncio.ensure_future(event.wait()) for event in until]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    async def relay_once(self) -> int:
        """Publish and delete up to one batch; the count, or -1 if another relay has the turn.

        Raises Unavailable when the engine failed; what went out before is deleted all the same.
        """
        source = await self._source_id()
        if not isinstance(self.database, PostgresEngine):
            # SQLite serves one process: no turn to take, and no write lock held while
            # publishing (it would stall every writer for as long as the engine takes).
            moved, failure = await self._move(source)
        else:
            async with self.database.transaction():
                [row] = await self.database.run_querystring(
                    QueryString("SELECT pg_try_advisory_xact_lock({}) AS turn", _RELAY_LOCK)
                )
                if not row["turn"]:
                    return -1
                moved, failure = await self._move(source)
        if failure is not None:
            raise failure
        return moved

    async def _move(self, source: str) -> tuple[int, Unavailable | None]:
        rows = await self.database.run_querystring(
            QueryString(
                "SELECT id, channel, type, data FROM sinal_outbox ORDER BY id LIMIT {}",
                self.batch,
            )
        )
        items = [
            Sequenced(row["channel"], row["type"], row["data"].encode(), source, int(row["id"]))
            for row in rows
        ]
        failure = None
        try:
            await self.engine.publish_once(items)  # one round trip for the batch
            published = items
        except Unavailable as error:
            failure, published = error, []
        except Exception:
            published, failure = await self._one_by_one(items)
        if published:
            ids = [item.sequence for item in published]
            if isinstance(self.database, PostgresEngine):  # one statement text for any count
                delete = QueryString("DELETE FROM sinal_outbox WHERE id = ANY({}::bigint[])", ids)
            else:
                marks = ", ".join("{}" for _ in ids)
                delete = QueryString(f"DELETE FROM sinal_outbox WHERE id IN ({marks})", *ids)
            await self.database.run_querystring(delete)
            self.relayed += len(published)
        return len(published), failure

    async def _one_by_one(
        self, items: list[Sequenced]
    ) -> tuple[list[Sequenced], Unavailable | None]:
        """A batch failed for another reason than an outage: find the events at fault.

        Events are validated before they are written, so this is a bug; holding the outbox back
        for it would stop every user's notifications, so the faulty event is logged and dropped.
        """
        done: list[Sequenced] = []
        for item in items:
            try:
                await self.engine.publish_once([item])
            except Unavailable as error:
                return done, error
            except Exception:
                log.exception("outbox event %s for %s could not be published; dropped",
                              item.type, item.channel)  # fmt: skip
            done.append(item)
        return done, None

    async def _source_id(self) -> str:
        """This database's identity: sequences restart with a new database, and must not be
        taken for repeats of the old one's."""
        if self._source is None:
            await self.database.run_querystring(
                QueryString(
                    "INSERT INTO sinal_setting (name, value) VALUES ({}, {}) "
                    "ON CONFLICT (name) DO NOTHING",
                    _SOURCE_SETTING,
                    secrets.token_hex(8),
                )
            )
            [row] = await self.database.run_querystring(
                QueryString("SELECT value FROM sinal_setting WHERE name = {}", _SOURCE_SETTING)
            )
            self._source = str(row["value"])
        return self._source
