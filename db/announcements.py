"""Announcements: an admin's message to every user, shown live and to whoever arrives later.

`create` stores the announcement and, in the same transaction, its `broadcast` event in the
outbox (`db.outbox`): it goes out on the `broadcast` channel, which every stream holds, exactly
when the row is committed. A client that connects later asks for the `active` ones. Expired
announcements are left out, then deleted by the retention purge.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from msgspec import Meta
from piccolo.querystring import QueryString

from db.engine import Database, write_transaction
from db.notifications import new_id
from db.outbox import OutboxEvent, enqueue
from db.tables import Severity
from db.times import Time, aware, now_or
from streams.channels import BROADCAST

EVENT_TYPE = "broadcast"
_COLUMNS = "id, title, body, severity, link, created, expires_at, by_user"


class AnnouncementView(msgspec.Struct):
    """An administrator's announcement to every user, as users see it."""

    id: Annotated[uuid.UUID, Meta(description="The announcement's id.")]
    title: Annotated[str, Meta(description="Its title.")]
    body: Annotated[str, Meta(description="Its text, possibly empty.")]
    severity: Annotated[Severity, Meta(description="How the pages show it.")]
    link: Annotated[str | None, Meta(description="Where it leads, if anywhere.")]
    created: Annotated[Time, Meta(description="When it was made, ISO 8601, UTC.")]
    expires_at: Annotated[
        Time | None, Meta(description="When the pages stop showing it; null: never.")
    ]


class Broadcast(msgspec.Struct):
    """`broadcast`: an administrator announced something to every user."""

    announcement: Annotated[AnnouncementView, Meta(description="The announcement.")]


@dataclass(frozen=True, slots=True)
class Announcement:
    id: uuid.UUID
    title: str
    body: str
    severity: str
    link: str | None
    created: datetime
    expires_at: datetime | None
    by: str

    def shown(self) -> AnnouncementView:
        """What users see (not who wrote it); times in UTC, as every view."""
        return AnnouncementView(
            id=self.id,
            title=self.title,
            body=self.body,
            severity=Severity(self.severity),
            link=self.link,
            created=self.created.astimezone(UTC),
            expires_at=None if self.expires_at is None else self.expires_at.astimezone(UTC),
        )

    def view(self) -> dict[str, Any]:
        """`shown()` as JSON values."""
        view: dict[str, Any] = msgspec.to_builtins(self.shown())
        return view


async def create(
    database: Database,
    *,
    title: str,
    body: str = "",
    severity: str = "info",
    link: str | None = None,
    expires_at: datetime | None = None,
    by: str,
    now: datetime | None = None,
) -> Announcement:
    """Store an announcement and enqueue its `broadcast` event, in one transaction: the
    caller's when there is one (an admin act and its audit entry), else one of its own.

    The caller wakes the outbox relay after the commit.
    """
    created = now_or(now)
    expires = None if expires_at is None else aware(expires_at, "expires_at")
    announcement = Announcement(
        id=new_id(created), title=title, body=body, severity=Severity(severity).value, link=link,
        created=created, expires_at=expires, by=by,
    )  # fmt: skip
    event = OutboxEvent(BROADCAST, EVENT_TYPE, msgspec.json.encode(Broadcast(announcement.shown())))
    async with write_transaction(database):  # joins the caller's transaction if one is open
        await _run(
            database,
            f"INSERT INTO sinal_announcement ({_COLUMNS}) VALUES ({', '.join(['{}'] * 8)})",
            announcement.id, title, body, announcement.severity, link, created,
            announcement.expires_at, by,
        )  # fmt: skip
        await enqueue(database, [event])
    return announcement


async def active(
    database: Database, now: datetime | None = None, limit: int = 20
) -> list[Announcement]:
    """The announcements not expired, newest first."""
    rows = await _run(
        database,
        f"SELECT {_COLUMNS} FROM sinal_announcement WHERE expires_at IS NULL OR expires_at > {{}} "
        "ORDER BY created DESC, id DESC LIMIT {}",
        now_or(now),
        max(limit, 1),
    )
    return [_announcement(row) for row in rows]


async def purge(database: Database, now: datetime | None = None) -> int:
    """Delete the expired announcements; how many."""
    rows = await _run(
        database,
        "DELETE FROM sinal_announcement WHERE expires_at <= {} RETURNING id",
        now_or(now),
    )
    return len(rows)


def _announcement(row: Mapping[str, Any]) -> Announcement:
    values = dict(row)
    values["by"] = values.pop("by_user")
    if not isinstance(values["id"], uuid.UUID):
        values["id"] = uuid.UUID(values["id"])
    return Announcement(**values)


async def _run(database: Database, sql: str, *args: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = await database.run_querystring(QueryString(sql, *args))
    return rows
