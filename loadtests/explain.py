"""Every notification query on an index at a million rows: PostgreSQL's plans, checked.

    uv run python -m loadtests.explain [--rows 1000000 --users 10000 --url postgresql://...]

Creates (and afterwards drops) the database `sinal_explain` next to the one in `--url`, applies
the migrations, loads `--rows` notifications spread over `--users` users (a third read, a few
dismissed, some with expiry and idempotency keys), runs ANALYZE, then runs each query of
`db.notifications` as the API does, captures the SQL Piccolo sends, and prints its plan.
A query whose plan reads the `notification` table sequentially fails the check.

The last stdout line is a JSON object: rows, queries checked, and the sequential scans found.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from piccolo.engine.postgres import PostgresEngine

from db import notifications
from db.engine import bind
from db.migrate import migrate
from db.notifications import Draft, new_id

DATABASE = "sinal_explain"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def rows_for(users: int, count: int, now: datetime) -> list[tuple[Any, ...]]:
    """Notifications over the last 60 days, oldest first per user, like a real history."""
    rng = random.Random(7)
    out = []
    per_user = count // users
    for u in range(users):
        for i in range(per_user):
            created = now - timedelta(days=60) + timedelta(minutes=i * 60 * 24 * 60 / per_user)
            created += timedelta(microseconds=rng.randrange(1_000_000))
            roll = rng.random()
            read_at = created + timedelta(minutes=5) if roll < 0.35 else None
            dismissed_at = created + timedelta(minutes=9) if roll < 0.05 else None
            expires_at = created + timedelta(days=30) if rng.random() < 0.02 else None
            keyed = rng.random() < 0.3
            out.append(
                (
                    new_id(created),
                    f"user{u}",
                    rng.choice(("mention", "execution.failed", "execution.succeeded", "export")),
                    f"notification {i}",
                    "",
                    "{}",
                    rng.choice(("info", "success", "warning", "error")),
                    None,
                    created,
                    read_at,
                    dismissed_at,
                    expires_at,
                    "producer" if keyed else None,
                    f"k-{u}-{i}" if keyed else None,
                )
            )
    return out


COLUMNS = (
    "id", "user_id", "type", "title", "body", "data", "severity", "link", "created", "read_at",
    "dismissed_at", "expires_at", "producer", "idempotency_key",
)  # fmt: skip


class CapturingEngine(PostgresEngine):
    """Keeps the SQL of every query instead of printing it (Piccolo's `log_queries`)."""

    captured: list[str]

    def print_query(self, query_id: int, query: str) -> None:
        self.captured.append(query)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()

    admin = await asyncpg.connect(args.url)
    await admin.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
    await admin.execute(f"CREATE DATABASE {DATABASE}")
    url = args.url.rsplit("/", 1)[0] + "/" + DATABASE
    try:
        return await check(url, args.rows, args.users)
    finally:
        if not args.keep:
            await admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        await admin.close()


async def check(url: str, count: int, users: int) -> int:
    await migrate(url)
    now = datetime.now(UTC)
    started = time.monotonic()
    connection = await asyncpg.connect(url)
    rows = rows_for(users, count, now)
    log(f"loading {len(rows):,} notifications for {users:,} users")
    for start in range(0, len(rows), 100_000):
        await connection.copy_records_to_table(
            "notification", records=rows[start : start + 100_000], columns=COLUMNS
        )
        log(f"  {start + 100_000:,}")
    await connection.execute("ANALYZE notification")
    log(f"loaded in {time.monotonic() - started:.0f} s")

    engine = CapturingEngine(config={"dsn": url}, log_queries=True)
    engine.captured = []
    await engine.start_connection_pool()
    bind(engine)
    user = "user42"
    page = await notifications.list_for_user(user, limit=50)
    some = [record.id for record in page.items[:10]]
    middle = page.items[len(page.items) // 2]
    queries: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("inbox, first page", lambda: notifications.list_for_user(user)),
        (
            "inbox, next page",
            lambda: notifications.list_for_user(user, before_cursor=page.next_cursor),
        ),
        ("unread list", lambda: notifications.list_for_user(user, state="unread")),
        ("read list", lambda: notifications.list_for_user(user, state="read")),
        ("dismissed list", lambda: notifications.list_for_user(user, state="dismissed")),
        ("by type", lambda: notifications.list_for_user(user, type="mention")),
        ("by severity", lambda: notifications.list_for_user(user, severity="error")),
        ("since", lambda: notifications.list_for_user(user, since=now - timedelta(days=1))),
        ("unread count", lambda: notifications.unread_count(user)),
        (
            "unread counts, 100 users",
            lambda: notifications.unread_counts(f"user{i}" for i in range(100)),
        ),
        ("one notification", lambda: notifications.get_for_user(user, some[0])),
        ("mark read", lambda: notifications.mark_read(user, some)),
        ("mark unread", lambda: notifications.mark_unread(user, some[:3])),
        ("dismiss", lambda: notifications.dismiss(user, some[3:5])),
        ("read all up to", lambda: notifications.read_all(user, up_to_cursor=middle.cursor)),
        (
            "idempotent create (retry)",
            lambda: notifications.create_many(
                [user, "user43"],
                Draft("export", "retry"),
                producer="producer",
                idempotency_key=f"fresh-{uuid.uuid4()}",
            ),
        ),
        ("purge a batch", lambda: notifications.purge(now - timedelta(days=59), now=now)),
    ]
    checked: list[dict[str, Any]] = []
    sequential: list[str] = []
    for label, run in queries:
        engine.captured.clear()
        await run()  # writes change a few rows of a throwaway database: harmless
        for sql in list(engine.captured):
            plan = "\n".join(row["QUERY PLAN"] for row in await connection.fetch(f"EXPLAIN {sql}"))
            seq = "Seq Scan on notification" in plan
            if seq:
                sequential.append(label)
            checked.append({"query": label, "sequential": seq})
            shown = sql if len(sql) < 400 else sql[:400] + " …"
            print(f"-- {label}{'   <-- SEQUENTIAL SCAN' if seq else ''}\n{shown}\n{plan}\n")
    await engine.close_connection_pool()
    await connection.close()
    print(json.dumps({"rows": count, "users": users, "queries": len(checked),
                      "sequential_scans": sequential, "ok": not sequential}))  # fmt: skip
    return 0 if not sequential else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
