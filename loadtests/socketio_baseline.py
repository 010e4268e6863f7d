"""The baseline Sinal replaces: python-socketio's AsyncServer, fanned out through Redis.

The stack as it is usually deployed: `socketio.AsyncServer` with `socketio.AsyncRedisManager`,
as an ASGI app under uvicorn (uvloop, httptools, websockets, as Sinal gets), and other services
emitting through an external `AsyncRedisManager(url, write_only=True)`.

    python -m loadtests.socketio_baseline --port 8100 --redis-url redis://127.0.0.1:6379/14

The fan-out benchmark starts it pinned to the server core; it has no handlers: every client
joins the default namespace and receives what is emitted to it.
"""

from __future__ import annotations

import argparse

import socketio  # type: ignore[import-untyped]
import uvicorn

# Its own pub/sub name, so the baseline never hears (or feeds) another Socket.IO app's Redis.
CHANNEL = "sinal-bench-socketio"


def create_app(redis_url: str, channel: str = CHANNEL) -> socketio.ASGIApp:
    manager = socketio.AsyncRedisManager(redis_url, channel=channel)
    server = socketio.AsyncServer(
        async_mode="asgi",
        client_manager=manager,
        logger=False,
        engineio_logger=False,
    )
    return socketio.ASGIApp(server)


def external_emitter(redis_url: str, channel: str = CHANNEL) -> socketio.AsyncRedisManager:
    """What a publishing service uses: it emits through Redis without running a server."""
    return socketio.AsyncRedisManager(redis_url, channel=channel, write_only=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--channel", default=CHANNEL)
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.redis_url, args.channel),
        host=args.host,
        port=args.port,
        log_level="warning",
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
