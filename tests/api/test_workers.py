"""`sinal serve --workers N`: worker processes on one port, supervised, drained together."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.conftest import POSTGRES_URL, reset_postgres
from tests.support import (
    ADMIN,
    SECRET,
    Received,
    ServerProcess,
    bearer,
    open_stream,
    publish,
    resuming_stream,
)

pytestmark = pytest.mark.anyio

CHANNEL, KIND = "broadcast", "broadcast"


@pytest.fixture
async def workers(redis_url: str, tmp_path: Path) -> AsyncIterator[ServerProcess]:
    """`sinal serve --workers 2` on the Redis engine and PostgreSQL, both workers on the bus."""
    await reset_postgres()
    env = {"SINAL_REDIS_URL": redis_url, "SINAL_DATABASE_URL": POSTGRES_URL}
    server = ServerProcess(tmp_path, env, args=["--workers", "2"])
    # Three processes start (the supervisor, then two workers): on a busy machine that is slow.
    await anyio.to_thread.run_sync(server.launch)
    try:
        await anyio.to_thread.run_sync(server.ready, 60)
        await until_nodes(server.url, lambda nodes: len(up(nodes)) == 2, 60)
        yield server
    finally:
        await anyio.to_thread.run_sync(server.stop)


def up(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [node for node in nodes if node["status"] == "up"]


async def until_nodes(url: str, done: Any, within: float = 20.0) -> list[dict[str, Any]]:
    """`/v1/admin/nodes` once `done(nodes)` holds."""
    with anyio.fail_after(within):
        while True:
            async with httpx.AsyncClient(base_url=url, headers=ADMIN, timeout=5) as client:
                with contextlib.suppress(httpx.HTTPError):
                    response = await client.get("/v1/admin/nodes")
                    if response.status_code == 200:
                        nodes: list[dict[str, Any]] = response.json()["nodes"]
                        if done(nodes):
                            return nodes
            await anyio.sleep(0.1)


async def node_of_each_user(url: str) -> dict[str, str]:
    """The node that holds each user's stream (`/v1/admin/connections`, cluster-wide; asked
    again while a node did not answer in time, as happens on a busy machine)."""
    with anyio.fail_after(20):
        while True:
            async with httpx.AsyncClient(base_url=url, headers=ADMIN, timeout=5) as client:
                response = await client.get("/v1/admin/connections", params={"transport": "sse"})
            assert response.status_code == 200, response.text
            body = response.json()
            if not body["partial"]:
                return {
                    connection["user"]: connection["node"] for connection in body["connections"]
                }


def numbers(received: Received) -> list[int]:
    return [payload["n"] for payload in received.payloads(KIND)]


async def test_both_workers_serve_the_port(workers: ServerProcess) -> None:
    nodes = await until_nodes(workers.url, lambda nodes: len(up(nodes)) == 2)
    # Distinct nodes on the control bus: ids, names and processes of their own.
    assert len({node["id"] for node in nodes}) == 2
    assert sorted(node["name"] for node in nodes) == [
        f"127.0.0.1:{workers.port}/1",
        f"127.0.0.1:{workers.port}/2",
    ]
    assert len({node["pid"] for node in nodes}) == 2
    assert workers.process is not None
    assert workers.process.pid not in {node["pid"] for node in nodes}
    # Each new connection goes to one worker or the other (the kernel hashes connections over
    # the SO_REUSEPORT group): both answer within a few connections.
    answered: set[str] = set()
    with anyio.fail_after(20):
        for _ in range(64):
            async with httpx.AsyncClient(base_url=workers.url, headers=ADMIN) as client:
                answered.add((await client.get("/v1/admin/stats")).json()["node"])
            if len(answered) == 2:
                break
    assert answered == {node["id"] for node in nodes}


async def test_a_killed_worker_is_restarted_and_its_clients_resume(
    workers: ServerProcess,
) -> None:
    nodes = await until_nodes(workers.url, lambda nodes: len(up(nodes)) == 2)
    pids = {node["id"]: node["pid"] for node in nodes}
    names = {node["id"]: node["name"] for node in nodes}
    async with (
        contextlib.AsyncExitStack() as stack,
        # One kept-alive connection for publishing: it stays on one worker, the survivor.
        httpx.AsyncClient(base_url=workers.url, headers=ADMIN) as publisher,
    ):
        survivor = (await publisher.get("/v1/admin/stats")).json()["node"]
        clients: dict[str, Received] = {}
        # Streams until the other worker holds some (each new connection lands on either;
        # each stream's first connect is bounded, and so is their number).
        placed: dict[str, str] = {}
        for user in (f"user{n}" for n in range(32)):
            if sum(node != survivor for node in placed.values()) >= 2 and len(clients) >= 4:
                break
            clients[user] = await stack.enter_async_context(
                resuming_stream(workers.url, bearer(user))
            )
            placed = await node_of_each_user(workers.url)
        assert sum(node != survivor for node in placed.values()) >= 2, placed
        victim = next(node for node in pids if node != survivor)
        on_victim = [user for user, node in placed.items() if node == victim]

        for n in range(5):
            await publish(publisher, CHANNEL, KIND, {"n": n})
        os.kill(pids[victim], signal.SIGKILL)
        for n in range(5, 25):  # while the victim's clients reconnect and it restarts
            await publish(publisher, CHANNEL, KIND, {"n": n})
            await anyio.sleep(0.02)

        for user, received in clients.items():
            await received.until(lambda r: len(r.payloads(KIND)) >= 25, 15)
            assert numbers(received) == list(range(25)), user  # every event once, in order
            assert not received.of_type("reset"), user
        for user in on_victim:
            assert clients[user].opened >= 2, user  # it did reconnect

    # A new process under the dead worker's name.
    restarted = await until_nodes(
        workers.url,
        lambda nodes: any(
            n["name"] == names[victim] and n["pid"] != pids[victim] for n in up(nodes)
        ),
    )
    assert len({n["name"] for n in up(restarted)}) == 2
    logs = workers.logs()
    assert f"(pid {pids[victim]}) was killed by SIGKILL" in logs
    assert "restarting it in" in logs


async def test_sigterm_drains_every_worker(workers: ServerProcess) -> None:
    assert workers.process is not None
    async with contextlib.AsyncExitStack() as stack:
        streams: dict[str, Received] = {}
        for user in (f"user{n}" for n in range(32)):  # until both workers hold one
            if len(set((await node_of_each_user(workers.url)).values())) == 2:
                break
            streams[user], _ = await stack.enter_async_context(
                open_stream(workers.url, bearer(user))
            )
        assert len(set((await node_of_each_user(workers.url)).values())) == 2
        started = time.monotonic()
        workers.process.send_signal(signal.SIGTERM)
        for user, received in streams.items():
            await received.until(lambda r: r.ended, 15)
            assert received.events[-1].event == "disconnect", user
            assert received.events[-1].json() == {"reason": "shutdown", "reconnect": True}
        code = await anyio.to_thread.run_sync(workers.process.wait, 20)
    assert code == 0
    assert time.monotonic() - started < 15
    logs = workers.logs()
    assert "SIGTERM: draining 2 worker(s)" in logs
    assert logs.count("Application shutdown complete") == 2
    assert "all workers stopped" in logs


def serve(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api", "serve", "--port", "1", *args],
        cwd=tmp_path,
        # Only the engine and database given here (no SINAL_REDIS_URL from the environment).
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("SINAL_")},
            "SINAL_JWT_SECRET": SECRET,
            **env,
        },
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_memory_engine_refuses_several_workers(tmp_path: Path) -> None:
    env = {"SINAL_DATABASE_URL": f"sqlite:///{tmp_path / 'sinal.db'}"}
    result = serve(tmp_path, env, "--workers", "2")
    assert result.returncode == 2
    assert "--workers 2 needs the Redis engine (SINAL_REDIS_URL)" in result.stderr
    assert "would never reach the clients of another" in result.stderr
    assert not (tmp_path / "sinal.db").exists()  # refused before anything was done


def test_sqlite_refuses_several_workers(tmp_path: Path, redis_url: str) -> None:
    env = {"SINAL_REDIS_URL": redis_url, "SINAL_DATABASE_URL": f"sqlite:///{tmp_path / 's.db'}"}
    result = serve(tmp_path, env, "--workers", "3")
    assert result.returncode == 2
    assert "--workers 3 needs PostgreSQL" in result.stderr
