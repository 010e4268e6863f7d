from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from db.migrate import available, migrate
from tests.support import ServerProcess

pytestmark = pytest.mark.anyio


async def test_migrate_applies_everything_once(database_url: str) -> None:
    assert await migrate(database_url) == available()
    assert await migrate(database_url) == []


async def test_sqlite_file_is_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    await migrate(f"sqlite:///{path}")
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    connection.close()


def test_sinal_migrate_command(tmp_path: Path) -> None:
    env = {**os.environ, "SINAL_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}

    def run() -> str:
        done = subprocess.run(
            [sys.executable, "-m", "api", "migrate"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    first = run()
    assert all(f"applied {name}" in first for name in available())
    assert "0 migration(s) applied" in run()


async def test_concurrent_migrations_apply_each_once(database_url: str) -> None:
    """Several processes starting together: the lock makes one apply, the others find it done."""
    results: list[list[str]] = []

    async def run() -> None:
        results.append(await migrate(database_url))

    async with anyio.create_task_group() as group:
        for _ in range(3):
            group.start_soon(run)
    assert sorted(name for result in results for name in result) == available()


def test_serve_applies_pending_migrations_before_listening(
    spawn: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = spawn({})  # SQLite file in tmp_path, as ServerProcess sets it
    with sqlite3.connect(tmp_path / "sinal.db") as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert {"notification", "sinal_migration"} <= tables
    assert "applied m0001_notification" in server.logs()
