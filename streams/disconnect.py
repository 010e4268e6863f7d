"""Why the server ends a connection on its own initiative, and how each transport says so.

One vocabulary for every transport (docs/api.md, "Disconnects"): an SSE stream gets
`event: disconnect` with `{"reason", "reconnect"[, "retry_after"]}` and no `id:` line, so the
cursor does not move; the action WebSocket closes with the code of the reason; a long-poll
simply answers early. The reasons:

- `shutdown`: the process is stopping; reconnect (elsewhere).
- `expired`: the credential that opened the connection expired (plus the grace); get a fresh
  token or ticket, then reconnect with the cursor.
- `kicked`: an administrator ended the connection; reconnecting is allowed.
- `revoked`: the user's tokens were revoked; do not reconnect with the same token.
- `limit`: a runtime limit; reconnect after `retry_after` seconds.

Expiry costs no timer per connection, let alone a task: every connection of a loop waits in one
heap with one timer for its earliest deadline (`close_at`), as an idle stream's memory is what a
server of many streams spends (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import time
import weakref
from collections.abc import Callable
from typing import Annotated, Literal, get_args

import msgspec

log = logging.getLogger("sinal.disconnect")

DisconnectReason = Literal["shutdown", "expired", "kicked", "revoked", "limit"]
REASONS: frozenset[str] = frozenset(get_args(DisconnectReason))

# The action WebSocket's close code for each reason. 1001 (going away, RFC 6455) for shutdown,
# as every WebSocket client already understands it; the others in the range RFC 6455 leaves to
# applications (4000-4999).
CLOSE_CODES: dict[DisconnectReason, int] = {
    "shutdown": 1001,
    "expired": 4001,
    "kicked": 4002,
    "revoked": 4003,
    "limit": 4004,
}
# The close frame's reason text: the reason's word, which clients may match on.
CLOSE_TEXTS: dict[DisconnectReason, str] = {
    "shutdown": "server shutting down",
    "expired": "expired",
    "kicked": "kicked",
    "revoked": "revoked",
    "limit": "limit",
}


def reconnect_allowed(reason: DisconnectReason) -> bool:
    """Whether a client may reconnect as it is (`revoked`: not with the same token)."""
    return reason != "revoked"


class StreamDisconnect(msgspec.Struct):
    """The server ends the stream, and says why; the last frame, with no `id:` (the cursor does
    not move)."""

    reason: Annotated[
        DisconnectReason,
        msgspec.Meta(
            description="`shutdown`: the server is stopping, reconnect (elsewhere if need be); "
            "`expired`: the credential expired, get a fresh ticket or token, then reconnect; "
            "`kicked`: an administrator ended the connection; `revoked`: the user's tokens "
            "were revoked, do not reconnect with the same token; `limit`: a runtime limit, "
            "reconnect after `retry_after` seconds."
        ),
    ]
    reconnect: Annotated[
        bool, msgspec.Meta(description="Whether reconnecting as before is allowed.")
    ]
    retry_after: Annotated[
        int | msgspec.UnsetType,
        msgspec.Meta(description="Only with `limit`: seconds to wait before reconnecting."),
    ] = msgspec.UNSET


def disconnect_data(reason: DisconnectReason, retry_after: float | None = None) -> StreamDisconnect:
    """The `data` of an SSE `disconnect` event."""
    seconds = math.ceil(retry_after or 0) if reason == "limit" else msgspec.UNSET
    return StreamDisconnect(reason, reconnect_allowed(reason), seconds)


def close_text(reason: DisconnectReason, retry_after: float | None = None) -> str:
    """The WebSocket close reason: the word, and for `limit` the seconds to wait."""
    if reason == "limit":
        return f"limit retry_after={math.ceil(retry_after or 0)}"
    return CLOSE_TEXTS[reason]


def deadline(expires_at: float | None, grace_s: float) -> float | None:
    """When a connection opened with a credential expiring at `expires_at` (seconds since the
    epoch) must end; None for a credential without expiry."""
    return None if expires_at is None else expires_at + grace_s


def close_at(
    loop: asyncio.AbstractEventLoop,
    when: float | None,
    callback: Callable[..., object],
    *args: object,
) -> Expiry | None:
    """Call `callback(*args)` at `when` (seconds since the epoch, wall clock, as JWT `exp` is);
    the caller cancels the returned entry when the connection ends first. (A bound method and
    its arguments, not a closure: one per idle stream, each byte counts.)"""
    if when is None:
        return None
    schedule = _SCHEDULES.get(loop)
    if schedule is None:
        schedule = _SCHEDULES[loop] = _Schedule(loop)
    return schedule.add(loop.time() + max(0.0, when - time.time()), callback, args)


class Expiry:
    """One connection's place in its loop's schedule."""

    __slots__ = ("_schedule", "_when", "args", "callback")

    def __init__(
        self,
        when: float,
        callback: Callable[..., object],
        args: tuple[object, ...],
        schedule: _Schedule,
    ) -> None:
        self._when = when
        self.callback: Callable[..., object] | None = callback
        self.args = args
        self._schedule = schedule

    def when(self) -> float:
        """When it is due, in the loop's time."""
        return self._when

    def cancel(self) -> None:
        if self.callback is not None:
            self.callback = None
            self._schedule.cancelled()

    def __lt__(self, other: Expiry) -> bool:
        return self._when < other._when


# Cancelled entries wait in the heap until there are this many and they are half of it.
_COMPACT_AFTER = 64


class _Schedule:
    """Every expiry of one loop: a heap, and one timer for the earliest entry."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # the schedule must not keep a finished loop alive
        self._heap: list[Expiry] = []
        self._timer: asyncio.TimerHandle | None = None
        self._cancelled = 0

    def add(self, when: float, callback: Callable[..., object], args: tuple[object, ...]) -> Expiry:
        entry = Expiry(when, callback, args, self)
        heapq.heappush(self._heap, entry)
        if self._heap[0] is entry:
            self._arm()
        return entry

    def cancelled(self) -> None:
        # Left in place (a heap cannot drop one entry cheaply) until they are many: connections
        # that leave long before their credential expires would otherwise pile up.
        self._cancelled += 1
        if self._cancelled > _COMPACT_AFTER and 2 * self._cancelled > len(self._heap):
            self._heap = [entry for entry in self._heap if entry.callback is not None]
            heapq.heapify(self._heap)
            self._cancelled = 0

    def _arm(self) -> None:
        loop = self._loop()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = (
            loop.call_at(self._heap[0].when(), self._fire) if loop and self._heap else None
        )

    def _fire(self) -> None:
        self._timer = None
        loop = self._loop()
        now = loop.time() if loop is not None else math.inf
        while self._heap and self._heap[0].when() <= now:
            entry = heapq.heappop(self._heap)
            callback, entry.callback = entry.callback, None
            if callback is None:
                self._cancelled -= 1
                continue
            try:
                callback(*entry.args)
            except Exception:  # one connection's ending must not stop the others'
                log.exception("ending an expired connection failed")
        if self._heap:
            self._arm()


_SCHEDULES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Schedule] = (
    weakref.WeakKeyDictionary()
)
