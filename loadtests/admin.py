"""Admin-area benchmark: connection listings and a disconnect across two nodes.

    uv run python -m loadtests.admin [--connections 10000 --longpolls 50 --requests 200
                                      --disconnects 100 --redis-url redis://127.0.0.1:6379/11]

Two `sinal serve` processes (nodes A and B) share one Redis database, so the admin API's
answers are gathered over the engine's control bus, as in a real deployment. Both run pinned
to `--server-core` (default 0: with two cores, the generator needs the other one, so the two
nodes share theirs), this process, the load generator, to `--client-core` (default 1).

1. Holds `--connections` connections, half on each node: connection i belongs to user
   `user-<i:05d>` and goes to node i % 2; mostly idle SSE streams (`loadtests/lean.py`), and
   `--longpolls` long-polls (`GET /v1/notifications/poll?wait=30`, re-polled as they answer).
2. Listings, with an admin token, one request at a time, asking A and B in turn:
   `GET /v1/admin/connections?q=<prefix>` for a prefix matching 10 users; the first page with
   `limit=100` and with `limit=500`. Each answer is checked (count, order, `partial`), and
   every page is walked once with `limit=500` to check that each connection is listed once.
3. Disconnect across nodes: `POST /v1/admin/users/{user}/disconnect` asked of the node that
   does NOT hold the user's stream; measured from the request sent to `event: disconnect`
   (reason `kicked`) read on the stream.

Progress goes to stderr; the last stdout line is one JSON object with the figures, the targets
beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import redis

from api.auth import mint_token
from loadtests.fanout import SECRET
from loadtests.lean import SseSubscriber, Subscriber, open_many, sse_request
from loadtests.procs import (
    Child,
    CoreMeter,
    CpuMeter,
    HttpConnection,
    HttpPool,
    cores_busy_before,
    cpu_seconds,
    foreign_cpu_seconds,
    log,
    percentile,
    redis_for_benchmark,
    reset_database,
    rss_kb,
    run_benchmark,
    self_cpu_seconds,
    start_sinal,
)

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/11"
# Databases of the shared Redis a benchmark must not flush: the test suite's.
PROTECTED_REDIS_DBS = frozenset({15})

TARGETS = {
    "prefix_p99_ms": 100,
    "page100_p99_ms": 200,
    "page500_p99_ms": 200,
    "disconnect_p99_ms": 1000,
}

FIND_REASON = re.compile(rb'"reason":\s*"([a-z_]+)"').search


@dataclass(frozen=True)
class Config:
    connections: int
    longpolls: int
    requests: int
    disconnects: int
    redis_url: str
    database_url: str | None
    server_core: int
    client_core: int
    connect_concurrency: int
    seed: int

    @property
    def nofile(self) -> int:
        return self.connections + 1024


def user(index: int) -> str:
    return f"user-{index:05d}"


# -- the connections held ----------------------------------------------------------------------


class Watched(SseSubscriber):
    """An idle stream that notes when the server says `event: disconnect`, and why."""

    def __init__(self, request: bytes) -> None:
        super().__init__(request, None)
        # (perf_counter_ns when read, the reason; b"" when closed without saying one)
        self.told: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()

    def frames(self, data: bytes, end: int) -> None:
        at = data.find(b"event: disconnect", 0, end)
        if at >= 0 and not self.told.done():
            found = FIND_REASON(data, at, end)
            self.told.set_result((time.perf_counter_ns(), found.group(1) if found else b"?"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.told.done():
            self.told.set_result((time.perf_counter_ns(), b""))
        super().connection_lost(exc)


def http_request(port: int, token: str, method: str, path: str, body: bytes = b"") -> bytes:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
    )
    if method != "GET":
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


class LongPoll:
    """One client long-polling on its own keep-alive connection until `stop`."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.token = token
        self.polls = 0
        self.waiting = asyncio.Event()  # the first long wait is in flight
        self.connection: HttpConnection | None = None

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        _, self.connection = await loop.create_connection(HttpConnection, "127.0.0.1", self.port)
        path = "/v1/notifications/poll?wait=0"
        while not stop.is_set():
            answer = self.connection.request(http_request(self.port, self.token, "GET", path))
            if self.polls:
                self.waiting.set()
            status, body = await answer
            if status != 200:
                raise RuntimeError(f"long-poll answered {status}: {body[:200]!r}")
            self.polls += 1
            path = "/v1/notifications/poll?wait=30&cursor=" + quote(json.loads(body)["next_cursor"])

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()


# -- the run -------------------------------------------------------------------------------------


@dataclass
class Node:
    name: str
    server: Child
    port: int
    pool: HttpPool


class Timings:
    """Round trips of one kind of request, and what was wrong with their answers."""

    def __init__(self) -> None:
        self.ns: list[int] = []
        self.errors = 0
        self.mismatches = 0
        self.partial = 0

    def figures(self, prefix: str) -> dict[str, Any]:
        ordered = sorted(self.ns)
        return {
            f"{prefix}_requests": len(ordered),
            f"{prefix}_p50_ms": percentile(ordered, 0.50),
            f"{prefix}_p99_ms": percentile(ordered, 0.99),
            f"{prefix}_max_ms": percentile(ordered, 1.0),
            f"{prefix}_errors": self.errors,
            f"{prefix}_mismatches": self.mismatches,
            f"{prefix}_partial": self.partial,
        }


async def timed(pool: HttpPool, raw: bytes, timings: Timings) -> dict[str, Any] | None:
    started = time.perf_counter_ns()
    try:
        status, body = await pool.request(raw)
    except (OSError, TimeoutError) as error:
        timings.errors += 1
        log(f"request failed: {error!r}")
        return None
    timings.ns.append(time.perf_counter_ns() - started)
    if status != 200:
        timings.errors += 1
        if timings.errors <= 3:
            log(f"answered {status}: {body[:300]!r}")
        return None
    answer: dict[str, Any] = json.loads(body)
    if answer.get("partial"):
        timings.partial += 1
    return answer


class Load:
    """CPU of both nodes, the generator, Redis, both cores and everything else, between laps.

    Redis is shared (the test suite's too): its CPU is reported apart and taken out of
    `foreign`, which is then what else ran on the machine.
    """

    def __init__(self, nodes: list[Node], cfg: Config, redis_pid: int | None) -> None:
        self.nodes = {
            node.name: CpuMeter(lambda pid=node.server.pid: cpu_seconds(pid)) for node in nodes
        }
        self.generator = CpuMeter(self_cpu_seconds)
        self.redis = CpuMeter(lambda: cpu_seconds(redis_pid)) if redis_pid else None
        self.server_core = CoreMeter(cfg.server_core)
        self.client_core = CoreMeter(cfg.client_core)
        self.foreign = CpuMeter(foreign_cpu_seconds)

    def lap(self, prefix: str) -> dict[str, float | None]:
        figures = {f"{prefix}_node_{name}_cpu_pct": m.lap() for name, m in self.nodes.items()}
        figures[f"{prefix}_generator_cpu_pct"] = self.generator.lap()
        redis = None if self.redis is None else self.redis.lap()
        figures[f"{prefix}_server_core_busy_pct"] = self.server_core.lap()
        figures[f"{prefix}_client_core_busy_pct"] = self.client_core.lap()
        figures[f"{prefix}_foreign_cpu_pct"] = self.foreign.lap() - (redis or 0.0)
        rounded: dict[str, float | None] = {k: round(v, 1) for k, v in figures.items()}
        rounded[f"{prefix}_redis_cpu_pct"] = None if redis is None else round(redis, 1)
        return rounded


def redis_pid(url: str) -> int | None:
    """The pid of the Redis server at `url`, when it runs on this machine."""
    client = redis.Redis.from_url(url)
    try:
        pid = int(client.info("server")["process_id"])
    finally:
        client.close()
    comm = Path(f"/proc/{pid}/comm")
    return pid if comm.exists() and comm.read_text().startswith("redis") else None


async def listings(cfg: Config, nodes: list[Node], token: str, users: list[str]) -> dict[str, Any]:
    """The three listings, `cfg.requests` each, asking the nodes in turn; then one walk."""
    rng = random.Random(cfg.seed)
    prefix, page100, page500 = Timings(), Timings(), Timings()
    groups = max(1, cfg.connections // 10)
    # A few unmeasured requests of each kind first: imports and caches on first use.
    for index in range(4):
        node = nodes[index % 2]
        for path in ("/v1/admin/connections?q=user-0000", "/v1/admin/connections?limit=500"):
            await timed(node.pool, http_request(node.port, token, "GET", path), Timings())
    for index in range(cfg.requests):
        node = nodes[index % 2]
        group = rng.randrange(groups)
        wanted = f"user-{group:04d}"
        expected = sum(1 for name in users if name.startswith(wanted))
        path = f"/v1/admin/connections?q={wanted}&limit=500"
        answer = await timed(node.pool, http_request(node.port, token, "GET", path), prefix)
        if answer is not None and len(answer["connections"]) != expected:
            prefix.mismatches += 1
            if prefix.mismatches <= 3:
                log(f"q={wanted}: {len(answer['connections'])} connections, {expected} expected")
    for limit, timings in ((100, page100), (500, page500)):
        first = sorted(users)[:limit]
        for index in range(cfg.requests):
            node = nodes[index % 2]
            path = f"/v1/admin/connections?limit={limit}"
            answer = await timed(node.pool, http_request(node.port, token, "GET", path), timings)
            if answer is None:
                continue
            listed = [view["user"] for view in answer["connections"]]
            more = answer["next_cursor"] is not None
            if listed != first or more != (len(users) > limit):
                timings.mismatches += 1
                if timings.mismatches <= 3:
                    log(f"limit={limit}: {len(listed)} listed, more: {more}; not the first page")
        log(f"limit={limit}: p99 {percentile(sorted(timings.ns), 0.99)} ms")
    log(f"q=<prefix>: p99 {percentile(sorted(prefix.ns), 0.99)} ms")
    return {
        **prefix.figures("prefix"),
        **page100.figures("page100"),
        **page500.figures("page500"),
        **await walk(nodes[0], token, len(users)),
    }


async def walk(node: Node, token: str, expected: int) -> dict[str, Any]:
    """Every page of the listing, `limit=500`: each connection once, in order."""
    ids: list[str] = []
    keys: list[tuple[str, str]] = []
    pages, cursor = 0, None
    started = time.perf_counter()
    timings = Timings()
    while pages <= expected // 500 + 5:  # bounded: a cursor that never ends is a finding
        path = "/v1/admin/connections?limit=500" + (f"&cursor={cursor}" if cursor else "")
        answer = await timed(node.pool, http_request(node.port, token, "GET", path), timings)
        if answer is None:
            break
        pages += 1
        ids += [view["id"] for view in answer["connections"]]
        keys += [(view["user"], view["id"]) for view in answer["connections"]]
        cursor = answer["next_cursor"]
        if cursor is None:
            break
    figures = {
        "walk_pages": pages,
        "walk_listed": len(ids),
        "walk_distinct": len(set(ids)),
        "walk_expected": expected,
        "walk_in_order": keys == sorted(keys),
        "walk_seconds": round(time.perf_counter() - started, 2),
    }
    log(f"walk: {figures}")
    return figures


async def disconnects(
    cfg: Config, nodes: list[Node], token: str, streams: dict[int, Watched]
) -> dict[str, Any]:
    """Users asked of the node that does not hold their stream, one at a time."""
    rng = random.Random(cfg.seed + 1)
    chosen = rng.sample(sorted(streams), min(cfg.disconnects, len(streams)))
    told_ns: list[int] = []
    post = Timings()
    wrong_reason = not_told = closed_wrong = 0
    for index in chosen:
        stream = streams[index]
        asked = nodes[1 - index % 2]  # the stream is on node index % 2
        raw = http_request(asked.port, token, "POST", f"/v1/admin/users/{user(index)}/disconnect")
        started = time.perf_counter_ns()
        answer = await timed(asked.pool, raw, post)
        try:
            at, reason = await asyncio.wait_for(asyncio.shield(stream.told), 5)
        except TimeoutError:
            not_told += 1
            log(f"{user(index)}: no disconnect within 5 s")
            continue
        if reason != b"kicked":
            wrong_reason += 1
            if wrong_reason <= 3:
                log(f"{user(index)}: told {reason!r}, expected kicked")
            continue
        told_ns.append(at - started)
        if answer is not None and answer.get("closed") != 1:
            closed_wrong += 1
        await asyncio.sleep(0.02)
    ordered = sorted(told_ns)
    log(f"disconnect: p99 {percentile(ordered, 0.99)} ms over {len(ordered)}")
    return {
        "disconnects": len(chosen),
        "disconnect_p50_ms": percentile(ordered, 0.50),
        "disconnect_p99_ms": percentile(ordered, 0.99),
        "disconnect_max_ms": percentile(ordered, 1.0),
        "disconnect_not_told": not_told,
        "disconnect_wrong_reason": wrong_reason,
        "disconnect_closed_not_1": closed_wrong,
        "disconnect_post_p50_ms": percentile(sorted(post.ns), 0.50),
        "disconnect_post_p99_ms": percentile(sorted(post.ns), 0.99),
        "disconnect_post_errors": post.errors,
        "disconnect_post_partial": post.partial,
    }


# -- nodes, connections, the whole run -----------------------------------------------------------


async def node_counts(node: Node, token: str) -> dict[str, dict[str, int]]:
    """`GET /v1/admin/nodes` as node `node` sees the cluster: connections by node name."""
    status, body = await node.pool.request(http_request(node.port, token, "GET", "/v1/admin/nodes"))
    if status != 200:
        raise RuntimeError(f"/v1/admin/nodes answered {status}: {body[:300]!r}")
    return {view["name"]: view["connections"] for view in json.loads(body)["nodes"]}


async def settled(nodes: list[Node], token: str, expected: dict[str, int]) -> dict[str, Any]:
    """Wait (10 s at most) until each node reports its share of the connections."""
    deadline = time.monotonic() + 10
    while True:
        counts = await node_counts(nodes[0], token)
        totals = {name: sum(counts.get(name, {}).values()) for name in expected}
        if totals == expected or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    if totals != expected:
        log(f"warning: nodes report {totals}, expected {expected}")
    return {f"node_{name}_connections": counts.get(name) for name in expected}


def start_node(cfg: Config, name: str, redis_url: str, database_url: str, workdir: Path) -> Node:
    server, port = start_sinal(
        f"node-{name}", database_url=database_url, redis_url=redis_url, secret=SECRET,
        workdir=workdir, core=cfg.server_core, nofile=cfg.nofile,
        env={"SINAL_NODE_NAME": name},
    )  # fmt: skip
    log(f"node {name}: pid {server.pid}, port {port}, core {cfg.server_core}")
    return Node(name, server, port, HttpPool(port, 1, timeout=10))


async def run(cfg: Config) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="sinal-admin-", ignore_cleanup_errors=True) as tmp,
        redis_for_benchmark(cfg.redis_url, Path(tmp)) as redis_url,
    ):
        workdir = Path(tmp)
        quiet = await cores_busy_before(cfg.server_core, cfg.client_core)
        database_url = cfg.database_url or f"sqlite:///{workdir / 'sinal.db'}"
        if cfg.database_url:
            await reset_database(cfg.database_url)
        nodes: list[Node] = []
        streams: dict[int, Watched] = {}
        polls: list[LongPoll] = []
        stop = asyncio.Event()
        holders: list[asyncio.Task[None]] = []
        try:
            # One after the other: the first migrates the database the second then finds.
            for name in ("a", "b"):
                nodes.append(start_node(cfg, name, redis_url, database_url, workdir))
            for node in nodes:
                await node.pool.open()
            admin = mint_token(SECRET, "bench-admin", ["admin"], ttl_s=3600)
            users = [user(index) for index in range(cfg.connections)]
            polled = sorted(longpoll_indices(cfg.connections, cfg.longpolls))
            started = time.monotonic()
            for index in polled:
                poll = LongPoll(nodes[index % 2].port, mint_token(SECRET, users[index]))
                polls.append(poll)
                holders.append(asyncio.create_task(poll.run(stop)))
            opened = await asyncio.gather(
                *(open_node(cfg, nodes, side, users, set(polled)) for side in (0, 1))
            )
            for side_streams in opened:
                streams.update(side_streams)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(30):
                    await asyncio.gather(*(poll.waiting.wait() for poll in polls))
            waiting = [
                index for index, poll in zip(polled, polls, strict=True) if poll.waiting.is_set()
            ]
            log(f"{len(streams)} streams and {len(waiting)} long-polls open "
                f"in {time.monotonic() - started:.0f}s")  # fmt: skip
            held = len(streams) + len(waiting)
            connected = sorted(users[index] for index in [*streams, *waiting])
            on_a = sum(1 for index in [*streams, *waiting] if index % 2 == 0)
            expected = {"a": on_a, "b": held - on_a}
            result: dict[str, Any] = {
                "machine_busy_before_pct": quiet,
                "pinning": f"nodes a and b both on core {cfg.server_core}, "
                f"generator on core {cfg.client_core}",
                "redis": redis_url,
                "database": "postgresql" if cfg.database_url else "sqlite (shared file)",
                "connections": held,
                "sse": len(streams),
                "longpolls": len(waiting),
                "connect_failures": cfg.connections - held,
                **await settled(nodes, admin, expected),
                **{f"node_{n.name}_rss_kb": rss_kb(n.server.pid) for n in nodes},
            }
            load = Load(nodes, cfg, redis_pid(redis_url))
            result.update(await listings(cfg, nodes, admin, connected))
            result.update(load.lap("listing"))
            result.update(await disconnects(cfg, nodes, admin, streams))
            result.update(load.lap("disconnect"))
            result["targets"] = TARGETS
            result["targets_met"] = verdict(result)
            return result
        finally:
            stop.set()
            for poll in polls:
                poll.close()
            for task in holders:
                task.cancel()
            await asyncio.gather(*holders, return_exceptions=True)
            for stream in streams.values():
                stream.close()
            for node in nodes:
                node.pool.close()
                node.server.stop()


def longpoll_indices(connections: int, longpolls: int) -> set[int]:
    """Which connections are long-polls: spread over the users, as many on each node."""
    if longpolls <= 0:
        return set()
    step = max(2, 2 * connections // longpolls)
    return {index for index in range(connections) if index % step < 2}


async def open_node(
    cfg: Config, nodes: list[Node], side: int, users: list[str], polled: set[int]
) -> dict[int, Watched]:
    """The SSE streams of node `side`: connections i with i % 2 == side, long-polls aside."""
    node = nodes[side]
    indices = [i for i in range(side, cfg.connections, 2) if i not in polled]
    requests = [sse_request(node.port, mint_token(SECRET, users[i])) for i in indices]
    made: dict[int, Watched] = {}

    def make(k: int) -> Subscriber:
        made[indices[k]] = Watched(requests[k])
        return made[indices[k]]

    opened, failures = await open_many(
        make,
        len(indices),
        node.port,
        concurrency=max(1, cfg.connect_concurrency // 2),
        handshake_s=60,
        progress=lambda n: log(f"node {node.name}: {n} streams open"),
    )
    if failures:
        log(f"node {node.name}: {failures} streams failed to open")
    ready = {id(stream) for stream in opened}
    return {index: stream for index, stream in made.items() if id(stream) in ready}


def verdict(result: dict[str, Any]) -> dict[str, bool | None]:
    met: dict[str, bool | None] = {}
    for key, target in TARGETS.items():
        value = result.get(key)
        met[key] = None if value is None else value <= target
    met["answers_correct"] = (
        not any(result[f"{kind}_{what}"] for kind in ("prefix", "page100", "page500")
                for what in ("errors", "mismatches", "partial"))
        and result["walk_listed"] == result["walk_distinct"] == result["walk_expected"]
        and result["disconnect_not_told"] == result["disconnect_wrong_reason"] == 0
    )  # fmt: skip
    return met


def add_redis_url(parser: argparse.ArgumentParser, shared_by: str = "the servers") -> None:
    """`--redis-url`, the database a benchmark's servers use (flushed first)."""
    parser.add_argument(
        "--redis-url",
        type=redis_url_checked,
        default=DEFAULT_REDIS_URL,
        help=f"Redis database for {shared_by}: FLUSHED first",
    )


def redis_url_checked(text: str) -> str:
    parts = urlsplit(text)
    db = int(parts.path.lstrip("/") or 0)
    if parts.hostname not in {"127.0.0.1", "localhost"}:
        raise argparse.ArgumentTypeError("benchmarks stay on 127.0.0.1")
    if db in PROTECTED_REDIS_DBS:
        raise argparse.ArgumentTypeError(f"database {db} is the test suite's: pick another")
    return text


def parse_args(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.admin", description=__doc__.splitlines()[0]
    )
    add = parser.add_argument
    add("--connections", type=int, default=10_000, help="held over the two nodes, half each")
    add("--longpolls", type=int, default=50, help="of them long-polls, the rest SSE streams")
    add("--requests", type=int, default=200, help="measured requests of each listing")
    add("--disconnects", type=int, default=100, help="users disconnected across nodes")
    add_redis_url(parser, "both nodes")
    add(
        "--database-url",
        help="a PostgreSQL database for both nodes, DROPPED and recreated (default: one "
        "SQLite file in the run's temporary directory)",
    )
    add("--server-core", type=int, default=0, help="both nodes run here")
    add("--client-core", type=int, default=1)
    add("--connect-concurrency", type=int, default=200, help="handshakes in flight")
    add("--seed", type=int, default=1, help="picks the prefixes and the users disconnected")
    args = parser.parse_args(argv)
    if args.connections < 20 or args.requests <= 0 or args.disconnects <= 0:
        parser.error("--connections must be at least 20, --requests and --disconnects positive")
    if not 0 <= args.longpolls <= args.connections // 2:
        parser.error("--longpolls must be between 0 and half the connections")
    return Config(**vars(args))


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    run_benchmark(lambda: run(cfg), cfg.nofile, cfg.client_core)


if __name__ == "__main__":
    main()
