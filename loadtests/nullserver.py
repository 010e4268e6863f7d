"""A do-nothing fan-out server, to calibrate the load generator (`fanout --calibrate`).

It speaks just enough of Sinal's API for the benchmark (`GET /v1/stream`, `POST /v1/publish`,
`/readyz`, `/v1/admin/stats`) and does the least possible work per delivery: the frame is built
once per event and each subscriber gets one `transport.write`. Whatever rate the benchmark
measures against it is the ceiling of the *generator*, not of any real server.

    python -m loadtests.nullserver --port 8200
"""

from __future__ import annotations

import argparse
import asyncio
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
        self.streams: set[asyncio.Transport] = set()
        self.offset = 0

    def publish(self, event_type: str, data: bytes) -> bytes:
        self.offset += 1
        envelope = b'{"channel":"broadcast","type":"%s","data":%s,"ts":"-"}' % (
            event_type.encode(),
            data,
        )
        frame = chunk(
            b"id: 1.%d\nevent: %s\ndata: %s\n\n" % (self.offset, event_type.encode(), envelope)
        )
        for transport in self.streams:
            transport.write(frame)
        return response("201 Created", b'{"cursor":"1.%d","ts":"-"}' % self.offset)


class Connection(asyncio.Protocol):
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.hub.streams.discard(self.transport)

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
            self.handle(head.split(" ", 2)[:2], body)

    def handle(self, request_line: list[str], body: bytes) -> None:
        assert self.transport is not None
        method, path = request_line
        if method == "GET" and path.startswith("/v1/stream"):
            ready = b'retry: 2000\n\nid: 1.0\nevent: ready\ndata: {"channels":["broadcast"]}\n\n'
            self.transport.write(STREAM_HEAD + chunk(ready))
            self.hub.streams.add(self.transport)
        elif method == "POST" and path == "/v1/publish":
            message = json.loads(body)
            data = json.dumps(message["data"], separators=(",", ":")).encode()
            self.transport.write(self.hub.publish(message["type"], data))
        elif path == "/v1/admin/stats":
            stats = {"connections": len(self.hub.streams), "slow_consumer_closes": 0}
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
