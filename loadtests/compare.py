"""Fan-out and idle memory of two revisions of Sinal, measured side by side in one run.

    uv run python -m loadtests.compare [--before 757133d --after . --rounds 2
                                        --subscribers 2000 --rate 40 --duration 20
                                        --idle-connections 10000]

A revision other than the working tree (`.`) is checked out in a temporary
`git worktree add --detach` and served from there with this venv (`python -m api serve`,
PYTHONPATH set to the checkout). The phases are those of `loadtests.fanout` (Sinal only: no
Socket.IO, no calibration), run as before / after / before / after … (`--rounds` pairs) so
that noise from other work on the machine spreads over both sides; then the idle-memory phase
once for each. Progress goes to stderr; the last stdout line is one JSON object: each run's
figures, the means, and after ÷ before.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from statistics import mean
from typing import Any

from loadtests.admin import add_redis_url
from loadtests.fanout import (
    ROOT,
    Config,
    add_placement,
    add_workload,
    sinal_fanout,
    sinal_idle,
)
from loadtests.procs import cores_busy_before, log, redis_for_benchmark, run_benchmark

# "Within 5 %": after ÷ before of deliveries/s at least this, of p99 at most its inverse.
TOLERANCE = 0.05
KEPT = (
    "deliveries_per_s",
    "expected_deliveries_per_s",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "lost",
    "duplicated",
    "disconnects",
    "publish_errors",
    "server_cpu_pct",
    "generator_cpu_pct",
    "foreign_cpu_pct",
)


@contextlib.contextmanager
def checkout(revision: str, into: Path) -> Iterator[Path]:
    """The source tree of `revision`: this one for `.`, else a detached worktree removed
    on exit."""
    if revision == ".":
        yield ROOT
        return
    path = into / f"rev-{revision}"
    git = ["git", "-C", str(ROOT)]
    subprocess.run([*git, "worktree", "add", "--detach", str(path), revision], check=True)
    try:
        yield path
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(path)], check=False)


def commit_of(root: Path) -> str:
    described = subprocess.run(
        ["git", "-C", str(root), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=True,
    )
    return described.stdout.strip()


def served_from(root: Path) -> str:
    """Where `python -m api` is imported from with PYTHONPATH=root: proof the server runs the
    checkout, not the package this venv has installed."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    found = subprocess.run(
        [sys.executable, "-c", "import api; print(api.__file__)"],
        env=env,
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        check=True,
    )
    where = found.stdout.strip()
    if not Path(where).resolve().is_relative_to(root.resolve()):
        raise SystemExit(f"api imports from {where}, not from {root}")
    return where


def ratio(after: float | None, before: float | None) -> float | None:
    if after is None or not before:
        return None
    return round(after / before, 3)


async def run(cfg: Config, before: str, after: str, rounds: int) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="sinal-compare-", ignore_cleanup_errors=True) as tmp,
        checkout(before, Path(tmp)) as before_root,
        checkout(after, Path(tmp)) as after_root,
        redis_for_benchmark(cfg.redis_url, Path(tmp)) as redis_url,
    ):
        workdir = Path(tmp)
        sides = {"before": before_root, "after": after_root}
        for name, root in sides.items():
            log(f"{name}: {commit_of(root)}, api from {served_from(root)}")
        quiet = await cores_busy_before(cfg.server_core, cfg.client_core)
        runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
        for number in range(1, rounds + 1):
            for name, root in sides.items():
                log(f"round {number}/{rounds}: fan-out, {name}")
                figures = await sinal_fanout(cfg, redis_url, workdir, root)
                runs[name].append({key: figures[key] for key in KEPT})
        idle: dict[str, dict[str, Any]] = {}
        if cfg.idle_connections > 0:
            for name, root in sides.items():
                log(f"idle memory, {name}")
                idle[name] = await sinal_idle(cfg, redis_url, workdir, root)
        means = {
            name: {
                key: round(mean(run[key] for run in found), 2)
                for key in (
                    "deliveries_per_s",
                    "p50_ms",
                    "p99_ms",
                    "server_cpu_pct",
                    # Other work on the machine during each side's windows: when it differs
                    # much between the sides, so do their figures, whatever the code.
                    "foreign_cpu_pct",
                )
                if all(run[key] is not None for run in found)
            }
            for name, found in runs.items()
        }
        ratios = {
            "deliveries_per_s": ratio(
                means["after"].get("deliveries_per_s"), means["before"].get("deliveries_per_s")
            ),
            "p99_ms": ratio(means["after"].get("p99_ms"), means["before"].get("p99_ms")),
            "server_cpu_pct": ratio(
                means["after"].get("server_cpu_pct"), means["before"].get("server_cpu_pct")
            ),
            "deliveries_per_s_by_round": [
                ratio(a["deliveries_per_s"], b["deliveries_per_s"])
                for b, a in zip(runs["before"], runs["after"], strict=True)
            ],
            "p99_ms_by_round": [
                ratio(a["p99_ms"], b["p99_ms"])
                for b, a in zip(runs["before"], runs["after"], strict=True)
            ],
        }
        result: dict[str, Any] = {
            "machine_busy_before_pct": quiet,
            "before": commit_of(before_root),
            "after": commit_of(after_root),
            "redis": redis_url,
            "subscribers": cfg.subscribers,
            "rate": cfg.rate,
            "warmup": cfg.warmup,
            "duration": cfg.duration,
            "rounds": rounds,
            "runs_before": runs["before"],
            "runs_after": runs["after"],
            "mean_before": means["before"],
            "mean_after": means["after"],
            "ratio_after_before": ratios,
        }
        if idle:
            kb = {name: figures["idle_kb_per_conn"] for name, figures in idle.items()}
            result.update(
                idle_connections=cfg.idle_connections,
                idle_before=idle["before"],
                idle_after=idle["after"],
                idle_kb_per_conn_before=kb["before"],
                idle_kb_per_conn_after=kb["after"],
                idle_kb_ratio_after_before=ratio(kb["after"], kb["before"]),
            )
        deliveries, p99 = ratios["deliveries_per_s"], ratios["p99_ms"]
        result["targets"] = {
            "deliveries_per_s_ratio_min": 1 - TOLERANCE,
            "p99_ratio_max": 1 + TOLERANCE,
        }
        result["targets_met"] = {
            "deliveries_per_s_within_5pct": None
            if deliveries is None
            else deliveries >= 1 - TOLERANCE,
            "p99_within_5pct": None if p99 is None else p99 <= 1 + TOLERANCE,
            "no_loss": all(r["lost"] == 0 and r["duplicated"] == 0 for r in runs["after"]),
        }
        return result


def parse_args(argv: list[str] | None = None) -> tuple[Config, str, str, int]:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.compare", description=__doc__.splitlines()[0]
    )
    add = parser.add_argument
    add("--before", default="757133d", help="git revision measured first in each round")
    add("--after", default=".", help="git revision, or . for the working tree (default)")
    add("--rounds", type=int, default=2, help="before/after pairs of the fan-out phase")
    add_workload(parser)
    add_redis_url(parser)
    add_placement(parser)
    args = vars(parser.parse_args(argv))
    before, after, rounds = args.pop("before"), args.pop("after"), args.pop("rounds")
    if rounds <= 0 or args["subscribers"] <= 0 or args["rate"] <= 0 or args["duration"] <= 0:
        parser.error("--rounds, --subscribers, --rate and --duration must be positive")
    cfg = Config(**args, skip_socketio=True, calibrate=False)
    return cfg, before, after, rounds


def main(argv: list[str] | None = None) -> None:
    cfg, before, after, rounds = parse_args(argv)
    run_benchmark(lambda: run(cfg, before, after, rounds), cfg.nofile, cfg.client_core)


if __name__ == "__main__":
    main()
