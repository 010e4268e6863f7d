"""Lean subscriber clients for the fan-out benchmark: one asyncio Protocol per connection.

A general-purpose client (httpx, aiohttp, python-socketio) spends tens of microseconds per event
on objects the benchmark does not need; at 80,000 events/s on one core that makes the *client*
the bottleneck. These protocols instead scan the raw bytes of each read with one compiled regex
for the benchmark's payload marker, `"q":<sequence>,"t":<send time ns>,`, which both servers
pass through byte for byte (Sinal splices the published JSON in as is; Socket.IO re-encodes it
with compact separators and the same key order).

Every subscriber keeps a bitmap of the sequence numbers it has seen: a second sighting is a
duplicate, a sequence never seen by the end is lost. The bitmap tolerates reordering (several
publishers run concurrently, so events need not arrive in sequence order).
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import time
from collections.abc import Callable
from typing import cast

from loadtests.procs import log

# The marker ends in `,` so that a read cut inside the digits of `t` can never match.
FIND_EVENTS = re.compile(rb'"q":(\d+),"t":(\d+),').findall


def payload(seq: int, sent_ns: int, pad: bytes) -> bytes:
    """The JSON `data` of event `seq`, stamped with its send time (`time.time_ns()`).

    The server and this generator run on one machine, so the wall clock is shared.
    """
    return b'{"q":%d,"t":%d,"p":"%s"}' % (seq, sent_ns, pad)


def padding(payload_bytes: int) -> bytes:
    """Padding that brings a payload to about `payload_bytes` (sequence ~4 digits, t 19)."""
    overhead = len(b'{"q":1000,"t":1700000000000000000,"p":""}')
    return b"x" * max(0, payload_bytes - overhead)


class Tally:
    """Counters shared by every subscriber of one workload (one event loop, no locks)."""

    def __init__(self) -> None:
        self.received = 0  # first sightings, all sequences
        self.duplicated = 0
        self.disconnects = 0
        # Latency is kept for deliveries read while the measured window is open, whatever their
        # sequence: a server that falls behind shows the delay its users would see then.
        self.measuring = False
        self.latencies_ns: list[int] = []


class Subscriber(asyncio.Protocol):
    """What both transports share: handshake state, the seen-bitmap and the tally."""

    def __init__(self, request: bytes, tally: Tally | None) -> None:
        self.request = request
        self.tally = tally
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.streaming = False
        self.buffer = b""
        self.seen = bytearray(4096)
        self.count = 0  # distinct sequences seen
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before ready: {exc}"))
        elif self.tally is not None and self.transport is not None:
            self.tally.disconnects += 1
        self.transport = None

    def close(self) -> None:
        if self.transport is not None:
            transport, self.transport = self.transport, None
            transport.close()

    def fail(self, problem: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(problem))
        self.close()

    def record(self, found: list[tuple[bytes, bytes]], now_ns: int) -> None:
        """Account for the events of one read: the hot loop of the whole load generator."""
        tally = self.tally
        if tally is None:
            return
        seen = self.seen
        latencies = tally.latencies_ns if tally.measuring else None
        fresh = 0
        for q, t in found:
            seq = int(q)
            if seq >= len(seen):
                seen.extend(bytes(seq + 4096 - len(seen)))
            if seen[seq]:
                tally.duplicated += 1
                continue
            seen[seq] = 1
            fresh += 1
            if latencies is not None:
                latencies.append(now_ns - int(t))
        self.count += fresh
        tally.received += fresh

    def missing(self, published: int, failed: set[int]) -> int:
        """Sequences below `published` this subscriber never saw, failed publishes excluded."""
        seen = self.seen
        if len(seen) < published:
            seen.extend(bytes(published - len(seen)))
        unseen = seen.count(0, 0, published)
        return unseen - sum(1 for seq in failed if seq < published and not seen[seq])


class SseSubscriber(Subscriber):
    """`GET /v1/stream` over a raw socket; ready once the `ready` frame arrived.

    The body is chunked, but Sinal writes whole SSE frames per chunk, so chunk headers only ever
    sit between frames: the scan covers everything up to the last complete frame (`\\n\\n`) and
    keeps the rest for the next read, so no event is counted twice or cut in half.
    """

    # The frame after which the server delivers what is published (its end: `\n\n`).
    READY = b"event: ready"

    def data_received(self, data: bytes) -> None:
        if self.buffer:
            data = self.buffer + data
        if not self.streaming:
            data = self._handshake(data)
            if not self.streaming:
                return
        end = data.rfind(b"\n\n") + 2
        if end == 1:  # no complete frame yet
            self.buffer = data
            return
        self.buffer = data[end:]
        self.frames(data, end)

    def frames(self, data: bytes, end: int) -> None:
        """`data[:end]` holds whole SSE frames only: count the events in them."""
        found = FIND_EVENTS(data, 0, end)
        if found:
            self.record(found, time.time_ns())

    def _handshake(self, data: bytes) -> bytes:
        head_end = data.find(b"\r\n\r\n")
        if head_end < 0:
            self.buffer = data
            return b""
        if not data.startswith(b"HTTP/1.1 200"):
            self.fail(data[: data.find(b"\r\n")].decode(errors="replace"))
            return b""
        ready_at = data.find(self.READY, head_end)
        frame_end = data.find(b"\n\n", ready_at) if ready_at >= 0 else -1
        if frame_end < 0:
            self.buffer = data  # keep everything until the whole `ready` frame is here
            return b""
        self.streaming = True
        # Not after a handshake timeout: `wait_for` cancelled the future, and the stream that
        # came late is closed by the caller.
        if not self.ready.done():
            self.ready.set_result(None)
        return data[frame_end + 2 :]


def sse_request(port: int, token: str, query: str = "") -> bytes:
    return (
        f"GET /v1/stream{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()


class NchanSubscriber(SseSubscriber):
    """An EventSource subscriber of Nchan (`GET /sub/<channel>`, loadtests/nchan.py).

    What differs from Sinal's stream, and only that: Nchan opens with the comment `: hi` (its
    subscriber is enqueued by then) instead of a `ready` event, and its body is not chunked.
    Each message is `id: <id>` then `data: <the published body>`: the payload marker arrives
    byte for byte, as from Sinal.
    """

    READY = b": hi"


def nchan_request(port: int, channel: str) -> bytes:
    return (
        f"GET /sub/{channel} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Accept: text/event-stream\r\n\r\n"
    ).encode()


# -- Socket.IO over raw WebSocket (Engine.IO v4) ----------------------------------------------

TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA


def ws_frame(opcode: int, body: bytes) -> bytes:
    """A client frame (short bodies only). Clients must mask; an all-zero key is a valid mask
    and leaves the bytes as they are, so no XOR pass is needed."""
    assert len(body) < 126
    return bytes((0x80 | opcode, 0x80 | len(body))) + b"\0\0\0\0" + body


EIO_PONG = ws_frame(TEXT, b"3")
SIO_CONNECT = ws_frame(TEXT, b"40")


class EngineIoSubscriber(Subscriber):
    """A Socket.IO client reduced to what the benchmark needs.

    Engine.IO v4 straight over WebSocket: the server opens with `0{...}`, the client joins the
    default namespace with `40` and is ready at the server's `40{...}`; the server's pings `2`
    are answered with `3`; events arrive as `42["bench",{...}]`.
    """

    def data_received(self, data: bytes) -> None:
        if self.buffer:
            data = self.buffer + data
        if not self.streaming:
            head_end = data.find(b"\r\n\r\n")
            if head_end < 0:
                self.buffer = data
                return
            if not data.startswith(b"HTTP/1.1 101"):
                self.fail(data[: data.find(b"\r\n")].decode(errors="replace"))
                return
            self.streaming = True
            data = data[head_end + 4 :]
        self.buffer = data[self._frames(data) :]

    def _frames(self, data: bytes) -> int:
        """Handle every complete frame; returns where the incomplete rest starts."""
        at, size = 0, len(data)
        events_from = -1
        while at + 2 <= size:
            opcode, length = data[at] & 0x0F, data[at + 1] & 0x7F
            start = at + 2
            if length == 126:
                length, start = int.from_bytes(data[at + 2 : at + 4], "big"), at + 4
            elif length == 127:
                length, start = int.from_bytes(data[at + 2 : at + 10], "big"), at + 10
            end = start + length
            if end > size:
                break
            if opcode == TEXT:
                if length > 2 and data[start] == 0x34 and data[start + 1] == 0x32:  # "42": event
                    if events_from < 0:
                        events_from = start
                else:
                    self._control(data[start:end])
            elif opcode == PING:
                self._send(bytes((0x80 | PONG, 0x80)) + b"\0\0\0\0")
            elif opcode == CLOSE:
                self.close()
            at = end
        if events_from >= 0:
            # Payload bytes of unmasked server frames are verbatim: one scan over all of them.
            found = FIND_EVENTS(data, events_from, at)
            if found:
                self.record(found, time.time_ns())
        return at

    def _control(self, packet: bytes) -> None:
        if packet == b"2":
            self._send(EIO_PONG)
        elif packet.startswith(b"0"):
            self._send(SIO_CONNECT)
        elif packet.startswith(b"40") and not self.ready.done():
            self.ready.set_result(None)
        elif packet.startswith(b"44"):
            self.fail(f"namespace refused: {packet[:200]!r}")

    def _send(self, frame: bytes) -> None:
        if self.transport is not None:
            self.transport.write(frame)


def engineio_request(port: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


# -- opening many ----------------------------------------------------------------------------


async def open_many(
    make: Callable[[int], Subscriber],
    count: int,
    port: int,
    *,
    concurrency: int = 200,
    handshake_s: float = 30.0,
    progress: Callable[[int], None] | None = None,
    handshakes_ns: list[int] | None = None,
) -> tuple[list[Subscriber], int]:
    """Open `count` connections, at most `concurrency` handshakes at a time.

    Returns the subscribers that became ready and how many failed. `handshakes_ms`, when
    given, receives each successful handshake's time (connect → ready frame), in ns.
    """
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)
    opened: list[Subscriber] = []
    failed = 0

    async def one(index: int) -> None:
        nonlocal failed
        async with gate:
            subscriber = make(index)
            started = time.monotonic_ns()
            try:
                await asyncio.wait_for(_connect(loop, subscriber, port), handshake_s)
            except (OSError, TimeoutError) as error:
                failed += 1
                subscriber.close()
                if failed <= 3:
                    log(f"connection {index} failed: {error!r}")
                return
            if handshakes_ns is not None:
                handshakes_ns.append(time.monotonic_ns() - started)
            opened.append(subscriber)
            if progress is not None and len(opened) % 1000 == 0:
                progress(len(opened))

    await asyncio.gather(*(one(index) for index in range(count)))
    if count and not opened:
        raise RuntimeError(f"none of {count} connections became ready on port {port}")
    return opened, failed


async def _connect(loop: asyncio.AbstractEventLoop, subscriber: Subscriber, port: int) -> None:
    await loop.create_connection(lambda: subscriber, "127.0.0.1", port)
    await subscriber.ready
