"""Locust in distributed mode: a master and K workers on `loadtests/locustfile.py`, one JSON line.

    uv run python -m loadtests.locust_distributed --workers 2              # creates, ~40 s
    uv run python -m loadtests.locust_distributed --workers 1 --users 40 --run-time 8   # smoke
    uv run python -m loadtests.locust_distributed --workers 4 --host http://10.0.0.5:8000 \\
        --user-class SubscriberUser --user-class PublisherUser

One Locust process runs its users on one core (gevent): past a few thousand requests/s the
generator, not the server, sets the figures. This runner starts `locust --master --headless
--expect-workers K` and K `locust --worker` processes (each pinned to a core of
`--worker-cores` in turn, unpinned by default), waits for the run (`--run-time`) to end,
reads Locust's CSV statistics (`--csv`) and prints requests/s, failures and p50/p95/p99 by
request name as the last stdout line, with the CPU each process used: a worker near 100 % of a
core is a generator at its ceiling; compare `--workers 1` with `--workers 2`.

Without `--host`, it first starts `sinal serve` pinned to `--server-core` on PostgreSQL
(`--database-url`, DROPPED and recreated) and a private `redis-server`, with the secret the
users mint their tokens with. By default the users are `NotifierUser` creating notifications as
fast as they are answered (`SINAL_LOCUST_CREATE_RATE=0`). `--calibrate` measures the generator
alone: `PublisherUser` at full speed against `loadtests.nullserver`, which answers a publish with
no work, so the requests/s are Locust's ceiling with K workers.

Every process started is stopped by its pid at the end, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests import procs
from loadtests.procs import (
    ROOT,
    Child,
    PostgresMeter,
    cpu_seconds,
    log,
    pinned_child,
    reset_database,
)

SECRET = "loadtest-secret-that-is-long-enough-for-hs256"
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
# Seconds past --run-time the master gets to end the run and write its CSV files.
GRACE_S = 60.0


@dataclass(frozen=True)
class Config:
    workers: int
    users: int
    spawn_rate: float
    run_time: float
    user_classes: tuple[str, ...]
    create_rate: float
    host: str | None
    database_url: str
    server_core: int
    worker_cores: tuple[int, ...]
    master_core: int | None
    calibrate: bool


class Interrupted(Exception):
    """SIGTERM: stop like Ctrl-C."""


# -- Locust's CSV statistics (pure) ------------------------------------------------------------


def _number(text: str) -> float | None:
    text = text.strip()
    if not text or text == "N/A":
        return None
    return float(text)


def parse_stats(text: str) -> dict[str, Any]:
    """Locust's `<prefix>_stats.csv`: figures of the `Aggregated` row, and by request name
    (`<type> <name>`, e.g. `POST /v1/notifications`)."""
    by_name: dict[str, dict[str, Any]] = {}
    total: dict[str, Any] = {}
    for row in csv.DictReader(text.splitlines()):
        figures = {
            "requests": int(row["Request Count"]),
            "failures": int(row["Failure Count"]),
            "requests_per_s": _number(row["Requests/s"]),
            "failures_per_s": _number(row["Failures/s"]),
            "p50_ms": _number(row["50%"]),
            "p95_ms": _number(row["95%"]),
            "p99_ms": _number(row["99%"]),
            "max_ms": _number(row["Max Response Time"]),
        }
        if row["Name"] == "Aggregated":
            total = figures
        else:
            by_name[f"{row['Type']} {row['Name']}".strip()] = figures
    return {**total, "by_name": by_name}


# -- the processes -----------------------------------------------------------------------------


def locust_argv(cfg: Config, *role: str) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), *role, *cfg.user_classes]


def locust_env(cfg: Config) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SINAL_JWT_SECRET": SECRET,
        "SINAL_LOCUST_CREATE_RATE": str(cfg.create_rate),
        # With --calibrate the publishers go as fast as they can (a request per ms at most).
        **({"SINAL_LOCUST_PUBLISH_RATE": "1000"} if cfg.calibrate else {}),
    }


@contextlib.contextmanager
def target(cfg: Config) -> Iterator[tuple[str, int | None]]:
    """The server under load: `--host`, or a fresh `sinal serve` of our own (its pid)."""
    if cfg.host is not None:
        yield cfg.host, None
        return
    if cfg.calibrate:
        with tempfile.TemporaryDirectory(prefix="sinal-null-", ignore_cleanup_errors=True) as tmp:
            port = procs.free_port()
            argv = [sys.executable, "-m", "loadtests.nullserver", "--port", str(port)]
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            preexec = pinned_child(cfg.server_core, cfg.users * 2 + 1024)
            server = Child(f"nullserver-{port}", argv, env=env, cwd=Path(tmp), preexec=preexec)
            try:
                server.wait_listening(port)
                yield f"http://127.0.0.1:{port}", server.pid
            finally:
                server.stop()
        return
    with procs.deployment(
        "sinal-locust",
        database_url=cfg.database_url,
        redis_url=None,
        secret=SECRET,
        core=cfg.server_core,
        nofile=cfg.users * 2 + 1024,
    ) as deployed:
        yield f"http://127.0.0.1:{deployed.port}", deployed.server.pid


def start_locust(cfg: Config, host: str, workdir: Path) -> tuple[Child, list[Child]]:
    """The master, then the workers; each one is stopped by the caller."""
    port = procs.free_port()
    master_argv = locust_argv(
        cfg,
        "--master", "--headless", "--expect-workers", str(cfg.workers),
        "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
        "-u", str(cfg.users), "-r", str(cfg.spawn_rate), "-t", f"{cfg.run_time:g}s",
        "--host", host, "--csv", str(workdir / "locust"), "--stop-timeout", "5",
        "--only-summary",
    )  # fmt: skip
    master = Child(
        "locust-master",
        master_argv,
        env=locust_env(cfg),
        cwd=workdir,
        preexec=None if cfg.master_core is None else pinned_child(cfg.master_core, 4096),
    )
    master.wait_listening(port)
    workers = []
    for index in range(cfg.workers):
        cores = cfg.worker_cores
        preexec = pinned_child(cores[index % len(cores)], cfg.users + 1024) if cores else None
        argv = locust_argv(
            cfg, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)
        )
        workers.append(
            Child(f"locust-worker-{index}", argv, env=locust_env(cfg), cwd=workdir, preexec=preexec)
        )
    return master, workers


class Sampler:
    """CPU of processes that end on their own (the workers quit with the master): read every
    so often while they run, the last reading kept."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        now = time.monotonic()
        self.first = {name: (cpu_seconds(pid), now) for name, pid in pids.items()}
        self.last = dict(self.first)

    def sample(self) -> None:
        for name, pid in self.pids.items():
            with contextlib.suppress(OSError, IndexError, ValueError):
                self.last[name] = (cpu_seconds(pid), time.monotonic())

    def percentages(self) -> dict[str, float]:
        return {
            name: round((cpu - self.first[name][0]) / max(at - self.first[name][1], 1e-9) * 100, 1)
            for name, (cpu, at) in self.last.items()
        }

    def seconds(self) -> float:
        return round(
            max(at for _, at in self.last.values()) - min(at for _, at in self.first.values()), 1
        )


def run(cfg: Config) -> dict[str, Any]:
    if cfg.host is None and not cfg.calibrate:
        asyncio.run(reset_database(cfg.database_url))
        log(f"database {procs.database_name(cfg.database_url)}: dropped and recreated")
    started: list[Child] = []
    with (
        tempfile.TemporaryDirectory(prefix="sinal-locust-", ignore_cleanup_errors=True) as tmp,
        target(cfg) as (host, server_pid),
    ):
        workdir = Path(tmp)
        try:
            master, workers = start_locust(cfg, host, workdir)
            started = [*workers, master]
            log(f"locust: master {master.pid}, workers {[w.pid for w in workers]} → {host}")
            pids = {"master": master.pid, **{f"worker_{i}": w.pid for i, w in enumerate(workers)}}
            if server_pid is not None:
                pids["server"] = server_pid
            sampler = Sampler(pids)
            postgres = PostgresMeter() if server_pid is not None else None
            # The master ends the run itself after --run-time (spawning starts once every
            # worker has reported in) and tells the workers to quit.
            deadline = time.monotonic() + cfg.run_time + GRACE_S
            spawned = False
            while master.alive():
                if not spawned and "All users spawned" in master.tail(200):
                    # The measured window starts once every user runs.
                    spawned = True
                    sampler = Sampler(pids)
                    postgres = PostgresMeter() if server_pid is not None else None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"locust master still running:\n{master.tail()}")
                sampler.sample()
                time.sleep(0.5)
            postgres_pct = None if postgres is None else round(postgres.lap(), 1)
            cpu, elapsed = sampler.percentages(), sampler.seconds()
            stats_path = workdir / "locust_stats.csv"
            if not stats_path.exists():
                raise RuntimeError(f"no CSV statistics from locust:\n{master.tail()}")
            stats = parse_stats(stats_path.read_text())
        finally:
            for child in started:
                child.stop()
    worker_cpu = [cpu[f"worker_{i}"] for i in range(cfg.workers)]
    return {
        "workers": cfg.workers,
        "users": cfg.users,
        "user_classes": list(cfg.user_classes),
        "create_rate": cfg.create_rate,
        "run_time": cfg.run_time,
        "host": cfg.host or ("loadtests.nullserver" if cfg.calibrate else "sinal serve"),
        "pinning": {
            "server_core": cfg.server_core if cfg.host is None else None,
            "worker_cores": list(cfg.worker_cores) or "unpinned",
            "master_core": cfg.master_core if cfg.master_core is not None else "unpinned",
        },
        **stats,
        "worker_cpu_pct": worker_cpu,
        "worker_cpu_pct_max": max(worker_cpu, default=None),
        "server_cpu_pct": cpu.get("server"),
        "postgres_cpu_pct": postgres_pct,
        "master_cpu_pct": cpu["master"],
        "measured_s": elapsed,
    }


# -- the command -------------------------------------------------------------------------------


def _cores(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of core numbers: {text!r}") from None


def parse_args(argv: Sequence[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.locust_distributed", description=__doc__.splitlines()[0]
    )
    add = parser.add_argument
    add("--workers", type=int, default=2, help="locust worker processes")
    add("--users", type=int, default=200, help="simulated users over all workers")
    add("--spawn-rate", type=float, default=100, help="users started per second")
    add("--run-time", type=float, default=20, help="seconds of load")
    add("--user-class", action="append", dest="user_classes", help="default: NotifierUser")
    add("--create-rate", type=float, default=0, help="NotifierUser creates/s each; 0: no wait")
    add("--host", help="a running server (its SINAL_JWT_SECRET must be the runner's)")
    add("--database-url", default=procs.DEFAULT_DATABASE_URL, help="DROPPED and recreated")
    add("--server-core", type=int, default=0)
    add("--worker-cores", type=_cores, default=(), help="cores for the workers, in turn")
    add("--master-core", type=int)
    add(
        "--calibrate",
        action="store_true",
        help="the generator's ceiling: PublisherUser at full speed against loadtests.nullserver",
    )
    args = parser.parse_args(argv)
    if args.workers <= 0 or args.users <= 0 or args.run_time <= 0 or args.spawn_rate <= 0:
        parser.error("--workers, --users, --run-time and --spawn-rate must be positive")
    if args.host is None and not args.calibrate:
        procs.database_name(args.database_url)
    default = "PublisherUser" if args.calibrate else "NotifierUser"
    args.user_classes = tuple(args.user_classes or [default])
    return Config(**vars(args))


def _interrupt(signum: int, frame: object) -> None:
    raise Interrupted


def main(argv: Sequence[str] | None = None) -> None:
    cfg = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = run(cfg)
    except (KeyboardInterrupt, Interrupted):
        log("locust: stopped")
        sys.exit(130)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
