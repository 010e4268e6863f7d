"""Notification benchmark: N users on SSE, notifications created through REST, then unread counts.

    uv run python -m loadtests.notifications [--users 10000 --rate 1000 --duration 20 ...]
    uv run python -m loadtests.notifications --quick          # smoke run, about 30 s

A fresh `sinal serve` on PostgreSQL (`--database-url`, dropped and recreated first) and a private
`redis-server`, pinned to `--server-core` (default 0); this process, the load generator, pinned to
`--client-core` (default 1). PostgreSQL itself is not pinned: its CPU is reported apart.

1. Streams: N users `u0 … u<N-1>` each open `GET /v1/stream` with their own JWT, so each one
   watches its own `notifications:<user>` channel.
2. Creates: `POST /v1/notifications` (service token) for random users at `--rate`, open loop
   (each is sent when due, up to `--max-in-flight` unanswered) over a pool of keep-alive
   connections, for `--warmup` + `--duration` s. Each carries `data: {"seq", "sent_ns"}`; the
   owner's stream must show it as `notification.created` once. Latency: request sent → event
   read by the subscriber; `lost`: created (201) but not received within `--drain` s.
3. Unread counts: `GET /v1/notifications/unread-count` as rotating users, closed loop over
   `--unread-concurrency` keep-alive connections for `--unread-seconds`, with the streams still
   open; each answer is checked against the notifications created for that user.

Progress goes to stderr; the last stdout line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import random
import re
import secrets
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from api.auth import mint_token
from loadtests import procs
from loadtests.lean import SseSubscriber, Subscriber, Tally, open_many, sse_request
from loadtests.procs import (
    HttpConnection,
    HttpPool,
    Meters,
    cores_busy_before,
    database_name,
    describe,
    finish_profile,
    log,
    percentile,
    reset_database,
    run_benchmark,
)
from loadtests.schedule import Schedule, released, sleep_until

SECRET = "loadtest-secret-that-is-long-enough-for-hs256"

TARGETS = {"creates_per_s": 1000, "p99_ms": 50, "lost": 0, "unread_count_rps": 3000}

# The created event's data as the stream carries it (`data` of the notification, re-encoded by
# the server; PostgreSQL's jsonb orders keys by length, so `seq` comes before `sent_ns`).
FIND_CREATED = re.compile(rb'"seq":\s*(\d+),\s*"sent_ns":\s*(\d+)').findall
UNREAD = re.compile(rb'"unread":(\d+)').search


@dataclass(frozen=True)
class Config:
    users: int
    rate: float
    duration: float
    warmup: float
    drain: float
    connections: int
    max_in_flight: int
    idempotency_key: bool
    unread_seconds: float
    unread_concurrency: int
    coalesce_ms: float | None
    skip_creates: bool
    skip_unread: bool
    database_url: str
    redis_url: str | None
    server_core: int
    client_core: int
    connect_concurrency: int
    seed: int
    profile: bool

    @property
    def nofile(self) -> int:
        return self.users + self.connections + self.unread_concurrency + 1024


# Full run and --quick: what an option is when not given.
DEFAULTS: dict[str, dict[str, Any]] = {
    "full": {"users": 10_000, "rate": 1000.0, "duration": 20.0, "warmup": 5.0, "drain": 5.0,
             "unread_seconds": 10.0},
    "quick": {"users": 500, "rate": 200.0, "duration": 5.0, "warmup": 2.0, "drain": 3.0,
              "unread_seconds": 3.0},
}  # fmt: skip


# -- subscribers -----------------------------------------------------------------------------


class Book(Tally):
    """What the create phase expects and what the streams delivered, per sequence number."""

    def __init__(self, total: int) -> None:
        super().__init__()
        self.owner = array.array("i", [-1]) * total  # user index of each create
        self.created = bytearray(total)  # 1: answered 201
        self.seen = bytearray(total)
        self.latency_ns = array.array("q", [0]) * total  # sent → first read
        self.misrouted = 0  # an event on another user's stream
        self.unknown = 0  # a sequence this run never sent

    def record_at(self, user: int, found: list[tuple[bytes, bytes]], now_ns: int) -> None:
        seen = self.seen
        for q, t in found:
            seq = int(q)
            if seq >= len(seen):
                self.unknown += 1
                continue
            if self.owner[seq] != user:
                self.misrouted += 1
            if seen[seq]:
                self.duplicated += 1
                continue
            seen[seq] = 1
            self.received += 1
            self.latency_ns[seq] = now_ns - int(t)


class NotificationSubscriber(SseSubscriber):
    """`GET /v1/stream` as user `index`; counts `notification.created` events by sequence."""

    def __init__(self, request: bytes, book: Book, index: int) -> None:
        super().__init__(request, book)  # the tally counts disconnects
        self.book = book
        self.index = index

    def frames(self, data: bytes, end: int) -> None:
        found = FIND_CREATED(data, 0, end)
        if found:
            self.book.record_at(self.index, found, time.time_ns())


# -- server and database ---------------------------------------------------------------------


def server_env(cfg: Config) -> dict[str, str]:
    return {} if cfg.coalesce_ms is None else {"SINAL_COALESCE_MS": f"{cfg.coalesce_ms:g}"}


def start_profile(
    cfg: Config, pid: int, name: str, seconds: float
) -> subprocess.Popen[bytes] | None:
    """With `--profile`: py-spy samples the server for `seconds` (collapsed stacks, to
    loadtests/results/notifications-<name>.txt), running on the generator's core."""
    if not cfg.profile:
        return None
    return procs.start_profile(pid, f"notifications-{name}", seconds, cfg.client_core)


def user_token(index: int) -> str:
    return mint_token(SECRET, f"u{index}", ttl_s=3600)


# -- phase 2: creates ------------------------------------------------------------------------


def create_request(port: int, token: str, body: bytes, key: str | None) -> bytes:
    head = (
        f"POST /v1/notifications HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
    )
    if key is not None:
        head += f"Idempotency-Key: {key}\r\n"
    return head.encode() + b"\r\n" + body


async def create_phase(
    cfg: Config,
    port: int,
    subscribers: list[Subscriber],
    book: Book,
    server_pid: int,
    redis_pid: int | None,
) -> dict[str, Any]:
    """Open loop: create `seq` is due at `start + seq / rate` (`loadtests.schedule`) and sent
    then, stamped with its send time, whether or not earlier ones were answered (up to
    `max_in_flight`). Waiting for a free pooled connection is part of the latency, as it would
    be for a real producer."""
    total = len(book.owner)
    measure_from = round(cfg.rate * cfg.warmup)
    token = mint_token(SECRET, "bench-service", ["service"], ttl_s=3600)
    run_id = secrets.token_hex(4)
    pool = HttpPool(port, cfg.connections)
    await pool.open()
    create_ns: list[int] = []
    errors: Counter[str] = Counter()
    in_flight: set[asyncio.Task[None]] = set()
    stalls = 0
    ok = 0

    async def create_one(seq: int) -> None:
        nonlocal ok
        user = book.owner[seq]
        sent_ns = time.time_ns()
        body = (
            b'{"user":"u%d","type":"bench.created","title":"Benchmark notification %d",'
            b'"data":{"seq":%d,"sent_ns":%d}}' % (user, seq, seq, sent_ns)
        )
        key = f"bench-{run_id}-{seq}" if cfg.idempotency_key else None
        try:
            status, answer = await pool.request(create_request(port, token, body, key))
        except (OSError, TimeoutError) as error:
            errors[type(error).__name__] += 1
            if sum(errors.values()) <= 3:
                log(f"create {seq} failed: {error!r}")
            return
        if status != 201:
            errors[str(status)] += 1
            if sum(errors.values()) <= 3:
                log(f"create {seq}: {status} {answer[:200]!r}")
            return
        book.created[seq] = 1
        ok += 1
        create_ns.append(time.time_ns() - sent_ns)

    async def report() -> None:
        meters = Meters(server_pid, redis_pid, cfg.server_core, cfg.client_core)
        last_ok, last_received, started = 0, 0, time.monotonic()
        while True:
            await asyncio.sleep(2)
            load = meters.lap()
            log(
                f"creates: t={time.monotonic() - started:4.0f}s "
                f"creates/s={(ok - last_ok) / 2:6.0f} "
                f"events/s={(book.received - last_received) / 2:6.0f} "
                f"in_flight={len(in_flight)} errors={sum(errors.values())} {describe(load)}"
            )
            last_ok, last_received = ok, book.received

    progress = asyncio.create_task(report())
    schedule = Schedule(cfg.rate, time.monotonic() + 0.05, total)
    meters: Meters | None = None
    profiler: subprocess.Popen[bytes] | None = None
    window_start, ok_at_start, received_at_start = time.monotonic(), 0, 0
    try:
        async for seq in released(schedule):
            if seq == measure_from:
                meters = Meters(server_pid, redis_pid, cfg.server_core, cfg.client_core)
                profiler = start_profile(cfg, server_pid, "creates", cfg.duration - 1)
                window_start, ok_at_start = time.monotonic(), ok
                received_at_start = book.received
            if len(in_flight) >= cfg.max_in_flight:  # a safety valve, not a pace
                stalls += 1
                await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            task = asyncio.create_task(create_one(seq))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        await sleep_until(schedule.end)
        window = time.monotonic() - window_start
        created_in_window = ok - ok_at_start
        received_in_window = book.received - received_at_start
        load = meters.lap() if meters is not None else {}
        if in_flight:
            await asyncio.wait(in_flight)
        await wait_for_events(book, cfg.drain)
    finally:
        progress.cancel()
        pool.close()
        await finish_profile(profiler)

    created = [seq for seq in range(total) if book.created[seq]]
    measured = [seq for seq in created if seq >= measure_from and book.seen[seq]]
    latencies = sorted(book.latency_ns[seq] for seq in measured)
    ordered_create = sorted(create_ns)
    figures: dict[str, Any] = {
        "creates_sent": total,
        "creates_ok": ok,
        "create_errors": dict(errors),
        "creates_per_s": round(created_in_window / window, 1),
        "events_per_s": round(received_in_window / window, 1),
        "p50_ms": percentile(latencies, 0.50),
        "p90_ms": percentile(latencies, 0.90),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": percentile(latencies, 1.0),
        "lost": sum(1 for seq in created if not book.seen[seq]),
        "duplicated": book.duplicated,
        "misrouted": book.misrouted,
        "unknown_events": book.unknown,
        "disconnects": book.disconnects,
        "create_p50_ms": percentile(ordered_create, 0.50),
        "create_p99_ms": percentile(ordered_create, 0.99),
        "create_stalls": stalls,
        "max_schedule_lag_ms": round(schedule.max_lag * 1000, 1),
        **load,
    }
    log(
        f"creates: {ok}/{total} created, {book.received} received, lost {figures['lost']}, "
        f"p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms, {describe(load)}"
    )
    return figures


async def wait_for_events(book: Book, within: float) -> None:
    """Give events in flight `within` seconds; what has not arrived then is lost."""
    deadline = time.monotonic() + within
    while True:
        missing = sum(1 for seq, made in enumerate(book.created) if made and not book.seen[seq])
        if missing == 0:
            return
        if time.monotonic() > deadline:
            log(f"creates: {missing} event(s) still missing after {within}s")
            return
        await asyncio.sleep(0.1)


# -- phase 3: unread counts ------------------------------------------------------------------


async def unread_phase(
    cfg: Config,
    port: int,
    tokens: list[str],
    expected: Counter[int] | None,
    server_pid: int,
    redis_pid: int | None,
    warmup: float = 1.0,
) -> dict[str, Any]:
    """Closed loop: each of `unread_concurrency` keep-alive connections asks again as soon as it
    is answered, as user `worker`, `worker + concurrency`, …; one second of warm-up first."""
    requests = [
        (
            f"GET /v1/notifications/unread-count HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {token}\r\n\r\n"
        ).encode()
        for token in tokens
    ]
    loop = asyncio.get_running_loop()
    connections: list[HttpConnection] = []
    for _ in range(cfg.unread_concurrency):
        _, connection = await loop.create_connection(HttpConnection, "127.0.0.1", port)
        connections.append(connection)
    latencies: list[int] = []
    errors: Counter[str] = Counter()
    mismatches = 0
    measuring = False
    done = 0
    profiler: subprocess.Popen[bytes] | None = None
    stop_at = loop.time() + warmup + cfg.unread_seconds

    async def worker(index: int, connection: HttpConnection) -> None:
        nonlocal done, mismatches
        user = index
        while loop.time() < stop_at:
            sent = time.perf_counter_ns()
            try:
                status, body = await asyncio.wait_for(connection.request(requests[user]), 10)
            except (OSError, TimeoutError) as error:
                errors[type(error).__name__] += 1
                connection.close()
                _, connection = await loop.create_connection(HttpConnection, "127.0.0.1", port)
                connections.append(connection)
                continue
            if status != 200:
                errors[str(status)] += 1
            elif measuring:
                latencies.append(time.perf_counter_ns() - sent)
                done += 1
                if expected is not None:
                    found = UNREAD(body)
                    if found is None or int(found.group(1)) != expected[user]:
                        mismatches += 1
            user = (user + cfg.unread_concurrency) % len(requests)

    workers = [
        asyncio.create_task(worker(index % len(requests), connection))
        for index, connection in enumerate(connections)
    ]
    try:
        await asyncio.sleep(warmup)
        measuring = True
        meters = Meters(server_pid, redis_pid, cfg.server_core, cfg.client_core)
        profiler = start_profile(cfg, server_pid, "unread", cfg.unread_seconds - 1)
        started, done_at_start = time.monotonic(), done
        reported, last = started, done
        while loop.time() < stop_at:
            await asyncio.sleep(min(2.0, max(0.0, stop_at - loop.time())))
            now = time.monotonic()
            log(
                f"unread-count: t={now - started:4.0f}s "
                f"requests/s={(done - last) / max(now - reported, 1e-9):6.0f} "
                f"errors={sum(errors.values())}"
            )
            reported, last = now, done
        window = time.monotonic() - started
        load = meters.lap("unread_")
        measuring = False
        counted = done - done_at_start
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
        for connection in connections:
            connection.close()
        await finish_profile(profiler)
    ordered = sorted(latencies)
    figures: dict[str, Any] = {
        "unread_count_rps": round(counted / window, 1),
        "unread_p50_ms": percentile(ordered, 0.50),
        "unread_p99_ms": percentile(ordered, 0.99),
        "unread_errors": dict(errors),
        "unread_mismatches": mismatches if expected is not None else None,
        "unread_concurrency": cfg.unread_concurrency,
        **load,
    }
    log(
        f"unread-count: {figures['unread_count_rps']} requests/s, "
        f"p99 {figures['unread_p99_ms']} ms, {describe(load, 'unread_')}"
    )
    return figures


# -- the run ---------------------------------------------------------------------------------


def verdict(result: dict[str, Any]) -> dict[str, bool | None]:
    def check(key: str, ok: Callable[[Any], bool]) -> bool | None:
        value = result.get(key)
        return None if value is None else ok(value)

    return {
        "creates_per_s": check("creates_per_s", lambda v: v >= TARGETS["creates_per_s"]),
        "p99_ms": check("p99_ms", lambda v: v <= TARGETS["p99_ms"]),
        "lost": check("lost", lambda v: v == TARGETS["lost"]),
        "unread_count_rps": check("unread_count_rps", lambda v: v >= TARGETS["unread_count_rps"]),
    }


async def run(cfg: Config) -> dict[str, Any]:
    await reset_database(cfg.database_url)
    log(f"database {database_name(cfg.database_url)}: dropped and recreated")
    with procs.deployment(
        "sinal-notifications",
        database_url=cfg.database_url,
        redis_url=cfg.redis_url,
        secret=SECRET,
        core=cfg.server_core,
        nofile=cfg.nofile,
        env=server_env(cfg),
    ) as deployed:
        server, port, redis_pid = deployed.server, deployed.port, deployed.redis_pid
        result: dict[str, Any] = {
            "machine_busy_before_pct": await cores_busy_before(cfg.server_core, cfg.client_core),
            "users": cfg.users,
            "rate": cfg.rate,
            "duration": cfg.duration,
            "warmup": cfg.warmup,
            "coalesce_ms": cfg.coalesce_ms if cfg.coalesce_ms is not None else "default",
            "connections": cfg.connections,
            "idempotency_key": cfg.idempotency_key,
        }
        subscribers: list[Subscriber] = []
        try:
            tokens = [user_token(index) for index in range(cfg.users)]
            total = 0 if cfg.skip_creates else round(cfg.rate * (cfg.warmup + cfg.duration))
            book = Book(total)
            rng = random.Random(cfg.seed)
            for seq in range(total):
                book.owner[seq] = rng.randrange(cfg.users)
            opened_at = time.monotonic()
            subscribers, failures = await open_many(
                lambda index: NotificationSubscriber(sse_request(port, tokens[index]), book, index),
                cfg.users,
                port,
                concurrency=cfg.connect_concurrency,
                handshake_s=60,
                progress=lambda n: log(f"streams: {n} open"),
            )
            result["connected"] = len(subscribers)
            result["connect_failures"] = failures
            result["connect_s"] = round(time.monotonic() - opened_at, 1)
            log(f"streams: {len(subscribers)} open ({failures} failed) in {result['connect_s']}s")
            expected: Counter[int] | None = None
            if not cfg.skip_creates:
                result.update(
                    await create_phase(cfg, port, subscribers, book, server.pid, redis_pid)
                )
                expected = Counter(book.owner[seq] for seq in range(total) if book.created[seq])
            if not cfg.skip_unread:
                result.update(
                    await unread_phase(cfg, port, tokens, expected, server.pid, redis_pid)
                )
        finally:
            for subscriber in subscribers:
                subscriber.close()
    result["targets_met"] = verdict(result)
    return result


def parse_args(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.notifications", description=__doc__.splitlines()[0]
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="smoke run: 500 users, 200/s, 2 + 5 s, 3 s unread")
    add("--users", type=int, help="SSE users u0…u<N-1> (default 10000)")
    add("--rate", type=float, help="notifications created per second (default 1000)")
    add("--duration", type=float, help="measured seconds of creates (default 20)")
    add("--warmup", type=float, help="seconds of creates before measuring (default 5)")
    add("--drain", type=float, help="seconds to wait for events still in flight (default 5)")
    add("--connections", type=int, default=32, help="keep-alive connections for creates")
    add("--max-in-flight", type=int, default=512, help="unanswered creates before pausing")
    add("--idempotency-key", action="store_true", help="send an Idempotency-Key per create")
    add("--unread-seconds", type=float, help="measured seconds of unread counts (default 10)")
    add("--unread-concurrency", type=int, default=64, help="closed-loop unread-count clients")
    add("--skip-creates", action="store_true", help="skip the create phase")
    add("--skip-unread", action="store_true", help="skip the unread-count phase")
    add("--seed", type=int, default=1, help="seed of the users the creates go to")
    procs.add_server_arguments(parser, "notifications-{creates,unread}.txt")
    args = vars(parser.parse_args(argv))
    for name, value in DEFAULTS["quick" if args.pop("quick") else "full"].items():
        if args[name] is None:
            args[name] = value
    for name in ("users", "rate", "duration", "connections", "max_in_flight"):
        if args[name] <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args["unread_seconds"] <= 0 or args["unread_concurrency"] <= 0:
        parser.error("--unread-seconds and --unread-concurrency must be positive")
    if args["warmup"] < 0 or args["drain"] < 0:
        parser.error("--warmup and --drain must not be negative")
    if args["coalesce_ms"] is not None and args["coalesce_ms"] < 0:
        parser.error("--coalesce-ms must not be negative")
    database_name(args["database_url"])
    assert set(args) == {spec.name for spec in fields(Config)}
    return Config(**args)


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    run_benchmark(lambda: run(cfg), cfg.nofile, cfg.client_core)


if __name__ == "__main__":
    main()
