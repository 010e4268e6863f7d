"""The disconnect vocabulary: what each reason tells an SSE client and a WebSocket client."""

from __future__ import annotations

import asyncio
import time

import anyio
import msgspec
import pytest

from streams import disconnect
from streams.disconnect import (
    CLOSE_CODES,
    REASONS,
    close_at,
    close_text,
    deadline,
    disconnect_data,
    reconnect_allowed,
)


def test_every_reason_has_its_own_close_code() -> None:
    assert set(CLOSE_CODES) == REASONS
    assert len(set(CLOSE_CODES.values())) == len(REASONS)
    assert CLOSE_CODES["shutdown"] == 1001  # what every WebSocket client knows as "going away"
    assert all(4000 <= code < 5000 for reason, code in CLOSE_CODES.items() if reason != "shutdown")


@pytest.mark.parametrize("reason", sorted(REASONS))
def test_only_revoked_forbids_reconnecting(reason: str) -> None:
    data = msgspec.to_builtins(disconnect_data(reason))  # type: ignore[arg-type]
    assert data["reason"] == reason
    assert data["reconnect"] is (reason != "revoked")
    assert reconnect_allowed(reason) is data["reconnect"]  # type: ignore[arg-type]


def test_limit_says_when_to_come_back() -> None:
    limit = msgspec.json.encode(disconnect_data("limit", 2.2))
    assert limit == b'{"reason":"limit","reconnect":true,"retry_after":3}'
    assert close_text("limit", 2.2) == "limit retry_after=3"
    assert b"retry_after" not in msgspec.json.encode(disconnect_data("expired", 5))
    assert close_text("expired") == "expired"


def test_the_deadline_adds_the_grace() -> None:
    assert deadline(None, 30) is None
    assert deadline(1000.0, 30) == 1030.0


@pytest.mark.anyio
async def test_close_at_calls_back_at_the_wall_clock_time() -> None:
    loop = asyncio.get_running_loop()
    fired = asyncio.Event()
    assert close_at(loop, None, fired.set) is None
    handle = close_at(loop, time.time() + 0.05, fired.set)
    assert handle is not None
    with anyio.fail_after(2):
        await fired.wait()
    past = close_at(loop, time.time() - 10, lambda: None)  # already due: at once, not never
    assert past is not None
    assert past.when() <= loop.time()
    past.cancel()


@pytest.mark.anyio
async def test_expiries_fire_in_order_and_a_cancelled_one_never() -> None:
    loop = asyncio.get_running_loop()
    fired: list[str] = []
    done = asyncio.Event()
    now = time.time()
    for name, after in (("third", 0.15), ("first", 0.05), ("second", 0.1)):
        close_at(loop, now + after, lambda name=name: fired.append(name))
    cancelled = close_at(loop, now + 0.01, lambda: fired.append("cancelled"))
    assert cancelled is not None
    cancelled.cancel()
    close_at(loop, now + 0.2, done.set)
    with anyio.fail_after(2):
        await done.wait()
    assert fired == ["first", "second", "third"]


@pytest.mark.anyio
async def test_connections_that_leave_early_do_not_pile_up_in_the_schedule() -> None:
    """Streams that end long before their credential expires (the common case) cancel their
    entry; the schedule drops such entries once they are many, instead of holding them for
    hours until their deadline."""
    loop = asyncio.get_running_loop()
    later = time.time() + 3600
    entries = [close_at(loop, later, lambda: None) for _ in range(10_000)]
    for entry in entries:
        assert entry is not None
        entry.cancel()
    assert len(disconnect._SCHEDULES[loop]._heap) <= 2 * disconnect._COMPACT_AFTER
