"""Ending background tasks for certain."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("sinal.tasks")


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and return once it has ended.

    A cancellation can be swallowed by library code it lands in (seen with redis-py's pub/sub
    unsubscribe), leaving the task running; cancelling again until it ends keeps shutdown bounded.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.5)
    if not task.cancelled() and task.exception() is not None:
        log.warning("%s ended with an error", task.get_name(), exc_info=task.exception())


async def finish_or_cancel(
    task: asyncio.Task[Any], stopping: asyncio.Event, timeout_s: float
) -> None:
    """Ask a loop to end after the step in hand (it watches `stopping`), so that no query is cut
    off midway; cancel it if that takes longer than `timeout_s`."""
    stopping.set()
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout_s)
    except TimeoutError:
        await cancel_and_wait(task)
