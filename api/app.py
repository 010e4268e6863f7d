"""The Litestar application: `create_app(settings)` wires routes to one `Runtime`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.openapi import OpenAPIConfig

from api import admin, health, publish, sse, tickets
from api.dependencies import DEPENDENCIES
from api.problems import EXCEPTION_HANDLERS
from api.runtime import Runtime
from api.settings import Settings

# Room for the envelope around the largest payload a publish may carry.
BODY_OVERHEAD = 16 * 1024


def create_app(settings: Settings, runtime: Runtime | None = None) -> Litestar:
    runtime = runtime or Runtime.build(settings)

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        await runtime.hub.start()
        try:
            yield
        finally:
            await runtime.hub.stop()

    app = Litestar(
        route_handlers=[
            sse.stream,
            publish.publish,
            tickets.issue_ticket,
            health.healthz,
            health.readyz,
            admin.stats,
        ],
        dependencies=DEPENDENCIES,
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=[lifespan],
        request_max_body_size=settings.max_payload_bytes + BODY_OVERHEAD,
        openapi_config=OpenAPIConfig(title="Sinal", version="1.0.0"),
    )
    app.state.sinal = runtime
    return app
