"""Processes a benchmark starts and watches: pinned servers, a private Redis, /proc readings;
and what the benchmarks share: the benchmark database, a lean HTTP/1.1 client, CPU meters,
percentiles, py-spy profiles.

Everything here is Linux-only on purpose: the figures come from /proc and from CPU affinity.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]
import httpx
import redis

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent


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


def pin_process(pid: int, cores: set[int]) -> None:
    """Move every thread of process `pid` to `cores` (the threads it makes later follow)."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setaffinity(int(task), cores)


def parse_cores(text: str) -> set[int]:
    """`all`, or cores separated by commas (`0,1`), checked against this machine's."""
    machine = set(range(os.cpu_count() or 1))
    if text.strip() == "all":
        return machine
    try:
        cores = {int(part) for part in text.split(",") if part.strip()}
    except ValueError:
        raise argparse.ArgumentTypeError(f"not `all` or a list of cores: {text!r}") from None
    if not cores or not cores <= machine:
        raise argparse.ArgumentTypeError(f"cores must be among {sorted(machine)}: {text!r}")
    return cores


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


def open_fds(pid: int) -> int:
    """How many descriptors process `pid` holds (its entries in /proc/<pid>/fd)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def nofile_limit(pid: int) -> int | None:
    """Process `pid`'s soft open-file limit (/proc/<pid>/limits), None when unlimited."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft = line.split()[3]
            return None if soft == "unlimited" else int(soft)
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a whole process (all threads) from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name may contain spaces: fields are counted after its closing parenthesis.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def children(pid: int) -> list[int]:
    """The child processes of `pid` (an nginx master's workers, say)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.scandir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                found += [int(child) for child in Path(task.path, "children").read_text().split()]
    return found


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


def other_processes_cpu_seconds() -> float:
    """CPU time (user and system) of the processes this benchmark did not start: what other
    work on the machine takes. Unlike `foreign_cpu_seconds`, it leaves out interrupt time,
    where the kernel bills much of the benchmark's own loopback traffic at high rates."""
    values = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tasks = (values[0] + values[1] + values[2]) / CLOCK_TICKS  # user, nice, system
    ours = self_cpu_seconds()
    for pid in list(OURS):
        with contextlib.suppress(OSError):
            ours += cpu_seconds(pid)
    return tasks - ours


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


async def cores_busy_before(server_core: int, client_core: int, seconds: float = 1.0) -> float:
    """How busy the two benchmark cores are before anything starts: other work on the machine
    (a test suite, another benchmark) competes with the server and the generator."""
    meters = CoreMeter(server_core), CoreMeter(client_core)
    await asyncio.sleep(seconds)
    busy = round(max(meter.lap() for meter in meters), 1)
    if busy > 10:
        log(f"warning: a benchmark core is {busy}% busy before the run; figures will be low")
    return busy


def settle_memory() -> None:
    """After the long-lived objects of a phase are made (subscribers connected): collect once,
    then keep them out of the collector's later passes."""
    gc.collect()
    gc.freeze()


def run_benchmark(
    run: Callable[[], Coroutine[Any, Any, dict[str, Any]]], nofile: int, client_core: int
) -> None:
    """Raise the open-file limit, pin to the generator's core, run on uvloop, print the JSON.

    The collector runs as rarely as the server's (api/server.py): the generator holds thousands
    of connections, and a full pass over them stalled its reading for up to 60 ms, which
    counted as delivery latency of whichever server was measured (`settle_memory` then moves
    what the subscribers' set-up made out of its passes)."""
    gc.set_threshold(50_000, 20, 20)
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


# -- the benchmark database ------------------------------------------------------------------

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/sinal_bench"
# Databases a benchmark must never drop: the test suite's and PostgreSQL's own.
PROTECTED_DATABASES = frozenset({"test", "postgres", "template0", "template1"})


def database_name(url: str) -> str:
    name = urlsplit(url).path.lstrip("/")
    if not name or "/" in name:
        raise SystemExit(f"--database-url needs a database name: {url}")
    if name in PROTECTED_DATABASES:
        raise SystemExit(f"refusing to drop database {name!r}: pick another (e.g. sinal_bench)")
    return name


async def reset_database(url: str) -> None:
    """Drop and recreate the benchmark's database; `sinal serve` migrates it at start."""
    name = database_name(url)
    admin_url = urlunsplit(urlsplit(url)._replace(path="/postgres"))
    connection = await asyncpg.connect(admin_url)
    try:
        quoted = '"' + name.replace('"', '""') + '"'
        await connection.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
        await connection.execute(f"CREATE DATABASE {quoted}")
    finally:
        await connection.close()


# -- the server ------------------------------------------------------------------------------


def start_sinal(
    name: str,
    *,
    database_url: str,
    redis_url: str,
    secret: str,
    workdir: Path,
    core: int,
    nofile: int,
    env: Mapping[str, str] | None = None,
) -> tuple[Child, int]:
    """`sinal serve` on a free port, pinned to `core`, once `/readyz` answers 200; `env` adds
    or overrides variables (e.g. SINAL_COALESCE_MS)."""
    port = free_port()
    environ = {
        **os.environ,
        "SINAL_REDIS_URL": redis_url,
        "SINAL_JWT_SECRET": secret,
        "SINAL_DATABASE_URL": database_url,
        # Access logs for every request would be measured as server work.
        "SINAL_LOG_LEVEL": "warning",
        # An existing PYTHONPATH is kept after the repository (e.g. a sitecustomize for a trial).
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        **(env or {}),
    }
    argv = [sys.executable, "-m", "api", "serve", "--port", str(port)]
    server = Child(
        f"{name}-{port}", argv, env=environ, cwd=workdir, preexec=pinned_child(core, nofile)
    )
    server.wait_listening(port, timeout=60)
    deadline = time.monotonic() + 20
    while httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"server not ready:\n{server.tail()}")
        time.sleep(0.1)
    return server, port


# -- a lean HTTP/1.1 client ------------------------------------------------------------------

CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE).search


class HttpConnection(asyncio.Protocol):
    """One keep-alive connection, one request at a time; responses need a Content-Length
    (Litestar sends one for every non-streaming response). A few microseconds per request,
    where httpx spends well over 100: at thousands of requests/s that is the generator's core."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(ConnectionError(f"connection closed: {exc}"))

    @property
    def closed(self) -> bool:
        return self.transport is None

    def close(self) -> None:
        if self.transport is not None:
            transport, self.transport = self.transport, None
            transport.close()
        self._fail(ConnectionError("closed by the client"))

    def _fail(self, error: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def request(self, raw: bytes) -> asyncio.Future[tuple[int, bytes]]:
        """Send one whole request; the future gets (status, body)."""
        assert self.transport is not None
        assert self.waiter is None
        waiter: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self.waiter = waiter
        self.transport.write(raw)
        return waiter

    def data_received(self, data: bytes) -> None:
        if self.buffer:
            data = self.buffer + data
        head_end = data.find(b"\r\n\r\n")
        if head_end < 0:
            self.buffer = data
            return
        found = CONTENT_LENGTH(data, 0, head_end)
        end = head_end + 4 + (int(found.group(1)) if found else 0)
        if len(data) < end:
            self.buffer = data
            return
        self.buffer = data[end:]
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((int(data[9:12]), data[head_end + 4 : end]))


class HttpPool:
    """Keep-alive connections handed out one request at a time; broken ones are reopened."""

    def __init__(self, port: int, size: int, timeout: float = 10.0) -> None:
        self.port = port
        self.size = size
        self.timeout = timeout
        self.idle: asyncio.Queue[HttpConnection] = asyncio.Queue()
        self.all: list[HttpConnection] = []

    async def open(self) -> None:
        for _ in range(self.size):
            self.idle.put_nowait(await self._connect())

    async def _connect(self) -> HttpConnection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(HttpConnection, "127.0.0.1", self.port)
        self.all.append(connection)
        return connection

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        connection = await self.idle.get()
        try:
            if connection.closed:
                connection = await self._connect()
            return await asyncio.wait_for(connection.request(raw), self.timeout)
        except BaseException:
            connection.close()  # its next response would be taken for another request's
            raise
        finally:
            self.idle.put_nowait(connection)

    def close(self) -> None:
        for connection in self.all:
            connection.close()


# -- meters ----------------------------------------------------------------------------------


def postgres_cpu_seconds_by_pid() -> dict[int, float]:
    """CPU time of every PostgreSQL process (postmaster, backends, WAL writer …)."""
    found: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            if Path(entry.path, "comm").read_text().strip() == "postgres":
                found[int(entry.name)] = cpu_seconds(int(entry.name))
    return found


class PostgresMeter:
    """PostgreSQL's CPU between two readings, summed over its processes, as % of one core.

    Backends come and go: a new one is billed all its CPU, one that exited its last interval
    is lost (the pool keeps its backends for the run, so that is little)."""

    def __init__(self) -> None:
        self._last = postgres_cpu_seconds_by_pid()
        self._wall = time.monotonic()

    def lap(self) -> float:
        now, wall = postgres_cpu_seconds_by_pid(), time.monotonic()
        used = sum(cpu - self._last.get(pid, 0.0) for pid, cpu in now.items())
        percent = used / max(wall - self._wall, 1e-9) * 100
        self._last, self._wall = now, wall
        return percent


class Meters:
    """CPU of the server, this generator, PostgreSQL, Redis, the two cores, and everything
    else on the machine, between two readings (`lap`)."""

    def __init__(
        self, server_pid: int, redis_pid: int | None, server_core: int, client_core: int
    ) -> None:
        self.server = CpuMeter(lambda: cpu_seconds(server_pid))
        self.generator = CpuMeter(self_cpu_seconds)
        self.postgres = PostgresMeter()
        self.redis = CpuMeter(lambda: cpu_seconds(redis_pid)) if redis_pid else None
        self.server_core = CoreMeter(server_core)
        self.client_core = CoreMeter(client_core)
        self.foreign = CpuMeter(foreign_cpu_seconds)

    def lap(self, prefix: str = "") -> dict[str, float | None]:
        postgres = self.postgres.lap()
        foreign = self.foreign.lap()
        figures: dict[str, float | None] = {
            "server_cpu_pct": round(self.server.lap(), 1),
            "generator_cpu_pct": round(self.generator.lap(), 1),
            "postgres_cpu_pct": round(postgres, 1),
            "redis_cpu_pct": None if self.redis is None else round(self.redis.lap(), 1),
            "server_core_busy_pct": round(self.server_core.lap(), 1),
            "client_core_busy_pct": round(self.client_core.lap(), 1),
            # Busy time outside the server, generator, Redis and PostgreSQL (± 10 % noise).
            "foreign_cpu_pct": round(foreign - postgres, 1),
        }
        return {f"{prefix}{key}": value for key, value in figures.items()}


def describe(load: dict[str, float | None], prefix: str = "") -> str:
    def pct(key: str) -> str:
        value = load.get(prefix + key)
        return "  -" if value is None else f"{value:3.0f}"

    return (
        f"server={pct('server_cpu_pct')}% generator={pct('generator_cpu_pct')}% "
        f"postgres={pct('postgres_cpu_pct')}% redis={pct('redis_cpu_pct')}% "
        f"others={pct('foreign_cpu_pct')}%"
    )


# -- profiles --------------------------------------------------------------------------------


def start_profile(pid: int, name: str, seconds: float, core: int) -> subprocess.Popen[bytes]:
    """py-spy samples process `pid` for `seconds` (collapsed stacks, to
    loadtests/results/<name>.txt), running on `core` (the generator's)."""
    binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.txt"
    argv = [binary, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds)))]
    argv += ["--nonblocking", "--format", "raw", "--rate", "200", "-o", str(out)]
    log(f"profiling the server for {int(seconds)}s into {out}")
    return subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: os.sched_setaffinity(0, {core}),
    )


async def finish_profile(profiler: subprocess.Popen[bytes] | None) -> None:
    if profiler is None:
        return
    try:
        await asyncio.to_thread(profiler.wait, 30)
    except subprocess.TimeoutExpired:
        profiler.kill()
        profiler.wait()


def add_server_arguments(parser: argparse.ArgumentParser, profiled: str) -> None:
    """The options of the benchmarks that run `sinal serve` on PostgreSQL and Redis;
    `profiled` names the stack files `--profile` writes."""
    add = parser.add_argument
    add("--coalesce-ms", type=float, help="SINAL_COALESCE_MS for the server (unset: its default)")
    add(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        help="PostgreSQL database for the server: DROPPED and recreated",
    )
    add("--redis-url", help="use this Redis database (flushed!) instead of a private redis-server")
    add("--server-core", type=int, default=0)
    add("--client-core", type=int, default=1)
    add("--connect-concurrency", type=int, default=200, help="stream handshakes in flight")
    add(
        "--profile",
        action="store_true",
        help="py-spy the server in each measured window (uv pip install py-spy); collapsed "
        f"stacks in loadtests/results/{profiled}",
    )


@dataclass(frozen=True, slots=True)
class Deployment:
    """The server a benchmark measures: its process and port, and the private redis-server's
    pid (None when `--redis-url` names a Redis of someone else's)."""

    server: Child
    port: int
    redis_pid: int | None


@contextlib.contextmanager
def deployment(
    name: str,
    *,
    database_url: str,
    redis_url: str | None,
    secret: str,
    core: int,
    nofile: int,
    env: Mapping[str, str] | None = None,
) -> Iterator[Deployment]:
    """`sinal serve` (`start_sinal`) on PostgreSQL and a private redis-server, in a temporary
    working directory; everything stopped on exit."""
    with (
        tempfile.TemporaryDirectory(prefix=f"{name}-", ignore_cleanup_errors=True) as tmp,
        redis_for_benchmark(redis_url, Path(tmp)) as url,
    ):
        # The private redis-server is the only process this run has started so far.
        redis_pid = next(iter(OURS), None) if redis_url is None else None
        server, port = start_sinal(
            name, database_url=database_url, redis_url=url, secret=secret, workdir=Path(tmp),
            core=core, nofile=nofile, env=env,
        )  # fmt: skip
        log(f"server pid {server.pid} on port {port}, core {core}; redis {url}")
        try:
            yield Deployment(server, port, redis_pid)
        finally:
            server.stop()
