"""Running the app under uvicorn, with a graceful drain of open streams and action sockets.

Uvicorn waits for open connections to finish before it runs the app's shutdown, and an SSE
stream never finishes by itself. So on a stop signal the hub is drained first: every stream gets
a short `retry:` hint and `event: disconnect` (reason `shutdown`) and ends, and `EventSource`
clients reconnect (elsewhere) with their cursor.
Action sockets (`/v1/actions`) then finish the action in hand and close with 1001; uvicorn would
otherwise cut them with 1012.
"""

from __future__ import annotations

import gc
import logging
import re
import socket
from urllib.parse import unquote_plus

import uvicorn

from api import actions
from api.app import SinalApp
from api.runtime import Runtime

_QUERY_PARAM = re.compile(r"([?&;])([^=&;\s]*)=([^&;\s]*)")
log = logging.getLogger("sinal")
SECRET_PARAMS = frozenset({"ticket", "token", "access_token"})


def redact(text: str) -> str:
    """Hide the values of secret query parameters, however their names are percent-encoded."""

    def hide(match: re.Match[str]) -> str:
        if unquote_plus(match.group(2)).lower() in SECRET_PARAMS:
            return f"{match.group(1)}{match.group(2)}=[redacted]"
        return match.group(0)

    return _QUERY_PARAM.sub(hide, text)


class RedactSecrets(logging.Filter):
    """Access logs show paths with their query: tickets must not reach the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        return True


class QuietDenials(logging.Filter):
    """Drop the error uvicorn's websockets-sansio protocol logs after every upgrade refused with
    an HTTP response (the `websocket.http.response` extension), though the refusal went out as
    it should: https://github.com/Kludex/uvicorn/pull/3138. `/v1/actions` refuses bad credentials
    that way, and nothing else in this app returns from a WebSocket without an answer."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != "ASGI callable returned without completing handshake."


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, runtime: Runtime) -> None:
        super().__init__(config)
        self.runtime = runtime

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
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


def browsable_host(host: str) -> str:
    """`host` as a browser takes it: a wildcard address is reached on loopback, and an IPv6
    address goes in brackets."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def serve(app: SinalApp, host: str, port: int, log_level: str) -> None:
    logging.getLogger("uvicorn.access").addFilter(RedactSecrets())
    # WebSocket handshakes are logged here, path and query (`?ticket=`) included.
    logging.getLogger("uvicorn.error").addFilter(RedactSecrets())
    logging.getLogger("uvicorn.error").addFilter(QuietDenials())
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level.lower(),
        timeout_graceful_shutdown=10,
        # Action messages are at most 16 KiB (a larger one gets a 413 reply); a frame beyond this
        # closes the socket (1009) before it is buffered whole.
        ws_max_size=actions.MAX_FRAME_BYTES,
        # Streams are long-lived; headers still must arrive promptly.
        timeout_keep_alive=30,
    )
    # With many open streams, the collector's full passes over all their long-lived objects
    # took 16 % of the server's CPU under the default thresholds (700, 10, 10); collecting
    # young objects less often, and never rescanning what start-up created, removes most of it.
    gc.set_threshold(50_000, 20, 20)
    gc.freeze()
    DrainingServer(config, app.runtime).run()
