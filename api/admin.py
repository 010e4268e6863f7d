"""`/v1/admin/…`: what operators see of a running process."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import get

from api.dependencies import require_role
from api.runtime import Runtime
from db import outbox
from streams.access import Principal


@get("/v1/admin/stats", summary="Live counters of this process", tags=["admin"])
async def stats(runtime: Runtime, principal: Principal) -> dict[str, Any]:
    require_role(principal, "admin")
    hub = runtime.hub.stats
    return {
        "engine": runtime.engine.name,
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
        "commands_pending": await runtime.commands.pending(),
    }
