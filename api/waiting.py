"""Long waits in request handlers: they end when the client leaves or the server drains.

An HTTP handler is not cancelled when its client disconnects; a long-poll would go on waiting,
holding its subscription and, for commands, claiming work nobody will receive.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from litestar import Request

from streams.hub import Hub

T = TypeVar("T")


async def unless_gone(
    request: Request[Any, Any, Any], hub: Hub, wait: Coroutine[Any, Any, T]
) -> T | None:
    """The result of `wait`, or None if the client disconnects or the server starts draining
    first (`wait` is then cancelled)."""
    work = asyncio.ensure_future(wait)
    gone = asyncio.ensure_future(_disconnected(request))
    drained = asyncio.ensure_future(hub.wait_drained())
    try:
        await asyncio.wait({work, gone, drained}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (gone, drained):
            task.cancel()
    if work.done():
        return work.result()
    work.cancel()
    try:
        await work
    except asyncio.CancelledError:
        if asyncio.current_task().cancelling():  # type: ignore[union-attr]
            raise  # this handler itself is being cancelled
    return None


async def _disconnected(request: Request[Any, Any, Any]) -> None:
    """Returns when the client disconnects (the request body, if any, was already read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
