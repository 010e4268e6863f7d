"""The shipped nginx site (deploy/nginx/sinal.conf) in a real nginx, in front of two Sinal nodes.

The test changes only what an operator edits: the upstream block's `server` lines and the
`listen` line. nginx runs unprivileged, with its files under the test's directory
(`loadtests.nginx`); Debian's package is installed when missing.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from loadtests.nginx import ensure_nginx, private_paths, start
from loadtests.procs import Child
from tests.conftest import POSTGRES_URL, require_service, reset_postgres
from tests.support import (
    ADMIN,
    ROOT,
    Received,
    ServerProcess,
    bearer,
    free_port,
    open_stream,
    publish,
    resuming_stream,
)

pytestmark = pytest.mark.anyio

SITE = ROOT / "deploy" / "nginx" / "sinal.conf"
CHANNEL, KIND = "broadcast", "broadcast"


def site_for(nodes: list[int], port: int) -> str:
    """The shipped site with its upstream block listing `nodes` and listening on `port`."""
    servers = "".join(
        f"    server 127.0.0.1:{node} max_fails=1 fail_timeout=5s;\n" for node in nodes
    )
    text, upstreams = re.subn(
        r"(?m)^(upstream sinal \{\n)(?:    server [^\n]*\n)+",
        lambda match: match.group(1) + servers,
        SITE.read_text(),
    )
    text, listens = re.subn(r"(?m)^    listen 80;$", f"    listen 127.0.0.1:{port};", text)
    assert (upstreams, listens) == (1, 1), "the marked UPSTREAM or LISTEN lines moved"
    return text


def main_config(prefix: Path, site: Path) -> str:
    """nginx.conf as a distribution has it, reduced: the site included in `http`."""
    main_paths, http_paths = private_paths(prefix)
    return f"""
daemon off;
master_process on;
worker_processes 1;
{main_paths}
events {{
    worker_connections 1024;
}}
http {{
    access_log off;
    {http_paths}
    include {site};
}}
"""


@dataclass
class Proxied:
    url: str
    nodes: list[ServerProcess]
    nginx: Child


@pytest.fixture
async def proxied(redis_url: str, tmp_path: Path) -> AsyncIterator[Proxied]:
    """Two nodes (Redis engine, PostgreSQL) behind nginx with the shipped site."""
    try:
        nginx = ensure_nginx()
    except SystemExit as error:
        require_service("nginx", str(error))
    await reset_postgres()
    env = {"SINAL_REDIS_URL": redis_url, "SINAL_DATABASE_URL": POSTGRES_URL}
    nodes = [ServerProcess(tmp_path, env) for _ in range(2)]
    try:
        for node in nodes:
            node.launch()
        for node in nodes:
            await anyio.to_thread.run_sync(node.ready, 60)
        port, prefix = free_port(), tmp_path / "nginx"
        prefix.mkdir()
        site = prefix / "sinal.conf"
        site.write_text(site_for([node.port for node in nodes], port))
        proxy = start(nginx, prefix, main_config(prefix, site), name="nginx")
        try:
            await anyio.to_thread.run_sync(proxy.wait_listening, port)
            yield Proxied(f"http://127.0.0.1:{port}", nodes, proxy)
        finally:
            proxy.process.terminate()
            proxy.process.wait(10)
    finally:
        for node in nodes:
            await anyio.to_thread.run_sync(node.stop)


async def test_an_event_passes_the_proxy_at_once(proxied: Proxied) -> None:
    """Nothing between the publish and the client buffers: each event arrives within 100 ms of
    the moment its publish was sent (through the proxy too)."""
    delays: list[float] = []
    async with (
        open_stream(proxied.url, bearer("alice")) as (received, wait),
        httpx.AsyncClient(base_url=proxied.url) as client,
    ):
        assert received.headers["content-type"].startswith("text/event-stream")
        for n in range(5):
            sent = time.monotonic()
            await publish(client, "notifications:alice", "notification.created", {"n": n})
            await wait(lambda r, n=n: len(r.payloads()) > n, 5)
            delays.append(time.monotonic() - sent)
    assert [payload["n"] for payload in received.payloads()] == list(range(5))
    assert max(delays) < 0.1, delays


async def node_names(url: str) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=url, headers=ADMIN) as client:
        response = await client.get("/v1/admin/nodes")
    assert response.status_code == 200, response.text
    return {node["id"]: node["name"] for node in response.json()["nodes"]}


async def placement(url: str) -> dict[str, str]:
    """The node name that holds each user's stream."""
    names = await node_names(url)
    with anyio.fail_after(20):
        while True:  # asked again while a node did not answer in time (a busy machine)
            async with httpx.AsyncClient(base_url=url, headers=ADMIN) as client:
                response = await client.get("/v1/admin/connections", params={"transport": "sse"})
            assert response.status_code == 200, response.text
            if not response.json()["partial"]:
                break
    connections: list[dict[str, Any]] = response.json()["connections"]
    return {c["user"]: names[c["node"]] for c in connections}


async def test_draining_a_node_moves_its_clients_through_the_proxy(proxied: Proxied) -> None:
    leaving, staying = proxied.nodes
    leaving_name = f"127.0.0.1:{leaving.port}"
    async with contextlib.AsyncExitStack() as stack:
        clients: dict[str, Received] = {}
        placed: dict[str, str] = {}
        for user in (f"user{n}" for n in range(16)):  # until the leaving node holds two
            if sum(name == leaving_name for name in placed.values()) >= 2:
                break
            clients[user] = await stack.enter_async_context(
                resuming_stream(proxied.url, bearer(user))
            )
            placed = await placement(proxied.url)
        moved = [user for user, name in placed.items() if name == leaving_name]
        assert len(moved) >= 2, placed

        async with httpx.AsyncClient(base_url=staying.url) as publisher:
            for n in range(5):
                await publish(publisher, CHANNEL, KIND, {"n": n})
            codes: list[int | None] = []
            async with anyio.create_task_group() as group:

                async def drain() -> None:
                    codes.append(await anyio.to_thread.run_sync(leaving.stop))

                group.start_soon(drain)
                for n in range(5, 25):  # while the leaving node drains
                    await publish(publisher, CHANNEL, KIND, {"n": n})
                    await anyio.sleep(0.02)
        assert codes == [-15]  # drained and gone (uvicorn re-raises the signal it handled)

        for user, received in clients.items():
            await received.until(lambda r: len(r.payloads(KIND)) >= 25, 15)
            assert [p["n"] for p in received.payloads(KIND)] == list(range(25)), user
            assert not received.of_type("reset"), user
        for user in moved:
            disconnects = [event.json() for event in clients[user].of_type("disconnect")]
            assert disconnects == [{"reason": "shutdown", "reconnect": True}], user
            assert clients[user].opened == 2, user  # straight to the other node, via nginx
        assert set((await placement(proxied.url)).values()) == {f"127.0.0.1:{staying.port}"}
