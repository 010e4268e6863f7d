"""The Redis engine on a Redis Cluster: routing, re-subscription, failover, two nodes.

The conformance suites (test_engines, test_commands, test_control) run on the cluster too;
these tests cover what only a cluster has: several primaries, and primaries that die.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from loadtests.rediscluster import PrivateCluster
from streams.engine import Publication
from streams.errors import Unavailable
from streams.event import Event
from streams.hub import Hub, Reset, Subscriber
from streams.redis import RedisEngine, keys, live_name
from tests.support import SERVICE, ServerProcess, bearer, open_stream

pytestmark = pytest.mark.anyio


def slot_owners(cluster: PrivateCluster) -> dict[int, int]:
    """Slot → the port of the primary serving it."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=cluster.primaries()[0])
    try:
        ranges: Any = client.execute_command("CLUSTER", "SLOTS")
    finally:
        client.close()
    return {slot: int(entry[2][1]) for entry in ranges for slot in range(entry[0], entry[1] + 1)}


def spread_channels(cluster: PrivateCluster, per_primary: int, prefix: str) -> list[str]:
    """Channels whose slots cover every primary, `per_primary` on each."""
    owners = slot_owners(cluster)
    chosen: dict[int, list[str]] = {port: [] for port in cluster.primaries()}
    n = 0
    while any(len(names) < per_primary for names in chosen.values()):
        channel = f"execution:{prefix}-{n}"
        port = owners[key_slot(keys(channel)[0].encode())]
        if len(chosen[port]) < per_primary:
            chosen[port].append(channel)
        n += 1
    return [channel for names in chosen.values() for channel in names]


async def test_a_batch_goes_to_the_primaries_owning_its_channels(
    cluster_url: str, redis_cluster: PrivateCluster
) -> None:
    """Each primary receives, in one pipeline opening with an EVAL, exactly the calls of the
    channels whose slots it owns, in the order given."""
    tag = uuid.uuid4().hex[:8]
    channels = spread_channels(redis_cluster, 2, tag)
    items = [Publication(channels[n % len(channels)], "t", b"%d" % n) for n in range(24)]
    owners = slot_owners(redis_cluster)
    engine = RedisEngine(cluster_url)
    watchers = {port: aioredis.Redis(port=port) for port in redis_cluster.primaries()}
    seen: dict[int, list[str]] = {port: [] for port in watchers}
    try:
        async with anyio.create_task_group() as group:
            monitors = {
                port: await client.monitor().__aenter__() for port, client in watchers.items()
            }

            async def watch(port: int) -> None:
                async for command in monitors[port].listen():
                    if f"done-{tag}" in command["command"]:
                        return
                    if command["client_type"] == "tcp" and tag in command["command"]:
                        seen[port].append(command["command"])

            for port in watchers:
                group.start_soon(watch, port)
            await engine.publish_many(items)
            for port in watchers:
                await watchers[port].echo(f"done-{tag}")
    finally:
        await engine.close()
        for client in watchers.values():
            await client.aclose()
    for port, commands in seen.items():
        mine = [i for i in items if owners[key_slot(keys(i.channel)[0].encode())] == port]
        assert len(commands) == len(mine) > 0
        assert [c.split(" ", 1)[0].upper() for c in commands] == ["EVAL"] + ["EVALSHA"] * (
            len(mine) - 1
        )
        for command, item in zip(commands, mine, strict=True):
            assert f" {keys(item.channel)[0]} " in command
            assert f" t {item.data_json.decode()} sinal:" in command


async def collect(subscriber: Subscriber, count: int, within: float = 15) -> list[Event]:
    events: list[Event] = []
    with anyio.fail_after(within):
        while len(events) < count:
            events.extend(i for i in await subscriber.next_batch() if isinstance(i, Event))
    return events


async def test_the_reader_subscribes_again_and_catches_up_when_shards_drop_it(
    cluster_url: str, redis_cluster: PrivateCluster
) -> None:
    """Every primary drops the reader's pub/sub connections; what was published meanwhile
    still arrives, once, in order, on channels of every shard."""
    channels = spread_channels(redis_cluster, 1, uuid.uuid4().hex[:8])
    engine, publisher = RedisEngine(cluster_url), RedisEngine(cluster_url)
    hub = Hub(engine, buffer_size=10_000)
    await hub.start()
    admins = [aioredis.Redis(port=port) for port in redis_cluster.primaries()]
    try:
        async with hub.subscription(channels) as subscriber:
            for channel in channels:
                await engine.head(channel)
            await publisher.publish_many([Publication(c, "t", b"0") for c in channels])
            await collect(subscriber, len(channels))
            for admin in admins:
                await admin.client_kill_filter(_type="pubsub")
            await publisher.publish_many(
                [Publication(c, "t", b"%d" % n) for n in range(1, 21) for c in channels]
            )
            events = await collect(subscriber, 20 * len(channels))
        for channel in channels:
            mine = [e.data_json for e in events if e.channel == channel]
            assert mine == [b"%d" % n for n in range(1, 21)]
    finally:
        await hub.stop()
        await publisher.close()
        for admin in admins:
            await admin.aclose()


async def test_a_killed_primary_loses_nothing_silently(
    cluster_url: str, redis_cluster: PrivateCluster, tmp_path: Path
) -> None:
    """A primary is killed (SIGKILL) while events are published on channels of every shard;
    its replica takes over. Every subscriber receives every acknowledged event once, in
    order, or a reset for a channel whose data was lost; no silent gap; resume works after.

    Publishes that answer Unavailable are not repeated (they may have run): the events a
    subscriber gets are checked against the acknowledged ones, and for order. The publisher
    waits for a replica (`wait_replicas=1`), so every acknowledged event is in the log after
    the failover; the promoted replica has none of its own until the killed node comes back
    as one, so the shard acknowledges nothing in between."""
    channels = spread_channels(redis_cluster, 2, uuid.uuid4().hex[:8])
    engine = RedisEngine(cluster_url)
    hub = Hub(engine, buffer_size=100_000)
    await hub.start()
    publisher = RedisEngine(cluster_url, wait_replicas=1, wait_timeout_s=0.3)
    acknowledged: dict[str, list[int]] = {channel: [] for channel in channels}
    victim = slot_owners(redis_cluster)[key_slot(keys(channels[0])[0].encode())]

    def recover() -> None:
        """Once the replica took the victim's slots, start the victim again: it rejoins
        as the new primary's replica."""
        while victim in redis_cluster.primaries():
            time.sleep(0.05)
        redis_cluster.restart(victim)

    try:
        async with hub.subscription(channels) as first, hub.subscription(channels) as second:
            starts = {channel: await engine.head(channel) for channel in channels}

            async def publish_all() -> int:
                """Publish round after round: the victim dies at round 40; 20 rounds after it
                is back as a replica, the last. Returns the last round's number."""
                recovery: asyncio.Task[None] | None = None
                last = None
                n = 0
                while last is None or n <= last:
                    if n == 40:
                        redis_cluster.kill(victim)
                        recovery = asyncio.create_task(anyio.to_thread.run_sync(recover))
                    results = await asyncio.gather(
                        *(publisher.publish(c, "t", b"%d" % n) for c in channels),
                        return_exceptions=True,
                    )
                    for channel, result in zip(channels, results, strict=True):
                        if isinstance(result, Event):
                            acknowledged[channel].append(n)
                        else:
                            assert isinstance(result, Unavailable), result
                    if last is None and recovery is not None and recovery.done():
                        await recovery
                        last = n + 20
                    n += 1
                    await asyncio.sleep(0.02)
                return n - 1

            with anyio.fail_after(60):
                last = await publish_all()
            # Every shard, the failed-over one included, acknowledges again in the end.
            assert all(acknowledged[channel][-1] == last for channel in channels), acknowledged
            for subscriber in (first, second):
                got = await until_complete(subscriber, acknowledged)
                for channel in channels:
                    numbers = [int(e.data_json) for e in got["events"] if e.channel == channel]
                    assert numbers == sorted(set(numbers)), (channel, numbers)  # once, in order
                    if channel not in got["resets"]:
                        assert set(acknowledged[channel]) <= set(numbers), channel
            # Resume after the failover: from where each channel started, its log now holds
            # every acknowledged event (a replica had each before it was acknowledged).
            for channel in channels:
                log = await engine.read_after(channel, starts[channel], 1000)
                assert [int(e.data_json) for e in log] == sorted({int(e.data_json) for e in log})
                assert set(acknowledged[channel]) <= {int(e.data_json) for e in log}, channel
    finally:
        await hub.stop()
        await publisher.close()
        redis_cluster.restart(victim)


async def until_complete(
    subscriber: Subscriber, acknowledged: dict[str, list[int]]
) -> dict[str, Any]:
    """What a subscriber received until every channel has its last acknowledged event or
    a reset."""
    events: list[Event] = []
    resets: set[str] = set()

    def complete() -> bool:
        for channel, numbers in acknowledged.items():
            if channel in resets or not numbers:
                continue
            if not any(e.channel == channel and int(e.data_json) == numbers[-1] for e in events):
                return False
        return True

    with anyio.fail_after(30):
        while not complete():
            for item in await subscriber.next_batch():
                if isinstance(item, Event):
                    events.append(item)
                elif isinstance(item, Reset):
                    resets.add(item.channel)
    return {"events": events, "resets": resets}


async def test_two_servers_share_the_cluster_and_a_client_moves_between_them(
    cluster_url: str, spawn: Callable[..., ServerProcess]
) -> None:
    """A client reads from one server, leaves, and resumes on the other with its cursor:
    everything published meanwhile (through either server) arrives once, in order."""
    env = {"SINAL_REDIS_URL": cluster_url}
    first, second = spawn(env), spawn(env)
    user = f"u{uuid.uuid4().hex[:6]}"
    headers = bearer(user)
    channel = f"notifications:{user}"

    async def publish(server: ServerProcess, n: int) -> None:
        async with httpx.AsyncClient(base_url=server.url) as client:
            response = await client.post(
                "/v1/publish", json={"channel": channel, "type": "t", "data": n}, headers=SERVICE
            )
            assert response.status_code == 201, response.text

    async with open_stream(first.url, headers) as (received, wait):
        for n in range(5):
            await publish(second if n % 2 else first, n)
        await wait(lambda r: len(r.payloads("t")) == 5, 10)
        cursor = received.last_id
    for n in range(5, 10):
        await publish(first, n)
    async with open_stream(second.url, headers, last_event_id=cursor) as (resumed, wait):
        for n in range(10, 15):
            await publish(first, n)
        await wait(lambda r: len(r.payloads("t")) == 10, 10)
    assert received.payloads("t") == list(range(5))
    assert resumed.payloads("t") == list(range(5, 15))
    assert not resumed.of_type("reset")


def test_live_names_of_a_channel_share_its_slot() -> None:
    for channel in ("broadcast", "notifications:alice", "execution:e1"):
        assert key_slot(live_name(channel, 0).encode()) == key_slot(keys(channel)[0].encode())
