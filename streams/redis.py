"""The Redis engine: Redis Streams hold each channel's log; Redis pub/sub carries live events.

Why not one blocking `XREAD` over every channel's stream: its cost is proportional to the number of
keys on every call, and with one channel per user that is thousands of keys re-registered for
each batch of events. Instead the publish script appends to the stream and, in the same atomic
step, publishes the entry (with its stream id, its predecessor's and its epoch) on the channel's
pub/sub name. One reader per process subscribes to the channels its connections watch and feeds
the hub.

Pub/sub is at-most-once, so the reader remembers the last position it delivered per channel;
after a lost connection it re-subscribes and reads the stream from there, and a live message
whose predecessor it never delivered makes it read the stream in between, so nothing is
skipped. A stream whose epoch changed (Redis lost its data) becomes a `reset` instead of a
silent gap.

The control bus (see `streams/engine.py`) rides on the same reader: every reader subscribes
first to `sinal:control:<db>`, whose confirmation also tells it that its connection is up, so
the bus costs no connection and no subscription of its own, and comes back with the reader's
re-subscription after a lost connection. A message names its node (`<to> <message>`, `<to>`
empty for every node) and each reader keeps only those for its node: every node reads every
control message, which is cheap for a bus that carries operators' questions and orders, never
per-connection traffic.

Keys of one channel share a hash tag (`sinal:{<channel>}:…`), so the scripts are Redis Cluster safe.
On a cluster (`redis+cluster://`), live messages use sharded pub/sub and the reader keeps one
connection per primary; see the "Redis Cluster" section of the class below.

With `redis+sentinel://` (see `streams/redisclient.py`) every connection, the reader's included,
goes to the primary the Sentinels name when it is opened. After a failover the old primary's
connections fail: commands answer Unavailable until the new primary is named, and the reader
reconnects to it and catches up from the stream like after any lost connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any, Literal

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streams import redisclient
from streams.channels import COMMANDS
from streams.commands import CommandQueue, RedisCommands
from streams.cursor import Position
from streams.engine import (
    Engine,
    PositionLost,
    Publication,
    Retention,
    Sequenced,
    Sink,
    check_node_id,
    check_position,
)
from streams.errors import Unavailable
from streams.event import Event, Placed, StreamId, parse_stream_id_bytes
from streams.redislink import Link
from streams.tasks import cancel_and_wait

log = logging.getLogger("sinal.redis")

CATCH_UP_PAGE = 500
# How long a cluster publish keeps sending calls the cluster refused while failing over or
# moving slots, before it answers Unavailable.
CLUSTER_RETRY_S = 3.0

# Each entry records the id of the entry before it (`p`): Redis does not report what trimming
# removed, so a reader detects a gap by comparing the first entry it gets with its position.
# The live message carries it too (`parse_live`): a reader whose last delivered position is not
# the predecessor of a live message knows that a message went missing while it was connected.

# KEYS: log, meta. ARGV: candidate epoch, max length, max age ms, type, data, pub/sub name,
# and for `publish_once` a source and sequence ('' otherwise); nil when the sequence was taken.
PUBLISH = """
local meta = redis.call('HMGET', KEYS[2], 'epoch', 'last', 'src', 'seq')
local epoch, previous = meta[1], meta[2]
if ARGV[7] ~= '' then
  if meta[3] == ARGV[7] and tonumber(meta[4]) >= tonumber(ARGV[8]) then
    return false
  end
  redis.call('HSET', KEYS[2], 'src', ARGV[7], 'seq', ARGV[8])
end
if not epoch then
  epoch, previous = ARGV[1], '0-0'
  redis.call('HSET', KEYS[2], 'epoch', epoch)
end
previous = previous or '0-0'
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*',
                      't', ARGV[4], 'd', ARGV[5], 'p', previous)
redis.call('HSET', KEYS[2], 'last', id)
local max_age = tonumber(ARGV[3])
if max_age > 0 then
  local now = redis.call('TIME')
  local oldest = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - max_age
  redis.call('XTRIM', KEYS[1], 'MINID', '~', string.format('%d', oldest))
end
redis.call('PUBLISH', ARGV[6],
           epoch .. ' ' .. id .. ' ' .. previous .. ' ' .. ARGV[4] .. ' ' .. ARGV[5])
return {epoch, id}
"""
# On a cluster the live message goes to the shard that owns the channel's slot only. Its name
# carries the channel's hash tag, so the script still touches one slot.
PUBLISH_SHARDED = PUBLISH.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'")

# KEYS: log, meta. ARGV: candidate epoch, read after this id (exclusive), count (0: none).
# Returns the epoch, the last id ever added, and up to `count` entries after the given id.
READ = """
local meta = redis.call('HMGET', KEYS[2], 'epoch', 'last')
local epoch, last = meta[1], meta[2] or '0-0'
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[2], 'epoch', epoch)
end
local entries = {}
if tonumber(ARGV[3]) > 0 then
  entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[2], '+', 'COUNT', ARGV[3])
end
return {epoch, last, entries}
"""


def keys(channel: str) -> tuple[str, str]:
    """The channel's stream and its metadata hash (epoch, last id)."""
    return f"sinal:{{{channel}}}:log", f"sinal:{{{channel}}}:meta"


def live_name(channel: str, db: int) -> str:
    # Pub/sub ignores database numbers: the number keeps deployments sharing a server apart.
    return f"sinal:{{{channel}}}:live:{db}"


def control_name(db: int) -> str:
    # Like the live channels, the database number keeps deployments sharing a server apart.
    return f"sinal:control:{db}"


def channel_of(live: str) -> str:
    return live[len("sinal:{") : live.rindex("}:live:")]


Op = Literal["sub", "unsub"]
# One call of the publish script: its keys and its arguments.
_Call = tuple[tuple[str, str], list[Any]]
# A command as Redis reads it (its stub types a tuple of one item).
_pack: Callable[[tuple[Any, ...]], bytes] = hiredis.pack_command
# Commands' timeout: a dead Redis answers 503 instead of hanging callers.
COMMAND_TIMEOUT_S = 5
# Pipelines on their way at once (each on a link of its own).
MAX_LINKS = 64


class _Shard:
    """A cluster primary's sharded pub/sub connection (see `RedisEngine._cluster_reader`)."""

    __slots__ = ("channels", "control", "host", "name", "outbox", "port", "task")

    def __init__(self, name: str, host: str, port: int) -> None:
        self.name, self.host, self.port = name, host, port
        self.outbox: asyncio.Queue[tuple[Op, str]] = asyncio.Queue()
        self.channels: set[str] = set()  # routed here: subscribed, or commands on their way
        self.control = False  # the control bus is subscribed through it
        self.task: asyncio.Task[None] | None = None


class _Script:
    """A Lua script sent in hand-packed pipelines (`RedisEngine._pipeline`): its text, for the
    first call of a pipeline, and its SHA1, for the calls behind it; `wait`: whether a
    pipeline of it ends in `WAIT` (writes that must reach replicas)."""

    __slots__ = ("sha", "text", "wait")

    def __init__(self, text: str, wait: bool) -> None:
        self.text, self.wait = text, wait
        self.sha = hashlib.sha1(text.encode()).hexdigest()


class _Coalesced:
    """Calls of one script made while a pipeline of them is on its way, waiting to share the
    next one, and the task that sends them (see `RedisEngine._coalesced`)."""

    __slots__ = ("name", "queued", "script", "task")

    def __init__(self, script: _Script, name: str) -> None:
        self.script, self.name = script, name
        self.queued: list[tuple[_Call, asyncio.Future[Any]]] = []
        self.task: asyncio.Task[None] | None = None


class _Subscriptions:
    """`subscribe` and `unsubscribe` as `RedisEngine._command` calls them, on the reader's link;
    Redis confirms each name on the same connection, read with the messages."""

    __slots__ = ("link",)

    def __init__(self, link: Link) -> None:
        self.link = link

    async def subscribe(self, *names: str) -> None:
        await self.link.send(_pack(("SUBSCRIBE", *names)))

    async def unsubscribe(self, *names: str) -> None:
        await self.link.send(_pack(("UNSUBSCRIBE", *names)))


def _error(reply: Any) -> Any:
    """A reply as redis-py's parser gives it: `NOSCRIPT` as `NoScriptError`."""
    if isinstance(reply, ResponseError) and str(reply).startswith("NOSCRIPT"):
        return NoScriptError(str(reply))
    return reply


class _NotSent(Exception):
    """Nothing of a pipeline reached its node."""


# Replies of a cluster that mean "not run here, not now": the call may be sent again.
_REDIRECTS = (MovedError, AskError, TryAgainError, ClusterDownError)


def _resendable(calls: list[_Call], replies: list[Any]) -> list[int]:
    """The calls refused with a redirect that may be sent again: those after which no call
    of the same channel ran (resending them would put them after it)."""
    resend: list[int] = []
    ran_later: set[str] = set()
    for index in range(len(calls) - 1, -1, -1):
        log_key = calls[index][0][0]
        if isinstance(replies[index], _REDIRECTS):
            if log_key not in ran_later:
                resend.append(index)
        elif not isinstance(replies[index], Unavailable):
            ran_later.add(log_key)
    return resend[::-1]


class _Watch:
    """Subscription state of one channel on the current pub/sub connection.

    Confirmations come back in the order commands were sent, so `ops` holds the commands still
    unconfirmed; the channel is reliably subscribed only when `ops` is empty and `subscribed`.
    """

    __slots__ = ("filling", "held", "ops", "settled", "subscribed", "waiters", "wanted")

    def __init__(self) -> None:
        self.ops: list[Op] = []  # a list: one of these per watched channel, deques are larger
        self.subscribed = False
        self.wanted = False
        self.waiters: list[asyncio.Future[None]] = []
        # Whether the reader delivered something of the channel: from then on its remembered
        # position is the last one it delivered (see `RedisEngine._note`).
        self.settled = False
        # While a gap found live is filled from the stream: the task doing it, and the live
        # messages of the channel that came meanwhile, to be placed after it (in order).
        self.filling: asyncio.Task[None] | None = None
        self.held: list[tuple[Event, StreamId | None]] = []

    def intended(self) -> bool:
        return self.ops[-1] == "sub" if self.ops else self.subscribed


class RedisEngine(Engine):
    name = "redis"

    def __init__(
        self,
        url: str,
        retention: Retention | None = None,
        *,
        wait_replicas: int = 0,
        wait_timeout_s: float = 0.1,
    ) -> None:
        self.url = url
        # A publish is acknowledged only once this many replicas hold it (`WAIT`): Redis
        # replicates asynchronously, and an event acknowledged but not yet copied is gone
        # when its primary dies and a replica takes over, with nothing left to say so.
        self.wait_replicas = wait_replicas
        self._wait = _pack(("WAIT", wait_replicas, max(1, round(wait_timeout_s * 1000))))
        self.target = redisclient.parse(url)
        # A cluster: live messages on sharded pub/sub (Redis 7), one connection per shard.
        self.sharded = self.target.cluster
        self.retention = retention or Retention()
        # Commands: a short timeout, so a dead Redis answers 503 instead of hanging callers.
        self._redis = redisclient.client(
            self.target,
            socket_timeout=COMMAND_TIMEOUT_S,
            socket_connect_timeout=COMMAND_TIMEOUT_S,
            max_connections=200,
        )
        self.db = self.target.db
        self._control_name = control_name(self.db)
        self._script = PUBLISH_SHARDED if self.sharded else PUBLISH
        self._publish = _Script(self._script, wait=wait_replicas > 0)
        self._read = _Script(READ, wait=False)
        # Publishes, and reads, waiting for the next pipeline of their kind (see `publish`).
        self._publishes = _Coalesced(self._publish, "sinal-redis-publisher")
        self._reads = _Coalesced(self._read, "sinal-redis-read-sender")
        self._closing = False  # set by `close`: no pipeline task may start after it
        # One Redis server: the pipelines' links (`_pipeline`), idle ones kept for the next,
        # at most `MAX_LINKS` in use at once; replies awaited at most the commands' timeout
        # (and the time a `WAIT` may take).
        self._links: list[Link] = []
        self._link_slots = asyncio.Semaphore(MAX_LINKS)
        self._reply_timeout_s = COMMAND_TIMEOUT_S + (wait_timeout_s if wait_replicas else 0)
        self._sink: Sink | None = None
        self._watches: dict[str, _Watch] = {}
        self._last: dict[str, Position] = {}
        self._outbox: asyncio.Queue[tuple[Op, str]] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._was_live = False  # a connection was up before: the next one is a reconnect
        self._fillers: set[asyncio.Task[None]] = set()  # gaps being filled (see `_fill`)
        self._commands = RedisCommands(self._redis, keys(COMMANDS)[0])
        # Cluster only (see `_cluster_reader`): a pub/sub connection per primary that has
        # something to subscribe, the shard each channel was subscribed through, and the
        # channels (and whether the control bus) to subscribe again after a loss or a move.
        self._shards: dict[str, _Shard] = {}
        self._route: dict[str, _Shard] = {}
        self._homeless: set[str] = set()
        self._control_homeless = True
        self._reroute = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------

    async def connect(self, sink: Sink) -> None:
        self._sink = sink
        await self.ping()
        reader = self._cluster_reader() if self.sharded else self._read_forever()
        self._reader = asyncio.create_task(reader, name="sinal-redis-reader")
        await self._connected.wait()

    async def close(self) -> None:
        self._closing = True
        if self._reader is not None:
            await cancel_and_wait(self._reader)
            self._reader = None
        for coalesced in (self._publishes, self._reads):
            if coalesced.task is not None:
                await cancel_and_wait(coalesced.task)
        self._control = None
        for watch in self._watches.values():
            for waiter in watch.waiters:
                waiter.cancel()
        self._watches.clear()
        links, self._links = self._links, []
        for link in links:
            with contextlib.suppress(RedisError, OSError):
                await link.close()
        await self._redis.aclose()

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except (RedisError, RedisClusterException) as error:
            raise Unavailable(f"redis is unreachable: {error}") from error

    def commands(self) -> CommandQueue:
        return self._commands

    async def control_send(self, message: bytes, to: str | None = None) -> None:
        address = b"" if to is None else check_node_id(to).encode()
        verb = "SPUBLISH" if self.sharded else "PUBLISH"
        try:
            await self._redis.execute_command(verb, self._control_name, address + b" " + message)
        except (RedisError, RedisClusterException) as error:
            raise Unavailable(f"redis is unreachable: {error}") from error

    @property
    def live(self) -> bool:
        return self._connected.is_set()

    async def wait_live(self, timeout_s: float) -> bool:
        if self._connected.is_set():
            return True
        try:
            async with asyncio.timeout(timeout_s):
                await self._connected.wait()
        except TimeoutError:
            return False
        return True

    # -- the log ---------------------------------------------------------------------------

    async def publish(self, channel: str, type: str, data_json: bytes) -> Event:
        """Publishes made while a pipeline is on its way share the next one (`_send_queued`):
        under load, one round trip and one pass through redis-py carry many events, where a
        command each cost about as much as the rest of a lean `POST /v1/publish` (py-spy,
        docs/benchmarks.md). A publish alone goes at once, in a pipeline of one."""
        call = (keys(channel), self._publish_args(channel, type, data_json))
        epoch, sid = await self._coalesced(self._publishes, call, "publish")
        self.events_published += 1
        return Placed(channel, type, data_json, epoch.decode(), parse_stream_id_bytes(sid))

    async def _coalesced(self, coalesced: _Coalesced, call: _Call, what: str) -> Any:
        """`call`'s reply, sent in the next pipeline of `coalesced` (`_send_queued`); raises
        Unavailable when Redis cannot be reached or refuses the call."""
        if self._closing:
            # A task started now would outlive `close`, holding a connection of a closed pool.
            raise Unavailable("the engine is closing")
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        coalesced.queued.append((call, reply))
        if coalesced.task is None:
            coalesced.task = asyncio.create_task(
                self._send_queued(coalesced, what), name=coalesced.name
            )
        return await reply

    async def _send_queued(self, coalesced: _Coalesced, what: str) -> None:
        """Send what `coalesced` queued, one pipeline at a time, until nothing is queued. Calls
        go in the order they were made, so one channel's publishes keep their order."""
        batch: list[tuple[_Call, asyncio.Future[Any]]] = []
        try:
            while coalesced.queued:
                batch, coalesced.queued = coalesced.queued, []
                try:
                    replies = await self._run_script(coalesced.script, [c for c, _ in batch])
                except Unavailable as error:
                    replies = [error] * len(batch)
                except Exception as error:  # a bug: every waiting caller hears of it
                    log.exception("sending a pipeline of %d %ss failed", len(batch), what)
                    replies = [Unavailable(f"redis {what} failed: {error}")] * len(batch)
                for (_, reply), result in zip(batch, replies, strict=True):
                    if reply.done():  # its caller was cancelled
                        continue
                    if isinstance(result, Unavailable):
                        reply.set_exception(result)
                    elif isinstance(result, Exception):  # as `publish_many`
                        reply.set_exception(Unavailable(f"redis refused the {what}: {result}"))
                    else:
                        reply.set_result(result)
                batch = []
        finally:
            coalesced.task = None
            # Cancelled (the engine closes): nobody may be left waiting.
            for _, reply in [*batch, *coalesced.queued]:
                if not reply.done():
                    reply.set_exception(Unavailable("the engine is closing"))
            coalesced.queued = []

    async def publish_many(self, items: Sequence[Publication]) -> list[Event]:
        """One round trip for the whole batch: a pipeline of publish scripts."""
        if not items:
            return []
        calls: list[_Call] = [
            (keys(item.channel), self._publish_args(item.channel, item.type, item.data_json))
            for item in items
        ]
        replies = await self._run_publishes(calls)
        for reply in replies:
            if isinstance(reply, Exception):  # a Redis out of memory refuses, say
                raise Unavailable(f"redis refused the publish: {reply}") from reply
        self.events_published += len(items)
        return [
            Placed(
                item.channel, item.type, item.data_json, epoch.decode(), parse_stream_id_bytes(sid)
            )
            for item, (epoch, sid) in zip(items, replies, strict=True)
        ]

    async def publish_once(self, items: Sequence[Sequenced]) -> list[Event | None]:
        """One round trip for the whole batch: a pipeline of publish scripts."""
        if not items:
            return []
        calls: list[_Call] = [
            (
                keys(item.channel),
                self._publish_args(
                    item.channel, item.type, item.data_json, item.source, item.sequence
                ),
            )
            for item in items
        ]
        replies = await self._run_publishes(calls)
        for reply in replies:
            if isinstance(reply, Exception):  # the relay then looks for the event at fault
                raise reply
        self.events_published += sum(1 for reply in replies if reply is not None)
        return [
            None
            if reply is None
            else Placed(
                item.channel,
                item.type,
                item.data_json,
                reply[0].decode(),
                parse_stream_id_bytes(reply[1]),
            )
            for item, reply in zip(items, replies, strict=True)
        ]

    async def _run_publishes(self, calls: list[_Call]) -> list[Any]:
        return await self._run_script(self._publish, calls)

    async def _run_script(self, script: _Script, calls: list[_Call]) -> list[Any]:
        """The script (publish or read) once per call, in order, in one pipeline: its replies,
        an error in the place of a call that failed.

        Redis Cluster safe: each call's keys are one channel's, under one hash tag, so every
        script call touches one slot; calls of different channels are separate commands,
        which a cluster client may send to different nodes (tests/streams/test_engines.py
        checks the slots).

        One round trip: redis-py's pipelines ask `SCRIPT EXISTS` before each execution; here
        the first call is an `EVAL` with the script's text, which caches it, so the `EVALSHA`
        calls behind it find it. Only a `SCRIPT FLUSH` in the middle of the pipeline leaves
        calls with NOSCRIPT: none of those ran, and they are sent again, in order (calls of
        one channel keep their order unless another client reloaded the script in the very
        same instant). Raises Unavailable when Redis cannot be reached.
        """
        pipeline = self._cluster_pipeline if self.sharded else self._pipeline
        replies = await pipeline(script, calls)
        again = [index for index, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if again:
            for index, reply in zip(again, await pipeline(script, [calls[i] for i in again]),
                                    strict=True):  # fmt: skip
                replies[index] = reply
        return replies

    async def _pipeline(self, script: _Script, calls: list[_Call]) -> list[Any]:
        """`calls` sent at once on one of the pool's connections, packed by hiredis; the
        replies read in order, an error reply in its place.

        Not redis-py's `Pipeline`: it packs commands in Python, 8 µs a call against hiredis's
        1, a third of what a batched event cost (py-spy, docs/benchmarks.md); and its retry
        would send again publishes that may have run. Sent and read on a link of the engine's
        own (`streams/redislink.py`, `_take_link`): a stale one is replaced before anything is
        sent; a failure after sending raises Unavailable and closes the link, which may still
        hold replies, and so does an error reply (a `READONLY` from a primary demoted by a
        failover, say: the next link is opened on the primary named then).
        """
        sha = script.sha
        # The epoch of a channel the pipeline creates: random, and one draw for all of them
        # (a channel's epoch only has to differ from what that channel had before; unguessable
        # it need not be, so the process's generator, with no system call per pipeline).
        epoch = f"{random.getrandbits(32):08x}"
        packed = b"".join(
            _pack(("EVALSHA", sha, 2, *call_keys, epoch, *args) if index else
                  ("EVAL", script.text, 2, *call_keys, epoch, *args))
            for index, (call_keys, args) in enumerate(calls)
        )  # fmt: skip
        if script.wait:
            packed += self._wait
        async with self._link_slots:
            link = await self._take_link()
            try:
                await link.send(packed)
                async with asyncio.timeout(self._reply_timeout_s):
                    replies = await link.replies(len(calls) + script.wait)
            except BaseException as error:
                await link.close()
                if isinstance(error, RedisError | OSError | TimeoutError):
                    raise Unavailable(f"redis is unreachable: {error!r}") from error
                raise
            if any(isinstance(reply, ResponseError) for reply in replies):
                await link.close()
                replies = [_error(reply) for reply in replies]
            else:
                self._links.append(link)
        if script.wait:
            replies = self._replicated(replies[:-1], replies[-1])
        return replies

    async def _take_link(self) -> Link:
        """An idle link that is still usable, or a new one."""
        while self._links:
            link = self._links.pop()
            if link.usable:
                return link
            await link.close()
        assert isinstance(self._redis, aioredis.Redis)
        try:
            return await Link.open(self._redis.connection_pool)
        except (RedisError, OSError) as error:
            raise Unavailable(f"redis is unreachable: {error}") from error

    async def _read_replies(
        self, connection: Any, script: _Script, asking: list[bool]
    ) -> list[Any]:
        """The replies of a pipeline sent on `connection`, one per call, an error reply in its
        place; `asking`: the calls sent after an `ASKING` (its +OK is skipped). A pipeline that
        ends in `WAIT` is judged by `_replicated`."""
        replies: list[Any] = []
        for ask in asking:
            try:
                if ask:
                    await connection.read_response()  # ASKING's +OK
                replies.append(await connection.read_response())
            except ResponseError as error:  # that call's: the connection goes on
                replies.append(error)
        if script.wait:
            replies = self._replicated(replies, await connection.read_response())
        return replies

    def _replicated(self, replies: list[Any], acknowledged: int) -> list[Any]:
        """The replies of a pipeline that ended in `WAIT`: when fewer replicas than asked hold
        its writes, each publish that ran answers Unavailable instead (it is in the log and
        may still be delivered, as after a connection lost in mid-publish; the outbox relay's
        sequence numbers make its retry harmless)."""
        if acknowledged >= self.wait_replicas:
            return replies
        self.unreplicated += 1
        short = Unavailable(
            f"redis replicated the publish to {acknowledged} of {self.wait_replicas} replicas "
            "in time; it may still be delivered"
        )
        return [reply if isinstance(reply, Exception) else short for reply in replies]

    def _publish_args(
        self, channel: str, type: str, data_json: bytes, source: str = "", sequence: int = 0
    ) -> list[Any]:
        """The script's arguments after the first, the candidate epoch (`_pipeline` adds it)."""
        return [
            self.retention.max_len,
            int(self.retention.max_age_s * 1000),
            type,
            data_json,
            live_name(channel, self.db),
            source,
            sequence,
        ]

    async def head(self, channel: str) -> Position:
        epoch, last, _ = await self._run_read(channel, "0-0", 0)
        head = Position(epoch, last)
        self._note(channel, head)
        return head

    async def read_after(self, channel: str, position: Position, limit: int) -> list[Event]:
        after = f"{position.offset[0]}-{position.offset[1]}"
        epoch, last, entries = await self._run_read(channel, after, limit)
        events = [_entry_event(channel, epoch, entry) for entry in entries]
        if epoch == position.epoch:
            # The first entry after the position must follow it directly; if none is left
            # while the log went further, everything after the position was trimmed.
            gap = _previous(entries[0]) > position.offset if entries else position.offset < last
        else:
            gap = False
        check_position(position, epoch, last, trimmed=gap)
        self._note(channel, Position(epoch, last))
        return events

    async def _run_read(
        self, channel: str, after: str, count: int
    ) -> tuple[str, StreamId, list[Any]]:
        """The read script's reply for `channel`. Reads made while a pipeline of them is on its
        way share the next one, as publishes do: a reconnect storm's handshakes each read a
        head or a replay, and one round trip through the pool then carries many."""
        call: _Call = (keys(channel), [after, count])
        epoch, last, entries = await self._coalesced(self._reads, call, "read")
        return epoch.decode(), parse_stream_id_bytes(last), entries

    def _note(self, channel: str, head: Position) -> None:
        """A read found a watched channel's head at `head`.

        The reader remembers, per watched channel, the position after which it still owes the
        hub every event: the last one it delivered. Before it delivered any, that is the lowest
        head read since the channel was watched: every connection read its position after its
        subscription was confirmed, so none starts before it, and everything published after
        it comes live (or is caught up, when a message goes missing). Not the highest: a
        connection that read an older head still needs what followed it.
        """
        watch = self._watches.get(channel)
        if watch is None or not watch.wanted or watch.settled:
            return
        known = self._last.get(channel)
        if known is None or known.epoch != head.epoch or head.offset < known.offset:
            self._last[channel] = head

    def _deliver(self, channel: str, events: list[Event]) -> None:
        """Hand events to the hub, and remember the last for catch-up and gap detection."""
        if self._sink is None:
            return
        watch = self._watches.get(channel)
        if watch is not None and watch.wanted:
            watch.settled = True
            self._last[channel] = Position(events[-1].epoch, events[-1].offset)
        self._sink.dispatch(events)

    # -- live events -----------------------------------------------------------------------

    async def watch(self, channel: str) -> None:
        watch = self._watches.get(channel)
        if watch is None:
            watch = self._watches[channel] = _Watch()
        watch.wanted = True
        if watch.subscribed and not watch.ops:
            return
        if not watch.intended():
            self._send(channel, watch, "sub")
        waiter = asyncio.get_running_loop().create_future()
        watch.waiters.append(waiter)
        await waiter

    def unwatch(self, channel: str) -> None:
        watch = self._watches.get(channel)
        if watch is None:
            return
        watch.wanted = False
        watch.settled = False
        self._last.pop(channel, None)
        self._stop_filling(watch)
        if watch.intended():
            self._send(channel, watch, "unsub")

    def _send(self, channel: str, watch: _Watch, op: Op) -> None:
        watch.ops.append(op)
        if self.sharded:
            self._route_op(channel, watch, op)
        else:
            self._outbox.put_nowait((op, channel))

    async def _read_forever(self) -> None:
        delay = 0.1
        while True:
            try:
                await self._session()
            except (RedisConnectionError, RedisTimeoutError, OSError) as error:
                log.warning("redis pub/sub connection lost (%s); reconnecting", error)
            except Exception:
                # The reader must outlive any surprise: live delivery for the process hangs on it.
                log.exception("redis reader failed; reconnecting")
            if self._connected.is_set():
                delay = 0.1  # it was working: try again promptly
            self._connected.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _session(self) -> None:
        """One pub/sub connection: subscribe what is wanted, then pass messages on, all that one
        read of the socket brought at a time (a link: `streams/redislink.py`)."""
        client = redisclient.client(
            self.target,
            socket_connect_timeout=5,
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 0),
        )
        link: Link | None = None
        sender = None
        try:
            assert isinstance(client, aioredis.Redis)  # (a cluster has `_cluster_reader`)
            link = await Link.open(client.connection_pool)
            pubsub = _Subscriptions(link)
            await pubsub.subscribe(self._control_name)
            # Everything this process watches is subscribed anew; positions seen before the
            # connection was lost are caught up once each channel's subscription is confirmed.
            self._outbox = asyncio.Queue()
            for channel, watch in list(self._watches.items()):
                watch.ops.clear()
                watch.subscribed = False
                if watch.wanted:
                    self._send(channel, watch, "sub")
                else:
                    del self._watches[channel]
            sender = asyncio.create_task(
                self._send_commands(pubsub, self._outbox), name="sinal-redis-sender"
            )
            control = self._control_name.encode()
            while True:
                for reply in await link.available():
                    if isinstance(reply, ResponseError):
                        raise reply
                    kind, name, data = reply
                    if kind == b"message" and name != control:
                        self._live_message(channel_of(name.decode()), data)
                    else:
                        await self._handle(kind, name, data)
                if sender.done():
                    sender.result()
        finally:
            try:
                if sender is not None:
                    await cancel_and_wait(sender)
                # Gaps being filled: the catch-up after the reconnect reads the same from the
                # stream, from the last position delivered.
                for watch in self._watches.values():
                    self._stop_filling(watch)
                for filler in list(self._fillers):
                    await cancel_and_wait(filler)
            finally:
                # Whatever interrupts the above (`close` cancels again while it waits), the
                # connection is closed: left open, it outlives the event loop.
                try:
                    if link is not None:
                        with contextlib.suppress(RedisError, OSError):
                            await link.close()
                finally:
                    with contextlib.suppress(RedisError, OSError):
                        await client.aclose()

    async def _send_commands(self, pubsub: Any, outbox: asyncio.Queue[tuple[Op, str]]) -> None:
        while True:
            op: Op
            op, channel = await outbox.get()
            channels = [channel]
            while not outbox.empty():  # many connections joining at once: one command
                next_op, next_channel = outbox.get_nowait()
                if next_op != op:
                    await self._command(pubsub, op, channels)
                    op, channels = next_op, []
                channels.append(next_channel)
            await self._command(pubsub, op, channels)

    async def _command(self, pubsub: Any, op: Op, channels: list[str]) -> None:
        # The control bus rides in a shard's outbox as the channel "" (never a channel's name).
        names = [live_name(channel, self.db) if channel else self._control_name
                 for channel in channels]  # fmt: skip
        if not self.sharded:
            await (pubsub.subscribe if op == "sub" else pubsub.unsubscribe)(*names)
            return
        # One SSUBSCRIBE names channels of one slot only (CROSSSLOT otherwise).
        by_slot: dict[int, list[str]] = {}
        for name in names:
            by_slot.setdefault(key_slot(name.encode()), []).append(name)
        for group in by_slot.values():
            await (pubsub.ssubscribe if op == "sub" else pubsub.sunsubscribe)(*group)

    async def _handle(self, kind: bytes, name_bytes: bytes, data: Any) -> None:
        """A reply on the reader's connection: `[kind, name, data]`."""
        name = name_bytes.decode()
        if name == self._control_name:
            if kind == b"subscribe":
                self._now_live()
            elif kind == b"message":
                self._control_message(data)
            return
        channel = channel_of(name)
        if kind == b"message":
            self._live_message(channel, data)
        elif kind in (b"subscribe", b"unsubscribe"):
            await self._confirmed(channel, "sub" if kind == b"subscribe" else "unsub")

    def _now_live(self) -> None:
        """The control bus's subscription is confirmed: the reader is live."""
        if self._was_live:
            self.reconnects += 1
        self._was_live = True
        self._connected.set()

    def _control_message(self, data: bytes) -> None:
        address, separator, body = data.partition(b" ")
        if not separator:  # not from Sinal's `control_send`
            log.warning("ignored a malformed message on %s", self._control_name)
            return
        self._control_received(address.decode(errors="replace") or None, body)

    def _live_message(self, channel: str, data: bytes) -> None:
        """A live message of `channel` (`parse_live`), from either reader: delivered after the
        channel's last delivered event, or, when its predecessor never arrived, after what the
        stream holds in between (`_fill`)."""
        try:
            event, previous = parse_live(channel, data)
        except ValueError:  # not from Sinal's publish script
            log.warning("ignored a malformed live message of %s", channel)
            return
        watch = self._watches.get(channel)
        if watch is None or not watch.wanted:  # no longer watched: the hub drops it
            if self._sink is not None:
                self._sink.dispatch([event])
        elif watch.filling is not None:  # after the gap being filled, in order
            watch.held.append((event, previous))
        elif not self._place(channel, event, previous):
            self._fill(channel, watch, event, previous)

    async def _confirmed(self, channel: str, op: Op) -> None:
        watch = self._watches.get(channel)
        if watch is None:
            return
        if watch.ops and watch.ops[0] == op:
            del watch.ops[0]
        watch.subscribed = op == "sub"
        if watch.ops:
            return
        if watch.subscribed and watch.wanted:
            if await self._catch_up(channel):
                self.gaps_caught_up += 1
            waiters, watch.waiters = watch.waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        elif not watch.wanted and not watch.waiters:
            del self._watches[channel]

    def _place(self, channel: str, event: Event, previous: StreamId | None) -> bool:
        """Deliver a live message after the last event delivered of its channel; drop it when
        a catch-up delivered it already. False, delivering nothing, when the message's
        predecessor was never delivered: messages before it went missing on their way."""
        last = self._last.get(channel)
        if last is not None and last.epoch == event.epoch:
            if event.offset <= last.offset:
                return True
            if previous is not None and previous != last.offset:
                return False
        # Another epoch: the session that receives it resets the channel (Redis lost its data).
        self._deliver(channel, [event])
        return True

    def _fill(self, channel: str, watch: _Watch, event: Event, previous: StreamId | None) -> None:
        """A live message of `channel` arrived after a gap: read what is missing from the
        stream in a task of the channel's own, so the reader goes on with other channels;
        the channel's live messages wait in `held` until the gap is filled."""
        watch.held = [(event, previous)]
        filler = asyncio.create_task(self._fill_gap(channel, watch), name="sinal-redis-gap")
        watch.filling = filler
        self._fillers.add(filler)
        filler.add_done_callback(self._fillers.discard)

    async def _fill_gap(self, channel: str, watch: _Watch) -> None:
        delay = 0.1
        try:
            while True:
                self.gaps_while_connected += 1
                log.info("a live message of %s went missing; catching up from the stream", channel)
                while True:
                    try:
                        await self._catch_up(channel)
                        break
                    except Unavailable as error:
                        # The live connection is up, so this is likely brief; if it is lost,
                        # the catch-up after the reconnect takes over (and cancels this).
                        log.warning("catching up %s failed (%s); trying again", channel, error)
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 5.0)
                held, watch.held = watch.held, []
                for index, (event, previous) in enumerate(held):
                    if not self._place(channel, event, previous):
                        watch.held = held[index:]  # another gap, after the one just filled
                        break
                else:
                    return
        finally:
            if watch.filling is asyncio.current_task():
                watch.filling = None
                watch.held = []

    def _stop_filling(self, watch: _Watch) -> None:
        if watch.filling is not None:
            # Cancelled at once (it cannot deliver after this), awaited where the reader's
            # session ends (`_session`, `_cluster_reader`).
            watch.filling.cancel()
            watch.filling = None
        watch.held = []

    async def _catch_up(self, channel: str) -> bool:
        """Deliver what the stream holds after the last position delivered of `channel`:
        after a reconnect, what was published while this process was not listening; while
        connected, what a missing live message left out. Whether there was anything.

        Nothing newer of the channel is delivered meanwhile (the reader waits, or holds the
        channel's messages), so the hub sees the channel's events in order.
        """
        position = self._last.get(channel)
        if position is None or self._sink is None:
            return False
        found = False
        try:
            while True:
                events = await self.read_after(channel, position, CATCH_UP_PAGE)
                if events:
                    found = True
                    self._deliver(channel, events)
                    position = Position(events[-1].epoch, events[-1].offset)
                if len(events) < CATCH_UP_PAGE:
                    return found
        except PositionLost as lost:
            head = lost.head
            if lost.reason == "epoch":
                # Redis lost its data while this process was away: all the new epoch holds was
                # published after what was delivered here, so it follows the reset (the
                # notification outbox refills a restarted Redis this way).
                head = Position(head.epoch, (0, 0))
            watch = self._watches.get(channel)
            if watch is not None and watch.wanted:
                watch.settled = True
                self._last[channel] = head
            self._sink.reset(channel, lost.reason, head)
            if lost.reason == "epoch":
                return await self._catch_up(channel)
            return False

    # -- Redis Cluster ---------------------------------------------------------------------
    #
    # Live messages go by sharded pub/sub: a channel's messages reach only the connections
    # subscribed on the primary that owns its slot. The reader keeps one pub/sub connection
    # per primary that has something to subscribe (a `_Shard`), and routes each channel's
    # SSUBSCRIBE to the owner of its slot in the cluster client's slot map.
    #
    # What breaks a subscription, and what the reader does:
    # - the shard's connection is lost (its primary died, a failover): every channel routed
    #   through it is subscribed again where the refreshed slot map says;
    # - the server ends one channel's subscription (an `sunsubscribe` nobody asked for: its
    #   slot moved, or its primary became a replica): that channel alone is;
    # - a subscription is refused (`-MOVED`: the slot map was stale): as a lost connection.
    # Each channel subscribed again catches up from the last position delivered (`_catch_up`),
    # as after a lost connection on a standalone Redis, so nothing is skipped, and an epoch
    # change becomes a reset. A live message missing while its shard's connection stayed up
    # is caught up by the channel's own task (`_fill`), as on a standalone Redis.

    def _route_op(self, channel: str, watch: _Watch, op: Op) -> None:
        """Send `op` for `channel` to the shard it belongs to (see `_send`)."""
        shard = self._route.get(channel)
        if op == "unsub":
            if shard is None:  # nothing is subscribed anywhere: done at once
                watch.ops.pop()
                if not watch.ops:
                    watch.subscribed = False
                    if not watch.wanted and not watch.waiters:
                        del self._watches[channel]
                return
            shard.outbox.put_nowait((op, channel))
            return
        try:
            owner = self._shard_for(live_name(channel, self.db))
        except (RedisClusterException, RedisError, KeyError):  # no slot map yet, slot uncovered
            self._lose(channel)
            return
        if shard is not None and shard is not owner:
            # Its slot moved while commands were on their way to the old owner: start afresh.
            self._lose(channel)
            return
        self._route[channel] = owner
        owner.channels.add(channel)
        owner.outbox.put_nowait((op, channel))

    def _lose(self, channel: str) -> None:
        """`channel`'s subscription is gone: subscribe it again once the slot map is fresh.
        A gap being filled is left to the catch-up that follows the new subscription, which
        reads from the same position (the last delivered)."""
        shard = self._route.pop(channel, None)
        if shard is not None:
            shard.channels.discard(channel)
        watch = self._watches.get(channel)
        if watch is not None:
            self._stop_filling(watch)
        self._homeless.add(channel)
        self._reroute.set()

    def _shard_for(self, name: str) -> _Shard:
        """The shard of the primary owning `name`'s slot, started if need be."""
        node: ClusterNode = self._cluster.nodes_manager.get_node_from_slot(key_slot(name.encode()))
        shard = self._shards.get(node.name)
        if shard is None:
            shard = self._shards[node.name] = _Shard(node.name, node.host, int(node.port))
            shard.task = asyncio.create_task(
                self._shard_session(shard), name=f"sinal-redis-shard-{node.name}"
            )
        return shard

    @property
    def _cluster(self) -> RedisCluster:
        assert isinstance(self._redis, RedisCluster)
        return self._redis

    async def _cluster_reader(self) -> None:
        """Owns the shards; after a loss or a move, refreshes the slot map and subscribes the
        channels that lost their subscription, each on the primary that owns it now."""
        delay = 0.0
        self._control_homeless = True
        self._reroute.set()
        try:
            while True:
                await self._reroute.wait()
                if delay:  # a shard was lost just now: let a failover progress
                    await asyncio.sleep(delay)
                self._reroute.clear()
                started = asyncio.get_running_loop().time()
                try:
                    await self._cluster.nodes_manager.initialize()
                except (RedisClusterException, RedisError, OSError) as error:
                    log.warning("redis cluster slot map not refreshed (%s); trying again", error)
                    self._reroute.set()
                    delay = min(max(delay * 2, 0.05), 1.0)
                    continue
                self._subscribe_homeless()
                # Back off while shards keep failing; not after a quiet spell.
                quiet = asyncio.get_running_loop().time() - started > 2.0
                delay = 0.0 if quiet else min(max(delay * 2, 0.05), 1.0)
        finally:
            shards = list(self._shards.values())
            self._shards.clear()
            for shard in shards:
                if shard.task is not None:
                    await cancel_and_wait(shard.task)
            for watch in self._watches.values():
                self._stop_filling(watch)
            for filler in list(self._fillers):
                await cancel_and_wait(filler)

    def _subscribe_homeless(self) -> None:
        if self._control_homeless:
            try:
                shard = self._shard_for(self._control_name)
            except (RedisClusterException, RedisError, KeyError) as error:
                log.warning("the control bus's slot has no primary (%s)", error)
                self._reroute.set()
            else:
                self._control_homeless = False
                shard.control = True
                shard.outbox.put_nowait(("sub", ""))
        homeless, self._homeless = self._homeless, set()
        if homeless:
            self.reconnects += 1
        for channel in homeless:
            watch = self._watches.get(channel)
            if watch is None or channel in self._route:
                continue
            watch.ops.clear()
            watch.subscribed = False
            if watch.wanted:
                self._send(channel, watch, "sub")
            elif not watch.waiters:
                del self._watches[channel]

    async def _shard_session(self, shard: _Shard) -> None:
        """One primary's pub/sub connection, until it fails; then its channels are lost."""
        client = redisclient.node_client(
            self.target, shard.host, shard.port,
            socket_connect_timeout=5, socket_keepalive=True, retry=Retry(NoBackoff(), 0),
        )  # fmt: skip
        pubsub = client.pubsub()
        sender = None
        try:
            await pubsub.ping()  # connects: messages can be read before anything is subscribed
            sender = asyncio.create_task(
                self._send_commands(pubsub, shard.outbox), name=f"sinal-redis-sender-{shard.name}"
            )
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is not None:
                    await self._handle_sharded(shard, message)
                if sender.done():
                    sender.result()
        except (RedisError, RedisClusterException, OSError, Unavailable) as error:
            log.warning("redis shard %s lost (%s); subscribing its channels again", shard.name,
                        error)  # fmt: skip
        except Exception:
            log.exception("redis shard %s reader failed; subscribing its channels again",
                          shard.name)  # fmt: skip
        finally:
            try:
                if sender is not None:
                    await cancel_and_wait(sender)
            finally:
                await _close_quietly(pubsub, client)  # as `_session`
                self._shard_lost(shard)

    def _shard_lost(self, shard: _Shard) -> None:
        if self._shards.get(shard.name) is shard:
            del self._shards[shard.name]
        for channel in list(shard.channels):
            if self._route.get(channel) is shard:
                self._lose(channel)
        shard.channels.clear()
        if shard.control:
            shard.control = False
            self._connected.clear()
            self._control_homeless = True
            self._reroute.set()

    async def _handle_sharded(self, shard: _Shard, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "pong":
            return
        name = message["channel"].decode()
        if name == self._control_name:
            if kind == "ssubscribe":
                self._now_live()
            elif kind == "smessage":
                self._control_message(message["data"])
            elif kind == "sunsubscribe":  # its slot moved: subscribe where it went
                shard.control = False
                self._connected.clear()
                self._control_homeless = True
                self._reroute.set()
            return
        channel = channel_of(name)
        if self._route.get(channel) is not shard:
            return  # left behind by a channel subscribed again elsewhere
        if kind == "smessage":
            self._live_message(channel, message["data"])
        elif kind == "ssubscribe":
            await self._confirmed(channel, "sub")
        elif kind == "sunsubscribe":
            watch = self._watches.get(channel)
            if watch is not None and watch.ops and watch.ops[0] == "unsub":
                await self._confirmed(channel, "unsub")
                watch = self._watches.get(channel)
                if watch is None or not (watch.ops or watch.subscribed):
                    self._route.pop(channel, None)
                    shard.channels.discard(channel)
            elif watch is not None and watch.wanted:
                self._lose(channel)  # the server ended it: its slot moved
            else:
                self._route.pop(channel, None)
                shard.channels.discard(channel)

    async def _cluster_pipeline(self, script: _Script, calls: list[_Call]) -> list[Any]:
        """`_pipeline` on a cluster: the calls grouped by the primary owning each call's slot,
        one packed pipeline per primary, sent concurrently; one channel's calls share a slot,
        so they go in order on one connection.

        A call refused because the slot map was stale or the cluster was failing over
        (`MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`) did not run: it is sent again, to the
        owner of a freshly read slot map, for up to `CLUSTER_RETRY_S`; so are the calls of
        a primary that could not be reached at all (nothing was sent). A call is never sent
        twice when it may have run: the calls of a connection lost after sending answer
        Unavailable, and so does a refused call when a later call of its channel ran (sent
        again, it would come after it). What is still refused after the deadline answers
        Unavailable too.
        """
        try:
            await self._cluster.initialize()
        except (RedisClusterException, RedisError, OSError) as error:
            raise Unavailable(f"redis is unreachable: {error}") from error
        replies: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        asking: dict[int, str] = {}  # call → the node an ASK redirected it to, for one try
        deadline = asyncio.get_running_loop().time() + CLUSTER_RETRY_S
        delay = 0.02
        while True:
            groups: dict[str, tuple[ClusterNode, list[int]]] = {}
            for index in todo:
                try:
                    node = self._call_node(calls[index], asking.get(index))
                except (RedisClusterException, RedisError, KeyError) as error:
                    replies[index] = ClusterDownError(f"no primary for the slot: {error}")
                    continue
                groups.setdefault(node.name, (node, []))[1].append(index)
            results = await asyncio.gather(
                *(self._node_pipeline(node, script, [calls[i] for i in indexes],
                                      [i in asking for i in indexes])
                  for node, indexes in groups.values()),
                return_exceptions=True,
            )  # fmt: skip
            asking.clear()
            for (_, indexes), result in zip(groups.values(), results, strict=True):
                if isinstance(result, _NotSent):
                    for index in indexes:
                        replies[index] = ClusterDownError(str(result))
                elif isinstance(result, Unavailable):
                    for index in indexes:
                        replies[index] = result
                elif isinstance(result, BaseException):
                    raise result
                else:
                    for index, reply in zip(indexes, result, strict=True):
                        replies[index] = reply
                        if isinstance(reply, AskError):
                            asking[index] = f"{reply.host}:{reply.port}"
            todo = _resendable(calls, replies)
            if not todo or asyncio.get_running_loop().time() + delay > deadline:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
            if any(index not in asking for index in todo):
                with contextlib.suppress(RedisClusterException, RedisError, OSError):
                    await self._cluster.nodes_manager.initialize()
        for index, reply in enumerate(replies):
            if isinstance(reply, _REDIRECTS):
                replies[index] = Unavailable(f"redis cluster refused the call: {reply}")
        return replies

    def _call_node(self, call: _Call, asked: str | None) -> ClusterNode:
        manager = self._cluster.nodes_manager
        if asked is not None:
            host, _, port = asked.rpartition(":")
            node: ClusterNode | None = manager.get_node(host=host, port=int(port))
            if node is not None:
                return node
        node = manager.get_node_from_slot(key_slot(call[0][0].encode()))
        assert node is not None
        return node

    async def _node_pipeline(
        self, node: ClusterNode, script: _Script, calls: list[_Call], asking: list[bool]
    ) -> list[Any]:
        """`_pipeline` on one cluster node's connection; `asking`: the calls to send after
        an `ASKING` (the slot is being imported there). Raises _NotSent when the node could
        not be reached (nothing was sent), Unavailable when the connection was lost after."""
        epoch = f"{random.getrandbits(32):08x}"  # as `_pipeline`
        sha = script.sha
        packed = b"".join(
            (_pack(("ASKING",)) if ask else b"")
            + _pack(("EVALSHA", sha, 2, *call_keys, epoch, *args) if index else
                    ("EVAL", script.text, 2, *call_keys, epoch, *args))
            for index, ((call_keys, args), ask) in enumerate(zip(calls, asking, strict=True))
        ) + (self._wait if script.wait else b"")  # fmt: skip
        try:
            connection = node.acquire_connection()
        except RedisError as error:
            raise _NotSent(f"no connection to {node.name}: {error}") from error
        try:
            try:
                await connection.connect()  # type: ignore[no-untyped-call]
                if await connection.can_read():  # stale: EOF or stray data
                    raise RedisConnectionError("the connection has data")
            except (RedisError, OSError):
                await connection.disconnect()
                try:
                    await connection.connect()  # type: ignore[no-untyped-call]
                except (RedisError, OSError) as error:
                    raise _NotSent(f"{node.name} is unreachable: {error}") from error
            try:
                await connection.send_packed_command(packed, check_health=False)
                replies = await self._read_replies(connection, script, asking)
            except BaseException as error:
                await connection.disconnect()
                if isinstance(error, RedisError | OSError):
                    raise Unavailable(f"redis node {node.name} was lost: {error}") from error
                raise
        finally:
            node.release(connection)
        return replies


async def _close_quietly(pubsub: Any, client: Any) -> None:
    """Close a pub/sub and its client; a second cancellation may not leave the client open."""
    try:
        with contextlib.suppress(RedisError, OSError):
            await pubsub.aclose()
    finally:
        with contextlib.suppress(RedisError, OSError):
            await client.aclose()


def parse_live(channel: str, payload: bytes) -> tuple[Event, StreamId | None]:
    """A live message of `channel`: `<epoch> <id> <previous id> <type> <data>`, as the publish
    script sends it; the event and the id of the entry before it in the stream. Messages from
    processes of an earlier version lack the previous id (None: they cannot reveal a gap); an
    event type never starts with a digit, so the two forms cannot be confused.

    Raises ValueError (UnicodeDecodeError included) on anything else.
    """
    epoch, sid, third, rest = payload.split(b" ", 3)
    previous: StreamId | None = None
    if third[:1].isdigit():
        previous = parse_stream_id_bytes(third)
        type_, data = rest.split(b" ", 1)
    else:
        type_, data = third, rest
    event = Event(channel, type_.decode(), data, epoch.decode(), parse_stream_id_bytes(sid))
    return event, previous


def _fields(entry: Any) -> dict[bytes, bytes]:
    flat = entry[1]
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _entry_event(channel: str, epoch: str, entry: Any) -> Event:
    fields = _fields(entry)
    offset = parse_stream_id_bytes(entry[0])
    return Event(channel, fields[b"t"].decode(), fields[b"d"], epoch, offset)


def _previous(entry: Any) -> StreamId:
    return parse_stream_id_bytes(_fields(entry)[b"p"])
