"""What one running app owns: settings, engine, hub, database, authenticator, access policy."""

from __future__ import annotations

from api.auth import Authenticator
from api.settings import Settings
from db.engine import Database, bind, create_engine
from db.inbox import Inbox
from db.outbox import Relay
from db.retention import Purge
from streams.access import ChannelPolicy, DefaultPolicy
from streams.engine import Engine, Retention
from streams.hub import Hub
from streams.memory import MemoryEngine
from streams.redis import RedisEngine


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
        policy: ChannelPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.hub = hub
        self.auth = auth
        self.database = database
        self.relay = relay
        self.inbox = inbox
        self.purge = purge
        self.policy = policy or DefaultPolicy()

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        retention = Retention(settings.stream_max_len, settings.stream_max_age_s)
        engine: Engine = (
            RedisEngine(settings.redis_url, retention)
            if settings.redis_url
            else MemoryEngine(retention)
        )
        hub = Hub(
            engine,
            buffer_size=settings.buffer_size,
            heartbeat_s=settings.heartbeat_s,
            coalesce_s=settings.coalesce_ms / 1000,
        )
        database = create_engine(settings.database_url)
        bind(database)  # one app per process: Sinal's tables run on this database
        relay = Relay(database, engine)
        return cls(
            settings,
            engine,
            hub,
            Authenticator(settings),
            database,
            relay,
            Inbox(database, relay, max_event_bytes=settings.max_payload_bytes),
            Purge(
                keep_days=settings.notification_retention_days,
                interval_s=settings.purge_interval_s,
            ),
        )
