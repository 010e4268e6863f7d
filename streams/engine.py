"""The engine contract: a per-channel event log that also carries live events to one hub.

Two engines implement it, `memory` (the embedded default) and `redis` (Redis Streams), and one
conformance suite (`tests/streams/test_engines.py`) runs against both.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from streams.commands import CommandQueue
from streams.cursor import Position
from streams.event import Event, StreamId

ResetReason = Literal["trimmed", "epoch", "invalid"]


@dataclass(frozen=True, slots=True)
class Retention:
    """How much history each channel's stream keeps: whichever bound bites first."""

    max_len: int = 10_000
    max_age_s: float = 24 * 3600.0


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

    @abc.abstractmethod
    async def connect(self, sink: Sink) -> None:
        """Start delivering live events of watched channels to `sink`."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def publish(self, channel: str, type: str, data_json: bytes) -> Event:
        """Append to the channel's log; the returned event carries its position."""

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

    async def wait_live(self, timeout_s: float) -> bool:
        """Whether live events reach the sink, waiting up to `timeout_s` for their connection
        to come back when it is lost. An engine in the process is always live."""
        return True


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
