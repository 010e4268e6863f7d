"""The command queue: retry and cancel commands carried at least once to the execution service.

Why a queue on the engine and not a table polled by the service: the outbox relay already puts
every command in the log of the internal channel `commands` (type `execution.command`), so on
Redis the queue *is* that stream, `sinal:{commands}:log`, read with the consumer group
`executors`. The execution service may read it directly (XREADGROUP / XACK / XAUTOCLAIM) or
through `GET /v1/commands`; both see the same deliveries.

At least once: a claimed entry stays pending until acknowledged; one pending longer than the
caller's `redeliver_after_s` is taken over by the next claim, from any consumer (the first may
have crashed), with `deliveries` one higher. Entries trimmed out of retention while pending are
dropped from the pending set, as XAUTOCLAIM does. The memory engine keeps the same group state
in this process.
"""

from __future__ import annotations

import abc
import asyncio
import bisect
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from redis.exceptions import RedisError, ResponseError

from streams.channels import COMMANDS
from streams.errors import BadRequest, Unavailable
from streams.event import Event, StreamId, format_stream_id, parse_stream_id
from streams.redisclient import Client

if TYPE_CHECKING:  # the engines import this module to build their queue
    from streams.memory import MemoryEngine

GROUP = "executors"
COMMAND_TYPE = "execution.command"
# redis-py's socket timeout on the engine's client is 5 s: a longer BLOCK raises (DESIGN.md).
MAX_BLOCK_S = 4.0
# Waiting claims look for entries that became due at least this often, however long the wait.
MIN_RECHECK_S = 0.01

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Delivery:
    """One queue entry handed to a consumer."""

    id: str  # the stream entry id, e.g. "1700000000000-0": what `ack` takes
    type: str
    data_json: bytes
    deliveries: int  # 1 on the first delivery, one more on each redelivery


class CommandQueue(abc.ABC):
    """The consumer group `executors` over the `commands` log."""

    @abc.abstractmethod
    async def claim(
        self, consumer: str, *, limit: int, wait_s: float, redeliver_after_s: float
    ) -> list[Delivery]:
        """Up to `limit` entries for `consumer`, oldest first.

        First entries pending for `redeliver_after_s` or longer (their consumer crashed or
        never acknowledged them), taken over with `deliveries` + 1; then entries never
        delivered to the group. When there are none, waits up to `wait_s` for either.
        """

    @abc.abstractmethod
    async def ack(self, ids: Sequence[str]) -> int:
        """Acknowledge deliveries; returns how many were pending (an id acked twice counts
        once). Raises BadRequest (field `deliveries`) on a malformed id, acknowledging none."""

    # For `/metrics`: entries handed out again after their lease expired (by this process).
    redelivered = 0

    @abc.abstractmethod
    async def pending(self) -> int:
        """How many entries are delivered and not yet acknowledged."""

    @abc.abstractmethod
    async def backlog(self) -> tuple[int, float | None]:
        """How many entries wait for an acknowledgement (delivered or not yet), and when the
        oldest of them was published (epoch seconds; None when none waits)."""


def parse_ids(ids: Sequence[str]) -> list[StreamId]:
    parsed = []
    for text in ids:
        try:
            parsed.append(parse_stream_id(text))
        except (ValueError, TypeError, AttributeError):
            raise BadRequest(
                f"not a delivery id: {str(text)[:64]!r} (expected '<ms>-<seq>')",
                field="deliveries",
            ) from None
    return parsed


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise BadRequest("limit must be at least 1", field="limit")


# -- memory ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Pending:
    consumer: str
    delivered_at: float  # time.monotonic()
    deliveries: int


class _Group:
    """The group's state for one memory engine (its one queue holds it)."""

    __slots__ = ("last", "pending")

    def __init__(self) -> None:
        self.last: StreamId = (0, 0)  # the last entry delivered to the group
        # In id order: entries are added in increasing order and redelivered in place.
        self.pending: dict[StreamId, _Pending] = {}


class MemoryCommands(CommandQueue):
    """Built by `MemoryEngine.commands()`, once per engine."""

    def __init__(self, engine: MemoryEngine) -> None:
        self._engine = engine
        self._group = _Group()

    async def claim(
        self, consumer: str, *, limit: int, wait_s: float, redeliver_after_s: float
    ) -> list[Delivery]:
        _check_limit(limit)
        deadline = time.monotonic() + max(wait_s, 0.0)
        with self._engine.published(COMMANDS) as published:
            while True:
                published.clear()
                taken = self._take(consumer, limit, redeliver_after_s)
                now = time.monotonic()
                if taken or now >= deadline:
                    return taken
                timeout = min(deadline, self._next_due(redeliver_after_s)) - now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(published.wait(), max(timeout, MIN_RECHECK_S))

    async def ack(self, ids: Sequence[str]) -> int:
        pending = self._group.pending
        return sum(pending.pop(sid, None) is not None for sid in parse_ids(ids))

    async def pending(self) -> int:
        return len(self._group.pending)

    async def backlog(self) -> tuple[int, float | None]:
        held = self._engine.held(COMMANDS)
        group = self._group
        start = bisect.bisect_right(held, group.last, key=lambda e: e.offset)
        oldest = [*group.pending][:1] + ([held[start].offset] if start < len(held) else [])
        count = len(group.pending) + len(held) - start
        return count, min(oldest)[0] / 1000 if oldest else None

    def _take(self, consumer: str, limit: int, redeliver_after_s: float) -> list[Delivery]:
        held = self._engine.held(COMMANDS)
        taken = self._redeliver(held, consumer, limit, redeliver_after_s)
        return taken + self._deliver_new(held, consumer, limit - len(taken))

    def _redeliver(
        self, held: Sequence[Event], consumer: str, limit: int, redeliver_after_s: float
    ) -> list[Delivery]:
        now = time.monotonic()
        pending = self._group.pending
        due = [sid for sid, p in pending.items() if now - p.delivered_at >= redeliver_after_s]
        taken: list[Delivery] = []
        for sid in due:
            if len(taken) >= limit:
                break
            event = _find(held, sid)
            if event is None:  # trimmed out of retention: forgotten, as XAUTOCLAIM does
                del pending[sid]
                continue
            entry = pending[sid]
            entry.consumer, entry.delivered_at = consumer, now
            entry.deliveries += 1
            self.redelivered += 1
            taken.append(_delivery(event, entry.deliveries))
        return taken

    def _deliver_new(self, held: Sequence[Event], consumer: str, count: int) -> list[Delivery]:
        group = self._group
        start = bisect.bisect_right(held, group.last, key=lambda e: e.offset)
        now = time.monotonic()
        taken = []
        for index in range(start, min(start + count, len(held))):
            event = held[index]
            group.pending[event.offset] = _Pending(consumer, now, 1)
            group.last = event.offset
            taken.append(_delivery(event, 1))
        return taken

    def _next_due(self, redeliver_after_s: float) -> float:
        pending = self._group.pending.values()
        return min((p.delivered_at for p in pending), default=float("inf")) + redeliver_after_s


def _find(held: Sequence[Event], sid: StreamId) -> Event | None:
    index = bisect.bisect_left(held, sid, key=lambda e: e.offset)
    return held[index] if index < len(held) and held[index].offset == sid else None


def _delivery(event: Event, deliveries: int) -> Delivery:
    return Delivery(format_stream_id(event.offset), event.type, event.data_json, deliveries)


# -- redis -------------------------------------------------------------------------------------

# KEYS: the commands log. ARGV: group, consumer, min idle ms, count.
# XAUTOCLAIM takes over entries idle that long (it increments their delivery counters and drops
# entries trimmed away from the pending list); their counts come from XPENDING in the same
# atomic step. XAUTOCLAIM scans a bounded part of the pending list per call: go on until the
# scan wraps around or enough are claimed. Returns {{id, {field, value, ...}, deliveries}, ...}.
REDELIVER = """
local claimed = {}
local start = '0-0'
local wanted = tonumber(ARGV[4])
repeat
  local reply = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], start,
                           'COUNT', wanted - #claimed)
  start = reply[1]
  for _, entry in ipairs(reply[2]) do
    if entry and entry[2] then
      local info = redis.call('XPENDING', KEYS[1], ARGV[1], entry[1], entry[1], 1)
      claimed[#claimed + 1] = {entry[1], entry[2], info[1][4]}
    end
  end
until start == '0-0' or #claimed >= wanted
return claimed
"""


class RedisCommands(CommandQueue):
    """Built by `RedisEngine.commands()` over its command client and the `commands` log."""

    def __init__(self, client: Client, log_key: str) -> None:
        self._redis = client
        self._key = log_key
        self._redeliver = self._redis.register_script(REDELIVER)
        self._group_ready = False

    async def claim(
        self, consumer: str, *, limit: int, wait_s: float, redeliver_after_s: float
    ) -> list[Delivery]:
        _check_limit(limit)
        deadline = time.monotonic() + max(wait_s, 0.0)
        min_idle_ms = max(int(redeliver_after_s * 1000), 0)
        while True:
            taken = await self._grouped(
                lambda: self._redeliver(
                    keys=[self._key], args=[GROUP, consumer, min_idle_ms, limit]
                )
            )
            deliveries = [_claimed_delivery(entry) for entry in taken]
            self.redelivered += len(deliveries)
            if len(deliveries) < limit:
                remaining = deadline - time.monotonic()
                block_ms = None
                if not deliveries and remaining > 0:
                    # Short blocks: under the client's socket timeout, and often enough to
                    # notice entries that became due for redelivery meanwhile.
                    chunk = min(remaining, MAX_BLOCK_S, max(redeliver_after_s, MIN_RECHECK_S))
                    block_ms = max(int(chunk * 1000), 1)
                deliveries += await self._read_new(consumer, limit - len(deliveries), block_ms)
            if deliveries or time.monotonic() >= deadline:
                return deliveries

    async def ack(self, ids: Sequence[str]) -> int:
        parsed = parse_ids(ids)
        if not parsed:
            return 0
        names = [format_stream_id(sid) for sid in parsed]
        acked: int = await self._grouped(lambda: self._redis.xack(self._key, GROUP, *names))
        return acked

    async def pending(self) -> int:
        summary = await self._grouped(lambda: self._redis.xpending(self._key, GROUP))
        count: int = summary["pending"]
        return count

    async def backlog(self) -> tuple[int, float | None]:
        summary = await self._grouped(lambda: self._redis.xpending(self._key, GROUP))
        groups = await self._grouped(lambda: self._redis.xinfo_groups(self._key))
        group = next((g for g in groups if g["name"] in (GROUP, GROUP.encode())), None)
        last = group["last-delivered-id"] if group else b"0-0"
        undelivered: Any = await self._grouped(
            lambda: self._redis.xrange(self._key, min=b"(" + last, count=1)
        )
        # Redis 7 counts the undelivered entries (`lag`); without it, one is known to wait.
        lag = (group or {}).get("lag")
        count = summary["pending"] + (lag if lag is not None else len(undelivered))
        oldest = [parse_stream_id(summary["min"].decode())] if summary["pending"] else []
        oldest += [parse_stream_id(undelivered[0][0].decode())] if undelivered else []
        return count, min(oldest)[0] / 1000 if oldest else None

    async def _read_new(self, consumer: str, count: int, block_ms: int | None) -> list[Delivery]:
        reply: Any = await self._grouped(
            lambda: self._redis.xreadgroup(
                GROUP, consumer, {self._key: ">"}, count=count, block=block_ms
            )
        )
        return [
            _entry_delivery(entry_id, fields, 1)
            for _stream, entries in reply or ()
            for entry_id, fields in entries
            if fields  # never delivered entries cannot have been trimmed, but be safe
        ]

    async def _grouped(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run one command on the group, creating the group first; once again if Redis lost it
        (a restart without persistence), so that the outbox can refill the queue."""
        try:
            if not self._group_ready:
                await self._create_group()
            try:
                return await call()
            except ResponseError as error:
                if not _group_gone(error):
                    raise
            await self._create_group()
            return await call()
        except RedisError as error:
            raise Unavailable(f"redis is unreachable: {error}") from error

    async def _create_group(self) -> None:
        try:
            await self._redis.xgroup_create(self._key, GROUP, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        self._group_ready = True


def _group_gone(error: ResponseError) -> bool:
    # NOGROUP: the key or group is missing; UNBLOCKED: it was deleted under a blocked read.
    return str(error).startswith(("NOGROUP", "UNBLOCKED"))


def _claimed_delivery(entry: Any) -> Delivery:
    entry_id, flat, deliveries = entry
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    return _entry_delivery(entry_id, fields, int(deliveries))


def _entry_delivery(entry_id: bytes, fields: dict[bytes, bytes], deliveries: int) -> Delivery:
    return Delivery(entry_id.decode(), fields[b"t"].decode(), fields[b"d"], deliveries)
