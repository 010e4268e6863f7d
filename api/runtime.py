"""What one running app owns: settings, engine, hub, authenticator and access policy."""

from __future__ import annotations

from dataclasses import dataclass, field

from api.auth import Authenticator
from api.settings import Settings
from streams.access import ChannelPolicy, DefaultPolicy
from streams.engine import Engine, Retention
from streams.hub import Hub
from streams.memory import MemoryEngine
from streams.redis import RedisEngine


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    hub: Hub
    auth: Authenticator
    policy: ChannelPolicy = field(default_factory=DefaultPolicy)

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
        return cls(settings, engine, hub, Authenticator(settings))
