"""The connections of this process: who is connected, how, and a way to end each one.

Every SSE stream, long-poll in progress and action WebSocket is registered here while it is
open, with an id that names its node (`<node>-<n>`), so an operator's order to end it can be
sent to the one process that holds it. Nothing here is written anywhere else: a connection
costs one small record and two dictionary entries in its own process, and the cluster-wide
view is gathered by asking every node (`streams/cluster.py`) only when an operator looks.

What a record shows that changes while it is open (events delivered, the cursor, the buffer)
is read from the connection itself, through its `Handle`, at the moment it is listed: the
delivery path does not update the registry.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import itertools
import json
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, get_args

from streams.access import Principal
from streams.disconnect import DisconnectReason
from streams.errors import BadRequest

Transport = Literal["sse", "longpoll", "ws"]
TRANSPORTS: tuple[Transport, ...] = get_args(Transport)
MAX_LIST = 500
MAX_USER_AGENT = 256


class Handle(Protocol):
    """What the registry needs of a connection: its live figures, and a way to end it."""

    def disconnect(self, reason: DisconnectReason, retry_after: float | None = None) -> None:
        """End soon, telling the client `reason` where its transport can."""

    def figures(self) -> tuple[int, str | None, int]:
        """Events (SSE, long-poll) or replies (WebSocket) sent so far; the cursor the client
        would resume from now (None: the transport has none); items waiting to be written."""

    def ended_by(self) -> str | None:
        """Why the server ended the connection (a disconnect reason, or `slow`); None while it
        is open or when the client left."""


class Connection:
    """One open connection's record."""

    __slots__ = (
        "channels",
        "connected_at",
        "handle",
        "node",
        "number",
        "principal",
        "remote",
        "transport",
        "user_agent",
    )

    def __init__(
        self,
        node: str,
        number: int,
        principal: Principal,
        transport: Transport,
        channels: list[str],
        handle: Handle,
        remote: str | None,
        user_agent: str | None,
    ) -> None:
        self.node = node
        self.number = number
        self.principal = principal
        self.transport = transport
        self.channels = channels
        self.handle = handle
        self.remote = remote
        self.user_agent = None if user_agent is None else user_agent[:MAX_USER_AGENT]
        self.connected_at = time.time()

    @property
    def id(self) -> str:
        """`<node>-<n>`: the node that holds it can be told from the id alone."""
        return f"{self.node}-{self.number}"

    @property
    def user(self) -> str:
        return self.principal.sub

    def key(self) -> tuple[str, str]:
        """The listing order: by user, then by id (so a user's devices are together)."""
        return (self.principal.sub, self.id)

    def view(self) -> dict[str, Any]:
        delivered, cursor, buffered = self.handle.figures()
        return {
            "id": self.id,
            "node": self.node,
            "user": self.principal.sub,
            "roles": sorted(self.principal.roles),
            "transport": self.transport,
            "channels": list(self.channels),
            "connected_at": iso(self.connected_at),
            "remote": self.remote,
            "user_agent": self.user_agent,
            "delivered": delivered,
            "cursor": cursor,
            "buffered": buffered,
        }


@dataclass(frozen=True, slots=True)
class Filter:
    """Which connections a listing asks for; every field that is set must match."""

    user: str | None = None  # exactly this user
    prefix: str | None = None  # users whose id starts with this
    channel: str | None = None
    transport: Transport | None = None
    after: tuple[str, str] | None = None  # keyset: only connections past this key

    def matches(self, connection: Connection) -> bool:
        user = connection.principal.sub
        return (
            (self.user is None or user == self.user)
            and (self.prefix is None or user.startswith(self.prefix))
            and (self.transport is None or connection.transport == self.transport)
            and (self.channel is None or self.channel in connection.channels)
            and (self.after is None or connection.key() > self.after)
        )


class Registry:
    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._numbers = itertools.count(1)
        # By number, and by user (a list: most users hold one or two connections, and an idle
        # connection's every byte counts; docs/benchmarks.md).
        self._by_number: dict[int, Connection] = {}
        self._by_user: dict[str, list[Connection]] = {}
        self._counts: dict[Transport, int] = dict.fromkeys(TRANSPORTS, 0)
        # For `/metrics`: opened by transport, closed by transport and reason.
        self.opened_total: Counter[str] = Counter()
        self.closed_total: Counter[tuple[str, str]] = Counter()

    def __len__(self) -> int:
        return len(self._by_number)

    def counts(self) -> dict[str, int]:
        """Open connections by transport."""
        return {transport: count for transport, count in self._counts.items()}

    def add(
        self,
        principal: Principal,
        transport: Transport,
        channels: list[str],
        handle: Handle,
        *,
        remote: str | None = None,
        user_agent: str | None = None,
    ) -> Connection:
        """Register a connection until `remove`. (SSE streams call these two directly: a
        context manager's generator would be held by every idle stream.)"""
        connection = Connection(
            self.node_id,
            next(self._numbers),
            principal,
            transport,
            channels,
            handle,
            remote,
            user_agent,
        )
        self._by_number[connection.number] = connection
        self._by_user.setdefault(principal.sub, []).append(connection)
        self._counts[transport] += 1
        self.opened_total[transport] += 1
        return connection

    def remove(self, connection: Connection) -> None:
        """Forget a connection that ended; counted by why (`Handle.ended_by`)."""
        self.closed_total[connection.transport, connection.handle.ended_by() or "disconnect"] += 1
        del self._by_number[connection.number]
        mine = self._by_user[connection.principal.sub]
        mine.remove(connection)
        if not mine:
            del self._by_user[connection.principal.sub]
        self._counts[connection.transport] -= 1

    @contextmanager
    def opened(
        self,
        principal: Principal,
        transport: Transport,
        channels: list[str],
        handle: Handle,
        *,
        remote: str | None = None,
        user_agent: str | None = None,
    ) -> Iterator[Connection]:
        """Register a connection while the block runs."""
        connection = self.add(
            principal, transport, channels, handle, remote=remote, user_agent=user_agent
        )
        try:
            yield connection
        finally:
            self.remove(connection)

    def get(self, id: str) -> Connection | None:
        """The connection of this node with `id`, if it is open."""
        node, _, number = id.rpartition("-")
        if node != self.node_id or not number.isdigit():
            return None
        return self._by_number.get(int(number))

    def of_user(self, user: str, transport: Transport | None = None) -> list[Connection]:
        connections = self._by_user.get(user, ())
        return [c for c in connections if transport is None or c.transport == transport]

    def count_of(self, user: str, transport: Transport) -> int:
        return sum(1 for c in self._by_user.get(user, ()) if c.transport == transport)

    def find(self, where: Filter, limit: int) -> tuple[list[Connection], bool]:
        """Up to `limit` matching connections in listing order, and whether more match."""
        if where.user is not None:
            pool: Iterable[Connection] = self._by_user.get(where.user, ())
        else:
            pool = self._by_number.values()
        # The smallest `limit + 1`, not a sort of every match: paging through many thousands
        # of connections a page at a time stays linear per page.
        found = heapq.nsmallest(
            limit + 1, (c for c in pool if where.matches(c)), key=Connection.key
        )
        return found[:limit], len(found) > limit

    def disconnect(self, id: str, reason: DisconnectReason) -> bool:
        connection = self.get(id)
        if connection is None:
            return False
        connection.handle.disconnect(reason)
        return True

    def disconnect_user(self, user: str, reason: DisconnectReason) -> int:
        connections = list(self._by_user.get(user, ()))
        for connection in connections:
            connection.handle.disconnect(reason)
        return len(connections)


def iso(seconds: float) -> str:
    """Seconds since the epoch as the API writes times: ISO 8601 in UTC, milliseconds, `Z`."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def encode_key(key: tuple[str, str]) -> str:
    """A listing cursor: the key of the last connection of a page."""
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def decode_key(text: str, field: str = "cursor") -> tuple[str, str]:
    try:
        value = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        value = None
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(part, str) for part in value)
    ):
        raise BadRequest("not a cursor of this listing: pass next_cursor as given", field=field)
    return value[0], value[1]
