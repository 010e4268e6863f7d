"""Shared fixtures: real Redis, real server processes, both engines.

Tests that need Redis skip with a visible reason when it is absent, except under
`SINAL_REQUIRE_SERVICES=1` (set by `.ci/run`), where an absent server fails them instead.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest
import redis

from loadtests.rediscluster import PrivateCluster
from tests.support import PrivateRedis, PrivateSentinels, ServerProcess

# Under pytest-xdist (`-n 2`), each worker has a Redis database and a PostgreSQL database of its
# own: the first worker the configured ones, the next the database numbered one lower and
# `<name>_gw1`, and so on, so that the suite's workers never flush or drop each other's data.
WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)


def for_worker(url: str, worker: int = WORKER) -> str:
    """`url` (a Redis or PostgreSQL URL ending in its database) for the xdist worker `worker`."""
    if worker == 0:
        return url
    base, _, database = url.rpartition("/")
    if database.isdigit():
        return f"{base}/{int(database) - worker}"
    return f"{base}/{database}_gw{worker}"


def another_redis_database(url: str) -> str:
    """A Redis database on `url`'s server that no worker of this run uses as its own."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    base, _, database = url.rpartition("/")
    return f"{base}/{int(database) - workers}"


REDIS_URL = for_worker(os.environ.get("SINAL_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))
POSTGRES_URL = for_worker(
    os.environ.get("SINAL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
)
REQUIRE_SERVICES = os.environ.get("SINAL_REQUIRE_SERVICES") == "1"
# Every table Sinal's migrations create: dropped so that each test starts from nothing.
SINAL_TABLES = (
    "notification, sinal_outbox, sinal_setting, sinal_migration, "
    "execution, execution_step, execution_log, execution_command, "
    "sinal_audit, sinal_revocation, sinal_announcement, "
    "sinal_alert, sinal_alert_source, sinal_admin"
)


@pytest.fixture(scope="session", autouse=True)
def worker_database() -> None:
    """A later xdist worker's PostgreSQL database, created from the first's server if missing."""
    if WORKER == 0:
        return

    async def create() -> None:
        base, _, name = POSTGRES_URL.rpartition("/")
        try:
            connection = await asyncpg.connect(f"{base}/postgres", timeout=5)
        except (OSError, asyncpg.PostgresError):
            return  # the PostgreSQL tests say why when they run
        try:
            if not await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()

    asyncio.run(create())


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


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateCluster]:
    """A private Redis Cluster (3 primaries, 3 replicas) shared by the session's tests."""
    for binary in ("redis-server", "redis-cli"):
        if shutil.which(binary) is None:
            require_service(binary, "the binary is not on PATH")
    cluster = PrivateCluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster_url(redis_cluster: PrivateCluster) -> str:
    """The private cluster's URL, emptied for one test."""
    redis_cluster.flush()
    return redis_cluster.url


@pytest.fixture
def private_sentinels(tmp_path: Path) -> Iterator[PrivateSentinels]:
    if shutil.which("redis-server") is None:
        require_service("redis-server", "the binary is not on PATH")
    sentinels = PrivateSentinels(tmp_path)
    try:
        sentinels.start()
        yield sentinels
    finally:
        sentinels.stop()
