"""Channel names: what exists, and how a subscriber's request is normalized.

| channel                | subscribers                                   |
| ---------------------- | --------------------------------------------- |
| `notifications:<user>` | that user (plain `notifications` means "mine") |
| `broadcast`            | every authenticated user, always included      |
| `execution:<id>`       | decided by the access policy                   |
| `admin`                | administrators: every node's live counters     |
"""

from __future__ import annotations

import re

from streams.errors import BadRequest

IDENTIFIER = r"[A-Za-z0-9_@.\-]{1,128}"
CHANNEL = rf"broadcast|notifications:{IDENTIFIER}|execution:{IDENTIFIER}"
_CHANNEL = re.compile(CHANNEL)
_IDENTIFIER = re.compile(IDENTIFIER)

BROADCAST = "broadcast"
# The nodes' live counters for the admin page (api/control.py). Only Sinal publishes on it, so it
# is not a channel of `_CHANNEL` (publishing names those); streams may ask for it.
ADMIN = "admin"
# Internal: the command queue's log (streams/commands.py). Deliberately not matched by
# `_CHANNEL`, so nobody can subscribe to it or publish to it through the API.
COMMANDS = "commands"


def is_valid_channel(name: str) -> bool:
    return _CHANNEL.fullmatch(name) is not None


def is_valid_identifier(name: str) -> bool:
    return _IDENTIFIER.fullmatch(name) is not None


def notifications_of(user: str) -> str:
    return f"notifications:{user}"


def execution_channel(id: str) -> str:
    return f"execution:{id}"


def execution_of(channel: str) -> str | None:
    """The execution id of an `execution:<id>` channel, else None."""
    prefix, _, id = channel.partition(":")
    return id if prefix == "execution" and id else None


def require_channel(name: str, field: str = "channel") -> str:
    if not is_valid_channel(name):
        raise BadRequest(
            f"unknown channel {name[:140]!r}: expected 'broadcast', 'notifications:<user>' "
            "or 'execution:<id>'",
            field=field,
        )
    return name


def subscription_channels(user: str, requested: list[str], limit: int) -> list[str]:
    """The channels one stream carries: the user's notifications, `broadcast`, then the rest.

    Plain `notifications` is the user's own; duplicates collapse; order is stable.
    """
    if len(requested) > limit:
        raise BadRequest(f"at most {limit} channels per stream", field="channel")
    own = notifications_of(user)
    channels = [own, BROADCAST]
    for name in requested:
        if name == "notifications":
            name = own
        elif name != ADMIN:
            name = require_channel(name)
        if name not in channels:
            channels.append(name)
    return channels
