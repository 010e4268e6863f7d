"""Fan-out benchmark: one channel, N SSE subscribers, a fixed publish rate; Socket.IO alongside.

    uv run python -m loadtests.fanout [--subscribers 2000 --rate 40 --duration 20
                                       --idle-connections 10000 --skip-socketio ...]

Phases, each against a freshly started server pinned to one core (`--server-core`, default 0)
while this process, the load generator, runs pinned to another (`--client-core`, default 1):

1. Sinal fan-out: N lean SSE subscribers on `broadcast`; events published through
   `POST /v1/publish` at `--rate` for `--warmup` + `--duration` seconds; delivery latency
   (publish send time → read by the subscriber), deliveries/s, lost and duplicated events.
2. Socket.IO fan-out: the same workload against `loadtests.socketio_baseline` (python-socketio
   + AsyncRedisManager under uvicorn), published through an external write-only manager.
3. Nchan fan-out: the same workload against nginx with Nchan (`loadtests.nchan`): EventSource
   subscribers of `/sub/broadcast`, events POSTed to `/pub/broadcast`.
4. Idle memory: server RSS before and after opening K idle SSE connections.

Progress goes to stderr; the last stdout line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from api.auth import mint_token
from loadtests.lean import (
    EngineIoSubscriber,
    NchanSubscriber,
    SseSubscriber,
    Subscriber,
    Tally,
    engineio_request,
    nchan_request,
    open_many,
    padding,
    payload,
    sse_request,
)
from loadtests.nchan import start_nchan
from loadtests.procs import (
    Child,
    CoreMeter,
    CpuMeter,
    cores_busy_before,
    cpu_seconds,
    foreign_cpu_seconds,
    free_port,
    log,
    nofile_limit,
    open_fds,
    percentile,
    pinned_child,
    redis_for_benchmark,
    rss_kb,
    run_benchmark,
    self_cpu_seconds,
)
from loadtests.schedule import Schedule, released, sleep_until
from loadtests.socketio_baseline import external_emitter

SECRET = "loadtest-secret-that-is-long-enough-for-hs256"
CHANNEL = "broadcast"
ROOT = Path(__file__).resolve().parent.parent

# What the server is expected to reach on this benchmark (DESIGN.md, issue brief).
TARGETS = {
    "deliveries_per_s": 80_000,
    "p99_ms": 100,
    "ratio_vs_socketio": 5,
    "idle_kb_per_conn": 14,
}

Publish = Callable[[int, int], Awaitable[None]]
"""Publish event `seq`, stamped `sent_ns`; raises on failure."""

MAX_IN_FLIGHT = 256


@dataclass(frozen=True)
class Config:
    subscribers: int
    rate: float
    duration: float
    warmup: float
    drain: float
    payload_bytes: int
    publishers: int
    idle_connections: int
    skip_socketio: bool
    calibrate: bool
    redis_url: str | None
    server_core: int
    client_core: int
    connect_concurrency: int
    skip_nchan: bool = False

    @property
    def nofile(self) -> int:
        return max(self.subscribers, self.idle_connections) + 1024


@dataclass
class Figures:
    """One system's fan-out result over the measured window."""

    connected: int
    connect_failures: int
    deliveries_per_s: float
    expected_deliveries_per_s: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    lost: int
    duplicated: int
    disconnects: int
    published: int
    publish_errors: int
    publish_p50_ms: float | None  # POST /v1/publish (or Redis emit) round trip
    publish_p99_ms: float | None
    publish_stalls: int  # times MAX_IN_FLIGHT publishes were unanswered
    max_schedule_lag_ms: float  # how late the generator itself sent an event
    server_cpu_pct: float
    generator_cpu_pct: float
    server_core_busy_pct: float
    client_core_busy_pct: float
    foreign_cpu_pct: float


# -- the workload, common to both systems -----------------------------------------------------


class Meters:
    """Who is busy: the server and generator processes (% of one core), both cores (which also
    count irq/softirq time, where much loopback TCP work lands), and every other process on
    the machine (a test suite running alongside skews the figures; this shows by how much)."""

    def __init__(self, server_pid: int, cfg: Config) -> None:
        self.server = CpuMeter(lambda: cpu_seconds(server_pid))
        self.generator = CpuMeter(self_cpu_seconds)
        self.server_core = CoreMeter(cfg.server_core)
        self.client_core = CoreMeter(cfg.client_core)
        self.foreign = CpuMeter(foreign_cpu_seconds)

    def lap(self) -> dict[str, float]:
        return {
            "server_cpu_pct": round(self.server.lap(), 1),
            "generator_cpu_pct": round(self.generator.lap(), 1),
            "server_core_busy_pct": round(self.server_core.lap(), 1),
            "client_core_busy_pct": round(self.client_core.lap(), 1),
            "foreign_cpu_pct": round(self.foreign.lap(), 1),
        }


async def drive(
    name: str,
    publish: Publish,
    subscribers: list[Subscriber],
    tally: Tally,
    cfg: Config,
    server_pid: int,
    connect_failures: int,
) -> Figures:
    """Publish at a fixed rate, measure the window after the warm-up, then wait for the drain.

    Open loop, as real publishers are: event `seq` is due at `start + seq / rate`
    (`loadtests.schedule`), stamped with that moment and sent then, whether or not earlier
    publishes have been answered (up to `MAX_IN_FLIGHT`). A server too busy to answer
    therefore shows up as latency, not as a publisher that politely slows down and hides it.
    """
    total = round(cfg.rate * (cfg.warmup + cfg.duration))
    measure_from = round(cfg.rate * cfg.warmup)
    failed: set[int] = set()
    in_flight: set[asyncio.Task[None]] = set()
    publish_ns: list[int] = []
    stalls = 0

    async def publish_one(seq: int, sent_ns: int) -> None:
        try:
            await publish(seq, sent_ns)
            publish_ns.append(time.time_ns() - sent_ns)
        except Exception as error:
            failed.add(seq)
            if len(failed) <= 3:
                log(f"{name}: publish {seq} failed: {error!r}")

    progress = asyncio.create_task(_report(name, tally, subscribers, Meters(server_pid, cfg)))
    schedule = Schedule(cfg.rate, time.monotonic() + 0.05, total)
    try:
        async for seq in released(schedule):
            if seq == measure_from:
                tally.measuring = True
                meters = Meters(server_pid, cfg)
                window_start, received_at_start = time.monotonic(), tally.received
            if len(in_flight) >= MAX_IN_FLIGHT:  # a safety valve, not a pace
                stalls += 1
                await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            task = asyncio.create_task(publish_one(seq, time.time_ns()))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        await sleep_until(schedule.end)
        tally.measuring = False
        window = time.monotonic() - window_start
        delivered = tally.received - received_at_start
        load = meters.lap()
        await asyncio.gather(*in_flight)
        await _drain(name, subscribers, total - len(failed), cfg.drain)
    finally:
        progress.cancel()

    latencies = sorted(tally.latencies_ns)
    return Figures(
        connected=len(subscribers),
        connect_failures=connect_failures,
        deliveries_per_s=round(delivered / window),
        expected_deliveries_per_s=round(cfg.rate * len(subscribers)),
        p50_ms=percentile(latencies, 0.50),
        p90_ms=percentile(latencies, 0.90),
        p99_ms=percentile(latencies, 0.99),
        max_ms=percentile(latencies, 1.0),
        lost=sum(subscriber.missing(total, failed) for subscriber in subscribers),
        duplicated=tally.duplicated,
        disconnects=tally.disconnects,
        published=total - len(failed),
        publish_errors=len(failed),
        publish_p50_ms=percentile(sorted(publish_ns), 0.50),
        publish_p99_ms=percentile(sorted(publish_ns), 0.99),
        publish_stalls=stalls,
        max_schedule_lag_ms=round(schedule.max_lag * 1000, 1),
        **load,
    )


async def _drain(name: str, subscribers: list[Subscriber], expected: int, within: float) -> None:
    """Give in-flight deliveries `within` seconds; whatever has not arrived then is lost."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        behind = sum(1 for s in subscribers if s.count < expected and not s.closed)
        if behind == 0:
            return
        await asyncio.sleep(0.1)
    log(f"{name}: {behind} subscriber(s) still short of {expected} events after {within}s")


async def _report(name: str, tally: Tally, subscribers: list[Subscriber], meters: Meters) -> None:
    """A progress line every 2 s: the delivery rate, and who is busy."""
    last, last_at, started = tally.received, time.monotonic(), time.monotonic()
    while True:
        await asyncio.sleep(2)
        now = time.monotonic()
        rate = (tally.received - last) / (now - last_at)
        last, last_at = tally.received, now
        open_ = sum(1 for s in subscribers if not s.closed)
        load = meters.lap()
        log(
            f"{name}: t={now - started:4.0f}s deliveries/s={rate:8.0f} open={open_} "
            f"server={load['server_cpu_pct']:3.0f}% generator={load['generator_cpu_pct']:3.0f}% "
            f"cores={load['server_core_busy_pct']:3.0f}%/{load['client_core_busy_pct']:3.0f}% "
            f"others={load['foreign_cpu_pct']:3.0f}%"
        )


def _close_all(subscribers: list[Subscriber]) -> None:
    for subscriber in subscribers:
        subscriber.close()


# -- Sinal -------------------------------------------------------------------------------------


def start_sinal(
    cfg: Config,
    redis_url: str,
    workdir: Path,
    root: Path = ROOT,
    env: Mapping[str, str] | None = None,
) -> tuple[Child, int]:
    """`sinal serve` on the Redis engine, pinned to the server core; or the null server.

    `root` is the source tree the server runs from (another revision's checkout, to compare);
    `env`, settings of its own (`SINAL_METRICS=off`, to compare).
    """
    port = free_port()
    env = {
        **os.environ,
        "SINAL_REDIS_URL": redis_url,
        "SINAL_JWT_SECRET": SECRET,
        "SINAL_DATABASE_URL": f"sqlite:///{workdir / 'sinal.db'}",
        # Access logs for every publish would be measured as server work.
        "SINAL_LOG_LEVEL": "warning",
        "PYTHONPATH": str(root),
        **(env or {}),
    }
    module = "loadtests.nullserver" if cfg.calibrate else "api"
    argv = [sys.executable, "-m", module, *([] if cfg.calibrate else ["serve"])]
    argv += ["--port", str(port)]
    server = Child(
        f"{module}-{port}",
        argv,
        env=env,
        cwd=workdir,
        preexec=pinned_child(cfg.server_core, cfg.nofile),
    )
    server.wait_listening(port)
    deadline = time.monotonic() + 20
    while httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"server not ready:\n{server.tail()}")
        time.sleep(0.1)
    return server, port


def user_token(index: int) -> str:
    return mint_token(SECRET, f"bench-{index}", ttl_s=3600)


class SinalPublisher:
    """`POST /v1/publish` over keep-alive connections, one per concurrent publisher."""

    def __init__(self, port: int, pad: bytes, connections: int) -> None:
        token = mint_token(SECRET, "bench-publisher", ["service"], ttl_s=3600)
        self.pad = pad
        self.client = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            # Waiting for a free connection is part of the latency measured, not an error.
            timeout=httpx.Timeout(10, pool=None),
        )

    async def __call__(self, seq: int, sent_ns: int) -> None:
        body = b'{"channel":"%s","type":"bench","data":%s}' % (
            CHANNEL.encode(),
            payload(seq, sent_ns, self.pad),
        )
        response = await self.client.post("/v1/publish", content=body)
        if response.status_code != 201:
            raise RuntimeError(f"{response.status_code}: {response.text[:200]}")

    async def aclose(self) -> None:
        await self.client.aclose()


async def admin_stats(port: int) -> dict[str, Any]:
    token = mint_token(SECRET, "bench-admin", ["admin"], ttl_s=600)
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(
            f"http://127.0.0.1:{port}/v1/admin/stats",
            headers={"Authorization": f"Bearer {token}"},
        )
    response.raise_for_status()
    stats: dict[str, Any] = response.json()
    return stats


async def connections_after_close(port: int, within: float = 10.0) -> int:
    """The server's open-connection count once every client has gone (should reach 0)."""
    deadline = time.monotonic() + within
    while True:
        count = int((await admin_stats(port))["connections"])
        if count == 0 or time.monotonic() > deadline:
            return count
        await asyncio.sleep(0.2)


async def sinal_fanout(
    cfg: Config,
    redis_url: str,
    workdir: Path,
    root: Path = ROOT,
    env: Mapping[str, str] | None = None,
    alongside: Callable[[int], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """The fan-out phase against a fresh server; `alongside(port)` runs while events are
    published (a metrics scraper, say) and is cancelled after."""
    server, port = start_sinal(cfg, redis_url, workdir, root, env)
    log(f"sinal: server pid {server.pid} on port {port}, core {cfg.server_core}")
    subscribers: list[Subscriber] = []
    try:
        tally = Tally()
        tokens = [user_token(index) for index in range(cfg.subscribers)]
        subscribers, failures = await open_many(
            lambda index: SseSubscriber(sse_request(port, tokens[index]), tally),
            cfg.subscribers,
            port,
            concurrency=cfg.connect_concurrency,
            progress=lambda n: log(f"sinal: {n} subscribers ready"),
        )
        log(f"sinal: {len(subscribers)} subscribers ready ({failures} failed); publishing")
        publisher = SinalPublisher(port, padding(cfg.payload_bytes), cfg.publishers)
        side = None if alongside is None else asyncio.create_task(alongside(port))
        try:
            figures = await drive("sinal", publisher, subscribers, tally, cfg, server.pid, failures)
        finally:
            await publisher.aclose()
            if side is not None:
                side.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await side
        stats = await admin_stats(port)
        _close_all(subscribers)
        remaining = await connections_after_close(port)
        return {
            **asdict(figures),
            "slow_consumer_closes": stats["slow_consumer_closes"],
            "server_connections_after_close": remaining,
        }
    finally:
        _close_all(subscribers)
        server.stop()


async def sinal_idle(
    cfg: Config, redis_url: str, workdir: Path, root: Path = ROOT
) -> dict[str, Any]:
    """RSS growth per idle SSE connection, on a fresh server."""
    server, port = start_sinal(cfg, redis_url, workdir, root)
    log(f"idle: server pid {server.pid} on port {port}")
    connections: list[Subscriber] = []
    try:
        # Warm up first, so lazily imported code and first-use caches are not billed per connection.
        warm, _ = await open_many(
            lambda index: SseSubscriber(sse_request(port, user_token(index)), None), 100, port
        )
        _close_all(warm)
        await connections_after_close(port)
        await asyncio.sleep(1)
        before = rss_kb(server.pid)
        tokens = [user_token(index) for index in range(cfg.idle_connections)]
        handshakes: list[int] = []
        cpu_before, opening = cpu_seconds(server.pid), time.monotonic()
        connections, failures = await open_many(
            lambda index: SseSubscriber(sse_request(port, tokens[index]), None),
            cfg.idle_connections,
            port,
            concurrency=cfg.connect_concurrency,
            handshake_s=60,
            progress=lambda n: log(f"idle: {n} connections open"),
            handshakes_ns=handshakes,
        )
        connect_s = time.monotonic() - opening
        server_cpu_s = cpu_seconds(server.pid) - cpu_before
        await asyncio.sleep(3)  # let the server settle (buffers, pub/sub confirmations)
        after = rss_kb(server.pid)
        stats = await admin_stats(port)
        opened = len(connections)
        handshakes.sort()
        log(f"idle: {opened} open ({failures} failed), RSS {before} kB → {after} kB")
        return {
            "idle_connections": opened,
            "idle_connect_failures": failures,
            "idle_server_connections": stats["connections"],
            "idle_rss_before_kb": before,
            "idle_rss_after_kb": after,
            "idle_kb_per_conn": round((after - before) / opened, 2) if opened else None,
            # Opening them: wall time, handshakes (connect → ready frame, `connect_concurrency`
            # at a time) and the server CPU each one cost.
            "idle_connect_s": round(connect_s, 2),
            "idle_handshake_p50_ms": percentile(handshakes, 0.50),
            "idle_handshake_p99_ms": percentile(handshakes, 0.99),
            "idle_server_cpu_ms_per_handshake": (
                round(server_cpu_s * 1000 / opened, 3) if opened else None
            ),
            # The descriptor ceiling: what the server holds, and its soft limit.
            "idle_server_fds": open_fds(server.pid),
            "idle_server_nofile": nofile_limit(server.pid),
        }
    finally:
        _close_all(connections)
        server.stop()


# -- Socket.IO baseline ------------------------------------------------------------------------


def start_socketio(cfg: Config, redis_url: str, workdir: Path) -> tuple[Child, int]:
    port = free_port()
    argv = [sys.executable, "-m", "loadtests.socketio_baseline", "--port", str(port)]
    argv += ["--redis-url", redis_url]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = Child(
        f"socketio-{port}",
        argv,
        env=env,
        cwd=workdir,
        preexec=pinned_child(cfg.server_core, cfg.nofile),
    )
    server.wait_listening(port)
    return server, port


class SocketIoPublisher:
    """The publishing side of the Socket.IO stack: an external write-only Redis manager."""

    def __init__(self, redis_url: str, pad: bytes) -> None:
        self.manager = external_emitter(redis_url)
        self.pad = pad.decode()

    async def __call__(self, seq: int, sent_ns: int) -> None:
        # Key order and compact separators make Socket.IO's frame carry the marker lean scans.
        data = {"q": seq, "t": sent_ns, "p": self.pad}
        await self.manager.emit("bench", data, namespace="/")


async def socketio_fanout(cfg: Config, redis_url: str, workdir: Path) -> dict[str, Any]:
    server, port = start_socketio(cfg, redis_url, workdir)
    log(f"socketio: server pid {server.pid} on port {port}, core {cfg.server_core}")
    subscribers: list[Subscriber] = []
    try:
        tally = Tally()
        subscribers, failures = await open_many(
            lambda _: EngineIoSubscriber(engineio_request(port), tally),
            cfg.subscribers,
            port,
            concurrency=cfg.connect_concurrency,
            progress=lambda n: log(f"socketio: {n} subscribers ready"),
        )
        log(f"socketio: {len(subscribers)} subscribers ready ({failures} failed); publishing")
        # The server's Redis listener starts with its first client; give it time to subscribe.
        await asyncio.sleep(1)
        publisher = SocketIoPublisher(redis_url, padding(cfg.payload_bytes))
        figures = await drive("socketio", publisher, subscribers, tally, cfg, server.pid, failures)
        return asdict(figures)
    finally:
        _close_all(subscribers)
        server.stop()


# -- Nchan baseline ----------------------------------------------------------------------------


class NchanPublisher:
    """`POST /pub/broadcast`: the body is the event's data, as Sinal's subscribers get it."""

    def __init__(self, port: int, pad: bytes, connections: int) -> None:
        self.pad = pad
        self.client = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            timeout=httpx.Timeout(10, pool=None),
        )

    async def __call__(self, seq: int, sent_ns: int) -> None:
        response = await self.client.post(
            f"/pub/{CHANNEL}", content=payload(seq, sent_ns, self.pad)
        )
        if response.status_code not in (201, 202):  # 202: nobody was subscribed
            raise RuntimeError(f"{response.status_code}: {response.text[:200]}")

    async def aclose(self) -> None:
        await self.client.aclose()


async def nchan_fanout(cfg: Config, workdir: Path) -> dict[str, Any]:
    nchan = start_nchan(workdir, cfg.server_core, cfg.nofile)
    log(f"nchan: worker pid {nchan.worker_pid} on port {nchan.port}, core {cfg.server_core}")
    subscribers: list[Subscriber] = []
    try:
        tally = Tally()
        subscribers, failures = await open_many(
            lambda _: NchanSubscriber(nchan_request(nchan.port, CHANNEL), tally),
            cfg.subscribers,
            nchan.port,
            concurrency=cfg.connect_concurrency,
            progress=lambda n: log(f"nchan: {n} subscribers ready"),
        )
        log(f"nchan: {len(subscribers)} subscribers ready ({failures} failed); publishing")
        publisher = NchanPublisher(nchan.port, padding(cfg.payload_bytes), cfg.publishers)
        try:
            # The worker does the work (the master only watches it): its CPU is the server's.
            figures = await drive(
                "nchan", publisher, subscribers, tally, cfg, nchan.worker_pid, failures
            )
        finally:
            await publisher.aclose()
        return asdict(figures)
    finally:
        _close_all(subscribers)
        nchan.stop()


# -- the run ---------------------------------------------------------------------------------


def prefixed(prefix: str, figures: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}{key}": value for key, value in figures.items()}


def ratio(ours: float | None, theirs: float | None) -> float | None:
    return None if ours is None or not theirs else round(ours / theirs, 2)


def verdict(result: dict[str, Any]) -> dict[str, bool | None]:
    """Which targets this run met (None where the figure was not measured)."""

    def at_least(key: str) -> bool | None:
        value = result.get(key)
        return None if value is None else value >= TARGETS[key]

    def at_most(key: str) -> bool | None:
        value = result.get(key)
        return None if value is None else value <= TARGETS[key]

    return {
        "deliveries_per_s": at_least("deliveries_per_s"),
        "p99_ms": at_most("p99_ms"),
        "no_loss": result["lost"] == 0 and result["duplicated"] == 0,
        "ratio_vs_socketio": at_least("ratio_vs_socketio"),
        "idle_kb_per_conn": at_most("idle_kb_per_conn"),
    }


async def run(cfg: Config) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="sinal-fanout-", ignore_cleanup_errors=True) as tmp,
        redis_for_benchmark(cfg.redis_url, Path(tmp)) as redis_url,
    ):
        workdir = Path(tmp)
        log(f"redis: {redis_url}; workdir {workdir}")
        quiet = await cores_busy_before(cfg.server_core, cfg.client_core)
        result: dict[str, Any] = {
            "machine_busy_before_pct": quiet,
            "subscribers": cfg.subscribers,
            "rate": cfg.rate,
            "duration": cfg.duration,
            "warmup": cfg.warmup,
            "payload_bytes": cfg.payload_bytes,
        }
        if cfg.calibrate:
            result["server"] = "loadtests.nullserver (generator calibration)"
            result.update(await sinal_fanout(cfg, redis_url, workdir))
            return result
        result.update(await sinal_fanout(cfg, redis_url, workdir))
        if not cfg.skip_socketio:
            result.update(prefixed("socketio_", await socketio_fanout(cfg, redis_url, workdir)))
            baseline = result["socketio_deliveries_per_s"]
            result["ratio_vs_socketio"] = (
                round(result["deliveries_per_s"] / baseline, 2) if baseline else None
            )
        else:
            result.update(socketio_deliveries_per_s=None, socketio_p50_ms=None)
            result.update(socketio_p99_ms=None, ratio_vs_socketio=None)
        if not cfg.skip_nchan:
            result.update(prefixed("nchan_", await nchan_fanout(cfg, workdir)))
            result["ratio_vs_nchan"] = ratio(
                result["deliveries_per_s"], result["nchan_deliveries_per_s"]
            )
            result["p99_ratio_vs_nchan"] = ratio(result["p99_ms"], result["nchan_p99_ms"])
        else:
            result.update(nchan_deliveries_per_s=None, nchan_p50_ms=None, nchan_p99_ms=None)
            result.update(ratio_vs_nchan=None, p99_ratio_vs_nchan=None)
        if cfg.idle_connections > 0:
            result.update(await sinal_idle(cfg, redis_url, workdir))
        else:
            result.update(idle_connections=0, idle_kb_per_conn=None)
        result["targets_met"] = verdict(result)
        return result


def add_workload(parser: argparse.ArgumentParser) -> None:
    """The fan-out workload's options (`loadtests.compare` runs the same workload)."""
    add = parser.add_argument
    add("--subscribers", type=int, default=2000, help="SSE subscribers of one channel")
    add("--rate", type=float, default=40, help="events published per second")
    add("--duration", type=float, default=20, help="measured seconds, after the warm-up")
    add("--warmup", type=float, default=5, help="seconds published before measuring")
    add("--drain", type=float, default=5, help="seconds to wait for stragglers at the end")
    add("--payload-bytes", type=int, default=100, help="size of each event's data JSON")
    add("--publishers", type=int, default=16, help="keep-alive publish connections")
    add("--idle-connections", type=int, default=10_000, help="0 skips the idle-memory phase")


def add_placement(parser: argparse.ArgumentParser) -> None:
    """Which cores the server and the generator run on, and how fast connections open."""
    add = parser.add_argument
    add("--server-core", type=int, default=0)
    add("--client-core", type=int, default=1)
    add("--connect-concurrency", type=int, default=200, help="handshakes in flight")


def parse_args(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.fanout", description=__doc__.splitlines()[0]
    )
    add = parser.add_argument
    add_workload(parser)
    add("--skip-socketio", action="store_true", help="skip the Socket.IO baseline")
    add("--skip-nchan", action="store_true", help="skip the Nchan baseline")
    add(
        "--calibrate",
        action="store_true",
        help="measure the generator's ceiling against loadtests.nullserver (no Sinal, no "
        "Socket.IO, no Nchan, no idle phase)",
    )
    add(
        "--redis-url",
        help="use this Redis database (flushed first!) instead of a private redis-server",
    )
    add_placement(parser)
    args = parser.parse_args(argv)
    for name in ("subscribers", "rate", "duration", "publishers"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive")
    if args.warmup < 0 or args.drain < 0 or args.idle_connections < 0:
        parser.error("--warmup, --drain and --idle-connections must not be negative")
    return Config(**vars(args))


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    run_benchmark(lambda: run(cfg), cfg.nofile, cfg.client_core)


if __name__ == "__main__":
    main()
