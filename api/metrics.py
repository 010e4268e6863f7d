"""`GET /metrics`: this process's figures in Prometheus's text format (docs/monitoring.md).

Nothing here is on the data path. The hot path keeps plain counters where its work happens (the
hub, the stream sessions, the registry, the engine, the action sockets); a collector reads them
when Prometheus scrapes, so a scrape costs the same whatever the number of connections. What
needs the database or Redis (the outbox and command backlogs) is read by a probe every few
seconds, never by a scrape.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import resource
import time
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Request, get
from litestar.response import Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.registry import Collector

from db import outbox
from db.engine import DATABASE_ERRORS, database_errors, note_database_error, pool_figures
from streams.errors import NotFound, SinalError, Unauthorized
from streams.metrics import Histogram
from streams.tasks import cancel_and_wait

if TYPE_CHECKING:
    from api.runtime import Runtime

log = logging.getLogger("sinal.metrics")

# REST request durations: a cached read to a slow database write.
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# The text format `generate_latest` writes, which every Prometheus version reads (Litestar adds
# the charset).
CONTENT_TYPE = "text/plain; version=0.0.4"
# How often the backlogs are read from the database and the engine.
PROBE_INTERVAL_S = 5.0


class HttpMetrics:
    """REST requests by route template, method and status; durations by route and method."""

    __slots__ = ("durations", "requests")

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, str]] = Counter()
        self.durations: dict[tuple[str, str], Histogram] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests[route, method, str(status)] += 1
        histogram = self.durations.get((route, method))
        if histogram is None:
            histogram = self.durations[route, method] = Histogram(HTTP_BUCKETS)
        histogram.observe(seconds)


class Backlogs:
    """The outbox's and the command queue's backlogs, as last read by the probe."""

    __slots__ = ("commands", "commands_oldest", "outbox", "outbox_oldest", "read_at")

    def __init__(self) -> None:
        self.outbox = 0
        self.outbox_oldest: float | None = None  # epoch seconds
        self.commands = 0
        self.commands_oldest: float | None = None
        self.read_at: float | None = None


class Snapshot(msgspec.Struct, frozen=True):
    """One process's figures at one moment (`Metrics.snapshot`); counters are cumulative since
    the process started, so rates come from the difference of two."""

    at: float  # epoch seconds
    connections: dict[str, int]  # open now, by transport
    handshakes: int  # stream and action-socket handshakes, accepted or refused
    resets: dict[str, int]  # reset events sent, by reason
    events_in: int  # events the engine brought live
    events_published: int
    deliveries: int
    slow_closes: int
    lag_buckets: list[int]  # delivery lag samples per bucket of streams.metrics.LAG_BUCKETS
    http_requests: int
    http_errors: int  # 5xx answers
    db_errors: int
    engine_up: bool
    outbox_pending: int
    outbox_oldest_age_s: float
    commands_pending: int
    commands_oldest_age_s: float


class Metrics:
    """This process's metrics: what the API layer counts itself, the probe, and the registry
    that `/metrics` renders."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.enabled = runtime.settings.metrics
        self.http = HttpMetrics()
        self.backlogs = Backlogs()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SinalCollector(runtime, self))
        self.process = ProcessFigures()
        self.registry.register(self.process)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._probe: asyncio.Task[None] | None = None

    def observe_http(self, route: str, method: str, status: int, seconds: float) -> None:
        if self.enabled:
            self.http.observe(route, method, status, seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def snapshot(self) -> Snapshot:
        """This process's figures now, cumulative counters included: two snapshots a moment
        apart give rates (the admin dashboard's series, the in-app alerts)."""
        runtime = self.runtime
        hub, stream, engine = runtime.hub, runtime.hub.metrics, runtime.engine
        now = time.time()
        backlogs = self.backlogs
        return Snapshot(
            at=now,
            connections=runtime.registry.counts(),
            handshakes=sum(stream.handshakes.values()),
            resets=dict(stream.resets),
            events_in=hub.stats.events_in,
            events_published=engine.events_published,
            deliveries=hub.stats.deliveries,
            slow_closes=hub.stats.slow_consumer_closes,
            lag_buckets=list(stream.lag.counts),
            http_requests=sum(self.http.requests.values()),
            http_errors=sum(n for (_, _, status), n in self.http.requests.items() if status >= "5"),
            db_errors=database_errors(),
            engine_up=engine.live,
            outbox_pending=backlogs.outbox,
            outbox_oldest_age_s=_age(backlogs.outbox_oldest, now),
            commands_pending=backlogs.commands,
            commands_oldest_age_s=_age(backlogs.commands_oldest, now),
        )

    # -- the probe ---------------------------------------------------------------------------

    def start(self) -> None:
        self._probe = asyncio.create_task(self._run(), name="sinal-metrics-probe")

    async def stop(self) -> None:
        if self._probe is not None:
            await cancel_and_wait(self._probe)
            self._probe = None

    async def _run(self) -> None:
        while True:
            await self.probe()
            await asyncio.sleep(PROBE_INTERVAL_S)

    async def probe(self) -> None:
        """Read the backlogs; a figure that cannot be read keeps its last value (the engine
        and database metrics say why)."""
        backlogs = self.backlogs
        try:
            backlogs.outbox, backlogs.outbox_oldest = await outbox.backlog(self.runtime.database)
        except DATABASE_ERRORS as error:
            note_database_error()
            log.debug("outbox backlog not read: %s", error)
        try:
            backlogs.commands, backlogs.commands_oldest = await self.runtime.commands.backlog()
        except SinalError as error:
            log.debug("command backlog not read: %s", error.detail)
        backlogs.read_at = time.time()
        self.process.open_fds = await asyncio.to_thread(count_open_fds)


class ProcessFigures(Collector):
    """The standard process metrics of prometheus-client's `ProcessCollector`, under the same
    names, except that the open descriptors are counted by the probe (in a thread), not by every
    scrape: listing /proc/self/fd of a node holding 10,000 connections took 8 ms of the event
    loop per scrape. Linux only, as the original."""

    def __init__(self) -> None:
        self.open_fds: int | None = None
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._boot = _boot_time()

    def collect(self) -> Iterable[Metric]:
        try:
            with open("/proc/self/stat", "rb") as stat:
                # Fields after the command's name (which may hold spaces) from the 3rd on.
                fields = stat.read().rsplit(b")", 1)[-1].split()
        except OSError:
            fields = []
        if len(fields) > 21 and self._boot is not None:
            yield _gauge(
                "process_virtual_memory_bytes", "Virtual memory size in bytes.", float(fields[20])
            )
            yield _gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                float(fields[21]) * self._page,
            )
            yield _gauge(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                float(fields[19]) / self._ticks + self._boot,
            )
            yield _counter(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                (float(fields[11]) + float(fields[12])) / self._ticks,
            )
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        yield _gauge("process_max_fds", "Maximum number of open file descriptors.", soft)
        if self.open_fds is not None:
            yield _gauge("process_open_fds", "Number of open file descriptors.", self.open_fds)


def _boot_time() -> float | None:
    try:
        with open("/proc/stat", "rb") as stat:
            for line in stat:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def count_open_fds() -> int | None:
    """The process's open descriptors. Linux 6.2 and later give their number as the size of
    /proc/self/fd: a few microseconds, where listing 10,000 names took 8 ms (in a thread, but
    holding the interpreter for most of it, a stall of the event loop each probe)."""
    try:
        count = os.stat("/proc/self/fd").st_size
        return count if count > 0 else len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


class SinalCollector(Collector):
    """Reads the counters at scrape time; labels are bounded (never a user, an id or a path)."""

    def __init__(self, runtime: Runtime, metrics: Metrics) -> None:
        self.runtime = runtime
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        runtime = self.runtime
        hub, registry, engine = runtime.hub, runtime.registry, runtime.engine
        stream = hub.metrics
        now = time.time()

        info = GaugeMetricFamily(
            "sinal_build_info", "Version and engine of this process.", labels=["version", "engine"]
        )
        info.add_metric([runtime.cluster.info.version, engine.name], 1)
        yield info

        yield _by(
            GaugeMetricFamily,
            "sinal_connections",
            "Connections open now.",
            ["transport"],
            registry.counts(),
        )
        yield _by(
            CounterMetricFamily,
            "sinal_connections_opened",
            "Connections opened.",
            ["transport"],
            registry.opened_total,
        )
        yield _by(
            CounterMetricFamily,
            "sinal_connections_closed",
            "Connections closed, by why.",
            ["transport", "reason"],
            registry.closed_total,
        )
        yield _by(
            CounterMetricFamily,
            "sinal_handshakes",
            "Stream and action-socket handshakes.",
            ["transport", "result"],
            stream.handshakes,
        )
        yield _gauge(
            "sinal_handshakes_in_progress",
            "Handshakes admitted whose response has not started (bounded by SINAL_MAX_HANDSHAKES).",
            runtime.admission.in_progress,
        )
        yield _counter(
            "sinal_handshakes_queued",
            "Handshakes that waited for a place past SINAL_MAX_HANDSHAKES.",
            runtime.admission.queued_total,
        )
        yield _histograms(
            "sinal_handshake_duration_seconds",
            "Request received to stream ready.",
            ["transport"],
            {(transport,): h for transport, h in stream.handshake_seconds.items()},
        )
        yield _by(
            CounterMetricFamily,
            "sinal_resumes",
            "Stream starts: without a cursor, resumed from one, or reset.",
            ["outcome"],
            stream.resumes,
        )
        yield _by(
            CounterMetricFamily,
            "sinal_resets",
            "Reset events sent to clients, one per channel.",
            ["reason"],
            stream.resets,
        )
        yield _counter(
            "sinal_events_published",
            "Events this process published to the engine.",
            engine.events_published,
        )
        yield _counter(
            "sinal_events_received",
            "Events the engine brought to this process live.",
            hub.stats.events_in,
        )
        yield _counter(
            "sinal_deliveries",
            "Events handed to connections (one per connection).",
            hub.stats.deliveries,
        )
        yield _histograms(
            "sinal_delivery_lag_seconds",
            "Publish to written to the socket (sampled).",
            [],
            {(): stream.lag},
        )
        yield _counter(
            "sinal_replayed_events", "Events sent from the log on resume.", stream.replayed
        )
        yield _counter(
            "sinal_replay_reads",
            "Reads of the log sent to the engine for resumes.",
            hub.reads.reads,
        )
        yield _counter(
            "sinal_replay_reads_saved",
            "Resume reads answered by another resume's read of the same channel.",
            hub.reads.saved,
        )
        yield _counter(
            "sinal_slow_consumer_closes",
            "Connections closed for falling a buffer behind.",
            hub.stats.slow_consumer_closes,
        )
        yield _gauge("sinal_engine_up", "1 while the engine's live connection is up.", engine.live)
        yield _counter(
            "sinal_engine_reconnects", "Live connection re-established.", engine.reconnects
        )
        yield _counter(
            "sinal_live_gaps",
            "Channels caught up from the log after the live connection was lost.",
            engine.gaps_caught_up,
        )
        yield _counter(
            "sinal_live_gaps_while_connected",
            "Live messages found missing while the live connection stayed up, then caught up.",
            engine.gaps_while_connected,
        )
        yield _counter(
            "sinal_publish_unreplicated",
            "Publish pipelines refused because fewer replicas than SINAL_REDIS_WAIT_REPLICAS "
            "acknowledged them in time.",
            engine.unreplicated,
        )

        backlogs = self.metrics.backlogs
        yield _gauge("sinal_outbox_pending", "Outbox rows not yet published.", backlogs.outbox)
        yield _gauge(
            "sinal_outbox_oldest_age_seconds",
            "Age of the oldest pending outbox row (0 when none).",
            _age(backlogs.outbox_oldest, now),
        )
        yield _gauge(
            "sinal_commands_pending",
            "Commands not acknowledged (delivered or not yet).",
            backlogs.commands,
        )
        yield _gauge(
            "sinal_commands_oldest_age_seconds",
            "Age of the oldest unacknowledged command (0 when none).",
            _age(backlogs.commands_oldest, now),
        )
        yield _counter(
            "sinal_commands_redelivered",
            "Commands handed out again after their lease expired.",
            runtime.commands.redelivered,
        )
        yield _by(
            CounterMetricFamily,
            "sinal_action_messages",
            "Action WebSocket messages, by op and result.",
            ["op", "result"],
            runtime.actions.messages,
        )

        http = self.metrics.http
        yield _by(
            CounterMetricFamily,
            "sinal_http_requests",
            "REST requests.",
            ["route", "method", "status"],
            http.requests,
        )
        yield _histograms(
            "sinal_http_request_duration_seconds",
            "REST request duration.",
            ["route", "method"],
            http.durations,
        )

        in_use, size = pool_figures(runtime.database)
        yield _gauge("sinal_db_pool_in_use", "Database connections in use.", in_use)
        yield _gauge("sinal_db_pool_size", "The database pool's maximum size.", size)
        yield _counter("sinal_db_errors", "Database operations that failed.", database_errors())

        alerts = GaugeMetricFamily(
            "sinal_alerts_firing",
            "In-app alerts firing (1) or not (0), on the node that evaluates them.",
            labels=["alertname"],
        )
        for name, firing in sorted((runtime.alerting.firing_states() or {}).items()):
            alerts.add_metric([name], firing)
        yield alerts


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float(value))


def _by(
    family: type[CounterMetricFamily] | type[GaugeMetricFamily],
    name: str,
    documentation: str,
    labels: list[str],
    values: dict[Any, int],
) -> Metric:
    metric = family(name, documentation, labels=labels)
    for key, value in sorted(values.items()):
        metric.add_metric(list(key) if isinstance(key, tuple) else [key], value)
    return metric


def _histograms(
    name: str, documentation: str, labels: list[str], histograms: dict[Any, Histogram]
) -> HistogramMetricFamily:
    metric = HistogramMetricFamily(name, documentation, labels=labels)
    for key, histogram in sorted(histograms.items()):
        metric.add_metric(list(key), histogram.cumulative(), sum_value=histogram.total)
    return metric


def _age(since: float | None, now: float) -> float:
    return 0.0 if since is None else max(0.0, now - since)


# -- the route -------------------------------------------------------------------------------


@get(
    "/metrics",
    summary="Prometheus metrics of this process",
    tags=["ops"],
    include_in_schema=False,
    sync_to_thread=False,
)
def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    runtime: Runtime = request.app.state.sinal
    settings = runtime.settings
    if not settings.metrics:
        raise NotFound("metrics are off on this server (SINAL_METRICS=off)")
    if settings.metrics_token is not None:
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), settings.metrics_token.encode()
        ):
            raise Unauthorized("send SINAL_METRICS_TOKEN as a bearer token")
    return Response(runtime.metrics.render(), media_type=CONTENT_TYPE)
