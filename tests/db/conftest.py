"""A migrated, empty database per test, on SQLite (a temp file) and on PostgreSQL.

PostgreSQL tests use the `test` database at SINAL_TEST_POSTGRES_URL and drop Sinal's tables
before each test; they skip (or fail under SINAL_REQUIRE_SERVICES=1) when it is absent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from db.engine import close_engine, open_engine
from db.migrate import migrate
from tests.conftest import POSTGRES_URL, reset_postgres


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
