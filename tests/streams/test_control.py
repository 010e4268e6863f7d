"""The control bus's conformance suite: the same delivery from `memory` and `redis`.

On Redis two engines over one database are two nodes, as two processes would be; the memory
engine serves one process, so it is one node.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import anyio
import pytest
import redis.asyncio as aioredis

from streams.cursor import Position
from streams.engine import Engine, ResetReason
from streams.event import Event
from streams.memory import MemoryEngine
from streams.redis import RedisEngine
from tests.conftest import another_redis_database

pytestmark = pytest.mark.anyio


class NoSink:
    def dispatch(self, events: list[Event]) -> None:
        pass

    def reset(self, channel: str, reason: ResetReason, head: Position) -> None:
        pass


class Inbox:
    """A node's control handler: what it received, in order."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self._arrived = anyio.Event()

    def __call__(self, message: bytes) -> None:
        self.messages.append(message)
        self._arrived.set()

    async def until(self, count: int) -> list[bytes]:
        with anyio.fail_after(10):
            while len(self.messages) < count:
                self._arrived = anyio.Event()
                await self._arrived.wait()
        return self.messages

    async def until_got(self, message: bytes) -> list[bytes]:
        with anyio.fail_after(10):
            while message not in self.messages:
                self._arrived = anyio.Event()
                await self._arrived.wait()
        return self.messages


class Node:
    def __init__(self, node_id: str, engine: Engine) -> None:
        self.id, self.engine, self.inbox = node_id, engine, Inbox()
        engine.on_control(node_id, self.inbox)


async def start(node_id: str, engine: Engine) -> Node:
    node = Node(node_id, engine)
    await engine.connect(NoSink())
    return node


@pytest.fixture(params=["memory", "redis", "cluster"])
async def nodes(request: pytest.FixtureRequest) -> AsyncIterator[list[Node]]:
    if request.param == "memory":
        started = [await start("a", MemoryEngine())]
    else:
        fixture = "cluster_url" if request.param == "cluster" else "redis_url"
        url: str = request.getfixturevalue(fixture)
        started = [await start("a", RedisEngine(url)), await start("b", RedisEngine(url))]
    yield started
    for node in started:
        await node.engine.close()


async def test_a_message_to_all_reaches_every_node(nodes: list[Node]) -> None:
    sender = nodes[0]
    await sender.engine.control_send(b"hello all")
    for node in nodes:
        assert await node.inbox.until(1) == [b"hello all"]


async def test_a_message_to_one_node_reaches_only_it(nodes: list[Node]) -> None:
    sender, target = nodes[0], nodes[-1]
    await sender.engine.control_send(b"just you", to=target.id)
    await sender.engine.control_send(b"nobody", to="no-such-node")
    # Messages from one sender arrive in order: once this one is in, the others would be too.
    await sender.engine.control_send(b"everyone")
    assert await target.inbox.until(2) == [b"just you", b"everyone"]
    for node in nodes[:-1]:
        if node is not target:
            assert await node.inbox.until(1) == [b"everyone"]


async def test_a_closed_node_gets_nothing_and_the_others_go_on(nodes: list[Node]) -> None:
    sender, closed = nodes[0], nodes[-1]
    await closed.engine.close()
    await sender.engine.control_send(b"to the closed one", to=closed.id)
    await sender.engine.control_send(b"everyone")
    for node in nodes[:-1]:
        assert await node.inbox.until(1) == [b"everyone"]
    assert closed.inbox.messages == []


async def test_a_failing_handler_does_not_stop_the_bus(
    nodes: list[Node], caplog: pytest.LogCaptureFixture
) -> None:
    sender = nodes[0]
    inbox = Inbox()

    def failing(message: bytes) -> None:
        inbox(message)
        if message == b"boom":
            raise RuntimeError("the handler failed")

    sender.engine.on_control(sender.id, failing)
    with caplog.at_level(logging.ERROR, logger="sinal.engine"):
        await sender.engine.control_send(b"boom", to=sender.id)
        await sender.engine.control_send(b"after", to=sender.id)
        assert await inbox.until(2) == [b"boom", b"after"]
    assert "the control handler failed" in caplog.text


async def test_node_ids_are_checked(nodes: list[Node]) -> None:
    engine = nodes[0].engine
    with pytest.raises(ValueError, match="node id"):
        engine.on_control("has space", Inbox())
    with pytest.raises(ValueError, match="node id"):
        engine.on_control("", Inbox())
    with pytest.raises(ValueError, match="node id"):
        await engine.control_send(b"x", to="has space")


async def test_redis_bus_comes_back_after_the_reader_lost_its_connection(
    redis_url: str,
) -> None:
    """The readers re-subscribe the bus when they reconnect; what was sent while they were
    away is lost (live only), what is sent afterwards arrives on every node."""
    a = await start("a", RedisEngine(redis_url))
    b = await start("b", RedisEngine(redis_url))
    admin = aioredis.Redis.from_url(redis_url)
    try:
        assert await admin.client_kill_filter(_type="pubsub") >= 2
        # No event says when a reader is back, so probe until both nodes hear again.
        with anyio.fail_after(10):
            while not (a.inbox.messages and b.inbox.messages):
                await a.engine.control_send(b"probe")
                with anyio.move_on_after(0.05):
                    await b.inbox.until(1)
        # Probes still on their way arrive first: messages from one sender keep their order.
        heard_a, heard_b = len(a.inbox.messages), len(b.inbox.messages)
        await a.engine.control_send(b"just b", to="b")
        await a.engine.control_send(b"everyone")
        await a.engine.control_send(b"done")
        b_got = (await b.inbox.until_got(b"done"))[heard_b:]
        a_got = (await a.inbox.until_got(b"done"))[heard_a:]
        assert [m for m in b_got if m != b"probe"] == [b"just b", b"everyone", b"done"]
        assert [m for m in a_got if m != b"probe"] == [b"everyone", b"done"]
    finally:
        await admin.aclose()
        await a.engine.close()
        await b.engine.close()


async def test_redis_databases_do_not_share_the_bus(redis_url: str) -> None:
    """Pub/sub ignores database numbers: the database in the bus's name keeps deployments
    sharing one Redis server apart."""
    other_url = another_redis_database(redis_url)
    mine = await start("a", RedisEngine(redis_url))
    other = await start("a", RedisEngine(other_url))
    try:
        await other.engine.control_send(b"from the other")
        await mine.engine.control_send(b"from mine")
        assert await mine.inbox.until(1) == [b"from mine"]
        assert await other.inbox.until(1) == [b"from the other"]
    finally:
        await mine.engine.close()
        await other.engine.close()
