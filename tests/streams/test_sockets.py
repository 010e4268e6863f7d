"""The action sockets' per-user budget and shutdown, on their own, with a clock the test moves."""

from __future__ import annotations

import anyio
import anyio.abc
import pytest

from streams.sockets import ActionSockets

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Socket:
    def __init__(self) -> None:
        self.stopped: tuple[int, str] | None = None
        self.stopping = anyio.Event()

    def stop(self, code: int, reason: str) -> None:
        self.stopped = (code, reason)
        self.stopping.set()


def spend(sockets: ActionSockets, user: str) -> int:
    """Take messages until the budget is out; how many were allowed."""
    taken = 0
    while sockets.take(user):
        taken += 1
    return taken


def test_a_users_sockets_share_one_budget_that_refills_at_the_rate() -> None:
    clock = Clock()
    sockets = ActionSockets(rate=2.0, burst=4, clock=clock)
    with sockets.opened("ann", Socket()), sockets.opened("ann", Socket()):
        assert spend(sockets, "ann") == 4
        clock.now += 1.0
        assert spend(sockets, "ann") == 2
        clock.now += 100.0
        assert spend(sockets, "ann") == 4  # never more than the burst
        with sockets.opened("bob", Socket()):
            assert spend(sockets, "bob") == 4  # a budget of his own
        assert sockets.count == 2


def test_leaving_and_coming_back_does_not_refill_the_budget() -> None:
    clock = Clock()
    sockets = ActionSockets(rate=1.0, burst=10, clock=clock)
    with sockets.opened("ann", Socket()):
        assert spend(sockets, "ann") == 10
    clock.now += 3.0
    with sockets.opened("ann", Socket()):
        assert spend(sockets, "ann") == 3


def test_buckets_of_users_who_left_are_dropped_once_full() -> None:
    """Memory stays bounded: a bucket outlives its user's last socket only until it is full
    again (burst / rate seconds at most), however many users come and go."""
    clock = Clock()
    sockets = ActionSockets(rate=10.0, burst=20, clock=clock)
    for n in range(1000):
        with sockets.opened(f"user-{n}", Socket()):
            sockets.take(f"user-{n}")
        clock.now += 0.01
    # Each took one token, back within 0.1 s: only those who left in the last 0.1 s are kept.
    assert sockets.buckets <= 11
    clock.now += 10.0
    with sockets.opened("late", Socket()):
        assert sockets.buckets == 1
    assert sockets.buckets == 0  # "late" spent nothing: full, so dropped at once
    assert sockets.count == 0


async def test_close_all_stops_every_socket_and_waits_for_them() -> None:
    sockets = ActionSockets(rate=1.0, burst=1)
    first, second = Socket(), Socket()

    async def serve(socket: Socket, user: str, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        with sockets.opened(user, socket):
            task_status.started()
            await socket.stopping.wait()

    async with anyio.create_task_group() as group:
        with anyio.fail_after(5):
            await group.start(serve, first, "ann")
            await group.start(serve, second, "bob")
            assert sockets.count == 2
            await sockets.close_all(1001, "server shutting down", timeout_s=5)
        assert sockets.count == 0
        assert first.stopped == second.stopped == (1001, "server shutting down")
        assert sockets.closing


async def test_close_all_gives_up_after_its_timeout() -> None:
    sockets = ActionSockets(rate=1.0, burst=1)
    stubborn = Socket()
    with sockets.opened("ann", stubborn), anyio.fail_after(5):
        await sockets.close_all(1001, "bye", timeout_s=0.05)
        assert stubborn.stopped == (1001, "bye")
        assert sockets.count == 1
