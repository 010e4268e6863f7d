"""Shared fixtures: real Redis, real server processes, both engines.

Tests that need Redis skip with a visible reason when it is absent, except under
`SINAL_REQUIRE_SERVICES=1` (set by `.ci/run`), where an absent server fails them instead.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest
import redis

from tests.support import PrivateRedis, ServerProcess

REDIS_URL = os.environ.get("SINAL_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_URL = os.environ.get(
    "SINAL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REQUIRE_SERVICES = os.environ.get("SINAL_REQUIRE_SERVICES") == "1"
# Every table Sinal's migrations create: dropped so that each test starts from nothing.
SINAL_TABLES = (
    "notification, sinal_outbox, sinal_setting, sinal_migration, "
    "execution, execution_step, execution_log, execution_command, "
    "sinal_audit, sinal_revocation, sinal_announcement, "
    "sinal_alert, sinal_alert_source, sinal_admin"
)


def require_service(name: str, problem: str) -> None:
    message = f"{name} unavailable ({problem})"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message}; SINAL_REQUIRE_SERVICES=1 forbids skipping")
    pytest.skip(message)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A clean Redis database for one test."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as error:
        require_service("Redis", f"{REDIS_URL}: {error}")
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()


async def reset_postgres(url: str = POSTGRES_URL) -> None:
    try:
        connection = await asyncpg.connect(url, timeout=5)
    except (OSError, asyncpg.PostgresError) as error:
        require_service("PostgreSQL", f"{url}: {error}")
    try:
        await connection.execute(f"DROP TABLE IF EXISTS {SINAL_TABLES}")
    finally:
        await connection.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Server environment for each database: SQLite (the server's default file in its working
    directory) or an emptied PostgreSQL `test` database."""
    if request.param == "sqlite":
        return {}
    await reset_postgres()
    return {"SINAL_DATABASE_URL": POSTGRES_URL}


@pytest.fixture(params=["memory", "redis"])
def engine_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Server environment for each engine; the Redis one skips or fails as above."""
    if request.param == "memory":
        return {}
    url: str = request.getfixturevalue("redis_url")
    return {"SINAL_REDIS_URL": url}


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start server processes that are stopped (SIGTERM) when the test ends."""
    started: list[ServerProcess] = []

    def start(env: dict[str, str] | None = None, port: int | None = None) -> ServerProcess:
        server = ServerProcess(tmp_path, env, port).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(spawn: Callable[..., ServerProcess], engine_env: dict[str, str]) -> ServerProcess:
    """One server per engine."""
    return spawn(engine_env)


@pytest.fixture(scope="module")
def memory_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One memory-engine server shared by a module's tests, where the engine is irrelevant."""
    server = ServerProcess(tmp_path_factory.mktemp("server")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def graceless(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A memory-engine server that ends connections the moment their credential expires."""
    server = ServerProcess(tmp_path_factory.mktemp("graceless"), {"SINAL_AUTH_GRACE": "0"})
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        require_service("redis-server", "the binary is not on PATH")
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()
