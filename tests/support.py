"""Test support: a real `sinal serve` process and a streaming SSE client with deadlines."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx_sse
import redis

from api.auth import mint_token

SECRET = "test-secret-that-is-long-enough-for-hs256"
# SSE events Sinal itself sends, not published ones.
CONTROL_EVENTS = ("", "ready", "reset", "disconnect")
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# Module-level tokens are made when the suite is collected and used until it ends: they must
# outlive the whole run, a slow one included (a 10-minute lifetime made a 12-minute run fail).
TOKEN_TTL_S = 4 * 3600


def token(sub: str, *roles: str, teams: tuple[str, ...] = (), ttl_s: int = TOKEN_TTL_S) -> str:
    return mint_token(SECRET, sub, roles, teams, ttl_s)


def bearer(sub: str, *roles: str, **kwargs: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub, *roles, **kwargs)}"}


SERVICE = bearer("svc", "service")
# Valid ISO 8601 times whose UTC form is outside years 1-9999 (Python's datetime).
OVERFLOWS_UTC = ("9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00")


def nested_lists(depth: int) -> Any:
    """JSON arrays nested `depth` deep: `[[[]]]` for 3."""
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


ADMIN = bearer("root", "admin")


class ServerProcess:
    """`python -m api serve` in a subprocess, on a free port, logging to a file.

    `env` overrides the defaults below; a value of None unsets the variable.
    """

    def __init__(
        self,
        workdir: Path,
        env: Mapping[str, str | None] | None = None,
        port: int | None = None,
        args: Sequence[str] = (),
    ):
        self.workdir = workdir
        self.port = port or free_port()
        self.args = list(args)  # more `sinal serve` options, `--workers 2` say
        merged: dict[str, str | None] = {
            **os.environ,
            "SINAL_JWT_SECRET": SECRET,
            "SINAL_DATABASE_URL": f"sqlite:///{workdir / 'sinal.db'}",
            "SINAL_LOG_LEVEL": "info",
            **(env or {}),
        }
        self.env = {name: value for name, value in merged.items() if value is not None}
        self.log_path = workdir / f"server-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> ServerProcess:
        self.launch()
        return self.ready(timeout)

    def launch(self) -> ServerProcess:
        """Start the process without waiting for it (`ready` waits): several start at once."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "api", "serve", "--port", str(self.port), *self.args],
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def ready(self, timeout: float = 20.0) -> ServerProcess:
        """Wait until the launched server answers `/readyz`."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.logs()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not become ready in {timeout}s:\n{self.logs()}")

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        self.process = None
        return code

    def restart(self) -> ServerProcess:
        self.stop()
        return self.start()

    def logs(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


@dataclass
class Received:
    """What one stream connection has seen so far."""

    events: list[httpx_sse.ServerSentEvent] = field(default_factory=list)
    last_id: str | None = None
    retries: list[int] = field(default_factory=list)
    ended: bool = False
    changed: anyio.Event = field(default_factory=anyio.Event)
    headers: httpx.Headers = field(default_factory=httpx.Headers)  # the response's
    opened: int = 0  # streams opened (`resuming_stream` opens one after another)

    def add(self, event: httpx_sse.ServerSentEvent) -> None:
        if event.data:  # frames that only carry `retry:` are not events
            self.events.append(event)
        if event.retry is not None:
            self.retries.append(event.retry)
        if event.id:
            self.last_id = event.id
        self.changed.set()
        self.changed = anyio.Event()

    async def until(self, predicate: Callable[[Received], bool], within: float = 10.0) -> None:
        """Wait until `predicate` holds; TimeoutError after `within` seconds."""
        with anyio.fail_after(within):
            while not predicate(self):
                await self.changed.wait()

    def of_type(self, *types: str) -> list[httpx_sse.ServerSentEvent]:
        return [event for event in self.events if event.event in types]

    def payloads(self, type: str | None = None) -> list[Any]:
        return [
            json.loads(event.data)["data"]
            for event in self.events
            if event.event not in CONTROL_EVENTS and (type is None or event.event == type)
        ]


async def stream_until(
    base_url: str,
    headers: dict[str, str],
    done: Callable[[Received], bool],
    *,
    params: dict[str, Any] | list[tuple[str, str]] | None = None,
    last_event_id: str | None = None,
    within: float = 10.0,
) -> Received:
    """Read `/v1/stream` until `done(received)` holds; fail after `within` seconds."""
    with anyio.fail_after(within):
        async with open_stream(base_url, headers, params=params, last_event_id=last_event_id) as (
            received,
            _,
        ):
            await received.until(done, within)
    return received


@contextlib.asynccontextmanager
async def open_stream(
    base_url: str,
    headers: dict[str, str],
    *,
    params: dict[str, Any] | list[tuple[str, str]] | None = None,
    last_event_id: str | None = None,
) -> AsyncIterator[tuple[Received, Callable[[Callable[[Received], bool], float], Any]]]:
    """A stream read in the background; `wait(predicate, timeout)` waits for what it holds."""
    received = Received()
    ready = anyio.Event()
    request_headers = dict(headers)
    if last_event_id:
        request_headers["Last-Event-ID"] = last_event_id

    async def read() -> None:
        async with (
            httpx.AsyncClient(base_url=base_url, timeout=None) as client,
            httpx_sse.aconnect_sse(
                client, "GET", "/v1/stream", headers=request_headers, params=params
            ) as source,
        ):
            source.response.raise_for_status()
            received.headers = source.response.headers
            async for event in source.aiter_sse():
                received.add(event)
                if event.event == "ready":
                    ready.set()
        received.ended = True  # the server closed the stream
        received.changed.set()

    async with anyio.create_task_group() as group:
        group.start_soon(read)
        with anyio.fail_after(10):
            await ready.wait()
        yield received, received.until
        group.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def resuming_stream(
    base_url: str, headers: dict[str, str], *, within: float = 10.0
) -> AsyncIterator[Received]:
    """A stream read in the background that, like `EventSource`, opens again with its last
    cursor (`Last-Event-ID`) whenever it ends or fails, 50 ms later; what every connection
    received accumulates in one `Received`. Entered once the first stream is `ready`."""
    received = Received()
    ready = anyio.Event()

    async def read_once() -> None:
        request_headers = dict(headers)
        if received.last_id:
            request_headers["Last-Event-ID"] = received.last_id
        async with (
            httpx.AsyncClient(base_url=base_url, timeout=None) as client,
            httpx_sse.aconnect_sse(client, "GET", "/v1/stream", headers=request_headers) as source,
        ):
            source.response.raise_for_status()
            received.opened += 1
            async for event in source.aiter_sse():
                received.add(event)
                if event.event == "ready":
                    ready.set()

    async def read() -> None:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                await read_once()
            received.changed.set()
            received.changed = anyio.Event()
            await anyio.sleep(0.05)

    async with anyio.create_task_group() as group:
        group.start_soon(read)
        with anyio.fail_after(within):
            await ready.wait()
        yield received
        group.cancel_scope.cancel()


async def publish(
    client: httpx.AsyncClient, channel: str, type: str, data: Any, headers: dict[str, str] = SERVICE
) -> dict[str, Any]:
    response = await client.post(
        "/v1/publish", json={"channel": channel, "type": type, "data": data}, headers=headers
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_problem(response: httpx.Response, status: int, field: str | None = None) -> Any:
    """`response` is an RFC 9457 problem with `status`, naming `field` when one is given."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    if field is not None:
        assert body.get("field") == field, body
    return body


async def stream_response(
    base_url: str,
    headers: dict[str, str],
    params: dict[str, Any] | list[tuple[str, str]] | None = None,
) -> httpx.Response:
    """The answer to `GET /v1/stream`, its body read only when it is not an endless stream."""
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=10) as client,
        client.stream("GET", "/v1/stream", headers=headers, params=params) as response,
    ):
        if response.status_code != 200:
            await response.aread()
    return response


class PrivateRedis:
    """A redis-server of the test's own, with no persistence, so a restart loses everything."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(host="127.0.0.1", port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


# The publish script's work minus its live message: the entry with its predecessor (`p`), and
# the channel's `last`, as if the PUBLISH had been lost on its way. KEYS: log, meta. ARGV:
# type, data. The channel must exist already (its epoch is set).
PUBLISH_WITHOUT_LIVE = """
local previous = redis.call('HGET', KEYS[2], 'last') or '0-0'
local id = redis.call('XADD', KEYS[1], '*', 't', ARGV[1], 'd', ARGV[2], 'p', previous)
redis.call('HSET', KEYS[2], 'last', id)
return id
"""


async def publish_without_live(url: str, channel: str, type: str, data: Any) -> str:
    """Append an event to `channel`'s stream on the Redis at `url` (a cluster's too) without
    its live message."""
    from streams import redisclient
    from streams.redis import keys  # the engine's key layout, not a copy of it

    client = redisclient.client(redisclient.parse(url))
    try:
        sid = await client.eval(  # type: ignore[misc]
            PUBLISH_WITHOUT_LIVE, 2, *keys(channel), type, json.dumps(data)
        )
    finally:
        await client.aclose()
    return bytes(sid).decode()


class PrivateSentinels:
    """A primary, one replica (`--replicaof`) and three Sentinels watching them as `service`,
    on free ports, without persistence; every process stopped by its PID.

    A primary that stops answering is marked down after `DOWN_AFTER_MS`, and two Sentinels
    agreeing promote the replica within seconds."""

    SERVICE = "sinal"
    DOWN_AFTER_MS = 1000
    FAILOVER_TIMEOUT_MS = 3000

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.primary_port, self.replica_port = free_port(), free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    def url(self, db: int = 0) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.SERVICE}?db={db}"

    def start(self, timeout: float = 20.0) -> None:
        for port, extra in (
            (self.primary_port, []),
            (self.replica_port, ["--replicaof", "127.0.0.1", str(self.primary_port)]),
        ):
            self._spawn(port, ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
                               *extra])  # fmt: skip
        for port in self.sentinel_ports:
            config = self.workdir / f"sentinel-{port}.conf"  # Sentinel rewrites its own file
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.workdir}\n"
                f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.primary_port} 2\n"
                f"sentinel down-after-milliseconds {self.SERVICE} {self.DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {self.SERVICE} {self.FAILOVER_TIMEOUT_MS}\n"
            )
            self._spawn(port, ["redis-server", str(config), "--sentinel"])
        self._wait(self._ready, timeout, "the Sentinels did not learn the replica and each other")

    def _spawn(self, port: int, command: list[str]) -> None:
        self.processes[port] = subprocess.Popen(command, stdout=subprocess.DEVNULL)

    def _ready(self) -> bool:
        replica = redis.Redis(port=self.replica_port)
        try:
            if replica.info("replication").get("master_link_status") != "up":
                return False
        finally:
            replica.close()
        for port in self.sentinel_ports:
            sentinel = redis.Redis(port=port)
            try:
                replicas = sentinel.sentinel_slaves(self.SERVICE)
                peers = sentinel.sentinel_sentinels(self.SERVICE)
            finally:
                sentinel.close()
            if not any(not r["is_sdown"] for r in replicas) or len(peers) < 2:
                return False
        return True

    def primary(self) -> int:
        """The port of the primary the Sentinels name now."""
        sentinel = redis.Redis(port=self.sentinel_ports[0])
        try:
            _, port = sentinel.sentinel_get_master_addr_by_name(self.SERVICE)
        finally:
            sentinel.close()
        return int(port)

    def kill_primary(self) -> int:
        """SIGKILL the primary; its port."""
        port = self.primary()
        process = self.processes.pop(port)
        process.kill()
        process.wait()
        return port

    def wait_failover(self, old_port: int, timeout: float = 20.0) -> None:
        self._wait(lambda: self.primary() != old_port, timeout, "no failover")

    def rejoin(self, old_port: int, timeout: float = 20.0) -> None:
        """Start the killed primary again as the new primary's replica (empty: nothing is
        persisted) and wait until it finished its first sync, so that `WAIT 1` succeeds."""
        primary = self.primary()
        self._spawn(old_port, ["redis-server", "--port", str(old_port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
                               "--replicaof", "127.0.0.1", str(primary)])  # fmt: skip

        def synced() -> bool:
            replication = redis.Redis(port=primary).info("replication")
            replicas = [v for k, v in replication.items() if k[:5] == "slave" and k[5:].isdigit()]
            return any(r["port"] == old_port and r["state"] == "online" for r in replicas)

        self._wait(synced, timeout, "the old primary did not rejoin as a replica")

    @staticmethod
    def _wait(holds: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(redis.RedisError):
                if holds():
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} within {timeout}s")
            time.sleep(0.1)

    def stop(self) -> None:
        for process in self.processes.values():
            process.kill()
            process.wait()
        self.processes.clear()
