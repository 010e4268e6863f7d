"""The storm benchmark's pure parts: loss and duplicate accounting, cursors, percentiles."""

from __future__ import annotations

import asyncio

import pytest

from loadtests.lean import Tally, payload
from loadtests.storm import (
    StormSubscriber,
    handshake_p99_ms,
    last_id,
    lost,
    metric_values,
    stream_request,
    verdict,
)

pytestmark = pytest.mark.anyio

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n"


def event(seq: int, cursor: bytes) -> bytes:
    data = payload(seq, 1, b"")
    return b'id: %s\nevent: bench\ndata: {"channel":"c","data":%s}\n\n' % (cursor, data)


def test_lost_counts_expected_sequences_never_seen() -> None:
    seen = bytearray(8)
    seen[1] = seen[3] = 1
    assert lost([1, 3], seen) == 0
    assert lost([0, 1, 2, 3], seen) == 2
    assert lost([3, 20], seen) == 1  # past the bitmap: not seen


def test_last_id_takes_the_newest_cursor_of_whole_frames() -> None:
    data = b"retry: 2000\n\nid: 1.a\nevent: ready\ndata: {}\n\nid: 1.b\nevent: x\ndata: {}\n\n"
    assert last_id(data, len(data)) == b"1.b"
    assert last_id(data, data.index(b"id: 1.b")) == b"1.a"
    assert last_id(b": ping\n\n", 8) is None
    assert last_id(b"id: 1.c\nevent: x\ndata: {}\n\n", 26) == b"1.c"  # at the read's start


def test_handshake_p99_in_milliseconds() -> None:
    assert handshake_p99_ms([0.001] * 99 + [2.0]) == 2000.0
    assert handshake_p99_ms([0.001] * 200) == 1.0
    assert handshake_p99_ms([]) is None


def test_verdict_names_each_missed_target() -> None:
    good = {
        "clients": 10, "resumed": 10, "seconds_to_all_resumed": 3.0, "lost": 0,
        "duplicated": 0, "resets": 0, "peak_rss_mb": 140.0, "steady_rss_mb": 100.0,
    }  # fmt: skip
    assert all(verdict(good).values())
    bad = {**good, "resumed": 9, "seconds_to_all_resumed": None, "peak_rss_mb": 151.0}
    assert verdict(bad) == {
        "all_resumed": False,
        "none_lost": True,
        "none_duplicated": True,
        "no_resets": True,
        "peak_rss": False,
    }


def test_metric_values_reads_unlabelled_counters() -> None:
    text = "# HELP x\nsinal_replay_reads_total 12.0\nsinal_replay_reads_saved_total 988.0\n"
    names = ("sinal_replay_reads_total", "sinal_replay_reads_saved_total")
    assert metric_values(text, names) == {"replay_reads": 12.0, "replay_reads_saved": 988.0}


async def test_a_reconnected_client_keeps_its_cursor_seen_events_and_resets() -> None:
    tally = Tally()
    first = StormSubscriber(stream_request(1, "t", None), tally)
    ready = b"retry: 2000\n\nid: 1.r\nevent: ready\ndata: {}\n\n"
    first.data_received(HEAD + ready + event(0, b"1.e0"))
    await asyncio.wait_for(first.ready, 1)
    first.data_received(
        b'id: 1.z\nevent: reset\ndata: {"reason":"trimmed"}\n\n' + event(1, b"1.e1")
    )
    assert (first.cursor, first.resets, first.count) == (b"1.e1", 1, 2)

    second = StormSubscriber(stream_request(1, "t", first.cursor), tally, first)
    assert b"Last-Event-ID: 1.e1\r\n" in second.request
    second.data_received(HEAD + b"id: 1.e1\nevent: ready\ndata: {}\n\n" + event(1, b"1.e1"))
    second.data_received(event(2, b"1.e2"))
    assert tally.duplicated == 1  # event 1 again, seen by the first connection
    assert (second.cursor, second.resets, second.count) == (b"1.e2", 1, 3)
    assert lost([0, 1, 2], second.seen) == 0
