"""The open action sockets of one process: a message budget per user, and shutdown.

Every user has one token bucket, shared by all of that user's sockets in the process, so that
opening more sockets buys no more messages. A bucket outlives the user's last socket until it
has refilled: dropped earlier, a client could reset its budget by reconnecting; kept forever,
the map would grow with every user ever seen. A full bucket is the same as a new one, so
dropping it then loses nothing.

Framework-free: a socket is anything with `stop(code, reason)`; `api/actions.py` owns the
WebSocket side.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Protocol


class ActionSocket(Protocol):
    def stop(self, code: int, reason: str) -> None:
        """End soon: after the message in hand, close with `code` and `reason`."""


class _Bucket:
    __slots__ = ("sockets", "tokens", "updated")

    def __init__(self, tokens: float, now: float) -> None:
        self.tokens = tokens
        self.updated = now
        self.sockets = 0


class ActionSockets:
    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self._sockets: set[ActionSocket] = set()
        self._buckets: dict[str, _Bucket] = {}
        # Users without a socket whose bucket is still refilling, oldest first (a dict as an
        # ordered set).
        self._leaving: dict[str, None] = {}
        self._closing = False
        self._emptied: asyncio.Event | None = None
        # For `/metrics`: messages by op and result (`ok`, `error`, `invalid`, `limited`).
        self.messages: Counter[tuple[str, str]] = Counter()

    @property
    def count(self) -> int:
        """Sockets open now."""
        return len(self._sockets)

    @property
    def buckets(self) -> int:
        """Buckets held now: users with a socket, and users who left less than a refill ago."""
        return len(self._buckets)

    @property
    def closing(self) -> bool:
        return self._closing

    @contextlib.contextmanager
    def opened(self, user: str, socket: ActionSocket) -> Iterator[None]:
        """Count `socket` as open, for `user`, while the block runs."""
        now = self.clock()
        self._drop_full(now)
        bucket = self._buckets.get(user)
        if bucket is None:
            bucket = self._buckets[user] = _Bucket(self.burst, now)
        bucket.sockets += 1
        self._leaving.pop(user, None)
        self._sockets.add(socket)
        try:
            yield
        finally:
            self._sockets.discard(socket)
            bucket.sockets -= 1
            if bucket.sockets == 0:
                self._leaving[user] = None
            self._drop_full(self.clock())
            if not self._sockets and self._emptied is not None:
                self._emptied.set()

    def take(self, user: str) -> bool:
        """Spend one message of `user`'s budget; False when there is none left.

        Only for a user with an open socket (`opened`)."""
        bucket = self._buckets[user]
        self._refill(bucket, self.clock())
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    async def close_all(self, code: int, reason: str, timeout_s: float) -> None:
        """Ask every socket to close, refuse new ones, and wait (at most `timeout_s`) until all
        have."""
        self._closing = True
        if not self._sockets:
            return
        self._emptied = asyncio.Event()
        for socket in list(self._sockets):
            socket.stop(code, reason)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._emptied.wait(), timeout_s)

    def _refill(self, bucket: _Bucket, now: float) -> float:
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        return bucket.tokens

    def _drop_full(self, now: float) -> None:
        # Oldest first, stopping at the first still refilling. Not strictly in order of becoming
        # full (a user who left with more tokens fills sooner), but every bucket is full at most
        # burst / rate seconds after its user left, so what is kept stays within that window.
        while self._leaving:
            user = next(iter(self._leaving))
            if self._refill(self._buckets[user], now) < self.burst:
                return
            del self._leaving[user]
            del self._buckets[user]
