"""The admin audit log: who did what to whom, from which node, and what came of it.

Append-only: there is an insert (`record`) and a delete of old rows (`purge`), never an update,
so an entry reads as it was written. `record` runs on the caller's connection: an admin act
written in `async with write_transaction(database)` commits with its audit row or not at all.

The list is newest first, keyset-paginated on (at, id) like notification history, with the
same opaque cursor (`db.notifications.encode_cursor`); ids are time-ordered (UUIDv7).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from piccolo.querystring import QueryString

from db.engine import Database
from db.notifications import decode_cursor, encode_cursor, new_id
from db.times import aware

MAX_LIMIT = 200
_COLUMNS = "id, at, actor, action, target, params, result, node, request_id"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: uuid.UUID
    at: datetime
    actor: str
    action: str
    target: str
    params: dict[str, Any]
    result: dict[str, Any]
    node: str
    request_id: str | None

    @property
    def cursor(self) -> str:
        return encode_cursor(self.at, self.id)

    def view(self) -> dict[str, Any]:
        """The API's JSON object; times in ISO 8601 with `Z`, as every view encodes them."""
        view: dict[str, Any] = msgspec.to_builtins(
            {
                "id": self.id,
                "at": self.at.astimezone(UTC),
                "actor": self.actor,
                "action": self.action,
                "target": self.target,
                "params": self.params,
                "result": self.result,
                "node": self.node,
                "request_id": self.request_id,
            }
        )
        return view


async def record(
    database: Database,
    *,
    actor: str,
    action: str,
    target: str,
    params: Mapping[str, Any],
    result: Mapping[str, Any],
    node: str,
    request_id: str | None = None,
    at: datetime | None = None,
) -> AuditEntry:
    """Append one entry: a single INSERT, in the caller's transaction when there is one (it
    never opens its own, so the act and its entry commit together)."""
    when = datetime.now(UTC) if at is None else aware(at, "at")
    entry = AuditEntry(
        id=new_id(when), at=when, actor=actor, action=action, target=target,
        params=dict(params), result=dict(result), node=node, request_id=request_id,
    )  # fmt: skip
    await _run(
        database,
        f"INSERT INTO sinal_audit ({_COLUMNS}) VALUES ({{}}, {{}}, {{}}, {{}}, {{}}, {{}}, {{}}, "
        "{}, {})",
        entry.id, entry.at, actor, action, target, json.dumps(entry.params),
        json.dumps(entry.result), node, request_id,
    )  # fmt: skip
    return entry


async def list_entries(
    database: Database,
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    since: datetime | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[AuditEntry], str | None]:
    """Entries newest first, and the cursor of the next page (None: no older entries).

    Filters are exact matches; `since` is inclusive. `cursor` is a previous page's; one this
    module did not produce raises `db.notifications.InvalidCursor` naming the field `cursor`.
    """
    limit = min(max(limit, 1), MAX_LIMIT)  # the API validates; this only bounds the query
    where: list[str] = []
    args: list[Any] = []
    for clause, value in (
        ("actor = {}", actor),
        ("action = {}", action),
        ("target = {}", target),
        ("at >= {}", None if since is None else aware(since, "since")),
    ):
        if value is not None:
            where.append(clause)
            args.append(value)
    if cursor is not None:
        at, id = decode_cursor(cursor, field="cursor")
        where.append("(at < {} OR (at = {} AND id < {}))")
        args += [at, at, id]
    condition = f"WHERE {' AND '.join(where)} " if where else ""
    rows = await _run(
        database,
        f"SELECT {_COLUMNS} FROM sinal_audit {condition}ORDER BY at DESC, id DESC LIMIT {{}}",
        *args,
        limit + 1,
    )
    entries = [_entry(row) for row in rows[:limit]]
    return entries, entries[-1].cursor if len(rows) > limit else None


async def purge(database: Database, older_than: datetime, *, batch: int = 1000) -> int:
    """Delete every entry older than `older_than`, `batch` rows per statement; how many."""
    total = 0
    while True:
        deleted = await purge_batch(database, older_than, batch)
        total += deleted
        if deleted < batch:
            return total


async def purge_batch(database: Database, older_than: datetime, batch: int) -> int:
    """Delete up to `batch` entries older than `older_than`, oldest first; how many.

    Ids first, then a delete by primary key (as `db.notifications.purge`): each statement is
    short, and between two of them other writers get their turn (`db.retention` pauses there).
    """
    rows = await _run(
        database,
        "SELECT id FROM sinal_audit WHERE at < {} ORDER BY at LIMIT {}",
        aware(older_than, "older_than"),
        batch,
    )
    if rows:
        marks = ", ".join("{}" for _ in rows)
        await _run(
            database, f"DELETE FROM sinal_audit WHERE id IN ({marks})", *(row["id"] for row in rows)
        )
    return len(rows)


def _entry(row: Mapping[str, Any]) -> AuditEntry:
    values = dict(row)
    if not isinstance(values["id"], uuid.UUID):
        values["id"] = uuid.UUID(values["id"])
    values["params"] = json.loads(values["params"])
    values["result"] = json.loads(values["result"])
    return AuditEntry(**values)


async def _run(database: Database, sql: str, *args: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = await database.run_querystring(QueryString(sql, *args))
    return rows
