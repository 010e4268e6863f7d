"""Per-event cost ladders: Sinal and Nchan side by side, one offered load (rung) after another.

    uv run python -m loadtests.ladder unicast     # 10,000 subscribers, a channel each
    uv run python -m loadtests.ladder broadcast   # 2,000 subscribers of one channel
    uv run python -m loadtests.ladder unicast --calibrate         # the generator's ceiling
    uv run python -m loadtests.ladder broadcast --revisions .,main --rounds 2   # two revisions

**Unicast** (`--rates`, default 2,000 / 5,000 / 10,000 / 20,000 events/s): `--subscribers`
(10,000) SSE streams, each on a channel of its own — Sinal: user `bench-<i>` on
`notifications:bench-<i>`; Nchan: `/sub/u-<i>` — and events spread round robin over the
channels, published over HTTP one per request (`--batch N`: N per request, see below).

**Broadcast** (`--deliveries`, default 50,000 / 100,000 / 200,000 / 400,000 deliveries/s):
`--subscribers` (2,000) streams of one channel (`broadcast`; Nchan `/sub/broadcast`), events
published at deliveries ÷ subscribers per second.

Each system gets a fresh server pinned to `--server-core` (Sinal on the Redis engine with a
private `redis-server`, or `--engine memory`; Nchan is `loadtests.nchan`); this process, the
load generator, is pinned to `--client-core`. The subscribers are `loadtests.lean`'s (Nchan's
differ only in their greeting); the publisher is one open loop for every system: each event is
sent when due (`loadtests.schedule`: event i at start + i / rate; a request of `--batch` events
when its last event is) whether or not earlier ones were answered, over `--publishers` keep-alive
connections, one request at a time each (the rest wait in the generator, counted in the
latency), at most `MAX_PENDING` requests unanswered (beyond that the schedule slips:
`publish_stalls`, `max_schedule_lag_ms`). Every rung publishes for `--warmup` + `--duration`
seconds, measures the second part, then waits until every event has arrived or none has for
`--drain` seconds. When every system's subscribers fit in the open-file limit at once
(broadcast), the systems take turns rung by rung, so that other load on the machine falls on
all of them; otherwise (unicast) one system runs all its rungs, then the next.

Per rung and system: events/s and deliveries/s delivered in the window, delivery latency
p50/p90/p99/max (send → read by the subscriber), lost (never arrived), duplicated, publish
errors and round trip, the CPU of the server process (Nchan: its worker), the generator, Redis,
both cores and everything else on the machine (`foreign_cpu_pct`).

`--calibrate` runs the ladder against `loadtests.nullserver` only (one write per delivery, no
work): what it measures is the generator's ceiling, to tell apart a server at its limit from a
generator at its own. `--revisions a,b` runs Sinal from each git revision (`.` is the working
tree) beside Nchan. `--batch N` publishes Sinal's events N per `POST /v1/publish`, a JSON
list of `{"channel", "type", "data"}` answered with `{"cursors": [...]}` in order (Nchan has no
batch publish: it stays at one per request); the default rates then become 10,000 / 20,000 /
40,000 / 80,000 events/s.

Progress goes to stderr; the last stdout line is one JSON object: every rung of every system,
the side-by-side ratios, the targets and `targets_met`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean, median
from typing import Any, Literal

import httpx
import redis

from api.auth import mint_token
from loadtests.compare import checkout, commit_of
from loadtests.lean import (
    NchanSubscriber,
    SseSubscriber,
    Subscriber,
    Tally,
    nchan_request,
    open_many,
    padding,
    payload,
    sse_request,
)
from loadtests.nchan import start_nchan
from loadtests.openloop import PUBLISH_TIMEOUT_S, PublishPool
from loadtests.procs import (
    OURS,
    Child,
    CoreMeter,
    CpuMeter,
    PostgresMeter,
    cores_busy_before,
    cpu_seconds,
    foreign_cpu_seconds,
    free_port,
    log,
    other_processes_cpu_seconds,
    percentile,
    pinned_child,
    raise_nofile,
    redis_for_benchmark,
    run_benchmark,
    self_cpu_seconds,
    settle_memory,
)
from loadtests.schedule import Schedule, sleep_until

SECRET = "loadtest-secret-that-is-long-enough-for-hs256"
Kind = Literal["unicast", "broadcast"]
UNICAST_RATES = (2_000, 5_000, 10_000, 20_000)
UNICAST_BATCH_RATES = (10_000, 20_000, 40_000, 80_000)
BROADCAST_DELIVERIES = (50_000, 100_000, 200_000, 400_000)
# Requests sent or waiting for a publisher connection; beyond this the schedule slips.
MAX_PENDING = 4096
# With that many unanswered, the publisher checks again this often.
STALL_S = 0.001
# The drain gives up after this long in any case.
MAX_DRAIN_S = 60.0
# With --max-foreign, a rung waits at most this long for the machine to quieten.
MAX_QUIET_WAIT_S = 120.0

TARGETS = {
    # single-event publish: the best rung with p99 within the bound and nothing lost
    "unicast_events_per_s": 6_000,
    "unicast_p99_ms": 10.0,
    # batch publish
    "unicast_batch_events_per_s": 40_000,
    # broadcast, every rung: Sinal's deliveries at least Nchan's (within the window's wobble)
    "broadcast_deliveries_vs_nchan": 1.0,
    # broadcast, every rung up to this offered load: Sinal's p99 at most this times Nchan's
    "broadcast_p99_vs_nchan": 2.0,
    "broadcast_p99_up_to_deliveries_per_s": 200_000,
}
# Deliveries/s over a 10 s window wobble by a fraction of a percent when both systems deliver
# everything offered: "at least Nchan's" allows that much.
WOBBLE = 0.01


@dataclass(frozen=True)
class Config:
    kind: Kind
    subscribers: int
    loads: tuple[float, ...]  # events/s (unicast) or deliveries/s (broadcast) per rung
    duration: float
    warmup: float
    drain: float
    pause: float
    rounds: int
    max_foreign: float | None
    retries: int
    batch: int
    publishers: int
    payload_bytes: int
    revisions: tuple[str, ...]
    skip_nchan: bool
    calibrate: bool
    engine: Literal["redis", "memory"]
    coalesce_ms: float | None
    redis_url: str | None
    server_core: int
    client_core: int
    connect_concurrency: int

    @property
    def channels(self) -> int:
        return self.subscribers if self.kind == "unicast" else 1

    def events_per_s(self, load: float) -> float:
        return load if self.kind == "unicast" else load / self.subscribers

    @property
    def nofile(self) -> int:
        systems = 1 if self.calibrate else len(self.revisions) + (0 if self.skip_nchan else 1)
        return systems * self.subscribers + 2048


# -- the systems -------------------------------------------------------------------------------


@dataclass
class Running:
    """One system's server, its subscribers (by channel index for unicast) and publisher.

    `server_pids`: the processes whose CPU is the server's (one, or a supervisor and its
    workers); `redis_pids`: Redis's (none when it is not ours to measure, one, or every node of
    a cluster)."""

    name: str
    port: int
    server_pids: tuple[int, ...]
    redis_pids: tuple[int, ...]
    subscribers: list[Subscriber]
    by_channel: dict[int, list[Subscriber]]
    pool: PublishPool
    build: Callable[[int, int, int], bytes]  # (first sequence, events, send time) → request
    batch: int
    connect_failures: int
    rungs: list[dict[str, Any]] = field(default_factory=list)
    stats: Callable[[], dict[str, Any] | None] = lambda: None
    # PostgreSQL's CPU too (every `postgres` process on the machine: others' use included).
    postgres: bool = False


def user_token(index: int) -> str:
    return mint_token(SECRET, f"bench-{index}", ttl_s=6 * 3600)


class SinalRequests:
    """`POST /v1/publish` requests of one event, or of `batch` as a JSON list."""

    def __init__(self, cfg: Config, port: int) -> None:
        token = mint_token(SECRET, "bench-publisher", ["service"], ttl_s=6 * 3600)
        self.head = (
            f"POST /v1/publish HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        ).encode()
        self.channels = cfg.channels
        self.names = (
            [b"notifications:bench-%d" % index for index in range(cfg.channels)]
            if cfg.kind == "unicast"
            else [b"broadcast"]
        )
        self.pad = padding(cfg.payload_bytes)

    def event(self, seq: int, sent_ns: int) -> bytes:
        channels = self.channels
        data = payload(seq // channels, sent_ns, self.pad)
        return b'{"channel":"%s","type":"bench","data":%s}' % (self.names[seq % channels], data)

    def __call__(self, first: int, count: int, sent_ns: int) -> bytes:
        if count == 1:
            body = self.event(first, sent_ns)
        else:
            # BATCH HOOK: the batch publish API (`POST /v1/publish` with a JSON list, answered
            # with {"cursors": [...]} in order). A server without it refuses the list: the
            # rung then reports every event as a publish error.
            body = b"[%s]" % b",".join(
                self.event(seq, sent_ns) for seq in range(first, first + count)
            )
        return self.head + b"Content-Length: %d\r\n\r\n" % len(body) + body


def sinal_accepts(status: int, body: bytes, events: int) -> bool:
    if status != 201:
        return False
    if events == 1:
        return True
    cursors = json.loads(body).get("cursors")
    return isinstance(cursors, list) and len(cursors) == events


class NchanRequests:
    """`POST /pub/<channel>` whose body is the event's data."""

    def __init__(self, cfg: Config, port: int) -> None:
        self.head = b"POST /pub/%%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % port
        self.channels = cfg.channels
        self.names = (
            [b"u-%d" % index for index in range(cfg.channels)]
            if cfg.kind == "unicast"
            else [b"broadcast"]
        )
        self.pad = padding(cfg.payload_bytes)

    def __call__(self, first: int, count: int, sent_ns: int) -> bytes:
        assert count == 1  # Nchan publishes one message per request
        channels = self.channels
        body = payload(first // channels, sent_ns, self.pad)
        return (
            self.head % self.names[first % channels]
            + b"Content-Length: %d\r\n\r\n" % len(body)
            + body
        )


def nchan_accepts(status: int, body: bytes, events: int) -> bool:
    return status in (201, 202)  # 202: nobody was subscribed


async def _subscribe(
    name: str,
    cfg: Config,
    port: int,
    make: Callable[[int], Subscriber],
) -> tuple[list[Subscriber], dict[int, list[Subscriber]], int]:
    index_of: dict[int, int] = {}

    def made(index: int) -> Subscriber:
        subscriber = make(index)
        index_of[id(subscriber)] = index
        return subscriber

    subscribers, failures = await open_many(
        made,
        cfg.subscribers,
        port,
        concurrency=cfg.connect_concurrency,
        handshake_s=60,
        progress=lambda n: log(f"{name}: {n} subscribers ready"),
    )
    by_channel: dict[int, list[Subscriber]] = {}
    for subscriber in subscribers:
        channel = index_of[id(subscriber)] % cfg.channels
        by_channel.setdefault(channel, []).append(subscriber)
    log(f"{name}: {len(subscribers)} subscribers ready ({failures} failed)")
    settle_memory()
    return subscribers, by_channel, failures


def _sinal_env(cfg: Config, redis_url: str, workdir: Path, root: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "SINAL_JWT_SECRET": SECRET,
        "SINAL_DATABASE_URL": f"sqlite:///{workdir / f'sinal-{free_port()}.db'}",
        # Access logs for every publish would be measured as server work.
        "SINAL_LOG_LEVEL": "warning",
        "PYTHONPATH": str(root),
    }
    if cfg.engine == "redis":
        env["SINAL_REDIS_URL"] = redis_url
    else:
        env.pop("SINAL_REDIS_URL", None)
    if cfg.coalesce_ms is not None:
        env["SINAL_COALESCE_MS"] = f"{cfg.coalesce_ms:g}"
    return env


def start_sinal(
    name: str, cfg: Config, redis_url: str, workdir: Path, root: Path, null: bool
) -> tuple[Child, int]:
    port = free_port()
    module = "loadtests.nullserver" if null else "api"
    argv = [sys.executable, "-m", module, *([] if null else ["serve"]), "--port", str(port)]
    server = Child(
        f"{name.replace('@', '-')}-{port}",
        argv,
        env=_sinal_env(cfg, redis_url, workdir, root),
        cwd=workdir,
        preexec=pinned_child(cfg.server_core, cfg.nofile),
    )
    try:
        server.wait_listening(port, timeout=60)
        deadline = time.monotonic() + 30
        while httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready:\n{server.tail()}")
            time.sleep(0.1)
    except BaseException:
        server.stop()
        raise
    return server, port


def admin_stats(port: int) -> dict[str, Any] | None:
    token = mint_token(SECRET, "bench-admin", ["admin"], ttl_s=600)
    with contextlib.suppress(httpx.HTTPError, ValueError):
        answer = httpx.get(
            f"http://127.0.0.1:{port}/v1/admin/stats",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        if answer.status_code == 200:
            stats: dict[str, Any] = answer.json()
            return stats
    return None


@contextlib.asynccontextmanager
async def sinal(
    name: str,
    cfg: Config,
    redis_url: str,
    redis_pid: int | None,
    workdir: Path,
    root: Path,
    null: bool = False,
) -> AsyncIterator[Running]:
    """Sinal (or, with `null`, the null server) with its subscribers and publisher."""
    server, port = start_sinal(name, cfg, redis_url, workdir, root, null)
    log(f"{name}: server pid {server.pid} on port {port}, core {cfg.server_core}")
    measured_redis = redis_pid is not None and cfg.engine == "redis" and not null
    try:
        async with attach(
            name, cfg, port, (server.pid,), (redis_pid,) if measured_redis else ()
        ) as running:
            yield running
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def attach(
    name: str,
    cfg: Config,
    port: int,
    server_pids: tuple[int, ...],
    redis_pids: tuple[int, ...],
) -> AsyncIterator[Running]:
    """Subscribers and a publisher for a Sinal server that is running on `port` (started by
    the caller, who stops it after)."""
    subscribers: list[Subscriber] = []
    pool = PublishPool(port, cfg.publishers, sinal_accepts)
    try:
        tokens = [user_token(index) for index in range(cfg.subscribers)]
        subscribers, by_channel, failures = await _subscribe(
            name, cfg, port, lambda index: SseSubscriber(sse_request(port, tokens[index]), None)
        )
        await pool.open()

        def stats() -> dict[str, Any] | None:
            found = admin_stats(port)
            return (
                None
                if found is None
                else {"slow_consumer_closes": found.get("slow_consumer_closes")}
            )

        yield Running(
            name=name,
            port=port,
            server_pids=server_pids,
            redis_pids=redis_pids,
            subscribers=subscribers,
            by_channel=by_channel,
            pool=pool,
            build=SinalRequests(cfg, port),
            batch=cfg.batch,
            connect_failures=failures,
            stats=stats,
        )
    finally:
        await pool.close()
        for subscriber in subscribers:
            subscriber.close()


@contextlib.asynccontextmanager
async def nchan(cfg: Config, workdir: Path) -> AsyncIterator[Running]:
    server = start_nchan(workdir, cfg.server_core, cfg.nofile)
    log(f"nchan: worker pid {server.worker_pid} on port {server.port}, core {cfg.server_core}")
    subscribers: list[Subscriber] = []
    pool = PublishPool(server.port, cfg.publishers, nchan_accepts)
    names = [f"u-{index}" for index in range(cfg.channels)] if cfg.kind == "unicast" else []
    try:
        subscribers, by_channel, failures = await _subscribe(
            "nchan",
            cfg,
            server.port,
            lambda index: NchanSubscriber(
                nchan_request(server.port, names[index] if names else "broadcast"), None
            ),
        )
        await pool.open()
        yield Running(
            name="nchan",
            port=server.port,
            # The worker does the work (the master only watches it).
            server_pids=(server.worker_pid,),
            redis_pids=(),
            subscribers=subscribers,
            by_channel=by_channel,
            pool=pool,
            build=NchanRequests(cfg, server.port),
            batch=1,
            connect_failures=failures,
        )
    finally:
        await pool.close()
        for subscriber in subscribers:
            subscriber.close()
        server.stop()


# -- one rung ----------------------------------------------------------------------------------


def total_cpu_seconds(pids: tuple[int, ...]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


class Meters:
    """The server's and Redis's CPU (summed over their processes, and each process's when
    there are several), the generator's, both cores' and everything else's."""

    def __init__(self, running: Running, cfg: Config) -> None:
        server_pids, redis_pids = running.server_pids, running.redis_pids
        self.server = CpuMeter(lambda: total_cpu_seconds(server_pids))
        self.redis = CpuMeter(lambda: total_cpu_seconds(redis_pids)) if redis_pids else None
        self.each_server = (
            [CpuMeter(functools.partial(cpu_seconds, pid)) for pid in server_pids]
            if len(server_pids) > 1
            else []
        )
        self.each_redis = (
            [CpuMeter(functools.partial(cpu_seconds, pid)) for pid in redis_pids]
            if len(redis_pids) > 1
            else []
        )
        self.generator = CpuMeter(self_cpu_seconds)
        self.server_core = CoreMeter(cfg.server_core)
        self.client_core = CoreMeter(cfg.client_core)
        self.foreign = CpuMeter(foreign_cpu_seconds)
        self.others = CpuMeter(other_processes_cpu_seconds)
        self.postgres = PostgresMeter() if running.postgres else None

    def lap(self) -> dict[str, Any]:
        figures: dict[str, Any] = {
            "server_cpu_pct": round(self.server.lap(), 1),
            "redis_cpu_pct": None if self.redis is None else round(self.redis.lap(), 1),
            "generator_cpu_pct": round(self.generator.lap(), 1),
            "server_core_busy_pct": round(self.server_core.lap(), 1),
            "client_core_busy_pct": round(self.client_core.lap(), 1),
            "foreign_cpu_pct": round(self.foreign.lap(), 1),
            "other_processes_cpu_pct": round(self.others.lap(), 1),
        }
        if self.postgres is not None:
            figures["postgres_cpu_pct"] = round(self.postgres.lap(), 1)
        if self.each_server:  # in the order of `Running.server_pids`
            figures["server_cpu_pct_each"] = [round(m.lap(), 1) for m in self.each_server]
        if self.each_redis:
            figures["redis_cpu_pct_each"] = [round(m.lap(), 1) for m in self.each_redis]
        return figures


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def missing(
    subscriber: Subscriber, channel: int, channels: int, first: int, end: int, failed: list[int]
) -> int:
    """Events of sequences [first, end) on `channel` that this subscriber never saw, but for
    `failed` (their sequences within the channel: publishes that failed). The subscriber's
    bitmap is indexed by the sequence within the channel (`seq // channels`)."""
    low = max(0, _ceil_div(first - channel, channels))
    high = max(0, _ceil_div(end - channel, channels))
    seen = subscriber.seen
    if len(seen) < high:
        seen.extend(bytes(high - len(seen)))
    return seen.count(0, low, high) - sum(1 for local in failed if not seen[local])


async def rung(
    running: Running, cfg: Config, load: float, first: int
) -> tuple[dict[str, Any], int]:
    """Publish at `load` for warm-up + duration from sequence `first`; figures of the window.

    Returns the figures and the next free sequence number.
    """
    rate = cfg.events_per_s(load)
    count = round(rate * (cfg.warmup + cfg.duration))
    measure_from = round(rate * cfg.warmup)
    end = first + count
    tally = Tally()
    for subscriber in running.subscribers:
        subscriber.tally = tally
    pool = running.pool
    pool.round_trips_ns, pool.failed = [], []
    batch, build = running.batch, running.build
    fanout = cfg.subscribers if cfg.kind == "broadcast" else 1

    progress = asyncio.create_task(_progress(running, cfg, tally, load))
    stalls = 0
    schedule = Schedule(rate, time.monotonic() + 0.05, count, batch)
    window_start = time.monotonic()
    received_at_start = 0
    meters = Meters(running, cfg)
    try:
        while not schedule.finished:
            now = time.monotonic()
            released = schedule.release(now, most=MAX_PENDING - pool.pending)
            wake = schedule.wake()
            stalled = wake is not None and wake <= now  # due, but too many unanswered
            if stalled:
                stalls += 1
            for at in range(released.start, released.stop, batch):
                if at <= measure_from < at + batch:
                    tally.measuring = True
                    meters = Meters(running, cfg)
                    window_start, received_at_start = time.monotonic(), tally.received
                size = min(batch, released.stop - at)
                sent_ns = time.time_ns()
                pool.send(build(first + at, size, sent_ns), (first + at, size, sent_ns))
            if wake is not None:
                await sleep_until(time.monotonic() + STALL_S if stalled else wake)
        await sleep_until(schedule.end)
        tally.measuring = False
        window = time.monotonic() - window_start
        delivered = tally.received - received_at_start
        load_figures = meters.lap()
        await pool.settle(PUBLISH_TIMEOUT_S + 5)
        failed = {seq for job in pool.failed for seq in range(job[0], job[0] + job[1])}
        expected = _expected(running, cfg, first, end, failed)
        await _drain(running.name, tally, expected, cfg.drain)
    finally:
        progress.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await progress

    channels = cfg.channels
    failed_by_channel: dict[int, list[int]] = {}
    for seq in failed:
        failed_by_channel.setdefault(seq % channels, []).append(seq // channels)
    lost = sum(
        missing(subscriber, channel, channels, first, end, failed_by_channel.get(channel, []))
        for channel, subscribers in running.by_channel.items()
        for subscriber in subscribers
    )
    latencies = sorted(tally.latencies_ns)
    round_trips = sorted(pool.round_trips_ns)
    figures: dict[str, Any] = {
        "offered": load,
        "offered_events_per_s": round(rate, 1),
        "offered_deliveries_per_s": round(rate * fanout),
        "events_per_s": round(delivered / window / fanout, 1),
        "deliveries_per_s": round(delivered / window),
        "p50_ms": percentile(latencies, 0.50),
        "p90_ms": percentile(latencies, 0.90),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": percentile(latencies, 1.0),
        "lost": lost,
        "duplicated": tally.duplicated,
        "disconnects": tally.disconnects,
        "published": count - len(failed),
        "publish_errors": len(failed),
        "requests_per_event": round(1 / batch, 3),
        "publish_p50_ms": percentile(round_trips, 0.50),
        "publish_p99_ms": percentile(round_trips, 0.99),
        "publish_stalls": stalls,
        "max_schedule_lag_ms": round(schedule.max_lag * 1000, 1),
        **load_figures,
    }
    return figures, end


def _expected(running: Running, cfg: Config, first: int, end: int, failed: set[int]) -> int:
    """Deliveries due for sequences [first, end): each event to its channel's subscribers."""
    if cfg.kind == "broadcast":
        return (end - first - len(failed)) * len(running.subscribers)
    channels = cfg.channels
    total = 0
    for channel, subscribers in running.by_channel.items():
        events = _ceil_div(end - channel, channels) - max(0, _ceil_div(first - channel, channels))
        total += events * len(subscribers)
    return total - sum(len(running.by_channel.get(seq % channels, ())) for seq in failed)


async def _drain(name: str, tally: Tally, expected: int, quiet_s: float) -> None:
    """Wait until every due delivery arrived, or none arrived for `quiet_s` seconds."""
    started = last_change = time.monotonic()
    last = tally.received
    while tally.received < expected:
        now = time.monotonic()
        if tally.received != last:
            last, last_change = tally.received, now
        elif now - last_change > quiet_s or now - started > MAX_DRAIN_S:
            log(f"{name}: {expected - tally.received} deliveries still missing after the drain")
            return
        await asyncio.sleep(0.05)


async def _progress(running: Running, cfg: Config, tally: Tally, load: float) -> None:
    """A progress line every 2 s."""
    meters = Meters(running, cfg)
    last, last_at = tally.received, time.monotonic()
    while True:
        await asyncio.sleep(2)
        now = time.monotonic()
        rate = (tally.received - last) / (now - last_at)
        last, last_at = tally.received, now
        figures = meters.lap()
        log(
            f"{running.name} @ {load:g}: deliveries/s={rate:8.0f} "
            f"unanswered={running.pool.pending:5d} server={figures['server_cpu_pct']:3.0f}% "
            f"generator={figures['generator_cpu_pct']:3.0f}% "
            f"others={figures['other_processes_cpu_pct']:3.0f}%"
        )


# -- the run -----------------------------------------------------------------------------------


@dataclass
class Side:
    """A system to measure: how to start it, and where its figures go."""

    name: str
    open: Callable[[], contextlib.AbstractAsyncContextManager[Running]]
    rungs: list[dict[str, Any]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


def redis_database(url: str, index: int) -> str:
    """`url` with the database `index` below its own (flushed)."""
    base, _, db = url.rpartition("/")
    number = int(db or 0) - index
    if number < 0:
        raise SystemExit(f"no Redis database left below {url} for side {index}")
    url = f"{base}/{number}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


def _sides(
    cfg: Config, redis_url: str, redis_pid: int | None, workdir: Path, roots: dict[str, Path]
) -> list[Side]:
    if cfg.calibrate:
        root = roots["."] if "." in roots else next(iter(roots.values()))
        return [Side("null", lambda: sinal("null", cfg, redis_url, None, workdir, root, True))]
    sides = []
    for index, (revision, root) in enumerate(roots.items()):
        name = "sinal" if len(roots) == 1 else f"sinal@{revision}"
        # A database each: live pub/sub names carry the database number, so servers running
        # side by side never hear each other's `broadcast`.
        url = redis_database(redis_url, index)
        opener = functools.partial(sinal, name, cfg, url, redis_pid, workdir, root)
        sides.append(Side(name, opener, facts={"revision": commit_of(root)}))
    if not cfg.skip_nchan:
        sides.append(Side("nchan", lambda: nchan(cfg, workdir)))
    return sides


async def _ladder(side: Side, running: Running, cfg: Config, loads: list[float], seq: int) -> int:
    for load in loads:
        attempts: list[dict[str, Any]] = []
        while True:
            await wait_for_quiet(cfg)
            log(f"{side.name}: rung {load:g} ({cfg.kind}), attempt {len(attempts) + 1}")
            figures, seq = await rung(running, cfg, load, seq)
            attempts.append(figures)
            log(
                f"{side.name} @ {load:g}: {figures['events_per_s']} events/s, "
                f"{figures['deliveries_per_s']} deliveries/s, p99 {figures['p99_ms']} ms, "
                f"lost {figures['lost']}, duplicated {figures['duplicated']}, "
                f"server {figures['server_cpu_pct']}%, generator {figures['generator_cpu_pct']}%, "
                f"other processes {figures['other_processes_cpu_pct']}%, "
                f"cores {figures['server_core_busy_pct']}/{figures['client_core_busy_pct']}%"
            )
            await asyncio.sleep(cfg.pause)
            others = figures["other_processes_cpu_pct"]
            noisy = cfg.max_foreign is not None and others > cfg.max_foreign
            if not noisy or len(attempts) > cfg.retries:
                break
            log(f"{side.name} @ {load:g}: other processes took {others}%: again")
        side.rungs.append(kept(attempts))
    return seq


def kept(attempts: list[dict[str, Any]]) -> dict[str, Any]:
    """The quietest attempt at a rung; losses, duplicates and errors of them all."""
    best = dict(min(attempts, key=lambda figures: figures["other_processes_cpu_pct"]))
    for key in ("lost", "duplicated", "publish_errors"):
        best[key] = sum(figures[key] for figures in attempts)
    best["attempts"] = len(attempts)
    best["other_processes_cpu_pct_of_attempts"] = [
        figures["other_processes_cpu_pct"] for figures in attempts
    ]
    return best


async def wait_for_quiet(cfg: Config) -> None:
    """With --max-foreign: wait (at most MAX_QUIET_WAIT_S) for a second in which other work on
    the machine stays under it."""
    if cfg.max_foreign is None:
        return
    deadline = time.monotonic() + MAX_QUIET_WAIT_S
    while time.monotonic() < deadline:
        meter = CpuMeter(other_processes_cpu_seconds)
        await asyncio.sleep(1)
        if meter.lap() <= cfg.max_foreign:
            return
    log(f"other work stayed above {cfg.max_foreign}% for {MAX_QUIET_WAIT_S:g} s: going on")


async def measure(cfg: Config, sides: list[Side]) -> None:
    loads = [load for _ in range(cfg.rounds) for load in cfg.loads]
    if len(sides) * cfg.subscribers + 2048 <= raise_nofile(cfg.nofile):
        # Everything open at once: the systems take turns rung by rung.
        async with contextlib.AsyncExitStack() as stack:
            running = [await stack.enter_async_context(side.open()) for side in sides]
            seqs = [0] * len(sides)
            for load in loads:
                for index, side in enumerate(sides):
                    seqs[index] = await _ladder(side, running[index], cfg, [load], seqs[index])
            for side, system in zip(sides, running, strict=True):
                side.facts.update(_facts(system))
        return
    for side in sides:
        async with side.open() as system:
            await _ladder(side, system, cfg, loads, 0)
            side.facts.update(_facts(system))


def _facts(running: Running) -> dict[str, Any]:
    return {
        "connected": len(running.subscribers),
        "connect_failures": running.connect_failures,
        **(running.stats() or {}),
    }


def summary(cfg: Config, sides: list[Side]) -> list[dict[str, Any]]:
    """One row per offered load: each side's figures (means over rounds, p99 the median) and
    Sinal ÷ Nchan."""
    rows = []
    for load in cfg.loads:
        row: dict[str, Any] = {"offered": load}
        for side in sides:
            found = [r for r in side.rungs if r["offered"] == load]
            if not found:
                continue
            p99s = [r["p99_ms"] for r in found if r["p99_ms"] is not None]
            row[side.name] = {
                "events_per_s": round(mean(r["events_per_s"] for r in found), 1),
                "deliveries_per_s": round(mean(r["deliveries_per_s"] for r in found)),
                "p50_ms": _median([r["p50_ms"] for r in found]),
                "p99_ms": round(median(p99s), 2) if p99s else None,
                "lost": sum(r["lost"] for r in found),
                "duplicated": sum(r["duplicated"] for r in found),
                "publish_errors": sum(r["publish_errors"] for r in found),
                "server_cpu_pct": round(mean(r["server_cpu_pct"] for r in found), 1),
                "generator_cpu_pct": round(mean(r["generator_cpu_pct"] for r in found), 1),
                "foreign_cpu_pct": round(mean(r["foreign_cpu_pct"] for r in found), 1),
                "other_processes_cpu_pct": round(
                    mean(r["other_processes_cpu_pct"] for r in found), 1
                ),
            }
        nchan_row = row.get("nchan")
        if nchan_row is not None:
            for side in sides:
                if side.name == "nchan" or side.name not in row:
                    continue
                ours = row[side.name]
                ours["ratio_vs_nchan"] = _ratio(
                    ours["deliveries_per_s"], nchan_row["deliveries_per_s"]
                )
                ours["p99_ratio_vs_nchan"] = _ratio(ours["p99_ms"], nchan_row["p99_ms"])
        rows.append(row)
    return rows


# The figures `side_figures` keeps of a side's rungs, and how it combines them over rounds.
MEANS = (
    "events_per_s", "deliveries_per_s", "server_cpu_pct", "redis_cpu_pct", "postgres_cpu_pct",
    "generator_cpu_pct", "other_processes_cpu_pct",
)  # fmt: skip
MEDIANS = ("p50_ms", "p99_ms", "max_ms")
SUMS = ("lost", "duplicated", "publish_errors", "disconnects")
EACH = ("server_cpu_pct_each", "redis_cpu_pct_each")


def side_figures(rungs: list[dict[str, Any]]) -> dict[str, Any]:
    """One side's rungs at one offered load (one per round) as one row: rates and CPU the mean,
    latencies the median, losses the sum, per-process CPU the mean process by process."""
    row: dict[str, Any] = {"rounds": len(rungs)}
    for key in MEANS:
        values = [r[key] for r in rungs if r.get(key) is not None]
        if values:  # not measured (PostgreSQL, say): left out
            row[key] = round(mean(values), 1)
    for key in MEDIANS:
        row[key] = _median([r.get(key) for r in rungs])
    for key in SUMS:
        row[key] = sum(r.get(key, 0) for r in rungs)
    for key in EACH:
        lists = [r[key] for r in rungs if r.get(key)]
        if lists:
            row[key] = [round(mean(values), 1) for values in zip(*lists, strict=False)]
    return row


def ratios(ours: dict[str, Any], base: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """`ours[key] / base[key]` for each key (None where either is missing or the base is 0)."""
    return {key: _ratio(ours.get(key), base.get(key)) for key in keys}


def _median(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return round(median(present), 2) if present else None


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    return None if ours is None or not theirs else round(ours / theirs, 2)


def verdict(cfg: Config, rows: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The issue's targets for side `name`, true / false (None when not measured)."""
    sound = [
        row[name]
        for row in rows
        if name in row
        and row[name]["lost"] == 0
        and row[name]["duplicated"] == 0
        and row[name]["publish_errors"] == 0
    ]
    if cfg.kind == "unicast" and cfg.batch == 1:
        within = [
            figures["events_per_s"]
            for figures in sound
            if figures["p99_ms"] is not None and figures["p99_ms"] <= TARGETS["unicast_p99_ms"]
        ]
        best = max(within, default=0)
        return {
            "unicast_events_per_s_at_p99": best,
            "unicast_events_per_s": best >= TARGETS["unicast_events_per_s"],
        }
    if cfg.kind == "unicast":
        best = max((figures["events_per_s"] for figures in sound), default=0)
        return {
            "unicast_batch_events_per_s_measured": best,
            "unicast_batch_events_per_s": best >= TARGETS["unicast_batch_events_per_s"],
        }
    deliveries: list[bool] = []
    p99: list[bool] = []
    for row in rows:
        ours, theirs = row.get(name), row.get("nchan")
        if ours is None or theirs is None:
            continue
        deliveries.append(
            ours["deliveries_per_s"] >= theirs["deliveries_per_s"] * (1 - WOBBLE)
            and ours["lost"] == 0
            and ours["duplicated"] == 0
        )
        if row["offered"] <= TARGETS["broadcast_p99_up_to_deliveries_per_s"]:
            p99.append(
                ours["p99_ms"] is not None
                and theirs["p99_ms"] is not None
                and ours["p99_ms"] <= TARGETS["broadcast_p99_vs_nchan"] * theirs["p99_ms"]
            )
    return {
        "broadcast_deliveries_vs_nchan": all(deliveries) if deliveries else None,
        "broadcast_p99_vs_nchan": all(p99) if p99 else None,
    }


@contextlib.contextmanager
def _roots(revisions: tuple[str, ...], into: Path) -> Iterator[dict[str, Path]]:
    with contextlib.ExitStack() as stack:
        yield {revision: stack.enter_context(checkout(revision, into)) for revision in revisions}


async def run(cfg: Config) -> dict[str, Any]:
    # SIGTERM ends the run as Ctrl-C does, through every `finally` that stops a server.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with (
        tempfile.TemporaryDirectory(prefix="sinal-ladder-", ignore_cleanup_errors=True) as tmp,
        _roots(cfg.revisions, Path(tmp)) as roots,
        redis_for_benchmark(cfg.redis_url, Path(tmp)) as redis_url,
    ):
        workdir = Path(tmp)
        # The private redis-server is the only process started so far.
        redis_pid = next(iter(OURS), None) if cfg.redis_url is None else None
        log(f"redis: {redis_url}; workdir {workdir}")
        quiet = await cores_busy_before(cfg.server_core, cfg.client_core)
        sides = _sides(cfg, redis_url, redis_pid, workdir, roots)
        await measure(cfg, sides)
        rows = summary(cfg, sides)
        sinal_sides = [side.name for side in sides if side.name.startswith("sinal")]
        result: dict[str, Any] = {
            "ladder": cfg.kind,
            "machine_busy_before_pct": quiet,
            "subscribers": cfg.subscribers,
            "channels": cfg.channels,
            "loads": list(cfg.loads),
            "load_unit": "events/s" if cfg.kind == "unicast" else "deliveries/s",
            "batch": cfg.batch,
            "duration": cfg.duration,
            "warmup": cfg.warmup,
            "rounds": cfg.rounds,
            "engine": cfg.engine,
            "server": "loadtests.nullserver (generator calibration)" if cfg.calibrate else None,
            "sides": {side.name: {**side.facts, "rungs": side.rungs} for side in sides},
            "table": rows,
            "targets": _targets(cfg),
            "targets_met": {name: verdict(cfg, rows, name) for name in sinal_sides},
        }
        return result


def _targets(cfg: Config) -> dict[str, Any]:
    if cfg.kind == "unicast":
        if cfg.batch == 1:
            return {
                "unicast_events_per_s": TARGETS["unicast_events_per_s"],
                "unicast_p99_ms": TARGETS["unicast_p99_ms"],
            }
        return {"unicast_batch_events_per_s": TARGETS["unicast_batch_events_per_s"]}
    return {key: value for key, value in TARGETS.items() if key.startswith("broadcast_")}


def _loads(text: str) -> tuple[float, ...]:
    try:
        loads = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not loads or any(load <= 0 for load in loads):
        raise argparse.ArgumentTypeError("loads must be positive numbers")
    return loads


def parse_args(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.ladder", description=__doc__.splitlines()[0]
    )
    add = parser.add_argument
    add("kind", choices=["unicast", "broadcast"])
    add("--subscribers", type=int, help="default: 10,000 (unicast), 2,000 (broadcast)")
    add("--rates", type=_loads, help="unicast rungs, events/s (comma-separated)")
    add("--deliveries", type=_loads, help="broadcast rungs, deliveries/s (comma-separated)")
    add("--duration", type=float, default=10, help="measured seconds per rung")
    add("--warmup", type=float, default=3, help="seconds published before measuring")
    add("--drain", type=float, default=5, help="give up waiting after this long without news")
    add("--pause", type=float, default=1, help="seconds between rungs")
    add("--rounds", type=int, default=1, help="times the whole ladder is climbed")
    add(
        "--max-foreign",
        type=float,
        help="on a shared machine: wait for other processes under this %% of a core before a "
        "rung, and run a rung again when they took more (see --retries)",
    )
    add("--retries", type=int, default=2, help="with --max-foreign: further attempts per rung")
    add("--batch", type=int, default=1, help="events per Sinal publish request (JSON list)")
    add("--publishers", type=int, default=32, help="keep-alive publish connections")
    add("--payload-bytes", type=int, default=100)
    add("--revisions", default=".", help="git revisions of Sinal, comma-separated (. = tree)")
    add("--skip-nchan", action="store_true")
    add("--calibrate", action="store_true", help="the null server only: the generator's ceiling")
    add("--engine", choices=["redis", "memory"], default="redis")
    add("--coalesce-ms", type=float, help="SINAL_COALESCE_MS (unset: the server's default)")
    add("--redis-url", help="a Redis database to use (FLUSHED) instead of a private redis-server")
    add("--server-core", type=int, default=0)
    add("--client-core", type=int, default=1)
    add("--connect-concurrency", type=int, default=200)
    args = parser.parse_args(argv)
    kind: Kind = args.kind
    if kind == "unicast":
        if args.deliveries:
            parser.error("--deliveries is for the broadcast ladder (unicast: --rates)")
        loads = args.rates or (UNICAST_RATES if args.batch == 1 else UNICAST_BATCH_RATES)
    else:
        if args.rates:
            parser.error("--rates is for the unicast ladder (broadcast: --deliveries)")
        loads = args.deliveries or BROADCAST_DELIVERIES
    subscribers = args.subscribers or (10_000 if kind == "unicast" else 2_000)
    for name in ("duration", "rounds", "batch", "publishers"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive")
    if subscribers <= 0 or args.warmup < 0 or args.drain < 0 or args.pause < 0:
        parser.error("--subscribers must be positive; --warmup, --drain, --pause not negative")
    revisions = tuple(part.strip() for part in args.revisions.split(",") if part.strip())
    if args.redis_url and len(revisions) > 1:
        parser.error("--redis-url takes one revision (side by side, each needs a database)")
    return Config(
        kind=kind,
        subscribers=subscribers,
        loads=tuple(loads),
        duration=args.duration,
        warmup=args.warmup,
        drain=args.drain,
        pause=args.pause,
        rounds=args.rounds,
        max_foreign=args.max_foreign,
        retries=max(0, args.retries),
        batch=args.batch,
        publishers=args.publishers,
        payload_bytes=args.payload_bytes,
        revisions=revisions or (".",),
        skip_nchan=args.skip_nchan or args.calibrate,
        calibrate=args.calibrate,
        engine=args.engine,
        coalesce_ms=args.coalesce_ms,
        redis_url=args.redis_url,
        server_core=args.server_core,
        client_core=args.client_core,
        connect_concurrency=args.connect_concurrency,
    )


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    run_benchmark(lambda: run(cfg), cfg.nofile, cfg.client_core)


if __name__ == "__main__":
    main()
