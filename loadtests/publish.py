"""The publish path at saturation: `POST /v1/publish` requests/s on one server core.

    uv run python -m loadtests.publish [--revisions .,main] [--rounds 2] [--batch 1]
        [--connections 32] [--subscribers 10000] [--duration 10] [--profile]

What it answers: how many publish requests (and events) one Sinal process takes per second
when nothing else limits it, and where its core's time goes. Each revision (`.` is the working
tree; anything else is checked out in a temporary `git worktree`) gets a fresh server pinned
to `--server-core` on the Redis engine (a private `redis-server`), `--subscribers` idle SSE
streams on a channel each (`notifications:bench-<i>`, as many small channels as real traffic
has), then `--connections` keep-alive connections that each send their next request as soon
as the last is answered (closed loop: the server's core, not a schedule, sets the pace), each
request one event (`--batch 1`) or a JSON list of `--batch` events, spread over the
subscribers' channels. Revisions alternate round by round, so that the noise of a shared
machine falls on both sides.

With `--profile`, py-spy samples the server during each measured window; the collapsed
stacks go to `loadtests/results/publish-<revision>-<round>.txt` and the figures get `profile`:
the share of samples by where the time goes (`CATEGORIES`: the first whose frames are in a
sample's stack).

Progress goes to stderr; the last stdout line is one JSON object: each run's figures, the
means per revision and, with two revisions, the second's ÷ the first's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from statistics import mean
from typing import Any

from api.auth import mint_token
from loadtests.compare import checkout, commit_of
from loadtests.lean import SseSubscriber, Tally, open_many, padding, payload, sse_request
from loadtests.procs import (
    RESULTS,
    Child,
    CoreMeter,
    CpuMeter,
    HttpPool,
    cpu_seconds,
    finish_profile,
    free_port,
    log,
    percentile,
    pinned_child,
    redis_for_benchmark,
    run_benchmark,
    start_profile,
)

SECRET = "loadtest-secret-that-is-long-enough-for-hs256"
# Where a profile sample's time goes: the first of these whose frames are in its stack (the
# table of docs/benchmarks.md, "The publish path").
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("access line and HTTP metrics", ("Requests.finish",)),
    ("publish to Redis", ("_send_queued", "RedisEngine.publish ", "RedisEngine._pipeline",
                          "AsyncScript.__call__", "RedisEngine.publish_many")),
    ("response writes (uvicorn send)", ("RequestResponseCycle.send",)),
    ("body decoding, checks, answer", ("accept (api/publish", "publish (api/publish")),
    ("litestar", ("(litestar/", "api/dependencies.py", "api/csrf.py")),
    ("request wrapper, routing, lean handler", ("Requests.__call__",)),
    ("live path: redis reader, hub, stream writes", ("_read_forever", "streams/hub.py",
                                                     "streams/session.py")),
    ("reading requests (uvicorn protocol)", ("httptools_impl", "api/connections.py")),
)  # fmt: skip
KEPT = ("requests_per_s", "events_per_s", "requests_per_cpu_s", "deliveries_per_s", "p50_ms",
        "p99_ms", "server_cpu_pct", "server_core_busy_pct", "client_core_busy_pct")  # fmt: skip


def channel(index: int) -> bytes:
    return b"notifications:bench-%d" % index


class Load:
    """The requests: each a publish of one event or a list of `batch`, spread over channels."""

    def __init__(self, port: int, batch: int, channels: int, payload_bytes: int) -> None:
        self.batch = batch
        self.channels = channels
        self.pad = padding(payload_bytes)
        token = mint_token(SECRET, "bench-publisher", ["service"], ttl_s=3600)
        self.head = (
            f"POST /v1/publish HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        ).encode()
        self.seq = 0

    def request(self) -> bytes:
        events = []
        for _ in range(self.batch):
            self.seq += 1
            data = payload(self.seq, time.time_ns(), self.pad)
            events.append(
                b'{"channel":"%s","type":"bench","data":%s}'
                % (channel(self.seq % self.channels), data)
            )
        body = events[0] if self.batch == 1 else b"[" + b",".join(events) + b"]"
        return self.head + b"Content-Length: %d\r\n\r\n" % len(body) + body


async def saturate(
    pool: HttpPool, load: Load, connections: int, warmup: float, duration: float
) -> tuple[int, int, list[int]]:
    """Closed loop on every connection; (requests, errors, latencies ns) of the window."""
    loop = asyncio.get_running_loop()
    start = loop.time() + warmup
    end = start + duration
    counted = errors = 0
    latencies: list[int] = []

    async def worker() -> None:
        nonlocal counted, errors
        while (now := loop.time()) < end:
            sent = time.perf_counter_ns()
            try:
                status, body = await pool.request(load.request())
            except (OSError, TimeoutError) as error:
                status, body = 0, repr(error).encode()
            if now >= start:
                counted += 1
                latencies.append(time.perf_counter_ns() - sent)
                if status != 201:
                    errors += 1
                    if errors <= 3:
                        log(f"publish answered {status}: {body[:200]!r}")

    await asyncio.gather(*(worker() for _ in range(connections)))
    return counted, errors, latencies


def start_server(
    root: Path, redis_url: str, workdir: Path, args: argparse.Namespace
) -> tuple[Child, int]:
    port = free_port()
    env = {
        **os.environ,
        "SINAL_REDIS_URL": redis_url,
        "SINAL_JWT_SECRET": SECRET,
        "SINAL_DATABASE_URL": f"sqlite:///{workdir / 'sinal.db'}",
        "SINAL_LOG_LEVEL": args.log_level,
        "PYTHONPATH": str(root),
        **dict(item.split("=", 1) for item in args.env),
    }
    argv = [sys.executable, "-m", "api", "serve", "--port", str(port)]
    server = Child(f"publish-{port}", argv, env=env, cwd=workdir,
                   preexec=pinned_child(args.server_core, args.subscribers + 1024))  # fmt: skip
    server.wait_listening(port, timeout=60)
    return server, port


async def one_run(root: Path, name: str, turn: int, args: argparse.Namespace) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="sinal-publish-") as tmp,
        redis_for_benchmark(args.redis_url, Path(tmp), db=6) as redis_url,
    ):
        server, port = start_server(root, redis_url, Path(tmp), args)
        subscribers: list[Any] = []
        pool = HttpPool(port, args.connections)
        try:
            tally = Tally()
            tokens = [mint_token(SECRET, f"bench-{i}", ttl_s=3600) for i in range(args.subscribers)]
            subscribers, failed = await open_many(
                lambda i: SseSubscriber(sse_request(port, tokens[i]), tally), args.subscribers,
                port, progress=lambda n: log(f"{name}: {n} subscribers ready"),
            )  # fmt: skip
            await pool.open()
            load = Load(port, args.batch, max(args.subscribers, 1), args.payload_bytes)
            log(f"{name} round {turn}: server pid {server.pid}, {len(subscribers)} streams "
                f"({failed} failed); saturating")  # fmt: skip
            profiler = None
            loop = asyncio.get_running_loop()

            async def measure() -> tuple[dict[str, float], int]:
                nonlocal profiler
                await asyncio.sleep(args.warmup)
                if args.profile:
                    out = f"publish-{name}-{turn}"
                    profiler = start_profile(server.pid, out, args.duration, args.client_core)
                meters = (CpuMeter(lambda: cpu_seconds(server.pid)),
                          CoreMeter(args.server_core), CoreMeter(args.client_core))  # fmt: skip
                received = tally.received
                tally.measuring = True
                began = loop.time()
                await asyncio.sleep(args.duration)
                tally.measuring = False
                seconds = loop.time() - began
                cpu, server_core, client_core = (meter.lap() for meter in meters)
                figures = {"server_cpu_pct": round(cpu, 1),
                           "server_core_busy_pct": round(server_core, 1),
                           "client_core_busy_pct": round(client_core, 1)}  # fmt: skip
                return figures, round((tally.received - received) / seconds)

            measured = asyncio.create_task(measure())
            counted, errors, latencies = await saturate(
                pool, load, args.connections, args.warmup, args.duration
            )
            cpu, deliveries = await measured
            await finish_profile(profiler)
        finally:
            pool.close()
            for subscriber in subscribers:
                subscriber.close()
            server.stop()
    latencies.sort()
    figures: dict[str, Any] = {
        "revision": name,
        "round": turn,
        "requests_per_s": round(counted / args.duration),
        "events_per_s": round(counted * args.batch / args.duration),
        # What a second of the server's own CPU serves: the figure that other work on a shared
        # machine disturbs least (it takes the core's time, not the process's).
        "requests_per_cpu_s": round(counted / (args.duration * cpu["server_cpu_pct"] / 100)),
        "deliveries_per_s": deliveries,
        "errors": errors,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        **cpu,
    }
    if args.profile:
        figures["profile"] = shares(RESULTS / f"publish-{name}-{turn}.txt")
    log(f"{name} round {turn}: {figures}")
    return figures


def shares(path: Path) -> dict[str, float]:
    """The share of samples (%) by category, from py-spy's collapsed stacks."""
    counts: Counter[str] = Counter()
    if not path.exists():
        return {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        category = next(
            (name for name, frames in CATEGORIES if any(frame in stack for frame in frames)),
            "event loop and the rest",
        )
        counts[category] += int(count)
    total = sum(counts.values()) or 1
    return {name: round(n * 100 / total, 1) for name, n in counts.most_common()}


@contextlib.contextmanager
def revisions(names: list[str]) -> Iterator[list[tuple[str, Path]]]:
    with (
        tempfile.TemporaryDirectory(prefix="sinal-revisions-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        yield [(name, stack.enter_context(checkout(name, Path(tmp)))) for name in names]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    with revisions(args.revisions) as trees:
        described = {name: commit_of(root) for name, root in trees}
        for turn in range(1, args.rounds + 1):
            for name, root in trees:
                runs.append(await one_run(root, name, turn, args))
    means = {
        name: {key: round(mean(r[key] for r in runs if r["revision"] == name), 1) for key in KEPT}
        for name, _ in trees
    }
    result: dict[str, Any] = {"revisions": described, "batch": args.batch,
                              "connections": args.connections, "subscribers": args.subscribers,
                              "runs": runs, "means": means}  # fmt: skip
    if len(args.revisions) == 2:
        first, second = (means[name] for name in args.revisions)
        result["ratio"] = {key: round(second[key] / first[key], 3) for key in KEPT if first[key]}
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--revisions", default=".", help="comma-separated git revisions; `.` is the work tree")
    add("--rounds", type=int, default=1)
    add("--batch", type=int, default=1, help="events per request (1: the single-event form)")
    add("--connections", type=int, default=32, help="keep-alive connections, one request each")
    add("--subscribers", type=int, default=10_000, help="idle SSE streams, a channel each")
    add("--payload-bytes", type=int, default=100)
    add("--warmup", type=float, default=3.0)
    add("--duration", type=float, default=10.0)
    add("--log-level", default="info", help="SINAL_LOG_LEVEL (info: access lines included)")
    add("--env", action="append", default=[], help="NAME=value for the server, repeatable")
    add("--redis-url", help="use this Redis database (flushed!) instead of a private one")
    add("--server-core", type=int, default=0)
    add("--client-core", type=int, default=1)
    add("--profile", action="store_true", help="py-spy the server (uv pip install py-spy)")
    args = parser.parse_args(argv)
    args.revisions = [name.strip() for name in args.revisions.split(",") if name.strip()]
    run_benchmark(lambda: run(args), args.subscribers + args.connections + 1024, args.client_core)


if __name__ == "__main__":
    main()
