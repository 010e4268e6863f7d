"""What metrics cost: fan-out with metrics on and off, side by side, and a scrape of a busy node.

    uv run python -m loadtests.metrics [--rounds 2 --subscribers 2000 --rate 40 --duration 20
                                        --scrape-every 1 --scrape-connections 10000 --scrapes 50]

1. Fan-out (the workload of `loadtests.fanout`, Sinal only), alternating `SINAL_METRICS=off`
   and on for `--rounds` pairs, so that noise from other work spreads over both sides. With
   metrics on, `/metrics` is scraped every `--scrape-every` seconds while events flow (what a
   Prometheus does, at a harsher interval than its usual 15 s).
2. Scrape: a fresh server with `--scrape-connections` idle SSE streams; `/metrics` fetched
   `--scrapes` times one after another; the duration of each (request sent → last byte read).

Progress goes to stderr; the last stdout line is one JSON object: each run's figures, the
means, on ÷ off, the scrape's percentiles, and the targets met.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from statistics import mean
from typing import Any

import httpx

from loadtests.admin import add_redis_url
from loadtests.compare import KEPT, ratio
from loadtests.fanout import (
    Config,
    add_placement,
    add_workload,
    sinal_fanout,
    start_sinal,
    user_token,
)
from loadtests.lean import SseSubscriber, Subscriber, open_many, sse_request
from loadtests.procs import (
    cores_busy_before,
    log,
    percentile,
    redis_for_benchmark,
    run_benchmark,
)

# Metrics on ÷ off: deliveries/s at least 0.95, p99 at most 1.05. A scrape: at most 50 ms.
TOLERANCE = 0.05
SCRAPE_P99_MS = 50
SIDES = {"off": {"SINAL_METRICS": "off"}, "on": {"SINAL_METRICS": "on"}}


def scraper(every_s: float, durations: list[float]) -> Callable[[int], Awaitable[None]]:
    """What a Prometheus does to a node: GET /metrics every `every_s` seconds."""

    async def scrape(port: int) -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            while True:
                started = time.perf_counter()
                response = await client.get("/metrics")
                response.raise_for_status()
                durations.append(time.perf_counter() - started)
                await asyncio.sleep(every_s)

    return scrape


async def scrape_busy_node(
    cfg: Config, redis_url: str, workdir: Path, connections: int, scrapes: int
) -> dict[str, Any]:
    """Scrape durations of a node holding `connections` idle streams (and of it empty)."""
    server, port = start_sinal(cfg, redis_url, workdir)
    log(f"scrape: server pid {server.pid} on port {port}")
    opened: list[Subscriber] = []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            empty = await timed_scrapes(client, scrapes)
            tokens = [user_token(index) for index in range(connections)]
            opened, failures = await open_many(
                lambda index: SseSubscriber(sse_request(port, tokens[index]), None),
                connections,
                port,
                concurrency=cfg.connect_concurrency,
                handshake_s=60,
                progress=lambda n: log(f"scrape: {n} connections open"),
            )
            await asyncio.sleep(2)  # let the handshakes' work settle
            busy = await timed_scrapes(client, scrapes)
            text = (await client.get("/metrics")).text
        held = next(
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith('sinal_connections{transport="sse"}')
        )
        return {
            "scrape_connections": len(opened),
            "scrape_connect_failures": failures,
            "scrape_connections_reported": held,
            "scrape_bytes": len(text.encode()),
            "scrape_empty_p50_ms": percentile(empty, 0.5),
            "scrape_empty_p99_ms": percentile(empty, 0.99),
            "scrape_p50_ms": percentile(busy, 0.5),
            "scrape_p99_ms": percentile(busy, 0.99),
            "scrape_max_ms": round(busy[-1] / 1e6, 2),
        }
    finally:
        for subscriber in opened:
            subscriber.close()
        server.stop()


async def timed_scrapes(client: httpx.AsyncClient, count: int) -> list[int]:
    """`count` scrapes one after another; their durations in nanoseconds, sorted."""
    durations = []
    for _ in range(count):
        started = time.perf_counter_ns()
        response = await client.get("/metrics")
        response.raise_for_status()
        durations.append(time.perf_counter_ns() - started)
    return sorted(durations)


async def run(
    cfg: Config, rounds: int, scrape_every_s: float, scrape_connections: int, scrapes: int
) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="sinal-metrics-", ignore_cleanup_errors=True) as tmp,
        redis_for_benchmark(cfg.redis_url, Path(tmp)) as redis_url,
    ):
        workdir = Path(tmp)
        quiet = await cores_busy_before(cfg.server_core, cfg.client_core)
        runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
        scrape_durations: list[float] = []
        for number in range(1, rounds + 1):
            for side, env in SIDES.items():
                log(f"round {number}/{rounds}: fan-out, metrics {side}")
                alongside = scraper(scrape_every_s, scrape_durations) if side == "on" else None
                figures = await sinal_fanout(cfg, redis_url, workdir, env=env, alongside=alongside)
                runs[side].append({key: figures[key] for key in KEPT})
        means = {
            side: {
                key: round(mean(run[key] for run in found), 2)
                for key in ("deliveries_per_s", "p50_ms", "p99_ms", "server_cpu_pct")
                if all(run[key] is not None for run in found)
            }
            for side, found in runs.items()
        }
        deliveries = ratio(
            means["on"].get("deliveries_per_s"), means["off"].get("deliveries_per_s")
        )
        p99 = ratio(means["on"].get("p99_ms"), means["off"].get("p99_ms"))
        result: dict[str, Any] = {
            "machine_busy_before_pct": quiet,
            "subscribers": cfg.subscribers,
            "rate": cfg.rate,
            "duration": cfg.duration,
            "rounds": rounds,
            "scrape_every_s": scrape_every_s,
            "scrapes_during_fanout": len(scrape_durations),
            "scrape_during_fanout_max_ms": round(max(scrape_durations, default=0) * 1000, 2),
            "runs_off": runs["off"],
            "runs_on": runs["on"],
            "mean_off": means["off"],
            "mean_on": means["on"],
            "ratio_on_off": {
                "deliveries_per_s": deliveries,
                "p99_ms": p99,
                "server_cpu_pct": ratio(
                    means["on"].get("server_cpu_pct"), means["off"].get("server_cpu_pct")
                ),
                "p99_ms_by_round": [
                    ratio(on["p99_ms"], off["p99_ms"])
                    for off, on in zip(runs["off"], runs["on"], strict=True)
                ],
            },
        }
        if scrape_connections > 0:
            log(f"scrape of a node with {scrape_connections} connections")
            result.update(
                await scrape_busy_node(cfg, redis_url, workdir, scrape_connections, scrapes)
            )
        result["targets"] = {
            "deliveries_per_s_ratio_min": 1 - TOLERANCE,
            "p99_ratio_max": 1 + TOLERANCE,
            "scrape_p99_ms_max": SCRAPE_P99_MS,
        }
        result["targets_met"] = {
            "deliveries_per_s_within_5pct": None
            if deliveries is None
            else deliveries >= 1 - TOLERANCE,
            "p99_within_5pct": None if p99 is None else p99 <= 1 + TOLERANCE,
            "no_loss": all(
                r["lost"] == 0 and r["duplicated"] == 0 for found in runs.values() for r in found
            ),
            "scrape_p99_ms": None
            if result.get("scrape_p99_ms") is None
            else result["scrape_p99_ms"] <= SCRAPE_P99_MS,
        }
        return result


def parse_args(argv: list[str] | None = None) -> tuple[Config, int, float, int, int]:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.metrics", description=__doc__.splitlines()[0]
    )
    add = parser.add_argument
    add("--rounds", type=int, default=2, help="off/on pairs of the fan-out phase")
    add("--scrape-every", type=float, default=1.0, help="seconds between scrapes, metrics on")
    add("--scrape-connections", type=int, default=10_000, help="0 skips the scrape phase")
    add("--scrapes", type=int, default=50, help="scrapes timed in the scrape phase")
    add_workload(parser)
    add_redis_url(parser)
    add_placement(parser)
    args = vars(parser.parse_args(argv))
    rounds, every = args.pop("rounds"), args.pop("scrape_every")
    connections, scrapes = args.pop("scrape_connections"), args.pop("scrapes")
    if rounds <= 0 or every <= 0 or scrapes <= 0 or connections < 0:
        parser.error("--rounds, --scrape-every and --scrapes must be positive")
    args["idle_connections"] = max(args["idle_connections"], connections)  # descriptors
    cfg = Config(**args, skip_socketio=True, calibrate=False)
    return cfg, rounds, every, connections, scrapes


def main(argv: list[str] | None = None) -> None:
    cfg, rounds, every, connections, scrapes = parse_args(argv)
    run_benchmark(
        lambda: run(cfg, rounds, every, connections, scrapes), cfg.nofile, cfg.client_core
    )


if __name__ == "__main__":
    main()
