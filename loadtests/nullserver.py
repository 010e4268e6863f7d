"""A do-nothing fan-out server, to calibrate the load generator (`fanout --calibrate`).

It speaks just enough of Sinal's API for the benchmarks (`GET /v1/stream`, `POST /v1/publish`
of one event or a list, `/readyz`, `/v1/admin/stats`) and does the least possible work per
delivery: the frame is built once per event and each subscriber of its channel gets one
`transport.write`. A stream carries `broadcast` and `notifications:<sub>`, the user named by
the bearer token (read, not verified). Whatever rate a benchmark measures against it is the
ceiling of the *generator*, not of any real server.

    python -m loadtests.nullserver --port 8200
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
from typing import cast

import uvloop

STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


def chunk(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(body), body)


def response(status: str, body: bytes) -> bytes:
    return b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        status.encode(),
        len(body),
        body,
    )


class Hub:
    def __init__(self) -> None:
        self.streams: dict[str, set[asyncio.Transport]] = {}
        self.channels_of: dict[asyncio.Transport, list[str]] = {}
        self.offset = 0

    def add(self, transport: asyncio.Transport, channels: list[str]) -> None:
        self.channels_of[transport] = channels
        for channel in channels:
            self.streams.setdefault(channel, set()).add(transport)

    def remove(self, transport: asyncio.Transport) -> None:
        for channel in self.channels_of.pop(transport, ()):
            self.streams[channel].discard(transport)

    @property
    def connections(self) -> int:
        return len(self.channels_of)

    def publish(self, channel: str, event_type: str, data: bytes) -> str:
        self.offset += 1
        envelope = b'{"channel":"%s","type":"%s","data":%s,"ts":"-"}' % (
            channel.encode(),
            event_type.encode(),
            data,
        )
        frame = chunk(
            b"id: 1.%d\nevent: %s\ndata: %s\n\n" % (self.offset, event_type.encode(), envelope)
        )
        for transport in self.streams.get(channel, ()):
            transport.write(frame)
        return f"1.{self.offset}"


def user_of(head: str) -> str | None:
    """The `sub` of the request's bearer token, unverified (this server trusts its caller)."""
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "authorization" and value.strip().startswith("Bearer "):
            claims = value.strip()[len("Bearer ") :].split(".")[1]
            decoded = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
            return str(decoded["sub"])
    return None


class Connection(asyncio.Protocol):
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.hub.remove(self.transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:  # keep-alive: several requests may arrive back to back
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buffer) < head_end + 4 + length:
                return
            body = self.buffer[head_end + 4 : head_end + 4 + length]
            self.buffer = self.buffer[head_end + 4 + length :]
            self.handle(head, body)

    def handle(self, head: str, body: bytes) -> None:
        assert self.transport is not None
        method, path = head.split(" ", 2)[:2]
        if method == "GET" and path.startswith("/v1/stream"):
            user = user_of(head)
            channels = ["broadcast", *([f"notifications:{user}"] if user else [])]
            ready = b'retry: 2000\n\nid: 1.0\nevent: ready\ndata: {"channels":%s}\n\n' % (
                json.dumps(channels).encode()
            )
            self.transport.write(STREAM_HEAD + chunk(ready))
            self.hub.add(self.transport, channels)
        elif method == "POST" and path == "/v1/publish":
            message = json.loads(body)
            many = isinstance(message, list)
            cursors = [
                self.hub.publish(
                    event["channel"],
                    event["type"],
                    json.dumps(event["data"], separators=(",", ":")).encode(),
                )
                for event in (message if many else [message])
            ]
            answer = {"cursors": cursors} if many else {"cursor": cursors[0], "ts": "-"}
            self.transport.write(response("201 Created", json.dumps(answer).encode()))
        elif path == "/v1/admin/stats":
            stats = {"connections": self.hub.connections, "slow_consumer_closes": 0}
            self.transport.write(response("200 OK", json.dumps(stats).encode()))
        else:
            self.transport.write(response("200 OK", b'{"status":"ok"}'))


async def serve(port: int) -> None:
    hub = Hub()
    server = await asyncio.get_running_loop().create_server(
        lambda: Connection(hub), "127.0.0.1", port, backlog=4096
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8200)
    uvloop.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
