"""The retention purge: old and expired notifications are deleted in the background.

Small batches with a pause between them, so the purge never holds the write lock (SQLite) or
long row locks (PostgreSQL) for long enough to be felt by requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from db import notifications
from db.engine import DATABASE_ERRORS
from streams.tasks import finish_or_cancel

log = logging.getLogger("sinal.retention")


class Purge:
    """Runs every `interval_s`; owned by the app's lifespan, which cancels it on shutdown.

    `keep_days=0` keeps notifications forever (expired ones are still deleted).
    """

    def __init__(
        self, *, keep_days: float, interval_s: float, batch: int = 1000, pause_s: float = 0.05
    ) -> None:
        self.keep_days = keep_days
        self.interval_s = interval_s
        self.batch = batch
        self.pause_s = pause_s
        self.deleted = 0
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
            try:
                deleted = await self.run_once()
            except DATABASE_ERRORS as error:
                log.warning("retention purge failed, will retry: %s", error)
            else:
                if deleted:
                    log.info("retention purge deleted %d notification(s)", deleted)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval_s)

    async def run_once(self, now: datetime | None = None) -> int:
        """Delete everything due now, batch by batch; return how many."""
        now = now or datetime.now(UTC)
        # keep_days=0: a boundary before any id, so only expiry deletes.
        older_than = now - timedelta(days=self.keep_days) if self.keep_days else _BEGINNING
        total = 0
        while True:
            deleted = await notifications.purge(older_than, now=now, batch=self.batch)
            total += deleted
            self.deleted += deleted
            if deleted < self.batch or self._stopping.is_set():
                return total
            await asyncio.sleep(self.pause_s)


_BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)
