"""Publishing at a schedule, not at the server's pace: a pool of keep-alive connections.

Requests are handed over as they fall due; each connection carries one at a time (as a client
library's pool does, no pipelining) and the rest wait in order in the generator, where their
waiting counts in the latency measured from the moment they were due. There is no task, timer
or future per request, only a callback: at tens of thousands of requests per second on one
core, that is the difference between measuring the server and measuring the generator.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import cast

from loadtests.procs import CONTENT_LENGTH, log

# A publish not answered within this long fails (its connection is replaced).
PUBLISH_TIMEOUT_S = 10.0

Job = tuple[int, int, int]  # first sequence, events, send time (ns)


class PublishConnection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, answers with a Content-Length."""

    __slots__ = ("buffer", "job", "pool", "sent_at", "transport")

    def __init__(self, pool: PublishPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.job: Job | None = None
        self.sent_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.pool.lost(self)

    def send(self, raw: bytes, job: Job) -> None:
        assert self.transport is not None
        self.job = job
        self.sent_at = time.monotonic()
        self.transport.write(raw)

    def data_received(self, data: bytes) -> None:
        if self.buffer:
            data = self.buffer + data
        head_end = data.find(b"\r\n\r\n")
        if head_end < 0:
            self.buffer = data
            return
        found = CONTENT_LENGTH(data, 0, head_end)
        end = head_end + 4 + (int(found.group(1)) if found else 0)
        if len(data) < end:
            self.buffer = data
            return
        self.buffer = data[end:]
        job, self.job = self.job, None
        if job is not None:
            self.pool.answered(self, int(data[9:12]), data[head_end + 4 : end], job)


class PublishPool:
    """`size` connections; requests beyond them wait in a queue, in order."""

    def __init__(self, port: int, size: int, accept: Callable[[int, bytes, int], bool]) -> None:
        self.port = port
        self.size = size
        self.accept = accept  # (status, body, events) → answered as expected?
        # Idle connections are taken in turn (first in, first out), not the last one freed:
        # at a low rate that would carry nearly every request over the same connection, which
        # behind `SO_REUSEPORT` means the same worker, and let the others' keep-alive expire.
        self.idle: deque[PublishConnection] = deque()
        self.queue: deque[tuple[bytes, Job]] = deque()
        self.connections: set[PublishConnection] = set()
        self.pending = 0  # requests sent or queued, not answered
        self.round_trips_ns: list[int] = []
        self.failed: list[Job] = []
        self.problems: list[str] = []
        self._watch: asyncio.Task[None] | None = None
        self._reopen: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        for _ in range(self.size):
            await self._connect()
        self._watch = asyncio.create_task(self._watchdog())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(
            lambda: PublishConnection(self), "127.0.0.1", self.port
        )
        self.connections.add(connection)
        self._next(connection)

    def send(self, raw: bytes, job: Job) -> None:
        self.pending += 1
        if self.idle:
            self.idle.popleft().send(raw, job)
        else:
            self.queue.append((raw, job))

    def _next(self, connection: PublishConnection) -> None:
        if self.queue:
            connection.send(*self.queue.popleft())
        else:
            self.idle.append(connection)

    def answered(self, connection: PublishConnection, status: int, body: bytes, job: Job) -> None:
        self.pending -= 1
        if self.accept(status, body, job[1]):
            self.round_trips_ns.append(time.time_ns() - job[2])
        else:
            self._fail(job, f"{status}: {body[:200]!r}")
        self._next(connection)

    def lost(self, connection: PublishConnection) -> None:
        self.connections.discard(connection)
        with contextlib.suppress(ValueError):
            self.idle.remove(connection)
        if connection.job is not None:
            self.pending -= 1
            self._fail(connection.job, "connection lost")
            connection.job = None
        if self._watch is not None:  # still running: replace it
            task = asyncio.create_task(self._connect())
            self._reopen.add(task)
            task.add_done_callback(self._reopen.discard)

    def _fail(self, job: Job, problem: str) -> None:
        self.failed.append(job)
        if len(self.problems) < 3:
            self.problems.append(problem)
            log(f"publish of {job[1]} event(s) from {job[0]} failed: {problem}")

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(1)
            late = time.monotonic() - PUBLISH_TIMEOUT_S
            for connection in list(self.connections):
                stuck = connection.job is not None and connection.sent_at < late
                if stuck and connection.transport is not None:
                    connection.transport.close()  # `lost` fails the job

    async def settle(self, within: float) -> None:
        """Wait for every request to be answered (or to fail)."""
        deadline = time.monotonic() + within
        while self.pending and time.monotonic() < deadline:  # noqa: ASYNC110 (a deadline too)
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        for task in list(self._reopen):
            task.cancel()
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.close()
