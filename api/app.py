"""The application: `create_app(settings)` wires routes to one `Runtime`.

Litestar serves the API. The SSE endpoint and `POST /v1/publish` are reached before Litestar's
routing, with the server's own `send` (see `api/sse.py` and `api/publish.py` for why). All go
through `api.requests.Requests`: request ids, the access log, the HTTP metrics.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.openapi import OpenAPIConfig
from litestar.types import Receive, Scope, Send

from api import (
    actions,
    admin,
    announcements,
    executions,
    health,
    metrics,
    notifications,
    openapi,
    publish,
    requests,
    sse,
    tickets,
    web,
)
from api.catalog import asyncapi
from api.csrf import CsrfGuard
from api.dependencies import DEPENDENCIES
from api.problems import EXCEPTION_HANDLERS
from api.runtime import Runtime
from api.settings import Settings
from db.engine import close_engine, start_database


class SinalApp:
    """The ASGI application: `/v1/stream` to the stream handler, `POST /v1/publish` to the
    lean publish handler, everything else to Litestar."""

    def __init__(self, litestar: Litestar, runtime: Runtime) -> None:
        self.litestar = litestar
        self.runtime = runtime
        # One budget of access lines for the whole process.
        sampler = requests.AccessSampler(runtime.settings.access_log_sample_above)
        self._api = requests.Requests(litestar, runtime, sampler=sampler)
        self._stream = requests.Requests(self._sse, runtime, stream_route=sse.PATH, sampler=sampler)
        self._publish = requests.Requests(
            self._lean_publish, runtime, lean_route=publish.PATH, sampler=sampler
        )

    @property
    def state(self) -> State:
        return self.litestar.state

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Returns the route's coroutine rather than awaiting it in one of its own: an idle
        # stream would hold that frame for its whole life. (So the server is told the ASGI
        # version: `interface="asgi3"` in api/server.py.)
        if scope["type"] == ScopeType.HTTP:
            path = scope["path"]
            if path == sse.PATH:
                return self._stream(scope, receive, send)
            # Other methods (a 405, OPTIONS) are Litestar's answers, as before.
            if path == publish.PATH and scope["method"] == "POST":
                return self._publish(scope, receive, send)
        return self._api(scope, receive, send)

    def _sse(self, scope: Scope, receive: Receive, send: Send) -> Coroutine[Any, Any, None]:
        # The stream's coroutine itself, not one awaiting it: every idle stream would hold
        # that frame for its whole life.
        assert scope["type"] == ScopeType.HTTP  # (as routed above)
        return sse.stream(scope, receive, send, self.runtime)

    async def _lean_publish(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:  # (as routed above)
            await publish.serve(scope, receive, send, self.runtime)


def create_app(settings: Settings, runtime: Runtime | None = None) -> SinalApp:
    runtime = runtime or Runtime.build(settings)

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        await start_database(runtime.database)
        try:
            await runtime.hub.start()
            try:
                await runtime.control.start()
                runtime.relay.start()
                runtime.purge.start()
                runtime.tracker.start()
                runtime.metrics.start()
                runtime.series.start()
                runtime.alerting.start()
                yield
            finally:
                await runtime.alerting.stop()
                await runtime.series.stop()
                await runtime.metrics.stop()
                await runtime.tracker.stop()
                await runtime.purge.stop()
                await runtime.relay.stop()
                await runtime.control.stop()
                await runtime.hub.stop()
        finally:
            await close_engine(runtime.database)

    litestar = Litestar(
        route_handlers=[
            publish.route(settings),
            notifications.create_notifications,
            notifications.list_notifications,
            notifications.unread_count,
            notifications.get_notification,
            notifications.read_one,
            notifications.unread_one,
            notifications.dismiss_one,
            notifications.read_many,
            notifications.unread_many,
            notifications.dismiss_many,
            notifications.read_all,
            notifications.poll_notifications,
            *executions.ROUTES,
            actions.actions,
            tickets.issue_ticket,
            health.healthz,
            health.readyz,
            metrics.metrics,
            admin.router,
            announcements.list_announcements,
            *web.ROUTES,
            asyncapi.asyncapi_document,
        ],
        dependencies=DEPENDENCIES,
        middleware=[CsrfGuard(settings.allowed_origins)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=[lifespan],
        request_max_body_size=publish.body_limit(settings),
        openapi_config=OpenAPIConfig(title="Sinal", version="1.0.0"),
        # Logging is the caller's (`api.logs` for `sinal serve`): Litestar's default would
        # replace the root logger's handler, the one that redacts secrets, with its own.
        logging_config=None,
    )
    openapi.complete(litestar, settings)
    litestar.state.sinal = runtime
    return SinalApp(litestar, runtime)
