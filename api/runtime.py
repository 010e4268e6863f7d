"""What one running app owns: settings, engine, hub, database, authenticator, access policy,
action sockets, its part in the cluster (registry of connections, control plane), its metrics
and the in-app alerts."""

from __future__ import annotations

import functools
import os
import time
from importlib.metadata import PackageNotFoundError, version

from api.alerting import Alerting
from api.auth import Authenticator
from api.control import Control
from api.metrics import Metrics
from api.series import Series
from api.settings import Settings
from db import executions
from db.engine import Database, bind, create_engine
from db.inbox import Inbox
from db.outbox import Relay
from db.retention import Purge
from db.tracking import Tracker
from streams.access import ChannelPolicy, DefaultPolicy
from streams.admission import Admission, Limits
from streams.cluster import Cluster, Info, new_node_id
from streams.commands import CommandQueue
from streams.engine import Engine, Retention
from streams.hub import Hub
from streams.memory import MemoryEngine
from streams.metrics import StreamMetrics
from streams.redis import RedisEngine
from streams.registry import Registry
from streams.sockets import ActionSockets

try:
    VERSION = version("sinal")
except PackageNotFoundError:  # run from a checkout that was never installed
    VERSION = "0.0.0"


class Runtime:
    # A plain class, not a dataclass: Litestar validates dataclass dependencies field by field,
    # and msgspec cannot check a union of two engine classes.
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        hub: Hub,
        auth: Authenticator,
        database: Database,
        relay: Relay,
        inbox: Inbox,
        purge: Purge,
        tracker: Tracker,
        commands: CommandQueue,
        policy: ChannelPolicy | None = None,
        actions: ActionSockets | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.hub = hub
        self.auth = auth
        self.database = database
        self.relay = relay
        self.inbox = inbox
        self.purge = purge
        self.tracker = tracker
        self.commands = commands
        self.policy = policy or DefaultPolicy(functools.partial(executions.team_of, database))
        # The open `/v1/actions` sockets and their per-user message budget.
        self.actions = actions or ActionSockets(settings.actions_rate, settings.actions_burst)
        defaults = Limits(actions_rate=settings.actions_rate, actions_burst=settings.actions_burst)
        self.admission = Admission(defaults, max_handshakes=settings.max_handshakes)
        info = Info(
            id=new_node_id(),
            name=settings.node_name or f"{settings.host}:{settings.port}",
            pid=os.getpid(),
            version=VERSION,
            started_at=time.time(),
        )
        self.cluster = Cluster(
            engine,
            info,
            heartbeat_s=settings.node_heartbeat_s,
            survey_timeout_s=settings.survey_timeout_s,
        )
        self.registry = Registry(info.id)
        self.metrics = Metrics(self)
        # This process's figures second by second, for the admin dashboard.
        self.series = Series(self.metrics.snapshot)
        self.control = Control(
            engine=engine,
            hub=hub,
            database=database,
            cluster=self.cluster,
            registry=self.registry,
            auth=auth,
            admission=self.admission,
            actions=self.actions,
            defaults=defaults,
            series=self.series,
        )
        self.alerting = Alerting(self)

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        retention = Retention(settings.stream_max_len, settings.stream_max_age_s)
        engine: Engine = (
            RedisEngine(
                settings.redis_url,
                retention,
                wait_replicas=settings.redis_wait_replicas,
                wait_timeout_s=settings.redis_wait_ms / 1000,
            )
            if settings.redis_url
            else MemoryEngine(retention)
        )
        hub = Hub(
            engine,
            metrics=StreamMetrics(enabled=settings.metrics, sample=settings.metrics_sample),
            buffer_size=settings.buffer_size,
            heartbeat_s=settings.heartbeat_s,
            coalesce_s=settings.coalesce_ms / 1000,
        )
        database = create_engine(settings.database_url)
        bind(database)  # one app per process: Sinal's tables run on this database
        relay = Relay(database, engine)
        inbox = Inbox(database, relay, max_event_bytes=settings.max_payload_bytes)
        return cls(
            settings,
            engine,
            hub,
            Authenticator(settings),
            database,
            relay,
            inbox,
            Purge(
                database,
                keep_days=settings.notification_retention_days,
                audit_keep_days=settings.audit_retention_days,
                interval_s=settings.purge_interval_s,
            ),
            Tracker(
                database,
                relay,
                inbox,
                max_event_bytes=settings.max_payload_bytes,
                progress_interval_s=settings.progress_interval_ms / 1000,
            ),
            engine.commands(),
        )
