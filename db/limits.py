"""The runtime limits an admin sets (`PUT /v1/admin/limits`), kept across restarts.

One JSON object in `sinal_setting` under `limits`, beside the outbox's identity: the limits
are few, read at start-up and on change, and their names and ranges belong to the API that
validates them, not to a schema here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from piccolo.querystring import QueryString

from db.engine import Database

NAME = "limits"


async def load(database: Database) -> dict[str, Any] | None:
    """The stored object; None if none was ever stored, or what is stored is not one."""
    rows = await database.run_querystring(
        QueryString("SELECT value FROM sinal_setting WHERE name = {}", NAME)
    )
    if not rows:
        return None
    try:
        value = json.loads(rows[0]["value"])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


async def store(database: Database, values: Mapping[str, Any]) -> None:
    """Replace the stored object with `values`: one statement, in the caller's transaction
    when there is one."""
    await database.run_querystring(
        QueryString(
            "INSERT INTO sinal_setting (name, value) VALUES ({}, {}) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            NAME,
            json.dumps(dict(values)),
        )
    )
