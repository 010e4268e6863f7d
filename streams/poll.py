"""Long-poll: the events after a cursor, or the first ones to arrive within a wait.

The same cursor as the SSE stream, so a client can switch between the two without loss: a reply
carries each event with its `id` (the cursor after it) and `next_cursor`, the cursor after the
whole reply. Positions that cannot be honoured come back as `resets`, as in the stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streams.cursor import Position, encode_cursor
from streams.engine import PositionLost, ResetReason
from streams.event import Event, encode_segment
from streams.frames import StreamReset
from streams.hub import Hub, Reset, Subscriber


@dataclass
class PollReply:
    events: list[dict[str, Any]] = field(default_factory=list)
    resets: list[StreamReset] = field(default_factory=list)
    next_cursor: str = ""


class _Positions:
    """A connection's position in each of its channels, and the cursor they make."""

    def __init__(self, channels: list[str]) -> None:
        self.index = {channel: i for i, channel in enumerate(channels)}
        self.positions: dict[str, Position] = {}
        self.segments = [""] * len(channels)

    def move(self, channel: str, position: Position) -> None:
        self.positions[channel] = position
        self.segments[self.index[channel]] = encode_segment(
            channel, position.epoch, position.offset
        )

    def is_new(self, event: Event) -> bool:
        known = self.positions[event.channel]
        return event.epoch != known.epoch or event.offset > known.offset

    @property
    def cursor(self) -> str:
        return encode_cursor(self.segments)


async def poll(
    hub: Hub,
    channels: list[str],
    resume: dict[str, Position] | None,
    *,
    wait_s: float,
    limit: int = 500,
    subscribed: Callable[[Subscriber], None] | None = None,
) -> PollReply:
    """Events after `resume` (at most `limit`), waiting up to `wait_s` for one when none are due.

    Without `resume` the reply is the current position of every channel, at once. `subscribed`
    is handed the subscriber once it is open: closing it ends the wait early (shutdown, an
    administrator's disconnect), with what there is.
    """
    engine = hub.engine
    positions = _Positions(channels)
    reply = PollReply()
    resets: dict[ResetReason, list[str]] = {}
    async with hub.subscription(channels) as subscriber:
        if subscribed is not None:
            subscribed(subscriber)
        # Every position first: each event's id is the cursor over all channels after it.
        replay: list[Event] = []
        for channel in channels:
            position = None if resume is None else resume.get(channel)
            if position is None:
                positions.move(channel, await engine.head(channel))
                if resume is not None:
                    resets.setdefault("invalid", []).append(channel)
                continue
            try:
                room = limit - len(replay)
                replay += await hub.reads.read_after(channel, position, room) if room else []
                positions.move(channel, position)
            except PositionLost as lost:
                positions.move(channel, lost.head)
                resets.setdefault(lost.reason, []).append(channel)
        _take(replay, positions, reply)
        reply.resets = [_reset(names, reason) for reason, names in resets.items()]
        if resume is not None and not reply.events and not reply.resets and wait_s > 0:
            try:
                async with asyncio.timeout(wait_s):
                    while not reply.events:
                        batch = await subscriber.next_batch()
                        if not batch:
                            break  # closed (shutdown): answer with what there is
                        for item in batch:
                            if isinstance(item, Reset):
                                positions.move(item.channel, item.head)
                                reply.resets.append(_reset([item.channel], item.reason))
                        live = [item for item in batch if isinstance(item, Event)]
                        _take(live[:limit], positions, reply)
                        if reply.resets:
                            break
            except TimeoutError:
                pass
    reply.next_cursor = positions.cursor
    return reply


def _reset(channels: list[str], reason: ResetReason) -> StreamReset:
    return StreamReset(channels, reason)


def _take(events: list[Event], positions: _Positions, reply: PollReply) -> None:
    for event in events:
        if event.epoch != positions.positions[event.channel].epoch:
            # The stream was recreated (Redis lost its data): say so, then go on.
            reply.resets.append(_reset([event.channel], "epoch"))
        if positions.is_new(event):
            positions.move(event.channel, Position(event.epoch, event.offset))
            reply.events.append({"id": positions.cursor, **event.envelope()})
