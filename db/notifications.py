"""Notification queries. Every one takes the user and touches only that user's rows.

States: *unread* (neither read nor dismissed), *read* (read, not dismissed), *dismissed*.
Expired rows (`expires_at` passed) are left out of lists and counts until the purge deletes them.
Tables must be bound to an engine first (`db.engine.open_engine` / `bind`).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from piccolo.columns.combination import And, Or, Where
from piccolo.querystring import QueryString

from db.tables import Notification, Severity
from streams.errors import BadRequest, Unprocessable

State = Literal["unread", "read", "dismissed"]
STATES: tuple[State, ...] = ("unread", "read", "dismissed")
MAX_LIMIT = 200
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class InvalidCursor(BadRequest):
    """A pagination cursor that this module did not produce; `field` is the API parameter
    that carried it."""


class IdempotencyMismatch(Unprocessable):
    """An idempotency key reused for a different notification (not a retry of the first)."""

    def __init__(self) -> None:
        super().__init__(
            "this Idempotency-Key was used for a different notification", field="Idempotency-Key"
        )


@dataclass(frozen=True, slots=True)
class Record:
    id: uuid.UUID
    user: str
    type: str
    title: str
    body: str
    data: Any
    severity: str
    link: str | None
    created: datetime
    read_at: datetime | None
    dismissed_at: datetime | None
    expires_at: datetime | None

    @property
    def state(self) -> State:
        if self.dismissed_at is not None:
            return "dismissed"
        return "unread" if self.read_at is None else "read"

    @property
    def cursor(self) -> str:
        return encode_cursor(self.created, self.id)


@dataclass(frozen=True, slots=True)
class Draft:
    """What a producer asks for; the same draft may go to many users."""

    type: str
    title: str
    body: str = ""
    data: Any = None
    severity: Severity | str = Severity.info
    link: str | None = None
    expires_at: datetime | None = None

    def matches(self, record: Record) -> bool:
        """Whether `record` is what this draft creates (a retry, not a reused key)."""
        return (self.type, self.title, self.body, {} if self.data is None else self.data) == (
            record.type,
            record.title,
            record.body,
            record.data,
        ) and (Severity(self.severity).value, self.link, self.expires_at) == (
            record.severity,
            record.link,
            record.expires_at,
        )


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Record]
    next_cursor: str | None  # None: no older rows


def new_id(now: datetime | None = None) -> uuid.UUID:
    """A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then random bits."""
    ms = int((time.time() if now is None else now.timestamp()) * 1000) & ((1 << 48) - 1)
    rand = int.from_bytes(os.urandom(10), "big")
    value = (
        (ms << 80) | (0x7 << 76) | ((rand >> 68) << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
    )
    return uuid.UUID(int=value)


def encode_cursor(created: datetime, id: uuid.UUID) -> str:
    """Opaque, URL-safe, versioned: `v1.` + base64url of microseconds and the id's 16 bytes."""
    micros = round(created.timestamp() * 1_000_000)
    raw = micros.to_bytes(8, "big", signed=True) + id.bytes
    return "v1." + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str, field: str = "cursor") -> tuple[datetime, uuid.UUID]:
    version, _, payload = text.partition(".")
    try:
        if version != "v1":
            raise ValueError("unknown version")
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        if len(raw) != 24:
            raise ValueError("wrong length")
        micros = int.from_bytes(raw[:8], "big", signed=True)
        created = _EPOCH + timedelta(microseconds=micros)
        return created, uuid.UUID(bytes=raw[8:])
    except (ValueError, binascii.Error, OverflowError) as error:
        raise InvalidCursor(f"invalid cursor: {error}", field=field) from None


_COLUMNS = (
    Notification.id,
    Notification.user_id,
    Notification.type,
    Notification.title,
    Notification.body,
    Notification.data,
    Notification.severity,
    Notification.link,
    Notification.created,
    Notification.read_at,
    Notification.dismissed_at,
    Notification.expires_at,
)


_INSERTED = (
    "id", "user_id", "type", "title", "body", "data", "severity", "link", "created", "expires_at",
    "producer", "idempotency_key",
)  # fmt: skip


def _uuid(value: uuid.UUID | str) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)


def _record(row: Mapping[str, Any]) -> Record:
    values = dict(row)
    values["user"] = values.pop("user_id")
    values["id"] = _uuid(values["id"])
    values["data"] = (
        json.loads(values["data"]) if isinstance(values["data"], str) else values["data"]
    )
    return Record(**values)


def _now(now: datetime | None) -> datetime:
    # Microseconds kept: PostgreSQL stores them, and the cursor compares exactly.
    return datetime.now(UTC) if now is None else _aware(now, "now")


def _aware(value: datetime, name: str) -> datetime:
    # SQLite stores timestamps as text: a naive one would compare as if it were UTC.
    if value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value


def _live(now: datetime) -> Or:
    return Or(Notification.expires_at.is_null(), Notification.expires_at > now)


async def create(
    user: str,
    type: str,
    title: str,
    *,
    body: str = "",
    data: Any = None,
    severity: Severity | str = Severity.info,
    link: str | None = None,
    expires_at: datetime | None = None,
    producer: str | None = None,
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> tuple[Record, bool]:
    """One notification for one user; see `create_many`."""
    draft = Draft(type, title, body, data, severity, link, expires_at)
    [result] = await create_many(
        [user], draft, producer=producer, idempotency_key=idempotency_key, now=now
    )
    return result


async def create_many(
    users: Iterable[str],
    draft: Draft,
    *,
    producer: str | None = None,
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> list[tuple[Record, bool]]:
    """Insert `draft` for each user (duplicates collapse): `(record, True)` per new row.

    With an `idempotency_key` (and its `producer`), a retry gets the rows the first call
    created, as `(existing, False)`; the unique index on (producer, key, user) decides, so
    concurrent retries are safe on both databases. A key reused for a different draft raises
    IdempotencyMismatch.
    """
    check_idempotency(producer, idempotency_key)
    records = new_records(users, draft, now)
    if not records:
        return []
    values = [_inserted(record, producer, idempotency_key) for record in records]
    row = "(" + ", ".join("{}" for _ in _INSERTED) + ")"
    # Plain SQL: on the busiest write path, the query builder cost more than the insert.
    inserted = await _raw(
        f"INSERT INTO notification ({', '.join(_INSERTED)}) "
        f"VALUES {', '.join(row for _ in values)} "
        f"ON CONFLICT DO NOTHING RETURNING id",
        *(value for one in values for value in one),
    )
    return await with_replays(records, {_uuid(row["id"]) for row in inserted}, draft,
                              producer, idempotency_key)  # fmt: skip


def check_idempotency(producer: str | None, idempotency_key: str | None) -> None:
    if (producer is None) != (idempotency_key is None):
        raise ValueError("producer and idempotency_key go together")


def new_records(users: Iterable[str], draft: Draft, now: datetime | None = None) -> list[Record]:
    """The rows `draft` makes for `users` (duplicates collapse), as they will be stored."""
    created = _now(now)
    return [
        Record(
            id=new_id(created),
            user=user,
            type=draft.type,
            title=draft.title,
            body=draft.body,
            data={} if draft.data is None else draft.data,
            severity=Severity(draft.severity).value,
            link=draft.link,
            created=created,
            read_at=None,
            dismissed_at=None,
            expires_at=None if draft.expires_at is None else _aware(draft.expires_at, "expires_at"),
        )
        for user in dict.fromkeys(users)
    ]


def _inserted(record: Record, producer: str | None, key: str | None) -> tuple[Any, ...]:
    """`record`'s values for the `_INSERTED` columns."""
    return (
        record.id, record.user, record.type, record.title, record.body, json.dumps(record.data),
        record.severity, record.link, record.created, record.expires_at, producer, key,
    )  # fmt: skip


Fetch = Callable[..., Awaitable[Sequence[Mapping[str, Any]]]]
"""Runs SQL with `{}` placeholders and its arguments; returns the rows."""


async def with_replays(
    records: list[Record],
    inserted: set[uuid.UUID],
    draft: Draft,
    producer: str | None,
    idempotency_key: str | None,
    fetch: Fetch | None = None,
) -> list[tuple[Record, bool]]:
    """`(record, True)` for each inserted record; for the others, the row an earlier call
    with the same idempotency key created, `(existing, False)`.

    `fetch` runs the lookup on the caller's connection (default: the bound engine's): a caller
    that holds a pooled connection in a transaction must not wait for a second one.
    """
    missing = [record.user for record in records if record.id not in inserted]
    replayed: dict[str, Record] = {}
    if missing:
        if idempotency_key is None:  # the conflict was not on the key: nothing else may clash
            raise RuntimeError("notification insert ignored without an idempotency key")
        columns = ", ".join(column._meta.db_column_name for column in _COLUMNS)
        marks = ", ".join("{}" for _ in missing)
        existing = await (fetch or _raw)(
            f"SELECT {columns} FROM notification WHERE producer = {{}} "
            f"AND idempotency_key = {{}} AND user_id IN ({marks})",
            producer,
            idempotency_key,
            *missing,
        )
        for record in map(_record, existing):
            if not draft.matches(record):
                raise IdempotencyMismatch()
            replayed[record.user] = record
    return [
        (record, True) if record.id in inserted else (replayed[record.user], False)
        for record in records
    ]


async def get_for_user(user: str, id: uuid.UUID) -> Record | None:
    row = (
        await Notification.select(*_COLUMNS)
        .where((Notification.user_id == user) & (Notification.id == id))
        .first()
        .run()
    )
    return None if row is None else _record(row)


def _state_filter(state: State | None) -> Where | And | None:
    if state is None:
        return Notification.dismissed_at.is_null()
    if state == "unread":
        return Notification.read_at.is_null() & Notification.dismissed_at.is_null()
    if state == "read":
        return Notification.read_at.is_not_null() & Notification.dismissed_at.is_null()
    if state == "dismissed":
        return Notification.dismissed_at.is_not_null()
    raise ValueError(f"state must be one of {', '.join(STATES)}")


async def list_for_user(
    user: str,
    state: State | None = None,
    type: str | None = None,
    since: datetime | None = None,
    before_cursor: str | None = None,
    severity: Severity | str | None = None,
    limit: int = 50,
    *,
    now: datetime | None = None,
) -> Page:
    """A page of `user`'s notifications, newest first.

    `state=None` is the inbox: everything not dismissed. `since` is inclusive (offline
    recovery re-fetches from its last seen time and drops ids it has). `before_cursor` is the
    previous page's `next_cursor`; paging on (created, id) stays stable while newer rows arrive.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
    query = Notification.select(*_COLUMNS).where(Notification.user_id == user, _live(_now(now)))
    state_filter = _state_filter(state)
    if state_filter is not None:
        query = query.where(state_filter)
    if type is not None:
        query = query.where(Notification.type == type)
    if severity is not None:
        query = query.where(Notification.severity == Severity(severity).value)
    if since is not None:
        query = query.where(Notification.created >= _aware(since, "since"))
    if before_cursor is not None:
        created, id = decode_cursor(before_cursor)
        query = query.where(
            (Notification.created < created)
            | ((Notification.created == created) & (Notification.id < id))
        )
    rows = (
        await query.order_by(Notification.created, Notification.id, ascending=False)
        .limit(limit + 1)
        .run()
    )
    items = [_record(row) for row in rows[:limit]]
    return Page(items, items[-1].cursor if len(rows) > limit else None)


async def unread_counts(users: Iterable[str], *, now: datetime | None = None) -> dict[str, int]:
    """`unread_count` for several users in one query."""
    wanted = list(dict.fromkeys(users))
    if not wanted:
        return {}
    marks = ", ".join("{}" for _ in wanted)
    rows = await _raw(
        f"SELECT user_id, count(*) AS n FROM notification WHERE user_id IN ({marks}) "
        f"AND {_UNREAD_AND_LIVE} GROUP BY user_id",
        *wanted,
        _now(now),
    )
    counts = dict.fromkeys(wanted, 0)
    counts.update((row["user_id"], row["n"]) for row in rows)
    return counts


async def unread_count(user: str, *, now: datetime | None = None) -> int:
    # The API's most frequent query: plain SQL, as building it with the query builder cost
    # more than running it.
    rows = await _raw(
        f"SELECT count(*) AS n FROM notification WHERE user_id = {{}} AND {_UNREAD_AND_LIVE}",
        user,
        _now(now),
    )
    return int(rows[0]["n"])


# Served by the partial index `notification_user_unread`; the one parameter is "now".
_UNREAD_AND_LIVE = (
    "read_at IS NULL AND dismissed_at IS NULL AND (expires_at IS NULL OR expires_at > {})"
)


async def _raw(sql: str, *args: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = await Notification._meta.db.run_querystring(
        QueryString(sql, *args)
    )
    return rows


async def _change(
    user: str, ids: Iterable[uuid.UUID], values: Mapping[Any, Any], unchanged: Where
) -> list[uuid.UUID]:
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return []
    rows = (
        await Notification.update(dict(values))
        .where(Notification.user_id == user, Notification.id.is_in(wanted), unchanged)
        .returning(Notification.id)
        .run()
    )
    return [_uuid(row["id"]) for row in rows]


async def mark_read(
    user: str, ids: Iterable[uuid.UUID], *, now: datetime | None = None
) -> list[uuid.UUID]:
    """Mark `user`'s `ids` read; return those that were unread (others' ids are ignored)."""
    return await _change(
        user, ids, {Notification.read_at: _now(now)}, Notification.read_at.is_null()
    )


async def mark_unread(user: str, ids: Iterable[uuid.UUID]) -> list[uuid.UUID]:
    return await _change(
        user, ids, {Notification.read_at: None}, Notification.read_at.is_not_null()
    )


async def dismiss(
    user: str, ids: Iterable[uuid.UUID], *, now: datetime | None = None
) -> list[uuid.UUID]:
    return await _change(
        user, ids, {Notification.dismissed_at: _now(now)}, Notification.dismissed_at.is_null()
    )


async def read_all(
    user: str,
    up_to: datetime | None = None,
    *,
    up_to_cursor: str | None = None,
    now: datetime | None = None,
) -> int:
    """Mark every unread notification of `user` up to a bound read; return how many.

    The bound is the newest notification the client has shown: its `created` time
    (inclusive) or, exactly, its history cursor. One that arrives during the click stays unread.
    """
    query = Notification.update({Notification.read_at: _now(now)}).where(
        Notification.user_id == user,
        Notification.read_at.is_null(),
        Notification.dismissed_at.is_null(),
    )
    if up_to is not None:
        query = query.where(Notification.created <= _aware(up_to, "up_to"))
    if up_to_cursor is not None:
        created, id = decode_cursor(up_to_cursor, field="before")  # read-all's `before`
        query = query.where(
            (Notification.created < created)
            | ((Notification.created == created) & (Notification.id <= id))
        )
    rows = await query.returning(Notification.id).run()
    return len(rows)


async def purge(older_than: datetime, *, now: datetime | None = None, batch: int = 1000) -> int:
    """Delete up to `batch` notifications created before `older_than` or expired; how many.

    Ids are time-ordered (UUIDv7), so "created before" is a primary-key range, and expiry has
    its own partial index: each batch is a short indexed delete, whatever the table's size.
    """
    boundary = uuid.UUID(int=_ms(older_than) << 80)  # the smallest id of that millisecond
    # Each kind on its own index, oldest first: an OR of the two let the planner pick a
    # sequential scan.
    rows = (
        await Notification.select(Notification.id)
        .where(Notification.id < boundary)
        .order_by(Notification.id)
        .limit(batch)
        .run()
    )
    if len(rows) < batch:
        rows += (
            await Notification.select(Notification.id)
            .where(Notification.expires_at < _now(now))
            .order_by(Notification.expires_at)
            .limit(batch - len(rows))
            .run()
        )
    # Ids first, then a delete by primary key: with the select as a subquery, PostgreSQL may
    # plan the delete as a join over the whole table.
    doomed = list({row["id"] for row in rows})
    if doomed:
        await Notification.delete().where(Notification.id.is_in(doomed)).run()
    return len(doomed)


def _ms(value: datetime) -> int:
    return int(_aware(value, "time").timestamp() * 1000)
