"""Redis Cluster against one Redis, same run: the fan-out and the per-user workload on both.

    uv run python -m loadtests.cluster                        # defaults below, about 4 min
    uv run python -m loadtests.cluster --skip-fanout --users 1000 --events 200   # smaller

Two backends are started at the beginning and kept for the whole run: a private
`redis-server` (**standalone**) and a private Redis Cluster of `--primaries` (3) primaries
with `--replicas` (1) replica each (**cluster**, `loadtests.rediscluster`, the cluster the test
suite uses). Each workload then runs against a fresh `sinal serve` (SQLite, the Redis engine)
on one backend, then on the other, `--rounds` times alternately:

1. **Fan-out** (`loadtests.fanout`'s Sinal phase): `--subscribers` (2,000) SSE streams on one
   channel, `--rate` (40) events/s published one per `POST /v1/publish`.
2. **Per-user** (`loadtests.ladder`'s unicast rung): `--users` (10,000) SSE streams, user
   `bench-<i>` on its own channel `notifications:bench-<i>`, `--events` (1,000) events/s spread
   round robin over the channels, one per request, on the ladder's open-loop schedule.

The server runs on `--server-core` (0), this process (subscribers and publishers) on
`--client-core` (1), every Redis process on `--redis-cores` (default: all cores, the kernel
places them; the JSON's `pinning` says where everything ran).
Between runs the backend is flushed. Per side: delivered/s, p50/p99, lost, duplicated, the
server's CPU and Redis's (summed over the cluster's processes, and each process's). The last
stdout line is one JSON object with both sides of both workloads and `cluster_vs_standalone`,
the ratios cluster ÷ standalone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from loadtests import fanout, ladder
from loadtests.procs import (
    OURS,
    CpuMeter,
    cores_busy_before,
    cpu_seconds,
    log,
    parse_cores,
    pin_process,
    raise_nofile,
    redis_for_benchmark,
    run_benchmark,
)
from loadtests.rediscluster import PrivateCluster

# What the side-by-side table compares (cluster ÷ standalone).
COMPARED = ("deliveries_per_s", "p50_ms", "p99_ms", "server_cpu_pct", "redis_cpu_pct")


@dataclass(frozen=True)
class Config:
    subscribers: int
    rate: float
    users: int
    events: float
    duration: float
    warmup: float
    drain: float
    rounds: int
    primaries: int
    replicas: int
    publishers: int
    payload_bytes: int
    redis_cores: set[int]
    skip_fanout: bool
    skip_per_user: bool
    server_core: int
    client_core: int
    connect_concurrency: int

    @property
    def nofile(self) -> int:
        return max(self.subscribers, self.users) + 2048

    def fanout_config(self) -> fanout.Config:
        return fanout.Config(
            subscribers=self.subscribers, rate=self.rate, duration=self.duration,
            warmup=self.warmup, drain=self.drain, payload_bytes=self.payload_bytes,
            publishers=16, idle_connections=0, skip_socketio=True, calibrate=False,
            redis_url=None, server_core=self.server_core, client_core=self.client_core,
            connect_concurrency=self.connect_concurrency, skip_nchan=True,
        )  # fmt: skip

    def per_user_config(self) -> ladder.Config:
        return ladder.Config(
            kind="unicast", subscribers=self.users, loads=(self.events,),
            duration=self.duration, warmup=self.warmup, drain=self.drain, pause=1.0, rounds=1,
            max_foreign=None, retries=0, batch=1, publishers=self.publishers,
            payload_bytes=self.payload_bytes, revisions=(".",), skip_nchan=True,
            calibrate=False, engine="redis", coalesce_ms=None, redis_url=None,
            server_core=self.server_core, client_core=self.client_core,
            connect_concurrency=self.connect_concurrency,
        )  # fmt: skip


@dataclass(frozen=True)
class Backend:
    """One Redis deployment for the run: its URL, its processes, and how to empty it."""

    name: str
    url: str
    pids: tuple[int, ...]
    flush: Callable[[], None]


@contextlib.contextmanager
def standalone(workdir: Path) -> Iterator[Backend]:
    before = set(OURS)
    with redis_for_benchmark(None, workdir) as url:
        pids = tuple(OURS - before)  # the redis-server just started

        def flush() -> None:
            client = redis.Redis.from_url(url)
            client.flushdb()
            client.close()

        yield Backend("standalone", url, pids, flush)


@contextlib.contextmanager
def cluster(workdir: Path, primaries: int, replicas: int) -> Iterator[Backend]:
    for binary in ("redis-server", "redis-cli"):
        if shutil.which(binary) is None:
            raise SystemExit(f"{binary} not found: the cluster needs it")
    nodes = PrivateCluster(workdir, primaries=primaries, replicas=replicas)
    nodes.start()
    pids = tuple(nodes.pids())
    OURS.update(pids)  # not "other work on the machine"
    try:
        yield Backend("cluster", nodes.url, pids, nodes.flush)
    finally:
        nodes.stop()
        OURS.difference_update(pids)


def affinity(pid: int) -> list[int]:
    return sorted(os.sched_getaffinity(pid))


# -- fan-out -----------------------------------------------------------------------------------


class RedisCpu:
    """An `alongside` task of the fan-out phase: Redis's CPU while events are published."""

    def __init__(self, pids: tuple[int, ...]) -> None:
        self.pids = pids
        self.figures: dict[str, Any] = {}

    async def __call__(self, port: int) -> None:
        total = CpuMeter(lambda: sum(cpu_seconds(pid) for pid in self.pids))
        each = [CpuMeter(functools.partial(cpu_seconds, pid)) for pid in self.pids]
        try:
            await asyncio.Event().wait()  # until cancelled, when publishing is over
        finally:
            self.figures = {
                "redis_cpu_pct": round(total.lap(), 1),
                "redis_cpu_pct_each": [round(meter.lap(), 1) for meter in each],
            }


async def fanout_side(cfg: Config, backend: Backend, workdir: Path) -> dict[str, Any]:
    backend.flush()
    redis_cpu = RedisCpu(backend.pids)
    # A directory (and SQLite file) of its own for each run's server.
    directory = Path(tempfile.mkdtemp(prefix=f"fanout-{backend.name}-", dir=workdir))
    figures = await fanout.sinal_fanout(
        cfg.fanout_config(), backend.url, directory, alongside=redis_cpu
    )
    return {**figures, **redis_cpu.figures}


FANOUT_KEPT = (
    "deliveries_per_s", "expected_deliveries_per_s", "p50_ms", "p90_ms", "p99_ms", "max_ms",
    "lost", "duplicated", "disconnects", "publish_errors", "publish_p99_ms", "server_cpu_pct",
    "redis_cpu_pct", "redis_cpu_pct_each", "generator_cpu_pct", "foreign_cpu_pct",
    "slow_consumer_closes",
)  # fmt: skip


def fanout_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One side's fan-out runs (one per round) as the rungs `ladder.side_figures` combines."""
    as_rungs = [
        {
            **{key: run.get(key) for key in FANOUT_KEPT},
            "other_processes_cpu_pct": run.get("foreign_cpu_pct"),
        }
        for run in runs
    ]
    row = ladder.side_figures(as_rungs)
    row["expected_deliveries_per_s"] = runs[0]["expected_deliveries_per_s"] if runs else None
    row["foreign_cpu_pct"] = row.pop("other_processes_cpu_pct", None)
    return row


# -- per-user ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def per_user_server(
    lcfg: ladder.Config, backend: Backend, workdir: Path
) -> AsyncIterator[ladder.Running]:
    backend.flush()
    server, port = ladder.start_sinal(
        f"per-user-{backend.name}", lcfg, backend.url, workdir, fanout.ROOT, False
    )
    log(f"per-user on {backend.name}: server pid {server.pid} on port {port}")
    try:
        async with ladder.attach(backend.name, lcfg, port, (server.pid,), backend.pids) as running:
            yield running
    finally:
        server.stop()


# -- the run -----------------------------------------------------------------------------------


def comparison(standalone_row: dict[str, Any], cluster_row: dict[str, Any]) -> dict[str, Any]:
    return ladder.ratios(cluster_row, standalone_row, COMPARED)


async def run(cfg: Config) -> dict[str, Any]:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    if raise_nofile(cfg.nofile) < cfg.nofile:
        log(f"open-file limit below {cfg.nofile}: expect connection failures")
    with (
        tempfile.TemporaryDirectory(prefix="sinal-cluster-", ignore_cleanup_errors=True) as tmp,
        standalone(Path(tmp)) as one,
        cluster(Path(tmp) / "cluster", cfg.primaries, cfg.replicas) as many,
    ):
        workdir = Path(tmp)
        backends = (one, many)
        # Started by this process, Redis would inherit the generator's core: placed instead.
        for pid in (*one.pids, *many.pids):
            pin_process(pid, cfg.redis_cores)
        log(f"standalone {one.url} (pid {one.pids[0]}); cluster {many.url} (pids {many.pids})")
        quiet = await cores_busy_before(cfg.server_core, cfg.client_core)
        result: dict[str, Any] = {
            "benchmark": "cluster_vs_standalone",
            "machine_busy_before_pct": quiet,
            "cpus": os.cpu_count(),
            "rounds": cfg.rounds,
            "duration": cfg.duration,
            "warmup": cfg.warmup,
            "cluster": {
                "primaries": cfg.primaries,
                "replicas": cfg.replicas,
                "processes": len(many.pids),
            },
            "pinning": {
                "server": [cfg.server_core],
                "generator": [cfg.client_core],
                "standalone_redis": affinity(one.pids[0]),
                "cluster_nodes": sorted({core for pid in many.pids for core in affinity(pid)}),
            },
        }
        if not cfg.skip_fanout:
            runs: dict[str, list[dict[str, Any]]] = {backend.name: [] for backend in backends}
            for round_ in range(cfg.rounds):
                for backend in backends:
                    log(f"fan-out on {backend.name}, round {round_ + 1} of {cfg.rounds}")
                    runs[backend.name].append(await fanout_side(cfg, backend, workdir))
            rows = {name: fanout_row(found) for name, found in runs.items()}
            result["fanout"] = {
                "subscribers": cfg.subscribers,
                "events_per_s": cfg.rate,
                **rows,
                "cluster_vs_standalone": comparison(rows["standalone"], rows["cluster"]),
            }
        if not cfg.skip_per_user:
            lcfg = cfg.per_user_config()
            sides = {
                backend.name: ladder.Side(
                    backend.name, functools.partial(per_user_server, lcfg, backend, workdir)
                )
                for backend in backends
            }
            for round_ in range(cfg.rounds):
                for side in sides.values():
                    log(f"per-user on {side.name}, round {round_ + 1} of {cfg.rounds}")
                    await ladder.measure(lcfg, [side])
            rows = {name: ladder.side_figures(side.rungs) for name, side in sides.items()}
            result["per_user"] = {
                "users": cfg.users,
                "channels": cfg.users,
                "events_per_s_offered": cfg.events,
                **{name: {**rows[name], **side.facts} for name, side in sides.items()},
                "cluster_vs_standalone": comparison(rows["standalone"], rows["cluster"]),
            }
        return result


def parse_args(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.cluster", description=__doc__.splitlines()[0]
    )
    add = parser.add_argument
    add("--subscribers", type=int, default=2000, help="fan-out: SSE streams of one channel")
    add("--rate", type=float, default=40, help="fan-out: events published per second")
    add("--users", type=int, default=10_000, help="per-user: streams, a channel each")
    add("--events", type=float, default=1000, help="per-user: events/s over the channels")
    add("--duration", type=float, default=20, help="measured seconds of each run")
    add("--warmup", type=float, default=5, help="seconds published before measuring")
    add("--drain", type=float, default=5, help="seconds allowed for stragglers")
    add("--rounds", type=int, default=1, help="standalone, cluster, … alternately, N times")
    add("--primaries", type=int, default=3, help="cluster primaries (at least 3)")
    add("--replicas", type=int, default=1, help="replicas per primary")
    add("--publishers", type=int, default=32, help="per-user: keep-alive publish connections")
    add("--payload-bytes", type=int, default=100)
    add(
        "--redis-cores",
        type=parse_cores,
        default="all",
        help="cores for every Redis process, e.g. 0 or 0,1 (default: all, i.e. unpinned)",
    )
    add("--skip-fanout", action="store_true")
    add("--skip-per-user", action="store_true")
    fanout.add_placement(parser)
    args = parser.parse_args(argv)
    for name in ("subscribers", "rate", "users", "events", "duration", "rounds", "publishers"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.primaries < 3 or args.replicas < 0:
        parser.error("a cluster needs --primaries 3 or more and --replicas 0 or more")
    if args.warmup < 0 or args.drain < 0:
        parser.error("--warmup and --drain must not be negative")
    if args.skip_fanout and args.skip_per_user:
        parser.error("nothing to run: both workloads skipped")
    return Config(**vars(args))


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    run_benchmark(lambda: run(cfg), cfg.nofile, cfg.client_core)


if __name__ == "__main__":
    main()
