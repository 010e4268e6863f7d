"""The engine conformance suite: the same behaviour from `memory` and `redis`."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from streams.cursor import ORIGIN, Position
from streams.engine import Engine, PositionLost, Publication, Retention, Sequenced
from streams.errors import Unavailable
from streams.event import Event
from streams.hub import Hub, Reset, Subscriber
from streams.memory import MemoryEngine
from streams.redis import RedisEngine, keys
from tests.conftest import another_redis_database

pytestmark = pytest.mark.anyio

EngineFactory = Callable[[Retention], Engine]


@pytest.fixture(params=["memory", "redis", "cluster"])
def make_engine(request: pytest.FixtureRequest) -> EngineFactory:
    if request.param == "memory":
        return MemoryEngine
    # The cluster: a private Redis Cluster of 3 primaries (tests/conftest.py).
    url: str = request.getfixturevalue("cluster_url" if request.param == "cluster" else "redis_url")
    return lambda retention: RedisEngine(url, retention)


@pytest.fixture
async def hub(make_engine: EngineFactory) -> AsyncIterator[Hub]:
    hub = Hub(make_engine(Retention(max_len=10_000, max_age_s=3600)), buffer_size=10_000)
    await hub.start()
    yield hub
    await hub.stop()


async def publish_n(engine: Engine, channel: str, count: int, start: int = 0) -> list[Event]:
    return [
        await engine.publish(channel, "test.event", b'{"n":%d}' % n)
        for n in range(start, start + count)
    ]


async def collect(subscriber: Subscriber, count: int) -> list[Event]:
    events: list[Event] = []
    with anyio.fail_after(10):
        while len(events) < count:
            events.extend(i for i in await subscriber.next_batch() if isinstance(i, Event))
    return events


async def test_offsets_increase_per_channel(hub: Hub) -> None:
    events = await publish_n(hub.engine, "execution:a", 50)
    offsets = [event.offset for event in events]
    assert offsets == sorted(offsets)
    assert len(set(offsets)) == 50
    assert len({event.epoch for event in events}) == 1


async def test_read_after_returns_what_follows_in_order(hub: Hub) -> None:
    events = await publish_n(hub.engine, "execution:a", 30)
    await publish_n(hub.engine, "execution:other", 5)
    start = Position(events[9].epoch, events[9].offset)
    page = await hub.engine.read_after("execution:a", start, 10)
    assert [e.data_json for e in page] == [e.data_json for e in events[10:20]]
    rest = await hub.engine.read_after(
        "execution:a", Position(page[-1].epoch, page[-1].offset), 100
    )
    assert [e.data_json for e in rest] == [e.data_json for e in events[20:]]


async def test_head_then_nothing_new(hub: Hub) -> None:
    await publish_n(hub.engine, "execution:a", 3)
    head = await hub.engine.head("execution:a")
    assert await hub.engine.read_after("execution:a", head, 10) == []


async def test_publish_once_takes_each_sequence_once_per_channel(hub: Hub) -> None:
    engine = hub.engine

    async def once(channel: str, data: bytes, source: str, sequence: int) -> Event | None:
        [event] = await engine.publish_once(
            [Sequenced(channel, "n.created", data, source, sequence)]
        )
        return event

    first = await once("notifications:a", b"1", "db1", 1)
    assert first is not None
    assert await once("notifications:a", b"1", "db1", 1) is None
    assert await once("notifications:a", b"0", "db1", 0) is None
    # Another channel keeps its own sequence; another source (a new database) starts afresh.
    assert await once("notifications:b", b"1", "db1", 1) is not None
    assert await once("notifications:a", b"1", "db2", 1) is not None
    # Plain publishes in between neither consume nor reset the sequence.
    await engine.publish("notifications:a", "other", b"null")
    # A batch: repeats inside it are skipped too, and the results keep its order.
    batch = [
        Sequenced("notifications:a", "n.created", b"1", "db2", 1),
        Sequenced("notifications:a", "n.created", b"2", "db2", 2),
        Sequenced("notifications:b", "n.created", b"2", "db1", 2),
        Sequenced("notifications:a", "n.created", b"2", "db2", 2),
    ]
    assert [e is not None for e in await engine.publish_once(batch)] == [False, True, True, False]
    log = await engine.read_after("notifications:a", Position(first.epoch, ORIGIN.offset), 100)
    assert [(e.type, e.data_json) for e in log] == [
        ("n.created", b"1"),
        ("n.created", b"1"),
        ("other", b"null"),
        ("n.created", b"2"),
    ]


async def test_publish_many_keeps_the_order_of_each_channel(hub: Hub) -> None:
    """A batch mixing channels: the events come back in the order given, take increasing
    positions per channel, are stored in that order, arrive live in that order, and each
    event's position resumes right after it."""
    engine = hub.engine
    channels = ["execution:a", "execution:b", "broadcast"]
    items = [Publication(channels[n % 3], "test.event", b'{"n":%d}' % n) for n in range(30)]
    async with hub.subscription(channels) as subscriber:
        events = await engine.publish_many(items)
        live = await collect(subscriber, len(items))
    assert [(e.channel, e.type, e.data_json) for e in events] == [
        (i.channel, i.type, i.data_json) for i in items
    ]
    for channel in channels:
        mine = [e for e in events if e.channel == channel]
        offsets = [e.offset for e in mine]
        assert offsets == sorted(offsets)
        assert len(set(offsets)) == len(mine)
        stored = await engine.read_after(channel, Position(mine[0].epoch, ORIGIN.offset), 100)
        assert [e.data_json for e in stored] == [e.data_json for e in mine]
        assert [e.data_json for e in live if e.channel == channel] == [e.data_json for e in mine]
    for index, event in enumerate(events):
        after = await engine.read_after(event.channel, Position(event.epoch, event.offset), 100)
        assert [e.data_json for e in after] == [
            e.data_json for e in events[index + 1 :] if e.channel == event.channel
        ]
    assert await engine.publish_many([]) == []


async def test_publish_many_follows_single_publishes(hub: Hub) -> None:
    engine = hub.engine
    first = await engine.publish("execution:a", "test.event", b"0")
    batch = await engine.publish_many(
        [Publication("execution:a", "test.event", b"%d" % n) for n in (1, 2)]
    )
    last = await engine.publish("execution:a", "test.event", b"3")
    assert first.offset < batch[0].offset < batch[1].offset < last.offset


async def test_concurrent_publishes_keep_the_order_they_were_made_in(hub: Hub) -> None:
    """Many requests publishing at once (on Redis they share pipelines): one channel's
    events take positions in the order the publishes were made."""
    engine = hub.engine
    events = await asyncio.gather(
        *(engine.publish(f"execution:{n % 3}", "test.event", b"%d" % n) for n in range(300))
    )
    for channel in ("execution:0", "execution:1", "execution:2"):
        mine = [event for event in events if event.channel == channel]
        assert [event.offset for event in mine] == sorted(event.offset for event in mine)
        stored = await engine.read_after(channel, Position(mine[0].epoch, ORIGIN.offset), 500)
        assert [e.data_json for e in stored] == [e.data_json for e in mine]


async def test_redis_publishes_made_together_share_a_pipeline(redis_url: str) -> None:
    engine = RedisEngine(redis_url)
    watcher = aioredis.Redis.from_url(redis_url)
    tag = uuid.uuid4().hex[:8]
    seen: list[str] = []
    try:
        async with watcher.monitor() as monitor:
            await asyncio.gather(
                *(engine.publish(f"execution:{tag}-{n}", "test.event", b"1") for n in range(50))
            )
            await engine._redis.echo(f"done-{tag}")
            with anyio.fail_after(10):
                async for command in monitor.listen():
                    if f"done-{tag}" in command["command"]:
                        break
                    if command["client_type"] == "tcp" and tag in command["command"]:
                        seen.append(command["command"].split(" ", 1)[0].upper())
    finally:
        await engine.close()
        await watcher.aclose()
    assert len(seen) == 50
    # Each pipeline opens with an EVAL: fewer of them than publishes means shared pipelines.
    assert 1 <= seen.count("EVAL") < 50, seen


async def test_redis_reads_made_together_share_a_pipeline(redis_url: str) -> None:
    engine = RedisEngine(redis_url)
    watcher = aioredis.Redis.from_url(redis_url)
    tag = uuid.uuid4().hex[:8]
    channels = [f"execution:{tag}-{n}" for n in range(25)]
    published = await engine.publish_many(
        [Publication(channel, "test.event", b"1") for channel in channels]
    )
    seen: list[str] = []
    try:
        async with watcher.monitor() as monitor:
            heads, replays = await asyncio.gather(
                asyncio.gather(*(engine.head(channel) for channel in channels)),
                asyncio.gather(
                    *(
                        engine.read_after(channel, Position(event.epoch, ORIGIN.offset), 10)
                        for channel, event in zip(channels, published, strict=True)
                    )
                ),
            )
            await engine._redis.echo(f"done-{tag}")
            with anyio.fail_after(10):
                async for command in monitor.listen():
                    if f"done-{tag}" in command["command"]:
                        break
                    if command["client_type"] == "tcp" and tag in command["command"]:
                        seen.append(command["command"].split(" ", 1)[0].upper())
    finally:
        await engine.close()
        await watcher.aclose()
    # Each read answers for its own channel, though they went out together.
    assert [(head.epoch, head.offset) for head in heads] == [
        (event.epoch, event.offset) for event in published
    ]
    assert [[(e.channel, e.offset) for e in replay] for replay in replays] == [
        [(event.channel, event.offset)] for event in published
    ]
    assert len(seen) == 50
    # Each pipeline opens with an EVAL: fewer of them than reads means shared pipelines.
    assert 1 <= seen.count("EVAL") < 50, seen


async def test_redis_publishes_fail_with_unavailable_when_redis_is_not_there() -> None:
    engine = RedisEngine("redis://127.0.0.1:1/0")  # nothing listens on port 1
    try:
        with anyio.fail_after(10):
            results = await asyncio.gather(
                *(engine.publish("execution:a", "test.event", b"1") for _ in range(5)),
                engine.publish_many([Publication("execution:a", "test.event", b"1")]),
                return_exceptions=True,
            )
        assert all(isinstance(result, Unavailable) for result in results), results
    finally:
        await engine.close()


async def test_redis_batch_is_one_round_trip_and_each_script_call_one_slot(
    redis_url: str,
) -> None:
    """Redis Cluster runs a script only when all its keys hash to one slot: every call of the
    publish script in a batch names one channel's keys, under the channel's hash tag. Seen
    with MONITOR, what Redis really received: one call per event, the first an EVAL that
    caches the script and no SCRIPT EXISTS before the pipeline (one round trip)."""
    engine = RedisEngine(redis_url)
    watcher = aioredis.Redis.from_url(redis_url)
    tag = uuid.uuid4().hex[:8]
    channels = [f"notifications:{tag}-a", f"execution:{tag}-b", f"notifications:{tag}-c"]
    items = [Publication(channels[n % 3], "test.event", b"%d" % n) for n in range(7)]
    seen: list[dict[str, Any]] = []
    try:
        async with watcher.monitor() as monitor:
            await engine.publish_many(items)
            await engine._redis.echo(f"done-{tag}")
            with anyio.fail_after(10):
                async for command in monitor.listen():
                    if f"done-{tag}" in command["command"]:
                        break
                    if command["client_type"] == "tcp" and tag in command["command"]:
                        seen.append(command)
    finally:
        await engine.close()
        await watcher.aclose()
    verbs = [command["command"].split(" ", 1)[0].upper() for command in seen]
    assert verbs == ["EVAL"] + ["EVALSHA"] * (len(items) - 1), verbs
    for command, item in zip(seen, items, strict=True):
        called = re.findall(r"sinal:\{[^}]*\}:(?:log|meta)", command["command"])
        assert called == list(keys(item.channel)), command["command"][:200]
        assert len({key_slot(key.encode()) for key in called}) == 1
    # The channels themselves land on different slots: only per call is one slot required.
    assert len({key_slot(keys(channel)[0].encode()) for channel in channels}) > 1


async def test_fan_out_to_every_subscriber_and_only_its_channels(hub: Hub) -> None:
    async with (
        hub.subscription(["execution:a", "broadcast"]) as first,
        hub.subscription(["execution:a"]) as second,
        hub.subscription(["execution:b"]) as third,
    ):
        await publish_n(hub.engine, "execution:a", 20)
        await publish_n(hub.engine, "broadcast", 5)
        await publish_n(hub.engine, "execution:b", 1)
        got_first = await collect(first, 25)
        got_second = await collect(second, 20)
        got_third = await collect(third, 1)
    assert [e.data_json for e in got_first if e.channel == "execution:a"] == [
        b'{"n":%d}' % n for n in range(20)
    ]
    assert [e.data_json for e in got_second] == [b'{"n":%d}' % n for n in range(20)]
    assert [e.channel for e in got_third] == ["execution:b"]
    assert hub.stats.connections == 0


async def test_trimmed_position_is_reported(make_engine: EngineFactory) -> None:
    # Redis trims approximately (whole nodes of 100 entries): publish well past the limit.
    engine = make_engine(Retention(max_len=10, max_age_s=0))
    await engine.connect(Hub(engine))
    try:
        first = (await publish_n(engine, "execution:t", 1))[0]
        await publish_n(engine, "execution:t", 400, start=1)
        with pytest.raises(PositionLost) as lost:
            await engine.read_after("execution:t", Position(first.epoch, first.offset), 10)
        assert lost.value.reason == "trimmed"
        assert lost.value.head == await engine.head("execution:t")
    finally:
        await engine.close()


async def test_position_from_the_future_is_invalid(hub: Hub) -> None:
    event = (await publish_n(hub.engine, "execution:a", 1))[0]
    future = Position(event.epoch, (event.offset[0] + 10_000, 0))
    with pytest.raises(PositionLost) as lost:
        await hub.engine.read_after("execution:a", future, 10)
    assert lost.value.reason == "invalid"


async def test_other_epoch_is_reported(hub: Hub) -> None:
    await publish_n(hub.engine, "execution:a", 2)
    with pytest.raises(PositionLost) as lost:
        await hub.engine.read_after("execution:a", Position("elsewhere", (1, 0)), 10)
    assert lost.value.reason == "epoch"
    with pytest.raises(PositionLost):
        await hub.engine.read_after("execution:a", ORIGIN, 10)


async def test_memory_epoch_changes_with_each_process() -> None:
    assert MemoryEngine().epoch != MemoryEngine().epoch


async def test_redis_lost_data_changes_the_epoch(redis_url: str) -> None:
    engine = RedisEngine(redis_url)
    await engine.connect(Hub(engine))
    try:
        before = (await publish_n(engine, "execution:a", 3))[-1]
        await engine._redis.flushdb()
        after = (await publish_n(engine, "execution:a", 1))[0]
        assert after.epoch != before.epoch
        with pytest.raises(PositionLost) as lost:
            await engine.read_after("execution:a", Position(before.epoch, before.offset), 10)
        assert lost.value.reason == "epoch"
    finally:
        await engine.close()


async def test_redis_reader_catches_up_after_losing_its_connection(redis_url: str) -> None:
    """Events published while the pub/sub connection is down still arrive, once, in order."""
    engine = RedisEngine(redis_url)
    hub = Hub(engine, buffer_size=10_000)
    await hub.start()
    publisher = RedisEngine(redis_url)  # another process, as far as Redis can tell
    admin = aioredis.Redis.from_url(redis_url)
    try:
        async with hub.subscription(["execution:a"]) as subscriber:
            await engine.head("execution:a")  # as a connection does after subscribing
            await publish_n(publisher, "execution:a", 10)
            await collect(subscriber, 10)
            killed = await admin.client_kill_filter(_type="pubsub")
            assert killed >= 1
            await publish_n(publisher, "execution:a", 40, start=10)
            events = await collect(subscriber, 40)
        assert [e.data_json for e in events] == [b'{"n":%d}' % n for n in range(10, 50)]
    finally:
        await hub.stop()
        await publisher.close()
        await admin.aclose()


async def test_redis_reader_resets_when_redis_lost_data_meanwhile(redis_url: str) -> None:
    engine = RedisEngine(redis_url)
    hub = Hub(engine)
    await hub.start()
    admin = aioredis.Redis.from_url(redis_url)
    try:
        async with hub.subscription(["execution:a"]) as subscriber:
            await publish_n(engine, "execution:a", 3)
            await collect(subscriber, 3)
            await admin.client_kill_filter(_type="pubsub")
            await admin.flushdb()
            with anyio.fail_after(10):
                items: list[object] = []
                while not any(isinstance(item, Reset) for item in items):
                    items.extend(await subscriber.next_batch())
        reset = next(item for item in items if isinstance(item, Reset))
        assert reset.channel == "execution:a"
        assert reset.reason == "epoch"
    finally:
        await hub.stop()
        await admin.aclose()


async def test_slow_subscriber_is_closed_and_counted(make_engine: EngineFactory) -> None:
    hub = Hub(make_engine(Retention()), buffer_size=5)
    await hub.start()
    try:
        async with hub.subscription(["execution:a"]) as subscriber:
            closed = anyio.Event()
            subscriber.on_close = lambda reason: closed.set()
            await publish_n(hub.engine, "execution:a", 6)  # one more than the buffer holds
            with anyio.fail_after(10):
                await closed.wait()
            assert subscriber.close_reason == "slow"
        assert hub.stats.slow_consumer_closes == 1
    finally:
        await hub.stop()


async def test_redis_databases_do_not_share_live_events(redis_url: str) -> None:
    """Regression: pub/sub ignores database numbers, so two deployments sharing one Redis
    server on different databases saw each other's live events."""
    other_url = another_redis_database(redis_url)
    engine, other = RedisEngine(redis_url), RedisEngine(other_url)
    hub = Hub(engine)
    await hub.start()
    try:
        async with hub.subscription(["broadcast"]) as subscriber:
            await other.publish("broadcast", "test.event", b'{"from":"other"}')
            await engine.publish("broadcast", "test.event", b'{"from":"mine"}')
            events = await collect(subscriber, 1)
            assert not subscriber.pending
        assert [e.data_json for e in events] == [b'{"from":"mine"}']
    finally:
        await hub.stop()
        await other._redis.flushdb()
        await other.close()
