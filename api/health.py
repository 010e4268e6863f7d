"""Liveness and readiness for orchestrators."""

from __future__ import annotations

from typing import Any

from litestar import get
from piccolo.querystring import QueryString

from api.runtime import Runtime
from db.engine import DATABASE_ERRORS
from streams.errors import Unavailable


@get("/healthz", summary="Liveness", tags=["ops"])
async def healthz() -> dict[str, Any]:
    return {"status": "ok"}


@get("/readyz", summary="Readiness: the engine and the database answer", tags=["ops"])
async def readyz(runtime: Runtime) -> dict[str, Any]:
    if runtime.hub.draining:
        raise Unavailable("shutting down")
    await runtime.engine.ping()
    try:
        await runtime.database.run_querystring(QueryString("SELECT 1"))
    except DATABASE_ERRORS as error:
        raise Unavailable(f"the database is unreachable: {error}") from None
    return {"status": "ready", "engine": runtime.engine.name}
