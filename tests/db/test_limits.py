"""Runtime limits kept in `sinal_setting`, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from piccolo.querystring import QueryString

from db import limits
from db.engine import Database
from db.tables import Notification

pytestmark = pytest.mark.anyio


@pytest.fixture
def db(database: str) -> Database:
    engine: Database = Notification._meta.db
    return engine


async def test_none_before_any_store_then_the_last_stored_object(db: Database) -> None:
    assert await limits.load(db) is None
    await limits.store(db, {"actions_rate": 20.0, "streams_per_user": 5})
    assert await limits.load(db) == {"actions_rate": 20.0, "streams_per_user": 5}
    await limits.store(db, {"actions_burst": 40})
    assert await limits.load(db) == {"actions_burst": 40}


@pytest.mark.parametrize("stored", ["[1, 2]", "not json", "3"])
async def test_what_is_not_a_json_object_loads_as_none(db: Database, stored: str) -> None:
    await db.run_querystring(
        QueryString("INSERT INTO sinal_setting (name, value) VALUES ({}, {})", "limits", stored)
    )
    assert await limits.load(db) is None
