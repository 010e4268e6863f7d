"""Who may subscribe to what: one pluggable check, so later features can widen it."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from streams.channels import ADMIN, BROADCAST, execution_of, notifications_of, subscription_channels
from streams.errors import Forbidden


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller, as its token describes it.

    `expires_at` is when the credential behind it expires (seconds since the epoch; for a
    ticket, the token it was minted from): connections it opens end then (streams/disconnect.py).
    `issued_at` is when its token was issued (`iat`; for a ticket, its token's), which a
    revocation of the user's tokens compares with (api/auth.py).
    """

    sub: str
    roles: frozenset[str] = field(default_factory=frozenset)
    teams: frozenset[str] = field(default_factory=frozenset)
    expires_at: float | None = field(default=None, compare=False)
    issued_at: float | None = field(default=None, compare=False)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def is_service(self) -> bool:
        return "service" in self.roles


class ChannelPolicy(Protocol):
    async def can_subscribe(self, principal: Principal, channel: str) -> bool: ...


TeamOf = Callable[[str], Awaitable[str | None]]


class DefaultPolicy:
    """Own notifications and `broadcast` for everyone; `admin` (live counters) for admins;
    `execution:<id>` for admins, services, and the members of the execution's team (the JWT
    `teams` claim).

    `team_of(id)` finds an execution's team (None: no such execution). An execution never
    changes team, so answers are cached. A caller outside the team is refused whether or not
    the execution exists: the answer must not tell.
    """

    CACHE_SIZE = 100_000

    def __init__(self, team_of: TeamOf | None = None) -> None:
        self._team_of = team_of
        self._teams: OrderedDict[str, str] = OrderedDict()

    async def can_subscribe(self, principal: Principal, channel: str) -> bool:
        if channel == BROADCAST or channel == notifications_of(principal.sub):
            return True
        if channel == ADMIN:
            return principal.is_admin
        execution = execution_of(channel)
        if execution is None:
            return False
        if principal.is_admin or principal.is_service:
            return True
        team = await self.team(execution)
        return team is not None and team in principal.teams

    async def team(self, execution: str) -> str | None:
        team = self._teams.get(execution)
        if team is not None:
            self._teams.move_to_end(execution)
            return team
        if self._team_of is None:
            return None
        team = await self._team_of(execution)
        if team is not None:  # an unknown id is not cached: it may be created later
            self._teams[execution] = team
            if len(self._teams) > self.CACHE_SIZE:
                self._teams.popitem(last=False)
        return team


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
