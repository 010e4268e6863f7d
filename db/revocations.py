"""Token revocations: per user, the time before which that user's tokens are refused.

One row per user. A token carries its issue time (`iat`); revoking a user refuses every token
issued before `before`, which is how an admin ends a session that a token would otherwise renew.
The row is needed only until `expires_at`, when every token it covers has expired on its own;
the retention purge deletes it then. Revoking again keeps the later of each time, so a second
revocation never shortens or narrows the first, whichever order two admins' writes land in.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from piccolo.querystring import QueryString

from db.engine import Database
from db.times import aware, now_or

# `CASE`, not SQLite's two-argument max() or PostgreSQL's greatest(): the same text on both.
# SQLite compares the stored UTC text, which orders as the times do.
_REVOKE = """
    INSERT INTO sinal_revocation (user_id, revoked_before, expires_at, created, by_user)
    VALUES ({}, {}, {}, {}, {})
    ON CONFLICT (user_id) DO UPDATE SET
        revoked_before = CASE WHEN excluded.revoked_before > sinal_revocation.revoked_before
            THEN excluded.revoked_before ELSE sinal_revocation.revoked_before END,
        expires_at = CASE WHEN excluded.expires_at > sinal_revocation.expires_at
            THEN excluded.expires_at ELSE sinal_revocation.expires_at END,
        created = excluded.created,
        by_user = excluded.by_user
    RETURNING revoked_before
"""


async def revoke(
    database: Database, user: str, before: datetime, expires_at: datetime, by: str
) -> datetime:
    """Refuse `user`'s tokens issued before `before` until `expires_at`; return the `before`
    now in force (the later of this one and any earlier revocation's). One statement, in the
    caller's transaction when there is one."""
    rows = await _run(
        database, _REVOKE, user, aware(before, "before"), aware(expires_at, "expires_at"),
        datetime.now(UTC), by,
    )  # fmt: skip
    before_in_force: datetime = rows[0]["revoked_before"]
    return before_in_force


async def active(database: Database, now: datetime | None = None) -> dict[str, datetime]:
    """`user -> before` for every revocation not yet expired."""
    rows = await _run(
        database,
        "SELECT user_id, revoked_before FROM sinal_revocation WHERE expires_at > {}",
        now_or(now),
    )
    return {row["user_id"]: row["revoked_before"] for row in rows}


async def revoked_before(
    database: Database, user: str, now: datetime | None = None
) -> datetime | None:
    """The time before which `user`'s tokens are refused, or None if none are."""
    rows = await _run(
        database,
        "SELECT revoked_before FROM sinal_revocation WHERE user_id = {} AND expires_at > {}",
        user,
        now_or(now),
    )
    return rows[0]["revoked_before"] if rows else None


async def purge(database: Database, now: datetime | None = None) -> int:
    """Delete the revocations whose tokens have all expired; how many."""
    rows = await _run(
        database,
        "DELETE FROM sinal_revocation WHERE expires_at <= {} RETURNING user_id",
        now_or(now),
    )
    return len(rows)


async def _run(database: Database, sql: str, *args: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = await database.run_querystring(QueryString(sql, *args))
    return rows
