"""Running the app under uvicorn, with a graceful drain of open streams and action sockets.

Uvicorn waits for open connections to finish before it runs the app's shutdown, and an SSE
stream never finishes by itself. So on a stop signal the hub is drained first: every stream gets
a short `retry:` hint and `event: disconnect` (reason `shutdown`) and ends, and `EventSource`
clients reconnect (elsewhere) with their cursor.
Action sockets (`/v1/actions`) then finish the action in hand and close with 1001; uvicorn would
otherwise cut them with 1012.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket

import uvicorn

from api import actions, connections
from api.app import SinalApp
from api.collector import THRESHOLDS, Collector
from api.runtime import Runtime

log = logging.getLogger("sinal")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, runtime: Runtime) -> None:
        super().__init__(config)
        self.runtime = runtime
        self.collector = Collector()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # What start-up made (the app, its routes, the engine's connections) is frozen with it.
        self.collector.start(asyncio.get_running_loop())
        if self.started:  # listening: say where, uvicorn only names the socket
            base = f"http://{browsable_host(self.config.host)}:{self.config.port}"
            log.info(
                "the pages are at %s/app/, the API at %s/v1/ (schema: %s/schema)", base, base, base
            )

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # no new connection while streams drain
        self.runtime.hub.drain()
        await actions.close_all(self.runtime)
        await super().shutdown(sockets)
        self.collector.stop()


def browsable_host(host: str) -> str:
    """`host` as a browser takes it: a wildcard address is reached on loopback, and an IPv6
    address goes in brackets."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def serve(
    app: SinalApp, host: str, port: int, log_level: str, sock: socket.socket | None = None
) -> None:
    """Serve `app` until SIGTERM or SIGINT, then drain; on `host:port`, or on the bound `sock`
    (a worker's `SO_REUSEPORT` socket, `api.workers`)."""
    settings = app.runtime.settings
    before, descriptors = connections.raise_descriptor_limit()
    limits = connections.Limits(
        header_timeout_s=settings.header_timeout_s,
        body_timeout_s=settings.body_timeout_s,
        max_connections=connections.connection_cap(
            settings.max_connections or connections.DEFAULT_MAX_CONNECTIONS, descriptors
        ),
    )
    raised = f" (raised from {before})" if descriptors > before else ""
    log.info(
        "open files: at most %d%s; connections: at most %d; request headers within %g s, "
        "bodies within %g s",
        descriptors,
        raised,
        limits.max_connections,
        limits.header_timeout_s,
        limits.body_timeout_s,
    )
    # Only a cap the operator asked for is worth a warning; the default simply fits the limit.
    if settings.max_connections is not None and limits.max_connections < settings.max_connections:
        log.warning(
            "SINAL_MAX_CONNECTIONS=%d lowered to %d: the open-file limit is %d (raise `ulimit -n`)",
            settings.max_connections,
            limits.max_connections,
            descriptors,
        )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level.lower(),
        # Its loggers write through the redacting handler of `api.logs.configure`.
        log_config=None,
        # `sinal.access` (api/requests.py) logs each request, with its id and route template.
        access_log=False,
        timeout_graceful_shutdown=10,
        # Action messages are at most 16 KiB (a larger one gets a 413 reply); a frame beyond this
        # closes the socket (1009) before it is buffered whole.
        ws_max_size=actions.MAX_FRAME_BYTES,
        # Between two requests on one connection; reading a request has its own deadlines.
        timeout_keep_alive=30,
        http=connections.guarded_protocol(limits),
        # `SinalApp.__call__` returns its route's coroutine instead of being one, which
        # uvicorn's detection would take for ASGI 2.
        interface="asgi3",
    )
    # Collected less often from the start (api/collector.py): start-up makes many objects.
    gc.set_threshold(*THRESHOLDS)
    DrainingServer(config, app.runtime).run(sockets=None if sock is None else [sock])
