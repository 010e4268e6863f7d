"""`/v1/admin/…`: what operators see of a running process."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import get

from api.dependencies import require_role
from api.runtime import Runtime
from db import outbox
from streams.access import Principal
from streams.errors import Unavailable


@get("/v1/admin/stats", summary="Live counters of this process", tags=["admin"])
async def stats(runtime: Runtime, principal: Principal) -> dict[str, Any]:
    require_role(principal, "admin")
    hub = runtime.hub.stats
    # While the engine is down is when these counters matter most (the outbox grows): what
    # needs the engine is null then, and the rest is answered all the same.
    engine: str = runtime.engine.name
    try:
        commands_pending: int | None = await runtime.commands.pending()
    except Unavailable:
        engine, commands_pending = "unreachable", None
    return {
        "engine": engine,
        "connections": hub.connections,
        "connections_total": hub.connections_total,
        "action_sockets": runtime.actions.count,
        "slow_consumer_closes": hub.slow_consumer_closes,
        "events_in": hub.events_in,
        "resets": hub.resets,
        "tasks": len(asyncio.all_tasks()),
        # Events committed but not yet on the stream: grows while Redis is unreachable.
        "outbox_pending": await outbox.pending(runtime.database),
        "outbox_relayed": runtime.relay.relayed,
        "notifications_purged": runtime.purge.deleted,
        # Retry/cancel commands delivered to the execution service and not yet acknowledged.
        "commands_pending": commands_pending,
    }
