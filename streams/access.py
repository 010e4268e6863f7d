"""Who may subscribe to what: one pluggable check, so later features can widen it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from streams.channels import BROADCAST, notifications_of, subscription_channels
from streams.errors import Forbidden


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller, as its token describes it."""

    sub: str
    roles: frozenset[str] = field(default_factory=frozenset)
    teams: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def is_service(self) -> bool:
        return "service" in self.roles


class ChannelPolicy(Protocol):
    async def can_subscribe(self, principal: Principal, channel: str) -> bool: ...


class DefaultPolicy:
    """Own notifications and `broadcast` for everyone; executions for admins and services.

    Team members' access to `execution:<id>` needs the executions store and is added there.
    """

    async def can_subscribe(self, principal: Principal, channel: str) -> bool:
        if channel == BROADCAST or channel == notifications_of(principal.sub):
            return True
        if channel.startswith("execution:"):
            return principal.is_admin or principal.is_service
        return False


async def authorized_channels(
    policy: ChannelPolicy, principal: Principal, requested: list[str], limit: int
) -> list[str]:
    """The channels a stream or long-poll carries for `principal`; Forbidden names the first
    one the policy refuses."""
    channels = subscription_channels(principal.sub, requested, limit)
    for channel in channels:
        if not await policy.can_subscribe(principal, channel):
            raise Forbidden(f"not allowed to subscribe to {channel!r}", field="channel")
    return channels
