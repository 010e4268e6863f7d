"""The Piccolo engine for `SINAL_DATABASE_URL`: a SQLite file (default) or PostgreSQL.

Nothing here reads the environment: callers pass the URL from `Settings.database_url`.
"""

from __future__ import annotations

import sqlite3
import warnings
from collections.abc import Iterable

import asyncpg  # type: ignore[import-untyped]
from piccolo.engine.postgres import PostgresEngine, PostgresTransaction
from piccolo.engine.sqlite import SQLiteEngine, SQLiteTransaction, TransactionType
from piccolo.table import Table

from db.tables import TABLES

Database = SQLiteEngine | PostgresEngine

# What an unreachable or broken database raises, on either engine.
DATABASE_ERRORS: tuple[type[Exception], ...] = (OSError, sqlite3.Error, asyncpg.PostgresError)

# Of those, what means "down or busy, retry" rather than a bug: a request gets 503, not 500.
UNAVAILABLE_DATABASE: tuple[type[Exception], ...] = (
    OSError,
    sqlite3.OperationalError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
)

SQLITE_PREFIX = "sqlite:///"


def create_engine(url: str, *, busy_timeout_s: float = 5.0) -> Database:
    """An engine for `url` (`sqlite:///path/file.db` or `postgresql://user@host:port/db`).

    SQLite has one writer at a time, so (DESIGN.md, "Pitfalls"): the file is switched to WAL
    (readers never block the writer; the mode is stored in the file, so once is enough), every
    connection waits up to `busy_timeout_s` for the write lock instead of failing with
    "database is locked", and multi-statement writes go through `write_transaction`, which
    begins IMMEDIATE so two transactions never deadlock upgrading a read lock.
    """
    if url.startswith(SQLITE_PREFIX):
        path = url[len(SQLITE_PREFIX) :]
        with sqlite3.connect(path, timeout=busy_timeout_s) as connection:
            connection.execute("PRAGMA journal_mode=WAL")
        connection.close()
        return SQLiteEngine(path=path, timeout=busy_timeout_s)
    if url.startswith(("postgresql://", "postgres://")):
        # Piccolo checks the server version on construction and only warns if it cannot
        # connect; the first real query reports that failure properly, so mute the warning
        # (it would also be an error under pytest's filterwarnings=error).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return PostgresEngine(config={"dsn": url})
    raise ValueError("expected sqlite:///path/file.db or postgresql://user@host:port/db")


def write_transaction(engine: Database) -> SQLiteTransaction | PostgresTransaction:
    """A transaction for writes: `BEGIN IMMEDIATE` on SQLite, a plain one on PostgreSQL."""
    if isinstance(engine, SQLiteEngine):
        return engine.transaction(transaction_type=TransactionType.immediate)
    return engine.transaction()


def bind(engine: Database, tables: Iterable[type[Table]] = TABLES) -> None:
    """Make Sinal's tables run their queries on `engine`.

    Piccolo keeps one engine per table class (normally found through `piccolo_conf.py`); Sinal
    sets it explicitly instead, once at start-up (and per test).
    """
    for table in tables:
        table._meta.db = engine


async def open_engine(url: str) -> Database:
    """`create_engine` + `bind`, with a connection pool on PostgreSQL. Close with `close_engine`."""
    engine = create_engine(url)
    await start_database(engine)
    bind(engine)
    return engine


async def start_database(engine: Database, pool_size: int = 20) -> None:
    """Open PostgreSQL's connection pool (SQLite needs none)."""
    if isinstance(engine, PostgresEngine):
        await engine.start_connection_pool(min_size=2, max_size=pool_size, reset=_keep_session)


# Database operations that failed, anywhere in the process (`/metrics`).
_errors = 0


def note_database_error() -> None:
    global _errors
    _errors += 1


def database_errors() -> int:
    return _errors


def pool_figures(engine: Database) -> tuple[int, int]:
    """Connections of PostgreSQL's pool in use now, and its maximum size (SQLite: none)."""
    pool = engine.pool if isinstance(engine, PostgresEngine) else None
    if pool is None:
        return 0, 0
    return pool.get_size() - pool.get_idle_size(), pool.get_max_size()


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Skip asyncpg's reset on release, a round trip per query (unlock advisory locks, close
    cursors, UNLISTEN, RESET ALL): Sinal takes only transaction-scoped locks and changes no
    session state. An open transaction is still rolled back by the pool."""


async def close_engine(engine: Database) -> None:
    if isinstance(engine, PostgresEngine) and engine.pool is not None:
        await engine.close_connection_pool()
