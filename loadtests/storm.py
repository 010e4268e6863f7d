"""Reconnect storm: thousands of SSE clients come back at once, with their cursors.

    uv run python -m loadtests.storm [--clients 10000] [--rate 200] [--mode both]

`--clients` lean SSE clients (`loadtests/lean.py`), user `bench-<i>` each (its stream carries
`notifications:bench-<i>` and `broadcast`), on one Sinal process with the Redis engine (a private
redis-server, or `--redis-url`, flushed first). Events are published at a steady `--rate` per
second, round-robin over the users' channels, plus one `broadcast` a second that every client gets.

- `restart`: the server is killed (SIGKILL) and started again; every client reconnects at once
  with `Last-Event-ID` = the last `id:` it read. The new process listens on a new port (a load
  balancer would hide that): the storm is the same.
- `drain`: a second node starts on the same Redis, the first is drained (SIGTERM); every client
  reconnects to the second with its cursor once its stream ends.

A client refused (503, or the 200 that tells an EventSource to come back later) tries again a
second later. Per phase, the last JSON line reports `clients, resumed, seconds_to_all_resumed`
(the storm's start, the new process ready or the drain begun, to the last `ready`), `lost` (events
published to a client's channels and never read by it; a publish that failed is not expected),
`duplicated`, `resets` (`event: reset` frames: there should be none), `peak_rss_mb` (the serving
process during the storm and `--settle` s after), `steady_rss_mb` (the serving process before the
storm, all clients connected), `handshake_p99_ms` (connect to `ready`, across the storm's
attempts), `server_cpu_ms_per_handshake` (the new process's CPU time from when it is ready and
the old one gone to the last `ready`, over the clients: their handshakes, and the live events it
delivered meanwhile), and the targets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import httpx

from api.auth import mint_token
from loadtests.lean import FIND_EVENTS, SseSubscriber, Tally, open_many, padding, payload
from loadtests.procs import (
    Child,
    cpu_seconds,
    log,
    percentile,
    redis_for_benchmark,
    rss_kb,
    run_benchmark,
    start_sinal,
)

SECRET = "storm-benchmark-secret-long-enough-for-hs256"
TARGETS = {
    "seconds_to_all_resumed": 10.0,
    "lost": 0,
    "duplicated": 0,
    "resets": 0,
    "peak_over_steady_rss": 1.5,
}
SERVER_CORE, CLIENT_CORE = 0, 1
RETRY_S = 1.0
PAD = padding(120)


# -- pure accounting -------------------------------------------------------------------------


def lost(expected: Iterable[int], seen: bytearray) -> int:
    """How many of the `expected` sequence numbers were never seen."""
    return sum(1 for seq in expected if seq >= len(seen) or not seen[seq])


def last_id(data: bytes, end: int) -> bytes | None:
    """The last `id:` value in `data[:end]` (whole SSE frames), or None."""
    at = data.rfind(b"\nid: ", 0, end) + 1  # a line's start: after a newline...
    if at == 0 and not data.startswith(b"id: "):  # ...or the read's own start
        return None
    start = at + len(b"id: ")
    return data[start : data.index(b"\n", start)]


def handshake_p99_ms(seconds: Sequence[float]) -> float | None:
    return percentile(sorted(int(s * 1e9) for s in seconds), 0.99)


def verdict(phase: dict[str, Any]) -> dict[str, bool]:
    """Each target met or not, for one phase's figures."""
    ratio = phase["peak_rss_mb"] / phase["steady_rss_mb"] if phase["steady_rss_mb"] else None
    return {
        "all_resumed": phase["resumed"] == phase["clients"]
        and phase["seconds_to_all_resumed"] is not None
        and phase["seconds_to_all_resumed"] <= TARGETS["seconds_to_all_resumed"],
        "none_lost": phase["lost"] == 0,
        "none_duplicated": phase["duplicated"] == 0,
        "no_resets": phase["resets"] == 0,
        "peak_rss": ratio is not None and ratio <= TARGETS["peak_over_steady_rss"],
    }


# -- the client ------------------------------------------------------------------------------


class StormSubscriber(SseSubscriber):
    """The lean SSE client, remembering its cursor and its resets; a reconnect carries its
    predecessor's seen-bitmap, so that loss and duplicates are counted across connections."""

    def __init__(self, request: bytes, tally: Tally, before: StormSubscriber | None = None):
        super().__init__(request, tally)
        self.cursor: bytes | None = None
        self.resets = 0
        if before is not None:
            self.cursor, self.resets = before.cursor, before.resets
            self.seen, self.count = before.seen, before.count
        self.began = time.perf_counter()
        self.handshake_s: float | None = None

    def _handshake(self, data: bytes) -> bytes:
        rest = super()._handshake(data)
        if self.streaming and self.handshake_s is None:
            self.handshake_s = time.perf_counter() - self.began
            self._note(data, len(data) - len(rest))
        return rest

    def frames(self, data: bytes, end: int) -> None:
        found = FIND_EVENTS(data, 0, end)
        if found:
            self.record(found, time.time_ns())
        self._note(data, end)

    def _note(self, data: bytes, end: int) -> None:
        cursor = last_id(data, end)
        if cursor is not None:
            self.cursor = cursor
        self.resets += data.count(b"event: reset", 0, end)


def stream_request(port: int, token: str, cursor: bytes | None) -> bytes:
    resume = b"Last-Event-ID: " + cursor + b"\r\n" if cursor else b""
    return (
        (
            f"GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n"
        ).encode()
        + resume
        + b"\r\n"
    )


# -- the publisher ---------------------------------------------------------------------------


class Publisher:
    """Steady publishing, round-robin over the users' channels, one broadcast a second; knows
    which sequences each client must receive."""

    def __init__(self, clients: int, rate: int) -> None:
        self.clients = clients
        self.rate = rate
        self.port = 0
        self.seq = 0
        self.next_user = 0
        self.per_user: list[list[int]] = [[] for _ in range(clients)]
        self.broadcasts: list[int] = []
        self.failed = 0
        token = mint_token(SECRET, "storm-publisher", ["service"], ttl_s=3600)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.http = httpx.AsyncClient(headers=headers, timeout=5)

    def expected(self, user: int) -> list[int]:
        return self.per_user[user] + self.broadcasts

    async def run(self) -> None:
        tick = 0.1
        loop = asyncio.get_running_loop()
        moment = loop.time()
        while True:
            moment += tick
            await asyncio.sleep(max(0.0, moment - loop.time()))
            count = max(1, round(self.rate * tick))
            items: list[tuple[int, int | None]] = []  # (seq, user or None for broadcast)
            for _ in range(count):
                items.append((self.seq, self.next_user))
                self.seq += 1
                self.next_user = (self.next_user + 1) % self.clients
            if int(moment) != int(moment - tick):
                items.append((self.seq, None))
                self.seq += 1
            await self._publish(items)

    async def _publish(self, items: list[tuple[int, int | None]]) -> None:
        now = time.time_ns()
        body = (
            b"["
            + b",".join(
                b'{"channel":"%s","type":"bench","data":%s}'
                % (
                    b"broadcast" if user is None else b"notifications:bench-%d" % user,
                    payload(seq, now, PAD),
                )
                for seq, user in items
            )
            + b"]"
        )
        try:
            response = await self.http.post(
                f"http://127.0.0.1:{self.port}/v1/publish", content=body
            )
            ok = response.status_code == 201
        except httpx.HTTPError:
            ok = False
        if not ok:  # unknown or refused: not expected (a client seeing it anyway is fine)
            self.failed += len(items)
            return
        for seq, user in items:
            (self.broadcasts if user is None else self.per_user[user]).append(seq)


# -- the run ---------------------------------------------------------------------------------


class Storm:
    def __init__(self, args: argparse.Namespace, redis_url: str, workdir: Path) -> None:
        self.args = args
        self.redis_url = redis_url
        self.workdir = workdir
        self.tally = Tally()
        self.tokens = [mint_token(SECRET, f"bench-{i}", ttl_s=3600) for i in range(args.clients)]
        self.clients: list[StormSubscriber] = []
        self.publisher = Publisher(args.clients, args.rate)
        self.names = 0

    def start(self) -> tuple[Child, int]:
        self.names += 1
        return start_sinal(
            f"storm-{self.names}",
            database_url=f"sqlite:///{self.workdir / 'sinal.db'}",
            redis_url=self.redis_url,
            secret=SECRET,
            workdir=self.workdir,
            core=SERVER_CORE,
            nofile=self.args.clients * 2 + 1024,
        )

    async def connect_all(self, port: int, before: list[StormSubscriber] | None) -> list[float]:
        """(Re)connect every client, again and again for the refused, until all are ready;
        the handshake times of every attempt that got through."""
        loop = asyncio.get_running_loop()
        pending = list(range(self.args.clients))
        current: list[StormSubscriber | None] = [None] * self.args.clients
        times: list[float] = []
        deadline = loop.time() + self.args.give_up
        while pending and loop.time() < deadline:

            def make(index: int, pending: list[int] = pending) -> StormSubscriber:
                user = pending[index]
                previous = before[user] if before is not None else current[user]
                cursor = previous.cursor if previous is not None else None
                fresh = StormSubscriber(
                    stream_request(port, self.tokens[user], cursor), self.tally, previous
                )
                current[user] = fresh
                return fresh

            await open_many(make, len(pending), port, concurrency=len(pending), handshake_s=30)
            times += [c.handshake_s for c in current if c is not None and c.handshake_s]
            pending = [user for user in pending if not _ready(current[user])]
            if pending:
                log(f"{len(pending)} refused or failed; again in {RETRY_S:g} s")
                await asyncio.sleep(RETRY_S)
        self.clients = [c for c in current if c is not None]
        return times

    async def watch_rss(self, pid: int, until: asyncio.Event) -> int:
        peak = 0
        while not until.is_set():
            with contextlib.suppress(OSError, ValueError):
                peak = max(peak, rss_kb(pid))
            await asyncio.sleep(0.05)
        return peak

    def accounting(self) -> tuple[int, int]:
        lost_now = sum(
            lost(self.publisher.expected(user), client.seen)
            for user, client in enumerate(self.clients)
        )
        return lost_now, sum(client.resets for client in self.clients)

    async def caught_up(self) -> None:
        """Wait (bounded) until every client read everything published to it so far."""
        deadline = asyncio.get_running_loop().time() + 15
        while asyncio.get_running_loop().time() < deadline:
            if self.accounting()[0] == 0:
                return
            await asyncio.sleep(0.2)

    async def phase(self, name: str, server: Child, port: int) -> tuple[dict[str, Any], Child]:
        """One storm; returns its figures and the process serving afterwards."""
        args = self.args
        await asyncio.sleep(args.settle)
        steady_kb = rss_kb(server.pid)
        duplicated_before = self.tally.duplicated
        lost_before, resets_before = self.accounting()
        before = list(self.clients)
        log(f"{name}: steady RSS {steady_kb / 1024:.1f} MB; storm")
        if name == "restart":
            server.process.send_signal(signal.SIGKILL)
            server.process.wait()
            new, new_port = self.start()
            self.publisher.port = new_port
        else:
            new, new_port = self.start()
            self.publisher.port = new_port
            server.process.send_signal(signal.SIGTERM)  # drain: every stream ends
            await asyncio.to_thread(server.process.wait, 60)
        for client in before:
            client.close()
        cpu_before = cpu_seconds(new.pid)
        began = time.perf_counter()
        done = asyncio.Event()
        peak = asyncio.ensure_future(self.watch_rss(new.pid, done))
        times = await self.connect_all(new_port, before)
        seconds = time.perf_counter() - began
        cpu_ms = (cpu_seconds(new.pid) - cpu_before) * 1000
        resumed = sum(1 for client in self.clients if _ready(client))
        await asyncio.sleep(args.settle)
        done.set()
        peak_kb = await peak
        await self.caught_up()
        lost_now, resets_now = self.accounting()
        reads = await replay_reads(new_port)
        server.stop()
        figures: dict[str, Any] = {
            "clients": args.clients,
            "resumed": resumed,
            "seconds_to_all_resumed": round(seconds, 2) if resumed == args.clients else None,
            "lost": lost_now - lost_before,
            "duplicated": self.tally.duplicated - duplicated_before,
            "resets": resets_now - resets_before,
            "peak_rss_mb": round(peak_kb / 1024, 1),
            "steady_rss_mb": round(steady_kb / 1024, 1),
            "handshake_p99_ms": handshake_p99_ms(times),
            "server_cpu_ms_per_handshake": round(cpu_ms / args.clients, 3),
            **reads,
        }
        figures["met"] = verdict(figures)
        log(f"{name}: {figures}")
        return figures, new

    async def run(self) -> dict[str, Any]:
        args = self.args
        server, port = self.start()
        self.publisher.port = port
        publishing: asyncio.Future[None] | None = None
        try:
            log(f"connecting {args.clients} clients")
            await self.connect_all(port, None)
            publishing = asyncio.ensure_future(self.publisher.run())
            phases: dict[str, Any] = {}
            for name in ("restart", "drain") if args.mode == "both" else (args.mode,):
                phases[name], server = await self.phase(name, server, self.publisher.port)
            return {
                "benchmark": "storm",
                "clients": args.clients,
                "rate": args.rate,
                "published": self.publisher.seq,
                "publish_failed": self.publisher.failed,
                "phases": phases,
                "targets": TARGETS,
            }
        finally:
            if publishing is not None:
                publishing.cancel()
            for client in self.clients:
                client.close()
            await self.publisher.http.aclose()
            server.stop()


async def replay_reads(port: int) -> dict[str, float]:
    """The new process's resume reads sent to Redis and saved by sharing (`/metrics`)."""
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    return metric_values(text, ("sinal_replay_reads_total", "sinal_replay_reads_saved_total"))


def metric_values(text: str, names: Sequence[str]) -> dict[str, float]:
    """Unlabelled samples of `names` in a Prometheus text exposition, by name without prefix."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in names:
            found[name.removeprefix("sinal_").removesuffix("_total")] = float(value)
    return found


def _ready(client: StormSubscriber | None) -> bool:
    return client is not None and client.streaming and not client.closed


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sinal-storm-") as tmp:
        workdir = Path(tmp)
        with redis_for_benchmark(args.redis_url, workdir, db=11) as redis_url:
            return await Storm(args, redis_url, workdir).run()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtests.storm", description=__doc__)
    add = parser.add_argument
    add("--clients", type=int, default=10_000)
    add("--rate", type=int, default=200, help="events per second over the users' channels")
    add("--mode", choices=("restart", "drain", "both"), default="both")
    add("--settle", type=float, default=5.0, help="seconds before and after each storm")
    add("--give-up", type=float, default=120.0, help="seconds before a storm is abandoned")
    add("--redis-url", help="this Redis database (flushed first!) instead of a private one")
    args = parser.parse_args(argv)
    if args.clients <= 0 or args.rate <= 0:
        parser.error("--clients and --rate must be positive")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    run_benchmark(lambda: run(args), args.clients * 2 + 1024, CLIENT_CORE)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
