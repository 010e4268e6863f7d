"""Processes a benchmark starts and watches: pinned servers, a private Redis, /proc readings.

Everything here is Linux-only on purpose: the figures come from /proc and from CPU affinity.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import redis

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


RESULTS = Path(__file__).resolve().parent / "results"


def log(message: str) -> None:
    """Progress goes to stderr, so the last stdout line stays the JSON result."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def raise_nofile(wanted: int) -> int:
    """Raise this process's open-file limit towards `wanted` (capped by the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return max(target, soft)


def pin_self(core: int) -> None:
    os.sched_setaffinity(0, {core})


def pinned_child(core: int, nofile: int) -> Callable[[], None]:
    """A `preexec_fn`: runs in the child before exec, so the server starts pinned and raised."""

    def setup() -> None:
        os.sched_setaffinity(0, {core})
        raise_nofile(nofile)

    return setup


def rss_kb(pid: int) -> int:
    """Resident set size from /proc/<pid>/status (VmRSS, in kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a whole process (all threads) from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name may contain spaces: fields are counted after its closing parenthesis.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class CpuMeter:
    """CPU use of one process between two readings, as a percentage of one core."""

    def __init__(self, read: Callable[[], float]) -> None:
        self.read = read
        self._cpu = read()
        self._wall = time.monotonic()

    def lap(self) -> float:
        cpu, wall = self.read(), time.monotonic()
        used = (cpu - self._cpu) / max(wall - self._wall, 1e-9) * 100
        self._cpu, self._wall = cpu, wall
        return used


def core_times(core: int) -> tuple[int, int]:
    """(busy, total) jiffies of one core from /proc/stat; busy includes irq and softirq time,
    which per-process figures leave out (loopback TCP work often lands there), and steal."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            values = [int(value) for value in line.split()[1:]]
            idle = values[3] + values[4]  # idle + iowait
            return sum(values[:8]) - idle, sum(values[:8])
    raise RuntimeError(f"no cpu{core} in /proc/stat")


# Processes this benchmark started and is running now (servers, Redis), for `ForeignMeter`.
OURS: set[int] = set()


def machine_busy_seconds() -> float:
    """Busy time of every core (user, system, irq, softirq, steal), in seconds."""
    values = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLOCK_TICKS


def foreign_cpu_seconds() -> float:
    """Busy time of the machine not spent in processes this benchmark started: an estimate
    (the kernel's loopback work in softirq may be billed to no process at all) of what
    competes with the benchmark."""
    ours = self_cpu_seconds()
    for pid in list(OURS):
        with contextlib.suppress(OSError):
            ours += cpu_seconds(pid)
    return machine_busy_seconds() - ours


class CoreMeter:
    """How busy one core was between two readings, in percent."""

    def __init__(self, core: int) -> None:
        self.core = core
        self._busy, self._total = core_times(core)

    def lap(self) -> float:
        busy, total = core_times(self.core)
        used = (busy - self._busy) / max(total - self._total, 1) * 100
        self._busy, self._total = busy, total
        return used


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Child:
    """A subprocess with its output in a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str],
        cwd: Path,
        preexec: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.log_path = cwd / f"{name}.log"
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=preexec
            )
        OURS.add(self.process.pid)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_listening(self, port: int, timeout: float = 30.0) -> None:
        """Block until the child accepts TCP connections on `port`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited early:\n{self.tail()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen on {port} in {timeout}s:\n{self.tail()}")

    def stop(self, timeout: float = 15.0) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"{self.name} ignored SIGTERM for {timeout}s; killing it")
                self.process.kill()
                self.process.wait()
        OURS.discard(self.process.pid)
        # Keep the log past the run's temporary directory, for a look after a bad figure.
        if self.log_path.exists():
            RESULTS.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.log_path, RESULTS / self.log_path.name)

    def tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def redis_for_benchmark(url: str | None, workdir: Path, db: int = 14) -> Iterator[str]:
    """A flushed Redis database for one run.

    Without `url`, a private `redis-server` on a free loopback port: Redis pub/sub names are
    global across database numbers, so a benchmark publishing on `broadcast` in a shared Redis
    would leak thousands of events into any test server subscribed there (and the reverse).
    """
    child: Child | None = None
    if url is None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server not found: install it or pass --redis-url")
        port = free_port()
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(workdir), "--databases", "16"]
        child = Child("redis", argv, env=dict(os.environ), cwd=workdir)
        child.wait_listening(port)
        url = f"redis://127.0.0.1:{port}/{db}"
    try:
        client = redis.Redis.from_url(url)
        client.flushdb()
        client.close()
        yield url
    finally:
        if child is not None:
            child.stop()


# -- shared by the benchmarks ----------------------------------------------------------------


def percentile(ordered: list[int], q: float) -> float | None:
    """The `q` quantile of sorted nanosecond figures, in milliseconds."""
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6, 2)


async def sleep_until(loop: asyncio.AbstractEventLoop, moment: float) -> None:
    delay = moment - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)


async def cores_busy_before(server_core: int, client_core: int, seconds: float = 1.0) -> float:
    """How busy the two benchmark cores are before anything starts: other work on the machine
    (a test suite, another benchmark) competes with the server and the generator."""
    meters = CoreMeter(server_core), CoreMeter(client_core)
    await asyncio.sleep(seconds)
    busy = round(max(meter.lap() for meter in meters), 1)
    if busy > 10:
        log(f"warning: a benchmark core is {busy}% busy before the run; figures will be low")
    return busy


def run_benchmark(
    run: Callable[[], Coroutine[Any, Any, dict[str, Any]]], nofile: int, client_core: int
) -> None:
    """Raise the open-file limit, pin to the generator's core, run on uvloop, print the JSON."""
    limit = raise_nofile(nofile)
    if limit < nofile:
        log(f"open-file limit is {limit} (hard cap) for {nofile} wanted: expect failures")
    pin_self(client_core)
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvicorn[standard] brings uvloop
        runner = asyncio.Runner()
    try:
        with runner:  # Ctrl-C cancels `run`, whose `finally` blocks stop every child
            result = runner.run(run())
    except KeyboardInterrupt:
        sys.exit(130)
    print(json.dumps(result))
