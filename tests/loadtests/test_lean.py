"""The benchmark's lean SSE subscribers parse what Sinal and Nchan actually send.

The byte strings are captured from the servers (Sinal's `GET /v1/stream`, Nchan 1.3.6's
EventSource subscriber): the benchmarks count on these parsers for lost and duplicated events,
so a parser that misses an event reports a server fault that is not there.
"""

from __future__ import annotations

import pytest

from loadtests.lean import (
    NchanSubscriber,
    SseSubscriber,
    Subscriber,
    Tally,
    nchan_request,
    payload,
)

pytestmark = pytest.mark.anyio

NCHAN_HEAD = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 05 Dec 2026 21:46:44 GMT\r\n"
    b"Content-Type: text/event-stream; charset=utf-8\r\nConnection: keep-alive\r\n\r\n"
)


def nchan_message(seq: int, sent_ns: int) -> bytes:
    return b"id: 1796507205:%d\ndata: %s\n\n" % (seq, payload(seq, sent_ns, b"xx"))


SINAL_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"x-accel-buffering: no\r\ntransfer-encoding: chunked\r\n\r\n"
)


def chunk(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(body), body)


def sinal_event(seq: int, sent_ns: int) -> bytes:
    envelope = b'{"channel":"broadcast","type":"bench","data":%s,"ts":"2026-12-05T21:46:44Z"}'
    return b"id: 1.QnJvYWRjYXN0.%d\nevent: bench\ndata: %s\n\n" % (
        seq,
        envelope % payload(seq, sent_ns, b"xx"),
    )


class Transport:
    def __init__(self) -> None:
        self.written = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True


def connect(subscriber: Subscriber) -> Transport:
    transport = Transport()
    subscriber.connection_made(transport)  # type: ignore[arg-type]
    return transport


def feed(subscriber: Subscriber, stream: bytes, cuts: list[int]) -> None:
    """Deliver `stream` in reads cut at the given offsets."""
    start = 0
    for cut in [*cuts, len(stream)]:
        if cut > start:
            subscriber.data_received(stream[start:cut])
        start = cut


async def test_nchan_subscriber_asks_for_an_event_stream() -> None:
    subscriber = NchanSubscriber(nchan_request(8300, "u-7"), Tally())
    transport = connect(subscriber)
    assert transport.written.startswith(b"GET /sub/u-7 HTTP/1.1\r\n")
    assert b"\r\nAccept: text/event-stream\r\n" in transport.written


@pytest.mark.parametrize("step", [1, 7, 29, 1000])
async def test_nchan_stream_counts_every_message_once_however_it_is_cut(step: int) -> None:
    tally = Tally()
    tally.measuring = True
    subscriber = NchanSubscriber(nchan_request(8300, "u-1"), tally)
    connect(subscriber)
    messages = b"".join(nchan_message(seq, 1_700_000_000_000_000_000 + seq) for seq in range(20))
    stream = NCHAN_HEAD + b": hi\n\n" + messages
    feed(subscriber, stream, list(range(step, len(stream), step)))
    assert subscriber.ready.done()
    assert subscriber.ready.exception() is None
    assert subscriber.count == 20
    assert tally.received == 20
    assert tally.duplicated == 0
    assert len(tally.latencies_ns) == 20
    assert subscriber.missing(20, set()) == 0


async def test_nchan_stream_is_ready_only_after_its_greeting() -> None:
    subscriber = NchanSubscriber(nchan_request(8300, "u-1"), Tally())
    connect(subscriber)
    subscriber.data_received(NCHAN_HEAD + b": h")
    assert not subscriber.ready.done()
    subscriber.data_received(b"i\n\n")
    assert subscriber.ready.done()


async def test_nchan_refusal_fails_the_handshake() -> None:
    subscriber = NchanSubscriber(nchan_request(8300, "u-1"), Tally())
    transport = connect(subscriber)
    subscriber.data_received(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(ConnectionError, match="403"):
        await subscriber.ready
    assert transport.closed


async def test_nchan_duplicates_and_gaps_are_counted() -> None:
    tally = Tally()
    subscriber = NchanSubscriber(nchan_request(8300, "u-1"), tally)
    connect(subscriber)
    subscriber.data_received(NCHAN_HEAD + b": hi\n\n")
    subscriber.data_received(nchan_message(0, 1) + nchan_message(2, 1) + nchan_message(2, 1))
    assert tally.duplicated == 1
    assert subscriber.missing(4, set()) == 2  # 1 and 3
    assert subscriber.missing(4, {3}) == 1  # a failed publish is not a loss


@pytest.mark.parametrize("step", [1, 13, 1000])
async def test_sinal_stream_still_parses(step: int) -> None:
    tally = Tally()
    subscriber = SseSubscriber(b"GET /v1/stream HTTP/1.1\r\n\r\n", tally)
    connect(subscriber)
    ready = b'retry: 2000\n\nid: 1.QnJvYWRjYXN0.0\nevent: ready\ndata: {"channels":[]}\n\n'
    events = b"".join(chunk(sinal_event(seq, 5)) for seq in range(10))
    stream = SINAL_HEAD + chunk(ready) + events
    feed(subscriber, stream, list(range(step, len(stream), step)))
    assert subscriber.count == 10
    assert tally.duplicated == 0
