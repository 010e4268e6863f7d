"""Liveness and readiness for orchestrators."""

from __future__ import annotations

from typing import Any

from litestar import get

from api.runtime import Runtime
from streams.errors import Unavailable


@get("/healthz", summary="Liveness", tags=["ops"])
async def healthz() -> dict[str, Any]:
    return {"status": "ok"}


@get("/readyz", summary="Readiness: the engine answers", tags=["ops"])
async def readyz(runtime: Runtime) -> dict[str, Any]:
    if runtime.hub.draining:
        raise Unavailable("shutting down")
    await runtime.engine.ping()
    return {"status": "ready", "engine": runtime.engine.name}
