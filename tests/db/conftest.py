"""A migrated, empty database per test, on SQLite (a temp file) and on PostgreSQL.

PostgreSQL tests use the `test` database at SINAL_TEST_POSTGRES_URL and drop Sinal's tables
before each test; they skip (or fail under SINAL_REQUIRE_SERVICES=1) when it is absent.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from db.engine import close_engine, open_engine
from db.migrate import migrate
from tests.conftest import require_service

POSTGRES_URL = os.environ.get(
    "SINAL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


async def reset_postgres(url: str) -> None:
    try:
        connection = await asyncpg.connect(url, timeout=5)
    except (OSError, asyncpg.PostgresError) as error:
        require_service("PostgreSQL", f"{url}: {error}")
    try:
        await connection.execute(
            "DROP TABLE IF EXISTS notification, sinal_migration, sinal_outbox, sinal_setting"
        )
    finally:
        await connection.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database's URL; nothing migrated yet."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sinal.db'}"
    await reset_postgres(POSTGRES_URL)
    return POSTGRES_URL


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[str]:
    """`database_url`, migrated, with the tables bound to it for the test."""
    await migrate(database_url)
    engine = await open_engine(database_url)
    yield database_url
    await close_engine(engine)
