"""A connection to Redis written and read directly: commands packed by hiredis, replies parsed
by hiredis in bulk.

redis-py opens it (the address, TLS, `AUTH`, `SELECT`, the primary a Sentinel names: everything
`streams/redisclient.py` configures) and then steps aside. Measured on the unicast ladder
(docs/benchmarks.md): per reply, redis-py's connection and pub/sub layers (a timeout, a retry
wrapper, health checks and observability hooks per call, a dict per pub/sub message) cost as
much as the rest of delivering the event. Here one socket read that brings a hundred replies is
one `feed` and a hundred `gets`.

The Redis engine uses links for its pipelines and for its reader on one Redis server (plain or
Sentinel-managed); a cluster's per-node connections stay redis-py's (see `streams/redis.py`).
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

READ_BYTES = 65536


class Link:
    """One connection. Error replies come back as `ResponseError` instances in their place,
    not raised: a pipeline's other replies still count. A lost connection raises redis-py's
    `ConnectionError`."""

    __slots__ = ("_connection", "_parser", "_reader", "_writer")

    def __init__(self, connection: Any) -> None:
        # A connected redis-py connection; from now on only its socket is used, and `close`.
        self._connection = connection
        self._reader = connection._reader
        self._writer = connection._writer
        if self._reader is None or self._writer is None:
            raise RedisConnectionError("the connection to redis is not open")
        self._parser = hiredis.Reader(replyError=ResponseError)

    @classmethod
    async def open(cls, pool: Any) -> Link:
        """A new connection made as `pool` makes its own (not counted among them)."""
        connection = pool.make_connection()
        try:
            await connection.connect()
            return cls(connection)
        except BaseException:
            await connection.disconnect()
            raise

    @property
    def usable(self) -> bool:
        """Whether an idle link can take commands: not closed by either end, nothing unread
        (Redis closes idle connections after `timeout`, or it restarted)."""
        return (
            not self._reader.at_eof()
            and self._reader.exception() is None
            and not self._writer.is_closing()
            and self._parser.gets() is False
        )

    async def send(self, packed: bytes) -> None:
        self._writer.write(packed)
        await self._writer.drain()  # returns at once unless the socket's buffer is full

    async def replies(self, count: int) -> list[Any]:
        """The next `count` replies."""
        parser = self._parser
        replies: list[Any] = []
        while len(replies) < count:
            reply = parser.gets()
            if reply is False:
                await self._fill()
            else:
                replies.append(reply)
        return replies

    async def available(self) -> list[Any]:
        """Every reply the socket has brought, at least one (waiting for it)."""
        parser = self._parser
        reply = parser.gets()
        while reply is False:
            await self._fill()
            reply = parser.gets()
        replies = [reply]
        while (reply := parser.gets()) is not False:
            replies.append(reply)
        return replies

    async def _fill(self) -> None:
        data = await self._reader.read(READ_BYTES)
        if not data:
            raise RedisConnectionError("redis closed the connection")
        self._parser.feed(data)

    async def close(self) -> None:
        await self._connection.disconnect()
