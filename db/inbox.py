"""Notification changes, each committed with its event and the user's new unread count.

Every change (create, read, unread, dismiss, read-all) runs in one write transaction that also
writes its `notification.*` event to the outbox (`db.outbox`); the relay publishes it to the
user's `notifications:<user>` channel. Each event carries `unread`, the count right after the
change, so every open tab and device converges without refetching.

For that count to be right, one user's changes take turns: on PostgreSQL a transaction-scoped
advisory lock per user (taken before anything is written, so a user's outbox ids also commit in
order); SQLite's `BEGIN IMMEDIATE` already lets one writer in at a time.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import asyncpg  # type: ignore[import-untyped]
import msgspec
from msgspec import Meta
from piccolo.engine.postgres import PostgresEngine
from piccolo.querystring import QueryString

from db import notifications
from db.engine import Database, write_transaction
from db.notifications import Draft, Record, State
from db.outbox import OutboxEvent, Relay, enqueue
from db.tables import Severity
from db.times import Time
from streams.channels import notifications_of
from streams.errors import PayloadTooLarge


class NotificationView(msgspec.Struct):
    """A notification, as the API and the events show it."""

    id: Annotated[str, Meta(description="The notification's id, a time-ordered UUID.")]
    user: Annotated[str, Meta(description="The user it is for.")]
    type: Annotated[
        str,
        Meta(
            description="What it is about, named by its producer (`report.ready`; Sinal's "
            "own: `execution.succeeded`, `.failed`, `.cancelled`, and `announcement`)."
        ),
    ]
    title: Annotated[str, Meta(description="Its title, 1 to 512 characters.")]
    body: Annotated[str, Meta(description="Its text, possibly empty.")]
    data: Annotated[
        dict[str, Any], Meta(description="The producer's data, for the application's use.")
    ]
    severity: Annotated[Severity, Meta(description="How the pages show it.")]
    link: Annotated[
        str | None, Meta(description="Where it leads: an absolute or root-relative URL.")
    ]
    created: Annotated[Time, Meta(description="When it was created, ISO 8601, UTC.")]
    read_at: Annotated[Time | None, Meta(description="When it was marked read; null while unread.")]
    dismissed_at: Annotated[
        Time | None, Meta(description="When it was dismissed; null if it was not.")
    ]
    expires_at: Annotated[
        Time | None, Meta(description="When it stops being shown and counted; null: never.")
    ]
    state: Annotated[State, Meta(description="`dismissed` if dismissed, else `read` or `unread`.")]
    cursor: Annotated[
        str,
        Meta(
            description="Its position in the user's history: the `before` bound of "
            "read-all, or a page boundary."
        ),
    ]

    @classmethod
    def of(cls, record: Record) -> NotificationView:
        return cls(
            id=str(record.id),
            user=record.user,
            type=record.type,
            title=record.title,
            body=record.body,
            data=record.data,
            severity=Severity(record.severity),
            link=record.link,
            created=record.created,
            read_at=record.read_at,
            dismissed_at=record.dismissed_at,
            expires_at=record.expires_at,
            state=record.state,
            cursor=record.cursor,
        )


Unread = Annotated[
    int, Meta(description="The user's unread count right after the change: set the badge to it.")
]


class NotificationCreated(msgspec.Struct):
    """`notification.created`: a notification for the user, and the new unread count."""

    notification: Annotated[NotificationView, Meta(description="The new notification.")]
    unread: Unread  # last: the PostgreSQL create path appends it to the encoded head


class NotificationsChanged(msgspec.Struct):
    """`notification.read`, `.unread` and `.dismissed`: which notifications changed, and the
    new unread count."""

    ids: Annotated[list[str], Meta(description="The ids of the notifications that changed.")]
    unread: Unread


class NotificationsReadAll(msgspec.Struct):
    """`notification.read_all`: every unread notification up to a bound was marked read."""

    marked: Annotated[int, Meta(description="How many notifications were marked read.")]
    before: Annotated[
        str | None,
        Meta(
            description="The bound asked for: a notification's `cursor` or an ISO 8601 time "
            "(those after it stay unread); null: none, every unread one was marked."
        ),
    ]
    unread: Unread


@dataclass(frozen=True, slots=True)
class Change:
    ids: list[uuid.UUID]
    unread: int


_encode = msgspec.json.Encoder().encode


class Inbox:
    """The writes of the notification API. Reads go straight to `db.notifications`.

    `database` must be the engine the tables are bound to (`db.engine.bind`): Piccolo runs a
    table's queries in a transaction only when it is opened on that same engine.
    """

    def __init__(self, database: Database, relay: Relay, *, max_event_bytes: int) -> None:
        self.database = database
        self.relay = relay
        self.max_event_bytes = max_event_bytes

    async def create(
        self,
        users: Iterable[str],
        draft: Draft,
        *,
        producer: str | None = None,
        idempotency_key: str | None = None,
    ) -> list[tuple[Record, bool]]:
        """`notifications.create_many`, publishing `notification.created` for each new row."""
        wanted = list(dict.fromkeys(users))
        if (
            isinstance(self.database, PostgresEngine)
            and self.database.pool is not None
            and not self.database.transaction_exists()  # else: part of the caller's
        ):
            return await self._create_on_postgres(
                self.database.pool, wanted, draft, producer, idempotency_key
            )
        async with write_transaction(self.database):
            await self._take_turns(wanted)
            results = await notifications.create_many(
                wanted, draft, producer=producer, idempotency_key=idempotency_key
            )
            fresh = [record for record, created in results if created]
            counts = await notifications.unread_counts(record.user for record in fresh)
            events = [
                self._event(
                    record.user,
                    "notification.created",
                    _created(record, counts[record.user]),
                )
                for record in fresh
            ]
            await enqueue(self.database, events)
        if fresh:
            self.relay.wake()
        return results

    async def _create_on_postgres(
        self,
        pool: asyncpg.Pool,
        users: list[str],
        draft: Draft,
        producer: str | None,
        idempotency_key: str | None,
    ) -> list[tuple[Record, bool]]:
        """`create` in three round trips instead of six: the busiest write of the service.

        1. BEGIN and the users' turns, in one simple query (the lock keys are integers).
        2. One statement inserts the notifications and, for each one inserted, its outbox
           event. The event is encoded here up to its count; the statement appends the user's
           unread count: its snapshot is taken after the turn was granted and does not hold
           the new row, hence the `+ 1` (`+ 0` for one that is already expired).
        3. COMMIT.
        """
        notifications.check_idempotency(producer, idempotency_key)
        records = notifications.new_records(users, draft)
        if not records:
            return []
        first = records[0]
        live = first.expires_at is None or first.expires_at > first.created
        heads = [self._event_head(record) for record in records]
        async with pool.acquire() as connection:
            await connection.execute(f"BEGIN; {_turns_sql(users)}")
            try:
                rows = await connection.fetch(
                    _CREATE_WITH_EVENTS,
                    [record.id for record in records],
                    [record.user for record in records],
                    first.type,
                    first.title,
                    first.body,
                    json.dumps(first.data),
                    first.severity,
                    first.link,
                    first.created,
                    first.expires_at,
                    producer,
                    idempotency_key,
                    heads,
                    1 if live else 0,
                )
                results = await notifications.with_replays(
                    records,
                    {row["id"] for row in rows},
                    draft,
                    producer,
                    idempotency_key,
                    functools.partial(_fetch, connection),
                )
            except BaseException:
                # If even this fails (a cancelled query), the pool rolls back on release.
                with contextlib.suppress(Exception):
                    await connection.execute("ROLLBACK")
                raise
            await connection.execute("COMMIT")
        if rows:
            self.relay.wake()
        return results

    def _event_head(self, record: Record) -> str:
        """The `notification.created` event of `record` without its count: `…"unread":`."""
        data = self._event(record.user, "notification.created", _created(record, 0)).data_json
        assert data.endswith(b'"unread":0}'), "`unread` must stay last in `NotificationCreated`"
        return data.removesuffix(b"0}").decode()

    async def mark_read(self, user: str, ids: Iterable[uuid.UUID]) -> Change:
        return await self._change(
            user, "notification.read", lambda: notifications.mark_read(user, ids)
        )

    async def mark_unread(self, user: str, ids: Iterable[uuid.UUID]) -> Change:
        return await self._change(
            user, "notification.unread", lambda: notifications.mark_unread(user, ids)
        )

    async def dismiss(self, user: str, ids: Iterable[uuid.UUID]) -> Change:
        return await self._change(
            user, "notification.dismissed", lambda: notifications.dismiss(user, ids)
        )

    async def read_all(
        self, user: str, *, before: datetime | None = None, before_cursor: str | None = None
    ) -> tuple[int, int]:
        """Mark unread notifications up to the bound read; `(marked, unread)`."""
        async with write_transaction(self.database):
            await self._take_turns([user])
            marked = await notifications.read_all(user, before, up_to_cursor=before_cursor)
            unread = await notifications.unread_count(user)
            if marked:
                bound = before_cursor or (None if before is None else before.isoformat())
                event = self._event(
                    user, "notification.read_all", NotificationsReadAll(marked, bound, unread)
                )
                await enqueue(self.database, [event])
        if marked:
            self.relay.wake()
        return marked, unread

    async def _change(
        self, user: str, type: str, apply: Callable[[], Awaitable[list[uuid.UUID]]]
    ) -> Change:
        async with write_transaction(self.database):
            await self._take_turns([user])
            changed = await apply()
            unread = await notifications.unread_count(user)
            if changed:
                ids = [str(id) for id in changed]
                await enqueue(
                    self.database, [self._event(user, type, NotificationsChanged(ids, unread))]
                )
        if changed:
            self.relay.wake()
        return Change(changed, unread)

    def _event(self, user: str, type: str, payload: msgspec.Struct) -> OutboxEvent:
        data = _encode(payload)
        if len(data) > self.max_event_bytes:
            raise PayloadTooLarge(
                f"the notification's event is {len(data)} bytes; the limit is "
                f"{self.max_event_bytes} (SINAL_MAX_PAYLOAD_BYTES)",
            )
        return OutboxEvent(notifications_of(user), type, data)

    async def _take_turns(self, users: list[str]) -> None:
        if isinstance(self.database, PostgresEngine) and users:
            await self.database.run_querystring(QueryString(_turns_sql(users)))


async def _fetch(connection: asyncpg.Connection, sql: str, *args: Any) -> list[Any]:
    """Run SQL with `{}` placeholders on a raw asyncpg connection."""
    query, values = QueryString(sql, *args).compile_string(engine_type="postgres")
    rows: list[Any] = await connection.fetch(query, *values)
    return rows


def _turns_sql(users: list[str]) -> str:
    """Take the users' transaction-scoped advisory locks (PostgreSQL), in key order, so that two
    multi-user creates never wait for each other in a cycle. The keys are integers computed
    here, so the statement needs no parameters and can follow a BEGIN in one query."""
    keys = sorted({_turn_key(user) for user in users})
    return "SELECT " + ", ".join(f"pg_advisory_xact_lock({key})" for key in keys)


def _turn_key(user: str) -> int:
    return int.from_bytes(hashlib.blake2b(user.encode(), digest_size=8).digest(), signed=True)


def _created(record: Record, unread: int) -> NotificationCreated:
    return NotificationCreated(NotificationView.of(record), unread)


# The notifications of `create` for $2 (users, with ids $1), and for each one inserted its
# outbox event: $13 (the encoded event up to its count) + the user's unread count + $14 + "}".
_CREATE_WITH_EVENTS = """
WITH inserted AS (
    INSERT INTO notification (id, user_id, type, title, body, data, severity, link, created,
                              expires_at, producer, idempotency_key)
    SELECT r.id, r.user_id, $3, $4, $5, $6::json, $7, $8, $9, $10, $11, $12
    FROM unnest($1::uuid[], $2::text[]) AS r(id, user_id)
    ON CONFLICT DO NOTHING
    RETURNING id, user_id
), events AS (
    INSERT INTO sinal_outbox (channel, type, data)
    SELECT 'notifications:' || i.user_id, 'notification.created',
           e.head || ((SELECT count(*) FROM notification n
                       WHERE n.user_id = i.user_id AND n.read_at IS NULL
                         AND n.dismissed_at IS NULL
                         AND (n.expires_at IS NULL OR n.expires_at > $9)) + $14)::text || '}'
    FROM inserted i JOIN unnest($1::uuid[], $13::text[]) AS e(id, head) ON e.id = i.id
)
SELECT id FROM inserted
"""
