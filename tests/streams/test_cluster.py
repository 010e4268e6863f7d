"""Nodes and surveys over the control bus (`streams/cluster.py`), on both engines.

On Redis two engines over one database are two nodes, as two processes would be; the memory
engine is one process, so one node.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from streams.cluster import GONE_AFTER, Cluster, Info, new_node_id
from streams.engine import Engine
from streams.memory import MemoryEngine
from streams.redis import RedisEngine
from tests.streams.test_control import NoSink

pytestmark = pytest.mark.anyio

HEARTBEAT_S = 0.2


async def node(engine: Engine, name: str) -> Cluster:
    info = Info(id=new_node_id(), name=name, pid=os.getpid(), version="t", started_at=time.time())
    cluster = Cluster(engine, info, heartbeat_s=HEARTBEAT_S, survey_timeout_s=0.5)

    async def echo(question: dict[str, Any]) -> dict[str, Any]:
        if question.get("fail"):
            raise RuntimeError("asked to fail")
        return {"name": name, "got": question["n"]}

    cluster.answer("echo", echo)
    await engine.connect(NoSink())
    await cluster.start()
    return cluster


async def names_known(cluster: Cluster, count: int) -> list[str]:
    """The names of the nodes `cluster` knows, once it knows `count`."""
    with anyio.fail_after(5):
        while True:
            names = [seen.info.name for seen in cluster.nodes()]
            if len(names) == count:
                return names
            await anyio.sleep(0.02)


@pytest.fixture
async def memory_node() -> AsyncIterator[Cluster]:
    cluster = await node(MemoryEngine(), "solo")
    yield cluster
    await cluster.stop()
    await cluster.engine.close()


async def test_the_memory_engine_is_one_node_that_answers_itself(memory_node: Cluster) -> None:
    assert [seen.info.name for seen in memory_node.nodes()] == ["solo"]
    survey = await memory_node.survey({"kind": "echo", "n": 1})
    assert survey.answers == {memory_node.node_id: {"name": "solo", "got": 1}}
    assert (survey.partial, survey.unreachable) == (False, [])


async def test_an_answerer_that_fails_answers_with_the_error(memory_node: Cluster) -> None:
    survey = await memory_node.survey({"kind": "echo", "n": 1, "fail": True})
    assert survey.answers[memory_node.node_id] == {"error": "asked to fail"}
    unknown = await memory_node.survey({"kind": "nothing"})
    assert "unknown question" in unknown.answers[memory_node.node_id]["error"]


@pytest.mark.redis
async def test_nodes_find_each_other_and_surveys_gather_every_answer(redis_url: str) -> None:
    a = await node(RedisEngine(redis_url), "a")
    b = await node(RedisEngine(redis_url), "b")
    try:
        # b's hello is answered at once: no waiting for a's next heartbeat.
        assert await names_known(b, 2) == ["b", "a"]
        assert await names_known(a, 2) == ["a", "b"]
        survey = await a.survey({"kind": "echo", "n": 7})
        assert survey.answers == {
            a.node_id: {"name": "a", "got": 7},
            b.node_id: {"name": "b", "got": 7},
        }
        only_b = await a.survey({"kind": "echo", "n": 8}, to=b.node_id)
        assert only_b.answers == {b.node_id: {"name": "b", "got": 8}}
        await b.stop()  # says bye: gone at once
        assert await names_known(a, 1) == ["a"]
        assert a.take_departed() == {b.node_id}  # it stopped; it did not fail
        assert a.take_departed() == set()
    finally:
        await a.stop()
        for cluster in (a, b):
            await cluster.engine.close()


@pytest.mark.redis
async def test_heartbeats_carry_each_nodes_figures(redis_url: str) -> None:
    a = await node(RedisEngine(redis_url), "a")
    b = await node(RedisEngine(redis_url), "b")
    count = iter(range(1, 10**6))
    b.figures = lambda: b'{"n":%d}' % next(count)
    try:
        with anyio.fail_after(5):
            while True:
                seen = {s.info.name: s.figures for s in a.nodes()}
                if seen.get("b") is not None and seen["b"] != b'{"n":1}':
                    break  # a later heartbeat than the first, each with its own figures
                await anyio.sleep(0.02)
        assert seen["a"] is None  # a node's own figures are not in its table
    finally:
        for cluster in (a, b):
            await cluster.stop()
            await cluster.engine.close()


@pytest.mark.redis
async def test_a_silent_node_is_unreachable_then_gone(redis_url: str) -> None:
    a = await node(RedisEngine(redis_url), "a")
    b = await node(RedisEngine(redis_url), "b")
    try:
        await names_known(a, 2)
        # b dies without a word: no more heartbeats, no answers, no bye.
        assert b._beat is not None
        b._stopping.set()  # its heartbeat ends (cancelled midway, a publish could leak)
        await b._beat
        b.engine.on_control(b.node_id, lambda message: None)
        died = time.monotonic()
        survey = await a.survey({"kind": "echo", "n": 1})
        assert survey.answers.keys() == {a.node_id}
        assert (survey.partial, survey.unreachable) == (True, [b.node_id])
        assert await names_known(a, 1) == ["a"]
        assert time.monotonic() - died <= (GONE_AFTER + 1) * HEARTBEAT_S + 0.5
    finally:
        for cluster in (a, b):
            await cluster.stop()
            await cluster.engine.close()
