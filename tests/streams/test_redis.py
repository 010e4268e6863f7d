"""The Redis engine's own behaviour beyond the conformance suite: the live message format and
gaps found while the pub/sub connection stays up, on a standalone Redis and on a cluster."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest

from streams.cursor import Position
from streams.engine import Publication, ResetReason
from streams.errors import Unavailable
from streams.event import Event, StreamId
from streams.redis import RedisEngine, parse_live
from tests.support import publish_without_live

pytestmark = pytest.mark.anyio


class Recorder:
    """A sink that keeps what the engine delivers, in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.resets: list[tuple[str, ResetReason]] = []
        self.changed = asyncio.Event()

    def dispatch(self, events: list[Event]) -> None:
        self.events.extend(events)
        self.changed.set()

    def reset(self, channel: str, reason: ResetReason, head: Position) -> None:
        self.resets.append((channel, reason))
        self.changed.set()

    def numbers(self, channel: str) -> list[int]:
        return [json.loads(e.data_json)["n"] for e in self.events if e.channel == channel]

    async def until(self, predicate: Callable[[Recorder], bool], within: float = 10) -> None:
        with anyio.fail_after(within):
            while not predicate(self):
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture(params=["standalone", "cluster"])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[tuple[RedisEngine, Recorder]]:
    """An engine on a standalone Redis (pub/sub), or on a private Redis Cluster, whose live
    messages go by sharded pub/sub (`SPUBLISH`), each shard on a connection of its own."""
    url: str = request.getfixturevalue("cluster_url" if request.param == "cluster" else "redis_url")
    engine, sink = RedisEngine(url), Recorder()
    await engine.connect(sink)
    yield engine, sink
    await engine.close()


async def publish(engine: RedisEngine, channel: str, numbers: range) -> None:
    for n in numbers:
        await engine.publish(channel, "test.event", b'{"n":%d}' % n)


def test_live_message_carries_its_predecessor() -> None:
    event, previous = parse_live("execution:a", b'ab12 1700-3 1700-2 test.event {"a": "b c"}')
    assert (event.channel, event.type, event.epoch) == ("execution:a", "test.event", "ab12")
    assert (event.offset, previous) == ((1700, 3), (1700, 2))
    assert event.data_json == b'{"a": "b c"}'
    # The form without the predecessor, from processes of the previous version.
    event, previous = parse_live("execution:a", b"ab12 1700-3 test.event {}")
    assert (event.type, event.offset, event.data_json, previous) == (
        "test.event",
        (1700, 3),
        b"{}",
        None,
    )
    malformed_ids = (
        b"x-3",
        b"1700-",
        b"1_700-3",
        b"+1700-3",
        b"1700-3-4",
        "\u0661\u0667-3".encode(),
    )
    malformed = [
        b"ab12 1700-3",
        b"ab12 1700-3 1700-2 t.e",
        *(b"ab12 %s test.event {}" % sid for sid in malformed_ids),
        *(b"ab12 1700-3 1%s test.event {}" % sid for sid in malformed_ids),
    ]
    for message in malformed:
        with pytest.raises(ValueError, match=r"values to unpack|not a stream id"):
            parse_live("execution:a", message)
    with pytest.raises(ValueError, match="out of range"):
        parse_live("execution:a", b"ab12 18446744073709551616-0 test.event {}")
    # A sequence part may use all 64 bits.
    assert parse_live("execution:a", b"ab12 1700-18446744073709551615 t.e {}")[0].offset == (
        1700,
        2**64 - 1,
    )


async def test_live_message_lost_while_connected_is_caught_up_in_order_once(
    engine: tuple[RedisEngine, Recorder],
) -> None:
    """An event whose live message never arrives (in the stream, never published live) is
    delivered when the next live message of its channel reveals the gap: late, in order,
    once, and counted apart from reconnect catch-ups."""
    engine_, sink = engine
    channel = "execution:gap"
    await engine_.watch(channel)
    await engine_.head(channel)  # as a connection does once subscribed
    await publish(engine_, channel, range(0, 3))
    await sink.until(lambda s: len(s.numbers(channel)) == 3)
    await publish_without_live(engine_.url, channel, "test.event", {"n": 3})
    await publish_without_live(engine_.url, channel, "test.event", {"n": 4})
    await publish(engine_, channel, range(5, 40))
    await sink.until(lambda s: 39 in s.numbers(channel))
    await publish(engine_, channel, range(40, 42))
    await sink.until(lambda s: 41 in s.numbers(channel))
    assert sink.numbers(channel) == list(range(42))
    offsets = [e.offset for e in sink.events]
    assert offsets == sorted(set(offsets))
    assert (engine_.gaps_while_connected, engine_.gaps_caught_up, sink.resets) == (1, 0, [])


async def test_filling_a_gap_holds_its_channel_only(
    engine: tuple[RedisEngine, Recorder],
) -> None:
    """While one channel's gap is read from the stream, other channels' live events go on,
    and the channel's own live events wait, then follow the gap in order."""
    engine_, sink = engine
    gap, other = "execution:gap", "execution:other"
    for channel in (gap, other):
        await engine_.watch(channel)
        await engine_.head(channel)
    stalled, release = asyncio.Event(), asyncio.Event()
    run_read = engine_._run_read

    async def slow_read(channel: str, after: str, count: int) -> tuple[str, StreamId, list[Any]]:
        if channel == gap and count:
            stalled.set()
            await release.wait()
        return await run_read(channel, after, count)

    engine_._run_read = slow_read  # type: ignore[method-assign]
    await publish(engine_, gap, range(0, 1))
    await sink.until(lambda s: s.numbers(gap) == [0])
    await publish_without_live(engine_.url, gap, "test.event", {"n": 1})
    await publish(engine_, gap, range(2, 3))
    with anyio.fail_after(10):
        await stalled.wait()
    await publish(engine_, other, range(0, 3))
    await publish(engine_, gap, range(3, 6))  # held behind the gap
    await sink.until(lambda s: s.numbers(other) == [0, 1, 2])
    assert sink.numbers(gap) == [0]
    release.set()
    await sink.until(lambda s: 5 in s.numbers(gap))
    assert sink.numbers(gap) == list(range(6))
    assert engine_.gaps_while_connected == 1


async def test_a_publish_no_replica_holds_in_time_answers_unavailable(redis_url: str) -> None:
    """`wait_replicas`: the shared test Redis has no replica, so `WAIT 1` times out and the
    publish is refused (counted), where the same publish without the wait is acknowledged."""
    waiting = RedisEngine(redis_url, wait_replicas=1, wait_timeout_s=0.05)
    plain = RedisEngine(redis_url)
    try:
        with pytest.raises(Unavailable, match="0 of 1 replicas"):
            await waiting.publish("wait:alone", "t", b"1")
        with pytest.raises(Unavailable, match="0 of 1 replicas"):
            await waiting.publish_many([Publication("wait:alone", "t", b"2")])
        assert waiting.unreplicated == 2
        placed = await plain.publish("wait:alone", "t", b"3")
        # The refused publishes are in the log all the same: a 503 says "may have run".
        log = await plain.read_after("wait:alone", Position(placed.epoch, (0, 0)), 10)
        assert [e.data_json for e in log] == [b"1", b"2", b"3"]
    finally:
        await waiting.close()
        await plain.close()


async def test_a_publish_is_acknowledged_once_a_replica_holds_it(cluster_url: str) -> None:
    """On the private cluster every primary has a replica: `WAIT 1` is answered and each
    publish of a batch spread over the shards is acknowledged."""
    engine = RedisEngine(cluster_url, wait_replicas=1, wait_timeout_s=2.0)
    try:
        items = [Publication(f"wait:{n}", "t", b"%d" % n) for n in range(12)]
        placed = await engine.publish_many(items)
        assert [e.data_json for e in placed] == [item.data_json for item in items]
        assert (await engine.publish("wait:0", "t", b"again")).offset > placed[0].offset
        assert engine.unreplicated == 0
    finally:
        await engine.close()
