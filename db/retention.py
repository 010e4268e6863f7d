"""The retention purge: what is past its time is deleted in the background.

Old and expired notifications, audit entries older than their own retention, and the expired
revocations and announcements. The big tables (notifications, audit) go in small batches with a
pause between them, so the purge never holds the write lock (SQLite) or long row locks
(PostgreSQL) for long enough to be felt by requests; revocations and announcements are a few
rows at a time (one per revoked user, one per live announcement) and go in one statement each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

from db import announcements, audit, notifications, revocations
from db.engine import DATABASE_ERRORS, Database, note_database_error
from streams.tasks import finish_or_cancel

log = logging.getLogger("sinal.retention")


class Purge:
    """Runs every `interval_s`; owned by the app's lifespan, which cancels it on shutdown.

    `keep_days=0` keeps notifications forever (expired ones are still deleted);
    `audit_keep_days=0` keeps audit entries forever. `deleted` counts notifications (the
    stats' `notifications_purged`); the other tables have counters of their own.
    """

    def __init__(
        self,
        database: Database,
        *,
        keep_days: float,
        interval_s: float,
        audit_keep_days: float = 365.0,
        batch: int = 1000,
        pause_s: float = 0.05,
    ) -> None:
        self.database = database
        self.keep_days = keep_days
        self.audit_keep_days = audit_keep_days
        self.interval_s = interval_s
        self.batch = batch
        self.pause_s = pause_s
        self.deleted = 0
        self.audit_deleted = 0
        self.revocations_deleted = 0
        self.announcements_deleted = 0
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="sinal-retention-purge")

    async def stop(self, timeout_s: float = 5.0) -> None:
        if self._task is not None:
            await finish_or_cancel(self._task, self._stopping, timeout_s)
            self._task = None

    async def _run(self) -> None:
        while not self._stopping.is_set():
            before = self._counts()
            try:
                await self.run_once()
            except DATABASE_ERRORS as error:
                note_database_error()
                log.warning("retention purge failed, will retry: %s", error)
            done = [now - then for now, then in zip(self._counts(), before, strict=True)]
            if any(done):
                log.info(
                    "retention purge deleted %d notification(s), %d audit entr(y/ies), "
                    "%d revocation(s), %d announcement(s)",
                    *done,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval_s)

    def _counts(self) -> tuple[int, int, int, int]:
        return (self.deleted, self.audit_deleted, self.revocations_deleted,
                self.announcements_deleted)  # fmt: skip

    async def run_once(self, now: datetime | None = None) -> int:
        """Delete everything due now, batch by batch; return how many rows, of every table."""
        now = now or datetime.now(UTC)
        # Kept forever: a boundary before any id, so only expiry deletes.
        older_than = _boundary(now, self.keep_days) or _BEGINNING
        total = 0
        async for deleted in self._batches(
            lambda: notifications.purge(older_than, now=now, batch=self.batch)
        ):
            self.deleted += deleted
            total += deleted
        audit_older_than = _boundary(now, self.audit_keep_days)
        if audit_older_than is not None and not self._stopping.is_set():
            async for deleted in self._batches(
                lambda: audit.purge_batch(self.database, audit_older_than, self.batch)
            ):
                self.audit_deleted += deleted
                total += deleted
        deleted = await revocations.purge(self.database, now)
        self.revocations_deleted += deleted
        total += deleted
        deleted = await announcements.purge(self.database, now)
        self.announcements_deleted += deleted
        return total + deleted

    async def _batches(self, purge_batch: Callable[[], Awaitable[int]]) -> AsyncIterator[int]:
        """Run `purge_batch` until a batch comes back short or the purge stops, pausing between
        batches; yield each batch's count."""
        while True:
            deleted = await purge_batch()
            yield deleted
            if deleted < self.batch or self._stopping.is_set():
                return
            await asyncio.sleep(self.pause_s)


def _boundary(now: datetime, keep_days: float) -> datetime | None:
    """`keep_days` before `now`, or None to keep everything: for 0, and for a span that reaches
    back past year 1 (it would raise OverflowError at every pass, and nothing is that old)."""
    if not keep_days:
        return None
    try:
        return now - timedelta(days=keep_days)
    except OverflowError:
        return None


_BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)
