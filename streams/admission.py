"""Runtime limits: what an administrator can change while Sinal runs, and their enforcement.

`Limits` is the set in force; `PUT /v1/admin/limits` stores a new one and every node applies it
(api/control.py). All are per process, as each is enforced where the connection or request
is, without asking other nodes:

- `actions_rate`, `actions_burst`: `/v1/actions` messages per user (streams/sockets.py);
- `streams_per_user`: SSE streams one user may hold open on a process (0: no limit);
- `handshakes_per_s`: new SSE streams and action sockets a process admits per second, the
  admission control that spreads a reconnect storm over time (0: no limit);
- `publish_rate`: events per second one service principal may publish (0: no limit).

Besides the rate, a process bounds the handshakes *in progress* at once (`SINAL_MAX_HANDSHAKES`,
a setting, not a runtime limit): from admission until the response starts, a handshake holds
engine round trips (subscribe, read the resume) and a Redis connection of the pool. When a
restart brings thousands of clients back in the same second, past the bound they queue for up
to `HANDSHAKE_QUEUE_S` (first come, first served) instead of piling onto the engine at once;
those still waiting then are refused like those over the rate, with a jittered `Retry-After`.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from streams.errors import Unprocessable

# Each limit: (smallest, largest, whole number?). The largest values only keep arithmetic sane.
BOUNDS: dict[str, tuple[float, float, bool]] = {
    "actions_rate": (0.001, 1e6, False),
    "actions_burst": (1, 1e6, True),
    "streams_per_user": (0, 1e6, True),
    "handshakes_per_s": (0, 1e7, True),
    "publish_rate": (0, 1e7, False),
}
# A client refused for streams per user comes back after this long: one of its streams has to
# end first, which a retry loop cannot hurry.
STREAMS_RETRY_AFTER_S = 10
# Service principals whose publish budget is remembered.
MAX_PUBLISHERS = 10_000
# How long a handshake past the bound of those in progress waits for a place before it is
# refused: long enough for a storm's queue to move, short of a client's own timeout.
HANDSHAKE_QUEUE_S = 2.0
# Retry-After of a refused handshake: uniform in this range (seconds, whole), so the clients
# refused together do not come back together.
REFUSED_RETRY_S = (1.0, 5.0)


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    actions_rate: float
    actions_burst: int
    streams_per_user: int = 0
    handshakes_per_s: int = 0
    publish_rate: float = 0.0

    def view(self) -> dict[str, Any]:
        return msgspec.structs.asdict(self)

    def changed(self, changes: Mapping[str, Any]) -> Limits:
        """These limits with `changes` applied; Unprocessable names the first bad field."""
        values = self.view()
        for name, value in changes.items():
            values[name] = check(name, value)
        return Limits(**values)


def check(name: str, value: Any) -> float | int:
    bounds = BOUNDS.get(name)
    if bounds is None:
        known = ", ".join(BOUNDS)
        raise Unprocessable(f"{name[:64]!r} is not a limit (limits: {known})", field=name)
    low, high, whole = bounds
    kind = "a whole number" if whole else "a number"
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (whole and not float(value).is_integer())
        or not (math.isfinite(value) and low <= value <= high)
    ):
        raise Unprocessable(f"{name} must be {kind} from {low:g} to {high:g}", field=name)
    return int(value) if whole else float(value)


def stored(values: Mapping[str, Any] | None, defaults: Limits) -> Limits:
    """The stored limits over the defaults, skipping what does not check (a value stored by
    another version, say) rather than refusing to start."""
    limits = defaults
    for name, value in (values or {}).items():
        try:
            limits = limits.changed({name: value})
        except Unprocessable:
            continue
    return limits


class Bucket:
    """A token bucket: `rate` per second, up to `burst` at once."""

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = now

    def take(self, now: float, cost: float = 1.0) -> float:
        """Spend `cost`; 0 when admitted, else the seconds until it would be. A cost above the
        burst is admitted on a full bucket and leaves a debt (a batch of publishes)."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= min(cost, self.burst):
            self.tokens -= cost
            return 0.0
        return (min(cost, self.burst) - self.tokens) / self.rate


class Admission:
    """The limits in force in this process and their buckets."""

    def __init__(
        self,
        limits: Limits,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_handshakes: int = 0,
        queue_s: float = HANDSHAKE_QUEUE_S,
    ) -> None:
        self.clock = clock
        self.limits = limits
        self.max_handshakes = max_handshakes  # in progress at once; 0: no bound
        self.queue_s = queue_s
        self.in_progress = 0
        self.queued_total = 0  # handshakes that waited for a place
        self._queue: deque[asyncio.Future[None]] = deque()
        self._handshakes: Bucket | None = None
        self._publishers: OrderedDict[str, Bucket] = OrderedDict()
        self.apply(limits)

    def apply(self, limits: Limits) -> None:
        self.limits = limits
        rate = limits.handshakes_per_s
        self._handshakes = Bucket(rate, rate, self.clock()) if rate else None
        self._publishers.clear()

    def handshake(self) -> float | None:
        """None when a new connection is admitted now, else the seconds to come back after:
        jittered, so that the refused clients of a storm do not all return at once."""
        if self._handshakes is None:
            return None
        wait = self._handshakes.take(self.clock())
        if not wait:
            return None
        return math.ceil(wait + random.uniform(*REFUSED_RETRY_S))

    async def begin_handshake(self) -> float | None:
        """Admit a new connection: None when admitted, else the seconds to come back after.

        Over the rate, refused at once; past the bound of handshakes in progress, it waits its
        turn for up to `queue_s`. Admitted, the handshake holds its place until
        `end_handshake`, which the caller calls exactly once.
        """
        wait = self.handshake()
        if wait is not None:
            return wait
        if not self.max_handshakes or (self.in_progress < self.max_handshakes and not self._queue):
            self.in_progress += 1
            return None
        self.queued_total += 1
        turn = asyncio.get_running_loop().create_future()
        self._queue.append(turn)
        try:
            async with asyncio.timeout(self.queue_s):
                await turn
        except TimeoutError:
            if not (turn.done() and not turn.cancelled()):
                turn.cancel()  # `end_handshake` skips it
                return math.ceil(random.uniform(*REFUSED_RETRY_S))
        except BaseException:
            if turn.done() and not turn.cancelled():
                self.end_handshake()  # handed a place while leaving: pass it on
            else:
                turn.cancel()
            raise
        return None  # the place was handed over by `end_handshake`

    def end_handshake(self) -> None:
        """A handshake admitted by `begin_handshake` ended: its place goes to the next waiting."""
        while self._queue:
            turn = self._queue.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self.in_progress = max(0, self.in_progress - 1)

    def streams_full(self, open_streams: int) -> bool:
        """Whether a user holding `open_streams` may not open another."""
        cap = self.limits.streams_per_user
        return bool(cap) and open_streams >= cap

    def publish(self, principal: str, events: int) -> float | None:
        """None when `principal` may publish `events` now, else the seconds to wait."""
        rate = self.limits.publish_rate
        if not rate:
            return None
        now = self.clock()
        bucket = self._publishers.get(principal)
        if bucket is None:
            bucket = self._publishers[principal] = Bucket(rate, max(1.0, rate), now)
            if len(self._publishers) > MAX_PUBLISHERS:
                self._publishers.popitem(last=False)
        else:
            self._publishers.move_to_end(principal)
        wait = bucket.take(now, events)
        return math.ceil(wait) or 1 if wait else None
