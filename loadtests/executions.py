"""Executions benchmark: executions report events through the ingest API, team members watch them.

    uv run python -m loadtests.executions [--executions 200 --watchers 5 --rate 20 ...]
    uv run python -m loadtests.executions --quick          # smoke run, about 20 s

A fresh `sinal serve` on PostgreSQL (`--database-url`, dropped and recreated first) and a private
`redis-server`, pinned to `--server-core` (default 0); this process, the load generator, pinned to
`--client-core` (default 1). PostgreSQL itself is not pinned: its CPU is reported apart.

1. Setup: `--executions` executions created with `POST /v1/executions` (service token), spread
   over `--teams` teams; each is watched by `--watchers` SSE streams
   (`GET /v1/stream?channel=execution:<id>`), each stream a team member of its own (`w<i>`).
2. Load: every execution emits `--rate` events/s in an open loop for `--warmup` + `--duration`
   s, numbered 1, 2, 3, ... per execution, in a fixed cycle of 20: `step_started`, then 10 log
   lines (with `data`) and 8 progress ticks, then `step_finished` (50 % logs, 40 % progress,
   10 % steps). They are sent as `api.client` sends them, by `--services` (default 4) simulated
   execution services, each running its share of the executions (coroutines here, one per
   service): every `--batch-ms` tick (the services' ticks spread over one tick; shorter if an
   execution would have `--max-batch` events before) a service sends ONE
   `POST /v1/executions/events` carrying the events due of each of its executions (up to
   `--max-batch` each; several requests past the server's limits of 1000 executions, 5000
   events, 4 MiB), one batch in flight per execution: an execution whose previous batch is
   unanswered waits for the next tick. Network errors, 5xx and 429 resend the same request.
   Over a pool of `--connections` keep-alive connections.
3. Drain: up to `--drain` s for events still in flight (then up to `--settle` s more if some
   are missing, to tell late events from lost ones).

Every published event names its `seq`, so a watcher's delivery is matched to the request that
carried it. Latency (`p50_ms` …): the request carrying the event was handed to the connection
pool → the watcher read the event, per delivery, for events emitted after the warm-up;
`emit_*` adds the time the event waited in the producer's buffer (up to a tick, more while its
execution's previous batch is in flight). `mean_batch_events`, `max_batch_events` and
`mean_batch_executions`: events and executions per (bulk) request.
Progress ticks may be coalesced by the server (`SINAL_PROGRESS_INTERVAL_MS`, latest wins):
they are counted apart (`progress_*`; their latency is measured from the request that carried
the `seq` the tick reports) and never as lost. `lost_non_progress`: log and step events
accepted (200) that not every watcher of their execution read within `--drain` s
(`lost_deliveries` counts each watcher and event missed; `lost_after_settle`, those still
missing after up to `--settle` s more: late or really lost); `duplicated` and `out_of_order`
count deliveries per watcher. The latency percentiles cover every delivery that came, late
ones included.

Progress goes to stderr; the last stdout line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import re
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass, fields
from typing import Any

from api.auth import mint_token
from api.client import MAX_REQUEST_BYTES, MAX_REQUEST_EVENTS, MAX_REQUEST_EXECUTIONS
from loadtests import procs
from loadtests.lean import SseSubscriber, Subscriber, Tally, open_many, sse_request
from loadtests.procs import (
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
from loadtests.schedule import Schedule, sleep_until

SECRET = "loadtest-secret-that-is-long-enough-for-hs256"

TARGETS = {"p99_ms": 100, "lost_non_progress": 0}

# What the events of one execution are, in order, over and over: S step_started, L log,
# P progress, F step_finished. 10 L + 8 P + S + F = 20: 50 % logs, 40 % progress, 10 % steps.
CYCLE = "SLPLPLPLLPLPLPLLPLPF"
TYPE_OF = {"S": b"step_started", "L": b"log", "P": b"progress", "F": b"step_finished"}
TYPES = [TYPE_OF[letter] for letter in CYCLE]
IS_PROGRESS = [letter == "P" for letter in CYCLE]

# An `execution.*` event in a stream: its type, execution and seq. The event's data is spliced
# into the SSE envelope as the server encoded it (struct field order: execution, then seq).
FIND_EVENTS = re.compile(
    rb'"type":"execution\.([a-z_]+)","data":\{"execution":"([0-9a-f-]+)","seq":(\d+)'
).findall


@dataclass(frozen=True)
class Config:
    executions: int
    watchers: int
    teams: int
    rate: float
    duration: float
    warmup: float
    drain: float
    settle: float
    batch_ms: float
    max_batch: int
    services: int
    connections: int
    progress_interval_ms: float | None
    coalesce_ms: float | None
    database_url: str
    redis_url: str | None
    server_core: int
    client_core: int
    connect_concurrency: int
    profile: bool

    @property
    def nofile(self) -> int:
        return self.executions * self.watchers + self.connections + 1024

    @property
    def per_execution(self) -> int:
        """Events each execution emits."""
        return max(1, round(self.rate * (self.warmup + self.duration)))

    @property
    def warm(self) -> int:
        """Events of each execution emitted during the warm-up: seq 1 … warm."""
        return round(self.rate * self.warmup)


# Full run and --quick: what an option is when not given.
DEFAULTS: dict[str, dict[str, Any]] = {
    "full": {"executions": 200, "watchers": 5, "teams": 20, "duration": 20.0, "warmup": 5.0,
             "drain": 5.0},
    "quick": {"executions": 20, "watchers": 2, "teams": 4, "duration": 6.0, "warmup": 2.0,
              "drain": 3.0},
}  # fmt: skip


# -- what was sent, what was seen ------------------------------------------------------------


class Book(Tally):
    """Every event of every execution (flat index `execution * per_execution + seq - 1`): when
    it was emitted and sent, whether it was accepted; and what the watchers read."""

    def __init__(self, executions: int, per_execution: int, warm: int) -> None:
        super().__init__()
        total = executions * per_execution
        self.per_execution = per_execution
        self.warm = warm
        self.emitted_ns = array.array("q", [0]) * total  # due in the producer (open loop)
        self.sent_ns = array.array("q", [0]) * total  # its request handed to the pool
        self.accepted = bytearray(total)  # 1: its batch was answered 200
        self.expected = [0] * executions  # accepted log and step events per execution
        self.progress_sent = 0  # accepted progress ticks, all executions
        # Deliveries, per watcher.
        self.delivered = 0  # every execution.* event with a seq, all watchers
        self.progress_delivered = 0
        self.progress_out_of_order = 0  # a tick older (lower seq) than one already read
        self.out_of_order = 0  # a log or step event below one already read
        self.misrouted = 0  # an event of another execution
        self.unknown = 0  # a seq or type this run never sent
        self.wrong_type = 0  # an event whose type is not the one sent with its seq
        self.latency = array.array("q")  # request sent → read (log and step events)
        self.emit_latency = array.array("q")  # emitted → read (the same deliveries)
        self.progress_latency = array.array("q")  # request with the tick's seq → read

    def index(self, execution: int, seq: int) -> int:
        return execution * self.per_execution + seq - 1

    def accept(self, execution: int, first: int, end: int) -> None:
        """Events at indices `first` … `end - 1` of `execution` were accepted."""
        base = execution * self.per_execution
        accepted = self.accepted
        for i in range(first, end):
            if not accepted[base + i]:
                accepted[base + i] = 1
                if IS_PROGRESS[i % len(CYCLE)]:
                    self.progress_sent += 1
                else:
                    self.expected[execution] += 1

    def record(self, watcher: Watcher, found: list[tuple[bytes, bytes, bytes]], now: int) -> None:
        """Account for the events of one read: the hot loop of the generator's receiving side."""
        per_execution, warm = self.per_execution, self.warm
        base = watcher.execution * per_execution - 1  # + seq: the flat index
        sent = self.sent_ns
        seen = watcher.seen
        for kind, execution, q in found:
            if execution != watcher.execution_id:
                self.misrouted += 1
                continue
            seq = int(q)
            self.delivered += 1
            if kind == b"progress":
                self.progress_delivered += 1
                if seq < watcher.last_progress:
                    self.progress_out_of_order += 1
                else:
                    watcher.last_progress = seq
                if warm < seq <= per_execution:
                    self.progress_latency.append(now - sent[base + seq])
                continue
            if kind == b"status":  # queued → running, with the first event's seq
                watcher.status += 1
                continue
            if not 0 < seq <= per_execution:
                self.unknown += 1
                continue
            if kind != TYPES[(seq - 1) % len(CYCLE)]:
                self.wrong_type += 1
            if seen[seq]:
                self.duplicated += 1
                continue
            seen[seq] = 1
            watcher.count += 1
            self.received += 1
            if seq < watcher.last:
                self.out_of_order += 1
            else:
                watcher.last = seq
            if seq > warm:
                self.latency.append(now - sent[base + seq])
                self.emit_latency.append(now - self.emitted_ns[base + seq])


class Watcher(SseSubscriber):
    """`GET /v1/stream?channel=execution:<id>` as a member of the execution's team."""

    def __init__(self, request: bytes, book: Book, execution: int, execution_id: str) -> None:
        super().__init__(request, book)  # the tally counts disconnects
        self.book = book
        self.execution = execution
        self.execution_id = execution_id.encode()
        self.seen = bytearray(book.per_execution + 1)  # by seq: log and step events read
        self.count = 0  # of them, distinct
        self.last = 0  # highest seq of them read
        self.last_progress = 0
        self.status = 0  # execution.status events read

    def frames(self, data: bytes, end: int) -> None:
        found = FIND_EVENTS(data, 0, end)
        if found:
            self.book.record(self, found, time.monotonic_ns())


# -- the events as the execution service sends them ------------------------------------------


def event_json(index: int, per_execution: int) -> bytes:
    """Event `index` (0-based; seq = index + 1) of an execution."""
    seq, step = index + 1, index // len(CYCLE) + 1
    letter = CYCLE[index % len(CYCLE)]
    if letter == "L":
        return (
            b'{"type":"log","seq":%d,"message":"stage %d: processed batch %d (256 records, '
            b'0 rejected)","level":"info","step":%d,"data":{"batch":%d,"records":256}}'
            % (seq, step, index, step, index)
        )
    if letter == "P":
        progress = min(100, seq * 100 // per_execution)
        return b'{"type":"progress","seq":%d,"progress":%d}' % (seq, progress)
    if letter == "S":
        return b'{"type":"step_started","seq":%d,"step":%d,"name":"stage %d"}' % (seq, step, step)
    return b'{"type":"step_finished","seq":%d,"step":%d,"outcome":"succeeded"}' % (seq, step)


def steps_of(per_execution: int) -> int:
    return -(-per_execution // len(CYCLE))


class Producer:
    """The ingest side: `--services` execution services, each sending the events of its share
    of the executions as `api.client.ExecutionClient` does, one bulk request per tick."""

    def __init__(
        self,
        cfg: Config,
        book: Book,
        pool: HttpPool,
        port: int,
        token: str,
        ids: list[str],
    ) -> None:
        self.cfg = cfg
        self.book = book
        self.pool = pool
        self.head = (
            f"POST /v1/executions/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            "Content-Length: "
        ).encode()
        self.ids = [id.encode() for id in ids]
        self.done = [0] * len(ids)  # events of each execution settled (accepted or given up)
        self.in_flight = bytearray(len(ids))  # 1: a batch of the execution awaits its answer
        self.events_ok = 0
        self.requests_ok = 0
        self.errors: Counter[str] = Counter()
        self.abandoned = 0  # executions given up after a refusal
        self.measuring = False
        self.request_ns = array.array("q")  # round trips while measuring
        self.batch_events = array.array("i")  # events per request while measuring
        self.batch_executions = array.array("i")  # executions per request while measuring
        self.max_batch_seen = 0
        self.start = 0.0  # time.monotonic() of event 0 of execution 0
        self.schedules: list[Schedule] = []  # each execution's, from `begin`

    @property
    def tick_s(self) -> float:
        """A service's tick: `--batch-ms`, shorter when an execution emits `--max-batch`
        events sooner (the client sends a full batch at once)."""
        cfg = self.cfg
        return max(0.001, min(cfg.batch_ms / 1000, cfg.max_batch / cfg.rate))

    def begin(self, start: float) -> None:
        """Emit from `start` (time.monotonic()) on: each execution at `--rate`, their first
        events spread over one interval."""
        cfg, executions = self.cfg, len(self.done)
        self.start = start
        self.schedules = [
            Schedule(cfg.rate, start + x / (executions * cfg.rate), cfg.per_execution)
            for x in range(executions)
        ]

    def emitted_by(self, execution: int, now: float) -> int:
        """How many events of `execution` are due at `now` (time.monotonic())."""
        return self.schedules[execution].due(now)

    def backlog(self, now: float) -> int:
        """Events due and not yet settled, the largest over the executions."""
        return max(self.emitted_by(x, now) - done for x, done in enumerate(self.done))

    async def run(self, service: int) -> None:
        """Execution service `service` (of `--services`): executions `service`, `service` +
        services, ... A tick every `tick_s` (the services' ticks spread over one tick) sends
        what is due of each of them that has no batch in flight (up to `--max-batch` events
        each) in one request, several past the server's limits; one with a batch in flight
        waits for the next tick. Returns when all of them are settled."""
        cfg = self.cfg
        mine = list(range(service, len(self.done), cfg.services))
        per_execution, max_batch, tick_s = cfg.per_execution, cfg.max_batch, self.tick_s
        sending: set[asyncio.Task[None]] = set()
        tick = self.start + tick_s * service / cfg.services
        try:
            while True:
                await sleep_until(tick)
                for task in [task for task in sending if task.done()]:
                    sending.discard(task)
                    task.result()  # a bug in a delivery stops the run
                now = time.monotonic()
                batches: list[tuple[int, int, int]] = []  # execution, first index, end
                settled = True
                for x in mine:
                    done = self.done[x]
                    if done >= per_execution:
                        continue
                    settled = False
                    if self.in_flight[x]:
                        continue
                    due = self.emitted_by(x, now)
                    if due > done:
                        batches.append((x, done, min(due, done + max_batch)))
                if settled:
                    return
                for request in self.requests(batches):
                    for x, _, _ in request:
                        self.in_flight[x] = 1
                    task = asyncio.create_task(self.deliver(request))
                    sending.add(task)
                tick += tick_s
                if tick < now:  # this loop fell behind: tick now, then on schedule again
                    tick = now
        finally:
            for task in sending:
                task.cancel()

    def requests(self, batches: list[tuple[int, int, int]]) -> list[list[tuple[int, int, int]]]:
        """The batches of one tick in requests within the bulk endpoint's limits."""
        requests: list[list[tuple[int, int, int]]] = [[]]
        size = count = 0
        for x, first, end in batches:
            # A generous estimate of the batch's JSON: events are under 200 bytes.
            part = 64 + 200 * (end - first)
            current = requests[-1]
            if current and (
                len(current) >= MAX_REQUEST_EXECUTIONS
                or count + end - first > MAX_REQUEST_EVENTS
                or size + part > MAX_REQUEST_BYTES
            ):
                requests.append(current := [])
                size = count = 0
            current.append((x, first, end))
            size += part
            count += end - first
        return [request for request in requests if request]

    async def deliver(self, batches: list[tuple[int, int, int]]) -> None:
        """One bulk request, resent unchanged on network errors, 5xx and 429 (the executions
        stay in flight meanwhile); then each execution's result."""
        book, per_execution = self.book, self.cfg.per_execution
        body = b'{"batches":[%s]}' % b",".join(
            b'{"execution":"%s","events":[%s]}'
            % (self.ids[x], b",".join(event_json(i, per_execution) for i in range(first, end)))
            for x, first, end in batches
        )
        raw = b"%s%d\r\n\r\n%s" % (self.head, len(body), body)
        events = sum(end - first for _, first, end in batches)
        stamp = time.monotonic_ns()
        for x, first, end in batches:
            base, schedule = x * per_execution, self.schedules[x]
            for i in range(first, end):
                if not book.sent_ns[base + i]:  # a resent event keeps its first send time
                    book.sent_ns[base + i] = stamp
                    book.emitted_ns[base + i] = round(schedule.due_at(i) * 1e9)
        backoff = 0.05
        try:
            while True:
                try:
                    status, answer = await self.pool.request(raw)
                except (OSError, TimeoutError) as error:
                    self._error(type(error).__name__, f"{len(batches)} executions: {error!r}")
                else:
                    if status < 500 and status != 429:
                        break
                    self._error(str(status), f"{status} {answer[:200]!r}")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                stamp = time.monotonic_ns()
            if status != 200:  # the whole request refused: a bug here, or in the server
                self._error(str(status), f"{len(batches)} executions: {status} {answer[:300]!r}")
                for x, _, _ in batches:
                    self.abandon(x)
                return
            self.requests_ok += 1
            self.max_batch_seen = max(self.max_batch_seen, events)
            if self.measuring:
                self.request_ns.append(time.monotonic_ns() - stamp)
                self.batch_events.append(events)
                self.batch_executions.append(len(batches))
            # Parsed only when some execution's batch was refused: the common answer is long.
            results = json.loads(answer)["results"] if b'"error"' in answer else None
            for k, (x, first, end) in enumerate(batches):
                refusal = results[k].get("error") if results is not None else None
                if refusal is None:
                    book.accept(x, first, end)
                    self.events_ok += end - first
                    self.done[x] = end
                    continue
                code = refusal.get("status")
                self._error(str(code), f"execution {x}: {json.dumps(refusal)[:300]}")
                # A gap the server reports past `first`: it has more than this batch's answer
                # said (a timed-out request that was applied); anything else: give up on it.
                expected = refusal.get("expected_seq") if code == 409 else None
                resume = expected - 1 if isinstance(expected, int) else -1
                if not first < resume <= end:
                    self.abandon(x)
                    continue
                book.accept(x, first, resume)
                self.events_ok += resume - first
                self.done[x] = resume
        finally:
            for x, _, _ in batches:
                self.in_flight[x] = 0

    def abandon(self, execution: int) -> None:
        self.abandoned += 1
        self.done[execution] = self.cfg.per_execution

    def _error(self, key: str, message: str) -> None:
        self.errors[key] += 1
        if sum(self.errors.values()) <= 5:
            log(f"ingest: {message}")


# -- setup -----------------------------------------------------------------------------------


def team_of(cfg: Config, execution: int) -> str:
    return f"team{execution % cfg.teams}"


async def create_executions(cfg: Config, pool: HttpPool, port: int, token: str) -> list[str]:
    """POST /v1/executions for each, ids chosen here as `api.client` does."""
    ids = [str(uuid.uuid4()) for _ in range(cfg.executions)]
    steps = steps_of(cfg.per_execution)
    gate = asyncio.Semaphore(min(cfg.connections, 32))

    async def create(execution: int) -> None:
        body = (
            b'{"id":"%s","team":"%s","owner":"owner%d","name":"benchmark execution %d",'
            b'"kind":"bench","total_steps":%d}'
            % (
                ids[execution].encode(),
                team_of(cfg, execution).encode(),
                execution,
                execution,
                steps,
            )
        )
        raw = (
            f"POST /v1/executions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        async with gate:
            status, answer = await pool.request(raw)
        if status != 201:
            raise RuntimeError(f"create execution {execution}: {status} {answer[:300]!r}")

    await asyncio.gather(*(create(x) for x in range(cfg.executions)))
    return ids


def server_env(cfg: Config) -> dict[str, str]:
    env: dict[str, str] = {}
    if cfg.progress_interval_ms is not None:
        env["SINAL_PROGRESS_INTERVAL_MS"] = f"{cfg.progress_interval_ms:g}"
    if cfg.coalesce_ms is not None:
        env["SINAL_COALESCE_MS"] = f"{cfg.coalesce_ms:g}"
    return env


def start_profile(cfg: Config, pid: int, seconds: float) -> subprocess.Popen[bytes] | None:
    """With `--profile`: py-spy samples the server in the measured window (collapsed stacks,
    to loadtests/results/executions-ingest.txt), running on the generator's core."""
    if not cfg.profile:
        return None
    return procs.start_profile(pid, "executions-ingest", seconds, cfg.client_core)


# -- the load --------------------------------------------------------------------------------


async def load_phase(
    cfg: Config,
    producer: Producer,
    watchers: list[Watcher],
    server_pid: int,
    redis_pid: int | None,
) -> dict[str, Any]:
    book = producer.book

    async def report() -> None:
        meters = Meters(server_pid, redis_pid, cfg.server_core, cfg.client_core)
        last = (0, 0, 0)
        started = time.monotonic()
        while True:
            await asyncio.sleep(2)
            load = meters.lap()
            now = (producer.events_ok, producer.requests_ok, book.delivered)
            log(
                f"load: t={time.monotonic() - started:4.0f}s "
                f"events/s={(now[0] - last[0]) / 2:6.0f} "
                f"requests/s={(now[1] - last[1]) / 2:5.0f} "
                f"deliveries/s={(now[2] - last[2]) / 2:6.0f} "
                f"backlog={producer.backlog(time.monotonic())} "
                f"errors={sum(producer.errors.values())} {describe(load)}"
            )
            last = now

    lag_ns = array.array("q")

    async def watch_loop(tick: float = 0.01) -> None:
        """How late this generator's event loop wakes up: its own saturation, which would
        delay reads and sends and be taken for the server's latency."""
        while True:
            before = time.monotonic_ns()
            await asyncio.sleep(tick)
            if producer.measuring:
                lag_ns.append(time.monotonic_ns() - before - round(tick * 1e9))

    progress = asyncio.create_task(report())
    lag_watch = asyncio.create_task(watch_loop())
    producer.begin(time.monotonic() + 0.1)
    tasks = [asyncio.create_task(producer.run(x)) for x in range(cfg.services)]
    profiler: subprocess.Popen[bytes] | None = None
    try:
        await sleep_until(producer.start + cfg.warmup)
        meters = Meters(server_pid, redis_pid, cfg.server_core, cfg.client_core)
        profiler = start_profile(cfg, server_pid, cfg.duration - 1)
        producer.measuring = True
        window_start = time.monotonic()
        at_start = (producer.events_ok, producer.requests_ok, book.delivered)
        await sleep_until(producer.start + cfg.warmup + cfg.duration)
        window = time.monotonic() - window_start
        at_end = (producer.events_ok, producer.requests_ok, book.delivered)
        load = meters.lap()
        producer.measuring = False
        backlog_at_end = producer.backlog(time.monotonic())
        # Whatever is still buffered goes out now (in batches of up to --max-batch).
        _, late = await asyncio.wait(tasks, timeout=60 + cfg.drain)
        for task in late:
            task.cancel()
        if late:
            log(f"load: {len(late)} service(s) still sending after 60 s; stopped")
        for task in tasks:
            error = None if task.cancelled() or not task.done() else task.exception()
            if error is not None:
                raise error
        await wait_for_events(book, watchers, cfg.drain)
        lost_events, lost_deliveries = missing(book, watchers, cfg.per_execution)
        settled = await settle(book, watchers, cfg.settle) if lost_deliveries else 0.0
        lost_at_end = len(missing(book, watchers, cfg.per_execution)[0]) if settled else None
    finally:
        progress.cancel()
        lag_watch.cancel()
        for task in tasks:
            task.cancel()
        await finish_profile(profiler)

    per_execution = cfg.per_execution
    started = {x for x in range(cfg.executions) if book.accepted[x * per_execution]}
    latency = sorted(book.latency)
    emit_latency = sorted(book.emit_latency)
    progress_latency = sorted(book.progress_latency)
    request_ns = sorted(producer.request_ns)
    batches, spread = producer.batch_events, producer.batch_executions
    figures: dict[str, Any] = {
        "ingest_events_per_s": round((at_end[0] - at_start[0]) / window, 1),
        "ingest_requests_per_s": round((at_end[1] - at_start[1]) / window, 1),
        "deliveries_per_s": round((at_end[2] - at_start[2]) / window, 1),
        "p50_ms": percentile(latency, 0.50),
        "p90_ms": percentile(latency, 0.90),
        "p99_ms": percentile(latency, 0.99),
        "max_ms": percentile(latency, 1.0),
        "emit_p50_ms": percentile(emit_latency, 0.50),
        "emit_p99_ms": percentile(emit_latency, 0.99),
        "events_sent": sum(1 for stamp in book.sent_ns if stamp),
        "events_accepted": sum(book.accepted),
        "ingest_errors": dict(producer.errors),
        "executions_abandoned": producer.abandoned,
        "ingest_p50_ms": percentile(request_ns, 0.50),
        "ingest_p99_ms": percentile(request_ns, 0.99),
        # Events and executions per (bulk) request.
        "mean_batch_events": round(sum(batches) / len(batches), 2) if batches else None,
        "max_batch_events": producer.max_batch_seen,
        "mean_batch_executions": round(sum(spread) / len(spread), 2) if spread else None,
        "backlog_at_end": backlog_at_end,
        "progress_sent": book.progress_sent,
        "progress_sent_per_execution": round(book.progress_sent / cfg.executions, 1),
        "progress_delivered_per_watcher": round(book.progress_delivered / max(len(watchers), 1), 1),
        "progress_p50_ms": percentile(progress_latency, 0.50),
        "progress_p99_ms": percentile(progress_latency, 0.99),
        "progress_out_of_order": book.progress_out_of_order,
        "non_progress_accepted": sum(book.expected),
        "lost_non_progress": len(lost_events),
        "lost_deliveries": lost_deliveries,
        # Of the lost, how many never came while waiting up to --settle s more (None: no wait).
        "lost_after_settle": lost_at_end,
        "settle_s": round(settled, 1),
        "duplicated": book.duplicated,
        "out_of_order": book.out_of_order,
        "misrouted": book.misrouted,
        "wrong_type": book.wrong_type,
        "unknown_events": book.unknown,
        # Every watcher of a started execution should read its queued → running once.
        "status_missing": sum(1 for w in watchers if w.execution in started and w.status == 0),
        "status_duplicated": sum(max(0, w.status - 1) for w in watchers),
        "disconnects": book.disconnects,
        "generator_loop_lag_p99_ms": percentile(sorted(lag_ns), 0.99),
        "generator_loop_lag_max_ms": percentile(sorted(lag_ns), 1.0),
        **load,
    }
    log(
        f"load: {figures['events_accepted']}/{figures['events_sent']} events accepted, "
        f"{figures['ingest_events_per_s']} events/s, lost {figures['lost_non_progress']}, "
        f"p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms, {describe(load)}"
    )
    return figures


def missing(
    book: Book, watchers: list[Watcher], per_execution: int
) -> tuple[set[tuple[int, int]], int]:
    """Accepted log and step events some watcher has not read: (execution, seq) of each, and
    how many deliveries that makes."""
    events: set[tuple[int, int]] = set()
    deliveries = 0
    for watcher in watchers:
        base = watcher.execution * per_execution
        for index in range(per_execution):
            if IS_PROGRESS[index % len(CYCLE)] or not book.accepted[base + index]:
                continue
            if not watcher.seen[index + 1]:
                deliveries += 1
                events.add((watcher.execution, index + 1))
    return events, deliveries


async def settle(book: Book, watchers: list[Watcher], within: float, quiet: float = 5.0) -> float:
    """After the drain: wait up to `within` s more, until nothing is missing or nothing came
    for `quiet` s, to tell late events from lost ones. Returns the seconds waited."""
    started = time.monotonic()
    last, last_change = book.received, started
    while time.monotonic() - started < within:
        if all(w.count >= book.expected[w.execution] for w in watchers):
            break
        await asyncio.sleep(0.2)
        if book.received != last:
            last, last_change = book.received, time.monotonic()
        elif time.monotonic() - last_change > quiet:
            break
    waited = time.monotonic() - started
    log(f"settle: waited {waited:.1f}s more for late events")
    return waited


async def wait_for_events(book: Book, watchers: list[Watcher], within: float) -> None:
    """Give events in flight `within` seconds; what has not arrived then is lost."""
    deadline = time.monotonic() + within
    while True:
        missing = sum(max(0, book.expected[w.execution] - w.count) for w in watchers)
        if missing == 0:
            return
        if time.monotonic() > deadline:
            log(f"drain: {missing} deliveries still missing after {within}s")
            return
        await asyncio.sleep(0.1)


# -- the run ---------------------------------------------------------------------------------


def verdict(result: dict[str, Any]) -> dict[str, bool | None]:
    p99, lost = result.get("p99_ms"), result.get("lost_non_progress")
    return {
        "p99_ms": None if p99 is None else p99 <= TARGETS["p99_ms"],
        "lost_non_progress": None if lost is None else lost == TARGETS["lost_non_progress"],
    }


async def run(cfg: Config) -> dict[str, Any]:
    await reset_database(cfg.database_url)
    log(f"database {database_name(cfg.database_url)}: dropped and recreated")
    with procs.deployment(
        "sinal-executions",
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
            "executions": cfg.executions,
            "watchers": cfg.watchers,
            "teams": cfg.teams,
            "rate": cfg.rate,
            "duration": cfg.duration,
            "warmup": cfg.warmup,
            "batch_ms": cfg.batch_ms,
            "services": cfg.services,
            "connections": cfg.connections,
            "progress_interval_ms": cfg.progress_interval_ms
            if cfg.progress_interval_ms is not None
            else "default",
            "coalesce_ms": cfg.coalesce_ms if cfg.coalesce_ms is not None else "default",
        }
        watchers: list[Subscriber] = []
        pool = HttpPool(port, cfg.connections)
        try:
            await pool.open()
            service = mint_token(SECRET, "bench-service", ["service"], ttl_s=3600)
            ids = await create_executions(cfg, pool, port, service)
            log(f"setup: {len(ids)} executions created over {cfg.teams} teams")
            book = Book(cfg.executions, cfg.per_execution, cfg.warm)
            count = cfg.executions * cfg.watchers

            def watcher(index: int) -> Watcher:
                execution = index // cfg.watchers
                token = mint_token(SECRET, f"w{index}", teams=[team_of(cfg, execution)])
                query = f"?channel=execution:{ids[execution]}"
                return Watcher(sse_request(port, token, query), book, execution, ids[execution])

            opened_at = time.monotonic()
            watchers, failures = await open_many(
                watcher,
                count,
                port,
                concurrency=cfg.connect_concurrency,
                handshake_s=60,
                progress=lambda n: log(f"streams: {n} open"),
            )
            result["connected"] = len(watchers)
            result["connect_failures"] = failures
            result["connect_s"] = round(time.monotonic() - opened_at, 1)
            log(f"streams: {len(watchers)} open ({failures} failed) in {result['connect_s']}s")
            producer = Producer(cfg, book, pool, port, service, ids)
            watching = [w for w in watchers if isinstance(w, Watcher)]
            result.update(await load_phase(cfg, producer, watching, server.pid, redis_pid))
        finally:
            pool.close()
            for subscriber in watchers:
                subscriber.close()
    result["targets_met"] = verdict(result)
    return result


def parse_args(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.executions", description=__doc__.splitlines()[0]
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="smoke run: 20 executions x 2 watchers, 2 + 6 s")
    add("--executions", type=int, help="executions emitting at once (default 200)")
    add("--watchers", type=int, help="SSE watchers per execution (default 5)")
    add("--teams", type=int, help="teams the executions are spread over (default 20)")
    add("--rate", type=float, default=20.0, help="events per second per execution")
    add("--duration", type=float, help="measured seconds of load (default 20)")
    add("--warmup", type=float, help="seconds of load before measuring (default 5)")
    add("--drain", type=float, help="seconds to wait for events still in flight (default 5)")
    add(
        "--settle",
        type=float,
        default=60.0,
        help="when events are lost after --drain: seconds more to wait, to tell late from lost",
    )
    add("--batch-ms", type=float, default=50.0, help="producer batching interval (api.client)")
    add(
        "--max-batch",
        type=int,
        default=100,
        help="events per execution and request at most (api.client)",
    )
    add(
        "--services",
        type=int,
        default=4,
        help="execution services the executions are split among, a bulk request each per tick",
    )
    add("--connections", type=int, default=100, help="keep-alive connections for ingest")
    add("--progress-interval-ms", type=float, help="SINAL_PROGRESS_INTERVAL_MS for the server")
    procs.add_server_arguments(parser, "executions-ingest.txt")
    args = vars(parser.parse_args(argv))
    for name, value in DEFAULTS["quick" if args.pop("quick") else "full"].items():
        if args[name] is None:
            args[name] = value
    for name in ("executions", "watchers", "teams", "rate", "duration", "connections", "services"):
        if args[name] <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if not 1 <= args["max_batch"] <= 500:
        parser.error("--max-batch must be between 1 and 500 (the server's limit)")
    if min(args["warmup"], args["drain"], args["settle"], args["batch_ms"]) < 0:
        parser.error("--warmup, --drain, --settle and --batch-ms must not be negative")
    for name in ("progress_interval_ms", "coalesce_ms"):
        if args[name] is not None and args[name] < 0:
            parser.error(f"--{name.replace('_', '-')} must not be negative")
    database_name(args["database_url"])
    assert set(args) == {spec.name for spec in fields(Config)}
    return Config(**args)


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    run_benchmark(lambda: run(cfg), cfg.nofile, cfg.client_core)


if __name__ == "__main__":
    main()
