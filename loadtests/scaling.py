"""Scaling limits of one machine: the benchmarks run at growing sizes until something gives.

    uv run python -m loadtests.scaling --out results.jsonl            # every limit, ~30-60 min
    uv run python -m loadtests.scaling --quick --out smoke.jsonl      # smoke run, small sizes
    uv run python -m loadtests.scaling --only deliveries --skip-nchan
    uv run python -m loadtests.plots results.jsonl                    # docs/images/scaling-*.png

Each limit is climbed one size at a time, each size a fresh run of an existing benchmark in a
subprocess of its own (its own servers, open-file limit and pinning), whose last stdout line
(its JSON figures) is kept:

- **connections**: idle SSE streams on one process (the idle-memory phase of
  `loadtests.fanout`), 5,000 / 10,000 / 20,000 / 40,000 … (`--connections`). Stops at the
  first of: a connection that failed to open, a handshake p99 over `--handshake-p99-ms`, the
  next size needing more memory than the machine has available, or more descriptors than the
  hard `RLIMIT_NOFILE` (or loopback ports than `ip_local_port_range`) allows: then one last run
  at the largest size that fits, which is where this machine stops.
- **deliveries**: the broadcast ladder (`loadtests.ladder broadcast`, Nchan beside Sinal unless
  `--skip-nchan`), one rung per run, 50,000 / 100,000 / 200,000 / 400,000 … deliveries/s
  (`--deliveries`), until Sinal delivers under 95 % of the offered load, loses an event, or its
  p99 passes `--p99-ms`. Then the same rung against the null server (`--calibrate`): if the
  generator cannot offer it either, the generator, not Sinal, was the limit.
- **creates**: `loadtests.notifications` (creates only), 250 / 500 / 1,000 / 2,000 …
  creates/s (`--creates`), until p99 passes `--create-p99-ms`, a create fails or is lost, or
  fewer than 95 % of the offered creates are answered.
- **locust**: `loadtests.locust_distributed` with 1, then 2 Locust workers, against the null
  server (`--calibrate`: the HTTP load generator's own ceiling), then against Sinal creating
  notifications.

`--out` receives one JSON object per line, written as each run ends (a run that is stopped keeps
what it had): a `run` record (the machine), a `step` record per benchmark run (`limit`,
`benchmark`, `size`, `argv`, `exit_code`, `elapsed_s`, `result`: the benchmark's JSON, `broke`:
why this size counts as past the limit or null, `busy`: what was saturated), and a `limit`
record per limit (`largest_ok`, `broke_at`, `reason`, `busy`). A summary goes to stdout as the
last line. `loadtests.plots` draws the charts of `docs/scaling.md` from the file.

Everything started is stopped by its pid: a benchmark is told to stop with SIGINT (it stops its
own servers), then killed if it has not exited within a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from loadtests import fanout
from loadtests.nchan import installed as nchan_installed
from loadtests.procs import DEFAULT_DATABASE_URL, ROOT, log, redis_for_benchmark, run_benchmark

LIMITS = ("connections", "deliveries", "creates", "locust")
# A size counts as kept up with when at least this share of the offered load arrived.
KEPT_UP = 0.95
# Saturated: a process at this share of one core (or more) is what gave.
SATURATED_PCT = 90.0
# Other work on the machine above this (% of a core) makes the step's figures doubtful.
NOISY_PCT = 50.0
# Descriptors a process needs beside its connections (fanout.Config.nofile adds as much).
NOFILE_SPARE = 1024
# Loopback ports kept free for everything else while the generator holds its connections.
PORTS_SPARE = 1000
# The next size must fit in this share of the memory available now.
MEMORY_SHARE = 0.8


@dataclass(frozen=True)
class Plan:
    """What to climb, and where each limit is said to break."""

    connections: tuple[int, ...]
    deliveries: tuple[int, ...]
    broadcast_subscribers: int
    creates: tuple[int, ...]
    create_users: int
    duration: float
    warmup: float
    locust_workers: tuple[int, ...]
    locust_users: int
    locust_seconds: float
    p99_ms: float
    create_p99_ms: float
    handshake_p99_ms: float
    skip_nchan: bool
    database_url: str
    server_core: int
    client_core: int


FULL = Plan(
    connections=(5_000, 10_000, 20_000, 40_000, 80_000, 160_000),
    deliveries=(50_000, 100_000, 200_000, 400_000, 800_000, 1_600_000),
    broadcast_subscribers=2_000,
    creates=(250, 500, 1_000, 2_000, 4_000, 8_000),
    create_users=10_000,
    duration=10.0,
    warmup=3.0,
    locust_workers=(1, 2),
    locust_users=200,
    locust_seconds=20.0,
    p99_ms=100.0,
    create_p99_ms=50.0,
    handshake_p99_ms=1_000.0,
    skip_nchan=False,
    database_url=DEFAULT_DATABASE_URL,
    server_core=0,
    client_core=1,
)
QUICK = replace(
    FULL,
    connections=(500, 1_000, 2_000),
    deliveries=(5_000, 10_000, 20_000),
    broadcast_subscribers=200,
    creates=(50, 100, 200),
    create_users=200,
    duration=3.0,
    warmup=1.0,
    locust_users=40,
    locust_seconds=8.0,
)


# -- judging one step (pure) -------------------------------------------------------------------


def busy(figures: dict[str, Any]) -> list[str]:
    """What was saturated during a run, from its CPU figures (% of one core): the server's
    core, the load generator, Redis, the database; and other work on the machine when it took
    enough to make the figures doubtful."""
    found = []
    for key, name in (
        ("server_cpu_pct", "server core"),
        ("generator_cpu_pct", "generator"),
        ("redis_cpu_pct", "Redis"),
        ("postgres_cpu_pct", "database"),
    ):
        value = figures.get(key)
        if isinstance(value, int | float) and value >= SATURATED_PCT:
            found.append(name)
    for key in ("other_processes_cpu_pct", "foreign_cpu_pct"):
        value = figures.get(key)
        if isinstance(value, int | float) and value >= NOISY_PCT:
            found.append("other work on the machine")
            break
    return found


def connections_broke(result: dict[str, Any], size: int, handshake_p99_ms: float) -> str | None:
    """Why `size` idle connections were past what one process takes here, or None."""
    opened = result.get("idle_connections") or 0
    failed = result.get("idle_connect_failures") or 0
    if failed or opened < size:
        return f"{failed} of {size} connections failed to open"
    p99 = result.get("idle_handshake_p99_ms")
    if p99 is not None and p99 > handshake_p99_ms:
        return f"handshake p99 {p99} ms > {handshake_p99_ms:g} ms"
    return None


def memory_allows(result: dict[str, Any], size: int, next_size: int, available_kb: int) -> bool:
    """Whether `next_size` connections would fit in the memory available, at this step's cost
    per connection (server RSS; the generator holds about as much again on this machine)."""
    per_connection = result.get("idle_kb_per_conn")
    after = result.get("idle_rss_after_kb")
    if not isinstance(per_connection, int | float) or not isinstance(after, int):
        return True
    grown = (next_size - size) * per_connection
    return (after + grown) * 2 <= available_kb * MEMORY_SHARE


def connection_ceiling(nofile_hard: int, ports: int) -> tuple[int, str]:
    """The most idle connections one run can hold on this machine, and what sets it: every
    connection is a descriptor in the server and one in the generator, and a loopback port of
    the generator's (one source address, one destination)."""
    by_descriptors = nofile_hard - NOFILE_SPARE
    by_ports = ports - PORTS_SPARE
    if by_ports < by_descriptors:
        return by_ports, f"loopback ports ({ports} in ip_local_port_range)"
    return by_descriptors, f"descriptors (RLIMIT_NOFILE hard limit {nofile_hard})"


def sinal_rung(result: dict[str, Any]) -> dict[str, Any] | None:
    """The Sinal side's (only) rung of a one-rung ladder run, or the null server's."""
    sides = result.get("sides") or {}
    for name in ("sinal", "null"):
        rungs = (sides.get(name) or {}).get("rungs") or []
        if rungs:
            rung: dict[str, Any] = rungs[0]
            return rung
    return None


def deliveries_broke(rung: dict[str, Any], p99_ms: float) -> str | None:
    """Why a broadcast rung counts as past Sinal's limit, or None."""
    offered = rung.get("offered_deliveries_per_s") or rung.get("offered") or 0
    delivered = rung.get("deliveries_per_s") or 0
    if offered and delivered < KEPT_UP * offered:
        return f"delivered {delivered:,.0f}/s of {offered:,.0f}/s offered"
    if rung.get("lost"):
        return f"{rung['lost']} deliveries lost"
    p99 = rung.get("p99_ms")
    if p99 is None or p99 > p99_ms:
        return f"p99 {p99} ms > {p99_ms:g} ms"
    return None


def creates_broke(result: dict[str, Any], rate: float, p99_ms: float) -> str | None:
    """Why a notification-create run counts as past the limit, or None."""
    errors = sum((result.get("create_errors") or {}).values())
    if errors:
        return f"{errors} creates failed"
    if result.get("lost"):
        return f"{result['lost']} created notifications never reached their stream"
    answered = result.get("creates_per_s") or 0
    if answered < KEPT_UP * rate:
        return f"{answered:,.0f} creates/s answered of {rate:,.0f}/s offered"
    p99 = result.get("p99_ms")
    if p99 is None or p99 > p99_ms:
        return f"p99 {p99} ms > {p99_ms:g} ms"
    return None


# -- running benchmarks ------------------------------------------------------------------------


class Interrupted(Exception):
    """SIGTERM: stop like Ctrl-C."""


def last_json_line(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        if line.strip():
            try:
                parsed = json.loads(line)
            except ValueError:
                return None
            return parsed if isinstance(parsed, dict) else None
    return None


def run_step(argv: list[str], timeout: float) -> tuple[int, dict[str, Any] | None, float]:
    """Run one benchmark to its end; (exit code, its JSON, seconds). Its progress (stderr)
    passes through. It runs in a session of its own, so that Ctrl-C reaches it once, from here."""
    started = time.monotonic()
    log(f"scaling: {' '.join(argv[2:])}")
    child = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )
    try:
        stdout, _ = child.communicate(timeout=timeout)
    except (KeyboardInterrupt, Interrupted, subprocess.TimeoutExpired):
        stop(child)
        raise
    return child.returncode, last_json_line(stdout), round(time.monotonic() - started, 1)


def stop(child: subprocess.Popen[str]) -> None:
    """SIGINT (the benchmark stops its servers), then SIGKILL after a minute."""
    if child.poll() is not None:
        return
    child.send_signal(signal.SIGINT)
    try:
        child.wait(60)
    except subprocess.TimeoutExpired:
        log(f"scaling: benchmark {child.pid} still running a minute after SIGINT: killing it")
        child.kill()
        child.wait()


def module(name: str, *args: object) -> list[str]:
    return [sys.executable, "-m", name, *(str(arg) for arg in args)]


def available_memory_kb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def loopback_ports() -> int:
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return int(high) - int(low) + 1


def machine() -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {
        "cpus": os.cpu_count(),
        "mem_available_kb": available_memory_kb(),
        "nofile_soft": soft,
        "nofile_hard": hard,
        "loopback_ports": loopback_ports(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "nchan": nchan_installed() is not None,
    }


class Results:
    """The JSONL file, a line written (and flushed) per record."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def write(self, record: dict[str, Any]) -> None:
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()


def step_record(
    limit: str,
    benchmark: str,
    size: float,
    unit: str,
    argv: list[str],
    outcome: tuple[int, dict[str, Any] | None, float],
    broke: str | None,
    figures: dict[str, Any] | None = None,
) -> dict[str, Any]:
    code, result, elapsed = outcome
    return {
        "kind": "step",
        "limit": limit,
        "benchmark": benchmark,
        "size": size,
        "unit": unit,
        "argv": argv[2:],
        "exit_code": code,
        "elapsed_s": elapsed,
        "broke": broke,
        "busy": busy(figures if figures is not None else (result or {})),
        "result": result,
    }


def limit_record(
    limit: str,
    unit: str,
    largest_ok: float | None,
    broke_at: float | None,
    reason: str | None,
    busy_at_break: list[str],
) -> dict[str, Any]:
    log(f"scaling: {limit}: largest kept {largest_ok} {unit}; broke at {broke_at}: {reason}")
    return {
        "kind": "limit",
        "limit": limit,
        "unit": unit,
        "largest_ok": largest_ok,
        "broke_at": broke_at,
        "reason": reason,
        "busy": busy_at_break,
    }


# -- the limits --------------------------------------------------------------------------------


def climb_connections(plan: Plan, results: Results, quick: bool) -> dict[str, Any]:
    info = machine()
    ceiling, bound = connection_ceiling(info["nofile_hard"], info["loopback_ports"])
    largest: int | None = None
    sizes = list(plan.connections)
    for index, wanted in enumerate(sizes):
        size, capped = (wanted, False) if wanted <= ceiling else (ceiling, True)
        if largest is not None and size <= largest:
            break
        argv = module(
            "loadtests.scaling",
            "idle",
            size,
            "--quick" if quick else "--full",
            "--server-core",
            plan.server_core,
            "--client-core",
            plan.client_core,
        )
        outcome = run_step(argv, timeout=600 + size / 50)
        result = outcome[1] or {}
        broke = (
            f"exit code {outcome[0]}"
            if outcome[1] is None
            else connections_broke(result, size, plan.handshake_p99_ms)
        )
        results.write(
            step_record("connections", "fanout.idle", size, "connections", argv, outcome, broke)
        )
        if broke is not None:
            return limit_record("connections", "connections", largest, size, broke, busy(result))
        largest = size
        if capped:
            return limit_record("connections", "connections", largest, wanted, bound, [])
        following = sizes[index + 1] if index + 1 < len(sizes) else None
        if following is not None and not memory_allows(
            result, size, min(following, ceiling), available_memory_kb()
        ):
            return limit_record(
                "connections",
                "connections",
                largest,
                following,
                "memory: the next size would not fit",
                [],
            )
    return limit_record("connections", "connections", largest, None, "not reached", [])


def climb_deliveries(plan: Plan, results: Results) -> dict[str, Any]:
    largest: int | None = None
    common = [
        "--subscribers",
        plan.broadcast_subscribers,
        "--duration",
        plan.duration,
        "--warmup",
        plan.warmup,
        "--server-core",
        plan.server_core,
        "--client-core",
        plan.client_core,
    ]
    skip_nchan = plan.skip_nchan or nchan_installed() is None
    for load in plan.deliveries:
        argv = module("loadtests.ladder", "broadcast", "--deliveries", load, *common)
        argv += ["--skip-nchan"] if skip_nchan else []
        outcome = run_step(argv, timeout=600)
        rung = sinal_rung(outcome[1] or {})
        broke = "no figures" if rung is None else deliveries_broke(rung, plan.p99_ms)
        results.write(
            step_record(
                "deliveries", "ladder.broadcast", load, "deliveries/s", argv, outcome, broke, rung
            )
        )
        if broke is not None:
            # The same rung against the null server: can the generator offer it at all?
            argv = module("loadtests.ladder", "broadcast", "--deliveries", load, *common)
            argv.append("--calibrate")
            calibration = run_step(argv, timeout=600)
            null = sinal_rung(calibration[1] or {})
            generator_broke = None if null is None else deliveries_broke(null, plan.p99_ms)
            record = step_record(
                "deliveries",
                "ladder.calibrate",
                load,
                "deliveries/s",
                argv,
                calibration,
                generator_broke,
                null,
            )
            results.write(record)
            reasons = busy(rung or {})
            if generator_broke is not None:
                reasons.append("generator ceiling (the null server breaks here too)")
            return limit_record("deliveries", "deliveries/s", largest, load, broke, reasons)
        largest = load
    return limit_record("deliveries", "deliveries/s", largest, None, "not reached", [])


def climb_creates(plan: Plan, results: Results) -> dict[str, Any]:
    largest: int | None = None
    for rate in plan.creates:
        argv = module(
            "loadtests.notifications",
            "--skip-unread",
            "--rate",
            rate,
            "--users",
            plan.create_users,
            "--duration",
            plan.duration,
            "--warmup",
            plan.warmup,
            "--database-url",
            plan.database_url,
            "--server-core",
            plan.server_core,
            "--client-core",
            plan.client_core,
        )
        outcome = run_step(argv, timeout=600)
        result = outcome[1]
        broke = (
            f"exit code {outcome[0]}"
            if result is None
            else creates_broke(result, rate, plan.create_p99_ms)
        )
        results.write(
            step_record("creates", "notifications", rate, "creates/s", argv, outcome, broke)
        )
        if broke is not None:
            return limit_record("creates", "creates/s", largest, rate, broke, busy(result or {}))
        largest = rate
    return limit_record("creates", "creates/s", largest, None, "not reached", [])


def climb_locust(plan: Plan, results: Results) -> dict[str, Any]:
    """Locust with 1, 2 … workers: against the null server (the generator's own ceiling), then
    against Sinal creating notifications."""
    ceilings: dict[str, dict[str, Any]] = {"generator": {}, "sinal_creates": {}}
    for target, extra in (("generator", ["--calibrate"]), ("sinal_creates", [])):
        for workers in plan.locust_workers:
            argv = module(
                "loadtests.locust_distributed", "--workers", workers,
                "--users", plan.locust_users, "--run-time", plan.locust_seconds,
                "--database-url", plan.database_url, "--server-core", plan.server_core, *extra,
            )  # fmt: skip
            outcome = run_step(argv, timeout=plan.locust_seconds + 300)
            result = outcome[1] or {}
            broke = None if outcome[1] else "no figures"
            benchmark = f"locust_distributed.{target}"
            results.write(
                step_record("locust", benchmark, workers, "workers", argv, outcome, broke)
            )
            ceilings[target][str(workers)] = result.get("requests_per_s")
    log(f"scaling: locust requests/s by workers: {ceilings}")
    return {"kind": "limit", "limit": "locust", "unit": "requests/s by workers",
            "requests_per_s": ceilings}  # fmt: skip


# -- one idle-memory run (`python -m loadtests.scaling idle N`) ---------------------------------


def idle_main(argv: Sequence[str]) -> None:
    """The idle-memory phase of `loadtests.fanout` alone, at N connections, on a private
    redis-server: the connections limit's step."""
    parser = argparse.ArgumentParser(prog="python -m loadtests.scaling idle")
    parser.add_argument("connections", type=int)
    parser.add_argument("--quick", dest="quick", action="store_true")
    parser.add_argument("--full", dest="quick", action="store_false")
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--client-core", type=int, default=1)
    args = parser.parse_args(argv)
    cfg = fanout.Config(
        subscribers=1,
        rate=1,
        duration=1,
        warmup=0,
        drain=0,
        payload_bytes=100,
        publishers=1,
        idle_connections=args.connections,
        skip_socketio=True,
        calibrate=False,
        redis_url=None,
        server_core=args.server_core,
        client_core=args.client_core,
        connect_concurrency=50 if args.quick else 200,
        skip_nchan=True,
    )

    async def idle() -> dict[str, Any]:
        with (
            tempfile.TemporaryDirectory(prefix="sinal-idle-", ignore_cleanup_errors=True) as tmp,
            redis_for_benchmark(None, Path(tmp)) as redis_url,
        ):
            figures = await fanout.sinal_idle(cfg, redis_url, Path(tmp))
            return {"connections_requested": args.connections, **figures}

    run_benchmark(idle, cfg.nofile, cfg.client_core)


# -- the command -------------------------------------------------------------------------------


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(float(part)) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not sizes or any(size <= 0 for size in sizes) or list(sizes) != sorted(sizes):
        raise argparse.ArgumentTypeError("sizes must be positive and increasing")
    return sizes


def parse_args(argv: Sequence[str] | None = None) -> tuple[Plan, list[str], Path, bool]:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.scaling", description=__doc__.splitlines()[0]
    )
    add = parser.add_argument
    add("--out", type=Path, default=Path("results.jsonl"), help="JSONL results (overwritten)")
    add("--quick", action="store_true", help="smoke run: small sizes, short runs")
    add("--only", help=f"comma-separated limits to climb, of {', '.join(LIMITS)}")
    add("--connections", type=_sizes, help="idle connections per step")
    add("--deliveries", type=_sizes, help="broadcast deliveries/s per step")
    add("--broadcast-subscribers", type=int)
    add("--creates", type=_sizes, help="notification creates/s per step")
    add("--create-users", type=int)
    add("--duration", type=float, help="measured seconds per step")
    add("--warmup", type=float)
    add("--locust-workers", type=_sizes, help="Locust worker counts (default 1,2)")
    add("--locust-users", type=int)
    add("--p99-ms", type=float, help="broadcast p99 bound (default 100)")
    add("--create-p99-ms", type=float, help="create → event p99 bound (default 50)")
    add("--handshake-p99-ms", type=float, help="stream handshake p99 bound (default 1000)")
    add("--skip-nchan", action="store_true", help="Sinal only in the broadcast ladder")
    add("--database-url", help="PostgreSQL database of the benchmarks: DROPPED and recreated")
    add("--server-core", type=int)
    add("--client-core", type=int)
    args = vars(parser.parse_args(argv))
    out, quick, only = args.pop("out"), args.pop("quick"), args.pop("only")
    plan = replace(
        QUICK if quick else FULL,
        **{name: value for name, value in args.items() if value is not None and value is not False},
    )
    limits = list(LIMITS) if only is None else [part.strip() for part in only.split(",")]
    unknown = set(limits) - set(LIMITS)
    if unknown:
        parser.error(f"unknown limits {sorted(unknown)}: pick of {', '.join(LIMITS)}")
    return plan, limits, out, quick


def _interrupt(signum: int, frame: object) -> None:
    raise Interrupted


def main(argv: Sequence[str] | None = None) -> None:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["idle"]:
        idle_main(arguments[1:])
        return
    plan, limits, out, quick = parse_args(arguments)
    signal.signal(signal.SIGTERM, _interrupt)
    summary: dict[str, Any] = {"quick": quick, "out": str(out)}
    with out.open("w") as handle:
        results = Results(handle)
        results.write(
            {
                "kind": "run",
                "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "quick": quick,
                "plan": asdict(plan),
                "machine": machine(),
            }
        )
        climbers = {
            "connections": lambda: climb_connections(plan, results, quick),
            "deliveries": lambda: climb_deliveries(plan, results),
            "creates": lambda: climb_creates(plan, results),
            "locust": lambda: climb_locust(plan, results),
        }
        try:
            for limit in limits:
                record = climbers[limit]()
                results.write(record)
                summary[limit] = {k: v for k, v in record.items() if k not in ("kind", "limit")}
        except (KeyboardInterrupt, Interrupted):
            log("scaling: stopped; what was measured is in the results file")
            sys.exit(130)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
