"""The command queue's conformance suite: the same at-least-once behaviour on both engines."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import redis.asyncio as aioredis

from streams.channels import COMMANDS, is_valid_channel
from streams.commands import (
    COMMAND_TYPE,
    CommandQueue,
    Delivery,
    MemoryCommands,
    RedisCommands,
)
from streams.engine import Engine, Retention, Sequenced
from streams.errors import BadRequest
from streams.event import Event, format_stream_id
from streams.memory import MemoryEngine
from streams.redis import RedisEngine, keys

pytestmark = pytest.mark.anyio

LONG = 60.0  # a redelivery delay no test reaches
SHORT = 0.2


@dataclass
class Setup:
    engine: Engine
    queue: CommandQueue

    async def publish(self, count: int, start: int = 0) -> list[Event]:
        return [
            await self.engine.publish(COMMANDS, COMMAND_TYPE, b'{"n":%d}' % n)
            for n in range(start, start + count)
        ]

    async def claim(
        self, consumer: str, limit: int = 100, wait_s: float = 0, redeliver_after_s: float = LONG
    ) -> list[Delivery]:
        with anyio.fail_after(wait_s + 5):
            return await self.queue.claim(
                consumer, limit=limit, wait_s=wait_s, redeliver_after_s=redeliver_after_s
            )


EngineFactory = Callable[[Retention], Engine]


@pytest.fixture(params=["memory", "redis", "cluster"])
def make_engine(request: pytest.FixtureRequest) -> EngineFactory:
    if request.param == "memory":
        return MemoryEngine
    # The cluster: a private Redis Cluster of 3 primaries (tests/conftest.py).
    url: str = request.getfixturevalue("cluster_url" if request.param == "cluster" else "redis_url")
    return lambda retention: RedisEngine(url, retention)


@pytest.fixture
async def setup(make_engine: EngineFactory) -> AsyncIterator[Setup]:
    engine = make_engine(Retention(max_len=10_000, max_age_s=3600))
    yield Setup(engine, engine.commands())
    await engine.close()


def ids(deliveries: list[Delivery]) -> list[str]:
    return [d.id for d in deliveries]


def ids_of(events: list[Event]) -> list[str]:
    return [format_stream_id(e.offset) for e in events]


async def test_new_entries_reach_a_consumer_once(setup: Setup) -> None:
    events = await setup.publish(3)
    got = await setup.claim("a")
    assert got == [
        Delivery(id, COMMAND_TYPE, e.data_json, 1)
        for id, e in zip(ids_of(events), events, strict=True)
    ]
    assert await setup.claim("a") == []
    assert await setup.claim("b") == []


async def test_consumers_split_entries_without_overlap(setup: Setup) -> None:
    events = await setup.publish(10)
    first = await setup.claim("a", limit=4)
    second = await setup.claim("b", limit=100)
    assert ids(first) == ids_of(events[:4])
    assert ids(second) == ids_of(events[4:])


async def test_concurrent_consumers_never_share_an_entry(setup: Setup) -> None:
    events = await setup.publish(60)
    seen: dict[str, list[str]] = {"a": [], "b": [], "c": []}

    async def consume(consumer: str) -> None:
        while got := await setup.claim(consumer, limit=3):
            seen[consumer].extend(ids(got))
            await anyio.lowlevel.checkpoint()  # let the others interleave

    async with anyio.create_task_group() as tasks:
        for consumer in seen:
            tasks.start_soon(consume, consumer)
    taken = [id for got in seen.values() for id in got]
    assert sorted(taken) == sorted(ids_of(events))
    assert len(set(taken)) == len(taken)


async def test_an_unacknowledged_entry_goes_to_another_consumer(setup: Setup) -> None:
    """The consumer-crashed case: `a` claims and never acks; `b` gets the entry once it is due,
    while waiting for new ones, with one more delivery each time."""
    [event] = await setup.publish(1)
    [first] = await setup.claim("a", redeliver_after_s=SHORT)
    assert await setup.claim("b", redeliver_after_s=SHORT) == []  # not due yet
    started = time.monotonic()
    second = await setup.claim("b", wait_s=3, redeliver_after_s=SHORT)
    assert time.monotonic() - started < 2
    assert second == [Delivery(first.id, COMMAND_TYPE, event.data_json, 2)]
    third = await setup.claim("c", wait_s=3, redeliver_after_s=SHORT)
    assert third == [Delivery(first.id, COMMAND_TYPE, event.data_json, 3)]
    assert await setup.queue.ack([first.id]) == 1
    assert await setup.claim("a", wait_s=SHORT * 2, redeliver_after_s=SHORT) == []


async def test_redelivered_entries_come_first_then_new_ones(setup: Setup) -> None:
    old = await setup.publish(2)
    await setup.claim("a")
    new = await setup.publish(2, start=2)
    got = await setup.claim("b", limit=3, redeliver_after_s=0)
    assert [(d.id, d.deliveries) for d in got] == [
        (ids_of(old)[0], 2),
        (ids_of(old)[1], 2),
        (ids_of(new)[0], 1),
    ]


async def test_acknowledged_entries_are_never_redelivered(setup: Setup) -> None:
    await setup.publish(3)
    got = await setup.claim("a", redeliver_after_s=SHORT)
    assert await setup.queue.ack(ids(got)) == 3
    assert await setup.claim("b", wait_s=SHORT * 3, redeliver_after_s=SHORT) == []
    assert await setup.queue.pending() == 0


async def test_acknowledging_twice_counts_once(setup: Setup) -> None:
    await setup.publish(2)
    first, second = await setup.claim("a")
    assert await setup.queue.ack([first.id]) == 1
    assert await setup.queue.ack([first.id]) == 0
    assert await setup.queue.ack([second.id, second.id]) == 1
    assert await setup.queue.ack(["1-0"]) == 0  # well formed, never delivered
    assert await setup.queue.ack([]) == 0


async def test_a_waiting_claim_returns_as_soon_as_a_command_arrives(setup: Setup) -> None:
    got: list[Delivery] = []

    async def claimer() -> None:
        got.extend(await setup.claim("a", wait_s=30))

    started = time.monotonic()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(claimer)
            await anyio.sleep(0.1)  # let it block; it passes either way
            [event] = await setup.publish(1)
    assert ids(got) == ids_of([event])
    assert time.monotonic() - started < 5


async def test_a_claim_with_nothing_returns_empty_after_the_wait(setup: Setup) -> None:
    started = time.monotonic()
    assert await setup.claim("a", wait_s=0.3) == []
    elapsed = time.monotonic() - started
    assert 0.29 <= elapsed < 2.5
    started = time.monotonic()
    assert await setup.claim("a", wait_s=0) == []
    assert time.monotonic() - started < 1


async def test_pending_counts_delivered_unacknowledged_entries(setup: Setup) -> None:
    assert await setup.queue.pending() == 0
    await setup.publish(3)
    got = await setup.claim("a", limit=2)
    assert await setup.queue.pending() == 2
    await setup.queue.ack([got[0].id])
    assert await setup.queue.pending() == 1
    got += await setup.claim("b")
    assert await setup.queue.pending() == 2
    await setup.queue.ack(ids(got))
    assert await setup.queue.pending() == 0


@pytest.mark.parametrize("bad", ["", "abc", "1-", "-1", "1-2-3", "1.5-0", "99999999999999999999-0"])
async def test_a_malformed_id_is_refused_and_nothing_is_acknowledged(
    setup: Setup, bad: str
) -> None:
    await setup.publish(1)
    [got] = await setup.claim("a")
    with pytest.raises(BadRequest) as error:
        await setup.queue.ack([got.id, bad])
    assert error.value.field == "deliveries"
    assert await setup.queue.pending() == 1


async def test_a_limit_below_one_is_refused(setup: Setup) -> None:
    with pytest.raises(BadRequest) as error:
        await setup.claim("a", limit=0)
    assert error.value.field == "limit"


async def test_entries_from_the_outbox_relay_are_consumed_alike(setup: Setup) -> None:
    def item(n: int) -> Sequenced:
        return Sequenced(COMMANDS, COMMAND_TYPE, b'{"n":%d}' % n, "db1", n)

    assert None not in await setup.engine.publish_once([item(1), item(2)])
    repeat, third = await setup.engine.publish_once([item(2), item(3)])  # the relay retried
    assert repeat is None
    assert third is not None
    got = await setup.claim("a")
    assert [d.data_json for d in got] == [b'{"n":1}', b'{"n":2}', b'{"n":3}']
    assert {d.type for d in got} == {COMMAND_TYPE}


async def test_the_engine_has_one_queue(setup: Setup) -> None:
    await setup.publish(2)
    await setup.claim("a", limit=1)
    other = setup.engine.commands()
    assert other is setup.queue
    [got] = await other.claim("b", limit=10, wait_s=0, redeliver_after_s=LONG)
    assert got.data_json == b'{"n":1}'
    assert await other.pending() == 2


async def test_entries_trimmed_while_pending_are_dropped(make_engine: EngineFactory) -> None:
    """Retention may remove an entry before it is acknowledged: it is no longer pending and
    never redelivered (Redis: XAUTOCLAIM reports and drops it)."""
    engine = make_engine(Retention(max_len=10, max_age_s=3600))
    try:
        setup = Setup(engine, engine.commands())
        old = await setup.publish(5)
        assert ids(await setup.claim("a")) == ids_of(old)
        # Redis trims whole stream nodes (`MAXLEN ~`): enough entries that the first goes.
        await setup.publish(300, start=5)
        got = await setup.claim("b", limit=5, redeliver_after_s=0)
        assert len(got) == 5
        assert not set(ids(got)) & set(ids_of(old))
        assert {d.deliveries for d in got} == {1}
        assert await setup.queue.pending() == 5
    finally:
        await engine.close()


def test_the_commands_channel_is_not_subscribable() -> None:
    assert not is_valid_channel(COMMANDS)


async def test_each_engine_provides_its_queue(setup: Setup) -> None:
    expected = RedisCommands if isinstance(setup.engine, RedisEngine) else MemoryCommands
    assert isinstance(setup.queue, expected)


async def test_redis_consumers_of_the_raw_stream_share_the_group(redis_url: str) -> None:
    """The execution service may use XREADGROUP on `sinal:{commands}:log` directly."""
    engine = RedisEngine(redis_url)
    client = aioredis.Redis.from_url(redis_url)
    try:
        queue = engine.commands()
        await engine.publish(COMMANDS, COMMAND_TYPE, b'{"n":0}')
        await engine.publish(COMMANDS, COMMAND_TYPE, b'{"n":1}')
        [first] = await queue.claim("api", limit=1, wait_s=0, redeliver_after_s=LONG)
        log_key = keys(COMMANDS)[0]
        reply: Any = await client.xreadgroup("executors", "raw", {log_key: ">"}, count=10)
        [[_, [(entry_id, fields)]]] = reply
        assert entry_id.decode() != first.id
        assert fields[b"t"] == COMMAND_TYPE.encode()
        assert fields[b"d"] == b'{"n":1}'
        assert await client.xack(log_key, "executors", entry_id) == 1
        assert await queue.pending() == 1
    finally:
        await client.aclose()
        await engine.close()


async def test_redis_queue_survives_losing_its_stream(redis_url: str) -> None:
    """Redis restarted without persistence: the group is created again on the next call, so
    the outbox's republished commands are delivered."""
    engine = RedisEngine(redis_url)
    client = aioredis.Redis.from_url(redis_url)
    try:
        queue = engine.commands()
        assert await queue.claim("a", limit=1, wait_s=0, redeliver_after_s=LONG) == []
        await client.delete(*keys(COMMANDS))
        await engine.publish(COMMANDS, COMMAND_TYPE, b'{"n":0}')
        [got] = await queue.claim("a", limit=1, wait_s=0, redeliver_after_s=LONG)
        assert got.data_json == b'{"n":0}'
        await client.delete(*keys(COMMANDS))
        assert await queue.pending() == 0
    finally:
        await client.aclose()
        await engine.close()


async def test_the_backlog_counts_what_waits_and_dates_the_oldest(setup: Setup) -> None:
    """For `/metrics` and the alerts: entries delivered and not acknowledged, and entries not
    delivered yet, with when the oldest of them was published; redeliveries counted."""
    assert await setup.queue.backlog() == (0, None)
    events = await setup.publish(3)
    oldest = events[0].offset[0] / 1000
    assert await setup.queue.backlog() == (3, oldest)
    [first, second, third] = await setup.claim("a", redeliver_after_s=SHORT)
    assert await setup.queue.backlog() == (3, oldest)
    assert await setup.queue.ack([first.id]) == 1
    assert await setup.queue.backlog() == (2, events[1].offset[0] / 1000)
    redelivered = await setup.claim("b", limit=1, wait_s=3, redeliver_after_s=SHORT)
    assert ids(redelivered) == [second.id]
    assert setup.queue.redelivered == 1
    assert await setup.queue.ack([second.id, third.id]) == 2
    assert await setup.queue.backlog() == (0, None)
    await setup.publish(1)  # not delivered yet: waiting too
    assert (await setup.queue.backlog())[0] == 1
