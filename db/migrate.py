"""Apply the pending migrations in `db/migrations/`, on SQLite or PostgreSQL.

Not Piccolo's migration runner: that one finds its engine through a global `piccolo_conf.py`,
prints to stdout, and its auto-migrations are generated against PostgreSQL (DESIGN.md,
"Pitfalls"); the partial indexes here are not expressible in its table API either. The
bookkeeping is a table of applied ids, and each migration is applied with its id in one
transaction, so a crash never leaves one half applied.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from piccolo.engine.postgres import PostgresEngine
from piccolo.querystring import QueryString

from db import migrations
from db.engine import Database, close_engine, create_engine, write_transaction

# Any fixed number: several `sinal serve` processes starting together on one PostgreSQL take
# turns (SQLite's BEGIN IMMEDIATE already serialises them).
_ADVISORY_LOCK = 0x5167_6E61_6C00

_BOOKKEEPING = """
    CREATE TABLE IF NOT EXISTS sinal_migration (
        id VARCHAR(200) PRIMARY KEY NOT NULL,
        applied_at TIMESTAMPTZ NOT NULL
    )
"""


def available() -> list[str]:
    """Migration ids in the order they apply."""
    return sorted(module.name for module in pkgutil.iter_modules(migrations.__path__))


def _statements(
    statements: Sequence[str] | Mapping[str, Sequence[str]], engine: Database
) -> Sequence[str]:
    """A migration's SQL: one list for both databases, or one per dialect where they differ."""
    if isinstance(statements, Mapping):
        return statements["postgresql" if isinstance(engine, PostgresEngine) else "sqlite"]
    return statements


async def migrate(url: str) -> list[str]:
    """Apply the migrations not yet applied to the database at `url`; return their ids."""
    engine = create_engine(url)
    try:
        return await migrate_engine(engine)
    finally:
        await close_engine(engine)


async def migrate_engine(engine: Database) -> list[str]:
    applied: list[str] = []
    async with write_transaction(engine):
        if isinstance(engine, PostgresEngine):
            await engine.run_querystring(
                QueryString("SELECT pg_advisory_xact_lock({})", _ADVISORY_LOCK)
            )
        await engine.run_ddl(_BOOKKEEPING)
        rows = await engine.run_querystring(QueryString("SELECT id FROM sinal_migration"))
        done = {row["id"] for row in rows}
        for name in available():
            if name in done:
                continue
            module = importlib.import_module(f"{migrations.__name__}.{name}")
            for statement in _statements(module.STATEMENTS, engine):
                await engine.run_ddl(statement)
            await engine.run_querystring(
                QueryString(
                    "INSERT INTO sinal_migration (id, applied_at) VALUES ({}, {})",
                    name,
                    datetime.now(UTC),
                )
            )
            applied.append(name)
    return applied
