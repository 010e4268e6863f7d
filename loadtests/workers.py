"""One worker against two: `sinal serve --workers 1` and `--workers 2` in one run, pinned.

    uv run python -m loadtests.workers                          # per-user, shared and spread
    uv run python -m loadtests.workers broadcast                # 2,000 streams of one channel
    uv run python -m loadtests.workers --placements unpinned --rates 1000,4000

The workload is the ladder's (`loadtests.ladder`): **unicast** (default) is the per-user
workload, `--subscribers` (10,000) SSE streams, user `bench-<i>` on its own channel
`notifications:bench-<i>`, events spread round robin over the channels at each of `--rates`
(1,000 / 3,000 / 6,000 events/s), one per `POST /v1/publish`, on an open-loop schedule;
**broadcast** is `--subscribers` (2,000) streams of one channel at each of `--deliveries`.
Connections reach the workers as the kernel spreads them (`SO_REUSEPORT`), the publishers'
too, so most events are published through one worker and delivered by the other, via Redis.

Every server runs on PostgreSQL (`--database-url`, dropped and recreated at the start) and a
private `redis-server` (a database of its own for each server), as several workers require.
This process, the generator (subscribers and publishers), always runs on `--client-core` (1).
Where the server's processes run is the `--placements`, each measured with 1 and 2 workers:

- `shared`: every server process on `--server-core` (0). Two workers then share the one core
  that one worker had: what splitting a process costs, not what a second core brings.
- `spread`: worker *i* on core `[server, client][i - 1]`: the second worker shares the
  generator's core. What a second core brings, less what the generator takes of it.
- `unpinned`: the server's processes may run on every core; the kernel places them (and the
  generator stays on its core).

A placement whose 1-worker side is the same as another's (`shared` and `spread` put one worker
on the same core) is measured once. Redis runs on `--redis-cores` (default: all), PostgreSQL
where the machine's server runs it (not ours to pin).

Per side and offered load: events/s and deliveries/s delivered, p50/p99, lost, duplicated, the
server's CPU (all its processes) and each process's (`server_cpu_pct_each`, in the order of
`processes`: the supervisor, then the workers), Redis's, PostgreSQL's (every `postgres`
process on the machine), the generator's, both cores'. The last stdout line is one JSON object
with every side, `pinning` (each process's cores as the kernel reports them), and
`vs_one_worker`: each 2-worker side ÷ the 1-worker side of its placement.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from api.auth import mint_token
from loadtests import ladder
from loadtests.procs import (
    DEFAULT_DATABASE_URL,
    OURS,
    Child,
    cores_busy_before,
    database_name,
    free_port,
    log,
    parse_cores,
    pin_process,
    raise_nofile,
    redis_for_benchmark,
    reset_database,
    run_benchmark,
)

Placement = Literal["shared", "spread", "unpinned"]
PLACEMENTS: tuple[Placement, ...] = ("shared", "spread", "unpinned")
UNICAST_RATES = (1_000.0, 3_000.0, 6_000.0)
BROADCAST_DELIVERIES = (50_000.0, 100_000.0, 150_000.0)
COMPARED = ("events_per_s", "deliveries_per_s", "p50_ms", "p99_ms", "server_cpu_pct")
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Config:
    ladder: ladder.Config  # the workload, cores, durations
    workers: tuple[int, ...]
    placements: tuple[Placement, ...]
    database_url: str
    redis_cores: set[int]

    @property
    def nofile(self) -> int:
        """Enough for every side's subscribers at once, so that the sides can take turns load
        by load (`ladder.measure`); capped by the hard limit, they run one after the other."""
        sides = len(plans(self, set(range(os.cpu_count() or 1))))
        return sides * self.ladder.subscribers + 2048


@dataclass
class Plan:
    """One server to measure: how many workers, and where each of its processes runs."""

    name: str
    workers: int
    placement: Placement
    # role ("server", or "supervisor" and "worker <i>") → cores
    cores: dict[str, set[int]]
    also: list[str] = field(default_factory=list)  # placements that measure the same thing


def placement_cores(
    placement: Placement, workers: int, server_core: int, client_core: int, machine: set[int]
) -> dict[str, set[int]]:
    """Where each process of a `workers`-worker server runs under `placement`."""
    if placement == "unpinned":
        each = [set(machine)] * workers
    elif placement == "shared":
        each = [{server_core}] * workers
    else:
        ring = [server_core, client_core]
        each = [{ring[index % len(ring)]} for index in range(workers)]
    if workers == 1:
        return {"server": each[0]}
    supervisor = set(machine) if placement == "unpinned" else {server_core}
    return {"supervisor": supervisor} | {f"worker {i + 1}": cores for i, cores in enumerate(each)}


def plans(cfg: Config, machine: set[int]) -> list[Plan]:
    """Every (placement, workers) to run, each distinct layout once."""
    found: list[Plan] = []
    for placement in cfg.placements:
        for workers in cfg.workers:
            cores = placement_cores(
                placement, workers, cfg.ladder.server_core, cfg.ladder.client_core, machine
            )
            same = next((plan for plan in found if plan.cores == cores), None)
            if same is not None:
                same.also.append(placement)
                continue
            found.append(Plan(f"workers{workers}-{placement}", workers, placement, cores))
    return found


def baseline_of(plan: Plan, all_plans: list[Plan]) -> Plan | None:
    """The 1-worker plan that `plan` compares with: its placement's (or the one standing in)."""
    for other in all_plans:
        if other.workers == 1 and plan.placement in (other.placement, *other.also):
            return other
    return None


# -- the server --------------------------------------------------------------------------------


def admin_nodes(port: int) -> list[dict[str, Any]]:
    token = mint_token(ladder.SECRET, "bench-admin", ["admin"], ttl_s=600)
    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
        answer = httpx.get(
            f"http://127.0.0.1:{port}/v1/admin/nodes",
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )
        if answer.status_code == 200:
            nodes: list[dict[str, Any]] = answer.json()["nodes"]
            return nodes
    return []


def start_workers(
    plan: Plan, cfg: Config, redis_url: str, workdir: Path
) -> tuple[Child, int, dict[str, int]]:
    """`sinal serve --workers N` pinned as `plan` says, once every worker is up on the control
    bus; returns the process, the port, and the pid of each role."""
    port = free_port()
    env = {
        **os.environ,
        "SINAL_REDIS_URL": redis_url,
        "SINAL_DATABASE_URL": cfg.database_url,
        "SINAL_JWT_SECRET": ladder.SECRET,
        "SINAL_LOG_LEVEL": "warning",  # an access-log line per publish would be measured
        "PYTHONPATH": str(ROOT),
    }
    if cfg.ladder.coalesce_ms is not None:
        env["SINAL_COALESCE_MS"] = f"{cfg.ladder.coalesce_ms:g}"
    first = plan.cores["server" if plan.workers == 1 else "supervisor"]
    nofile = cfg.nofile

    def setup() -> None:  # in the child before exec: its workers inherit both
        os.sched_setaffinity(0, first)
        raise_nofile(nofile)

    argv = [sys.executable, "-m", "api", "serve", "--port", str(port)]
    argv += ["--workers", str(plan.workers)]
    server = Child(f"{plan.name}-{port}", argv, env=env, cwd=workdir, preexec=setup)
    try:
        server.wait_listening(port, timeout=60)
        pids = _wait_workers(server, port, plan.workers)
        for role, pid in pids.items():
            OURS.add(pid)
            pin_process(pid, plan.cores[role])
    except BaseException:
        server.stop()
        raise
    return server, port, pids


def _wait_workers(server: Child, port: int, workers: int, within: float = 60) -> dict[str, int]:
    """Each role's pid, once `/v1/admin/nodes` lists `workers` nodes up, each a child of the
    supervisor (or, with one worker, the server itself)."""
    deadline = time.monotonic() + within
    while True:
        up = [node for node in admin_nodes(port) if node.get("status") == "up"]
        if workers == 1 and len(up) == 1 and up[0].get("pid") == server.pid:
            return {"server": server.pid}
        if workers > 1 and len(up) == workers:
            # named "<address>/<index>" by the supervisor
            by_index = {int(str(node["name"]).rsplit("/", 1)[1]): int(node["pid"]) for node in up}
            if sorted(by_index) == list(range(1, workers + 1)):
                return {"supervisor": server.pid} | {
                    f"worker {index}": by_index[index] for index in sorted(by_index)
                }
        if not server.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"{workers} worker(s) not up on {port}:\n{server.tail()}")
        time.sleep(0.2)


@contextlib.asynccontextmanager
async def side(
    plan: Plan,
    cfg: Config,
    redis_url: str,
    redis_pids: tuple[int, ...],
    workdir: Path,
    facts: dict[str, Any],
) -> AsyncIterator[ladder.Running]:
    server, port, pids = start_workers(plan, cfg, redis_url, workdir)
    facts["processes"] = list(pids)
    facts["pinning"] = {role: sorted(os.sched_getaffinity(pid)) for role, pid in pids.items()}
    log(f"{plan.name}: {facts['pinning']} (pids {pids}) on port {port}")
    try:
        async with ladder.attach(
            plan.name, cfg.ladder, port, tuple(pids.values()), redis_pids
        ) as running:
            running.postgres = True
            yield running
    finally:
        server.stop()
        OURS.difference_update(pids.values())


# -- the run -----------------------------------------------------------------------------------


def comparisons(
    all_plans: list[Plan], rows: list[dict[str, Any]]
) -> dict[str, list[dict[str, Any] | None]]:
    """For each plan of more than one worker, per offered load: its figures ÷ its baseline's."""
    found: dict[str, list[dict[str, Any] | None]] = {}
    for plan in all_plans:
        base = baseline_of(plan, all_plans)
        if plan.workers == 1 or base is None:
            continue
        found[plan.name] = [
            ladder.ratios(row[plan.name], row[base.name], COMPARED)
            if plan.name in row and base.name in row
            else None
            for row in rows
        ]
    return found


def table(lcfg: ladder.Config, sides: list[ladder.Side]) -> list[dict[str, Any]]:
    """One row per offered load: each side's rounds combined (`ladder.side_figures`)."""
    return [
        {
            "offered": load,
            **{
                s.name: ladder.side_figures([r for r in s.rungs if r["offered"] == load])
                for s in sides
            },
        }
        for load in lcfg.loads
    ]


async def run(cfg: Config) -> dict[str, Any]:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    lcfg = cfg.ladder
    machine = set(range(os.cpu_count() or 1))
    all_plans = plans(cfg, machine)
    await reset_database(cfg.database_url)
    with (
        tempfile.TemporaryDirectory(prefix="sinal-workers-", ignore_cleanup_errors=True) as tmp,
        redis_for_benchmark(None, Path(tmp)) as redis_url,
    ):
        workdir = Path(tmp)
        redis_pids = tuple(OURS)  # the private redis-server is all this run has started
        for pid in redis_pids:
            pin_process(pid, cfg.redis_cores)
        quiet = await cores_busy_before(lcfg.server_core, lcfg.client_core)
        sides: list[ladder.Side] = []
        for index, plan in enumerate(all_plans):
            # A database each: a worker's node record and live pub/sub stay with its server.
            url = ladder.redis_database(redis_url, index)
            facts: dict[str, Any] = {"workers": plan.workers, "placement": plan.placement}
            if plan.also:
                facts["also_stands_for"] = plan.also
            opener: Callable[[], contextlib.AbstractAsyncContextManager[ladder.Running]] = (
                functools.partial(side, plan, cfg, url, redis_pids, workdir, facts)
            )
            sides.append(ladder.Side(plan.name, opener, facts=facts))
        await ladder.measure(lcfg, sides)
        rows = table(lcfg, sides)
        return {
            "benchmark": "workers",
            "workload": "per-user" if lcfg.kind == "unicast" else "broadcast",
            "machine_busy_before_pct": quiet,
            "cpus": len(machine),
            "subscribers": lcfg.subscribers,
            "channels": lcfg.channels,
            "loads": list(lcfg.loads),
            "load_unit": "events/s" if lcfg.kind == "unicast" else "deliveries/s",
            "duration": lcfg.duration,
            "warmup": lcfg.warmup,
            "rounds": lcfg.rounds,
            "database": database_name(cfg.database_url),
            "pinning": {
                "generator": [lcfg.client_core],
                "redis": sorted(cfg.redis_cores),
                "postgres": "not pinned (the machine's server)",
                **{s.name: s.facts.get("pinning") for s in sides},
            },
            "sides": {s.name: {**s.facts, "rungs": s.rungs} for s in sides},
            "table": rows,
            "vs_one_worker": comparisons(all_plans, rows),
        }


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of worker counts: {text!r}") from None
    if not counts or any(count < 1 for count in counts):
        raise argparse.ArgumentTypeError("worker counts must be 1 or more")
    return counts


def _placements(text: str) -> tuple[Placement, ...]:
    found: list[Placement] = []
    for part in (part.strip() for part in text.split(",")):
        match = next((p for p in PLACEMENTS if p == part), None)
        if match is None:
            raise argparse.ArgumentTypeError(f"placements are {', '.join(PLACEMENTS)}: {part!r}")
        found.append(match)
    return tuple(found)


def parse_args(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.workers", description=__doc__.splitlines()[0]
    )
    add = parser.add_argument
    add("kind", nargs="?", choices=["unicast", "broadcast"], default="unicast")
    add("--workers", type=_counts, default=(1, 2), help="worker counts (comma-separated)")
    add("--placements", type=_placements, default=("shared", "spread"), help=", ".join(PLACEMENTS))
    add(
        "--database-url",
        default=DEFAULT_DATABASE_URL.replace("sinal_bench", "sinal_bench_workers"),
        help="PostgreSQL database for the servers: DROPPED and recreated",
    )
    add(
        "--redis-cores",
        type=parse_cores,
        default="all",
        help="cores for the redis-server, e.g. 0 or 0,1 (default: all, i.e. unpinned)",
    )
    add("--subscribers", type=int, help="default: 10,000 (unicast), 2,000 (broadcast)")
    add("--rates", type=ladder._loads, help="unicast offered loads, events/s")
    add("--deliveries", type=ladder._loads, help="broadcast offered loads, deliveries/s")
    add("--duration", type=float, default=10, help="measured seconds per load")
    add("--warmup", type=float, default=3)
    add("--drain", type=float, default=5)
    add("--rounds", type=int, default=1, help="times each side climbs its loads")
    add("--max-foreign", type=float, help="as the ladder's: wait for a quiet machine, retry")
    add("--retries", type=int, default=2)
    add("--publishers", type=int, default=32)
    add("--payload-bytes", type=int, default=100)
    add("--coalesce-ms", type=float)
    add("--server-core", type=int, default=0)
    add("--client-core", type=int, default=1)
    add("--connect-concurrency", type=int, default=200)
    args = parser.parse_args(argv)
    unicast = args.kind == "unicast"
    if (args.deliveries if unicast else args.rates) is not None:
        parser.error("--rates is for unicast, --deliveries for broadcast")
    loads = (args.rates or UNICAST_RATES) if unicast else (args.deliveries or BROADCAST_DELIVERIES)
    subscribers = args.subscribers or (10_000 if unicast else 2_000)
    if subscribers <= 0 or args.duration <= 0 or args.rounds <= 0 or args.publishers <= 0:
        parser.error("--subscribers, --duration, --rounds and --publishers must be positive")
    if args.warmup < 0 or args.drain < 0:
        parser.error("--warmup and --drain must not be negative")
    if args.server_core == args.client_core:
        parser.error("--server-core and --client-core must differ")
    try:
        database_name(args.database_url)
    except SystemExit as refused:
        parser.error(str(refused))
    lcfg = ladder.Config(
        kind="unicast" if unicast else "broadcast", subscribers=subscribers, loads=loads,
        duration=args.duration, warmup=args.warmup, drain=args.drain, pause=1.0,
        rounds=args.rounds, max_foreign=args.max_foreign, retries=max(0, args.retries),
        batch=1, publishers=args.publishers, payload_bytes=args.payload_bytes,
        revisions=(".",), skip_nchan=True, calibrate=False, engine="redis",
        coalesce_ms=args.coalesce_ms, redis_url=None, server_core=args.server_core,
        client_core=args.client_core, connect_concurrency=args.connect_concurrency,
    )  # fmt: skip
    return Config(
        ladder=lcfg,
        workers=args.workers,
        placements=tuple(dict.fromkeys(args.placements)),
        database_url=args.database_url,
        redis_cores=args.redis_cores,
    )


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    run_benchmark(lambda: run(cfg), cfg.nofile, cfg.ladder.client_core)


if __name__ == "__main__":
    main()
