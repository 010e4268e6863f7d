"""The engine contract: a per-channel event log that also carries live events to one hub.

Two engines implement it, `memory` (the embedded default) and `redis` (Redis Streams), and one
conformance suite (`tests/streams/test_engines.py`, `test_commands.py`, `test_control.py`) runs
against both. Besides the log, each engine provides the queue of commands for the execution
service (`commands`) and a control bus.

The control bus carries small messages between the processes sharing one engine, the *nodes*:
`on_control(node_id, handler)` makes this process node `node_id` and hands it every message
sent to it or to every node; `control_send(message, to=None)` sends to every node (this one
included) or to the node `to`. It is the broadcaster shape (publish, and one subscriber per
process) rather than a request/response API, because what travels on it (questions to every
node, their answers, orders to act) is decided by the layer above; answers are messages too.

Why so little: nothing on the bus is per connection, and nothing is stored. It is live only,
at most once, like pub/sub: a node that is down or reconnecting misses what is sent meanwhile,
and the layer above, which waits for answers with a deadline, reports it as unreachable instead
of the bus replaying old orders to it. On the memory engine the one process is the one node,
and `control_send` calls its handler directly; on Redis every node's one pub/sub reader also
takes the bus (see `streams/redis.py`).
"""

from __future__ import annotations

import abc
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from streams.commands import CommandQueue
from streams.cursor import Position
from streams.event import Event, StreamId

log = logging.getLogger("sinal.engine")

ResetReason = Literal["trimmed", "epoch", "invalid"]

# Called on the event loop (in the Redis engine's reader; in `control_send` itself on memory):
# it must not block, and work that awaits belongs in a task of its own.
ControlHandler = Callable[[bytes], None]

# Printable ASCII without spaces: the Redis engine puts the address before the message.
NODE_ID = re.compile(r"[!-~]{1,128}")


@dataclass(frozen=True, slots=True)
class Retention:
    """How much history each channel's stream keeps: whichever bound bites first."""

    max_len: int = 10_000
    max_age_s: float = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Publication:
    """An event to append to its channel's log (see `Engine.publish_many`)."""

    channel: str
    type: str
    data_json: bytes


@dataclass(frozen=True, slots=True)
class Sequenced:
    """An event with its relay's sequence number (see `Engine.publish_once`)."""

    channel: str
    type: str
    data_json: bytes
    source: str
    sequence: int


class PositionLost(Exception):
    """A position cannot be honoured; `head` is where the channel continues from now."""

    def __init__(self, reason: ResetReason, head: Position) -> None:
        super().__init__(reason)
        self.reason: ResetReason = reason
        self.head = head


class Sink(Protocol):
    """Where an engine delivers live events: the process's hub."""

    def dispatch(self, events: list[Event]) -> None: ...

    def reset(self, channel: str, reason: ResetReason, head: Position) -> None: ...


class Engine(abc.ABC):
    name: str
    _control: tuple[str, ControlHandler] | None = None  # this node's id and handler
    # Counters for `/metrics` (class defaults; an engine counts on its instance).
    events_published = 0  # events appended to a log by this process
    reconnects = 0  # live connection re-established after a loss
    gaps_caught_up = 0  # channels whose missed events were read from the log after a reconnect
    gaps_while_connected = 0  # live messages found missing while connected, read from the log
    unreplicated = 0  # publish pipelines answered Unavailable: fewer replicas than asked held them

    @abc.abstractmethod
    async def connect(self, sink: Sink) -> None:
        """Start delivering live events of watched channels to `sink`."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def publish(self, channel: str, type: str, data_json: bytes) -> Event:
        """Append to the channel's log; the returned event carries its position."""

    @abc.abstractmethod
    async def publish_many(self, items: Sequence[Publication]) -> list[Event]:
        """Append each item to its channel's log, in order, in one round trip to the engine;
        the events, in the same order, with their positions.

        Items of one channel take positions in the order given; items of several channels
        may be mixed. Raises Unavailable when the engine cannot be reached or refuses; some
        items may have been published by then (the engine has no transaction across
        channels: on Redis Cluster they live on different nodes).
        """

    @abc.abstractmethod
    async def publish_once(self, items: Sequence[Sequenced]) -> list[Event | None]:
        """Publish each item unless its channel already took its sequence (or a later one)
        from its source; in order, None for a repeat.

        For relays that may repeat themselves (the notification outbox): a sequence number is
        taken at most once per channel, so an event is in the log once whatever the retries.
        Sequences from one source must reach a channel in increasing order. Raises Unavailable
        when the engine cannot be reached; some items may have been published by then.
        """

    @abc.abstractmethod
    async def head(self, channel: str) -> Position:
        """The channel's current position: live events after it are still to come."""

    @abc.abstractmethod
    async def read_after(self, channel: str, position: Position, limit: int) -> list[Event]:
        """Up to `limit` events after `position`, oldest first.

        Raises PositionLost when events after `position` are no longer held (trimmed), the
        stream's epoch changed (its data was lost), or the position was never issued (invalid).
        """

    @abc.abstractmethod
    async def watch(self, channel: str) -> None:
        """Returns once every event published from now on reaches the sink."""

    @abc.abstractmethod
    def unwatch(self, channel: str) -> None:
        """No local subscriber is left; live events of `channel` may stop."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise if the engine cannot serve (readiness)."""

    @abc.abstractmethod
    def commands(self) -> CommandQueue:
        """The queue of commands for the execution service over the `commands` channel's log;
        the same queue on every call."""

    @abc.abstractmethod
    async def control_send(self, message: bytes, to: str | None = None) -> None:
        """Send `message` on the control bus to every node, this one included, or only to the
        node `to`. Live only: nodes that are not listening now never get it. Raises
        Unavailable when the engine cannot be reached."""

    def on_control(self, node_id: str, handler: ControlHandler) -> None:
        """This process is node `node_id` on the control bus: `handler` gets every message to
        it or to every node from now on, until `close`."""
        self._control = (check_node_id(node_id), handler)

    def _control_received(self, to: str | None, message: bytes) -> None:
        """A message came in on the bus: to the handler if it is addressed to this node."""
        if self._control is None:
            return
        node_id, handler = self._control
        if to is not None and to != node_id:
            return
        try:
            handler(message)
        except Exception:
            # The handler runs in the engine's reader (or the sender's call): neither may fail
            # because of what a handler did.
            log.exception("the control handler failed on a message to %s", to or "every node")

    @property
    def live(self) -> bool:
        """Whether live events reach the sink now."""
        return True

    async def wait_live(self, timeout_s: float) -> bool:
        """Whether live events reach the sink, waiting up to `timeout_s` for their connection
        to come back when it is lost. An engine in the process is always live."""
        return True


def check_node_id(node_id: str) -> str:
    if not NODE_ID.fullmatch(node_id):
        raise ValueError(f"not a node id: {node_id[:64]!r} (1 to 128 printable ASCII, no spaces)")
    return node_id


def check_position(position: Position, epoch: str, last: StreamId, *, trimmed: bool) -> None:
    """The resume rules both engines share; raises PositionLost.

    `trimmed`: the engine found that events after `position` are no longer held.
    """
    head = Position(epoch, last)
    if position.epoch != epoch:
        raise PositionLost("epoch", head)
    if position.offset > last:
        raise PositionLost("invalid", head)
    if trimmed:
        raise PositionLost("trimmed", head)
