"""A Sinal server on a Sentinel-managed Redis follows a failover of its primary."""

from __future__ import annotations

import json
from collections.abc import Callable

import anyio
import httpx
import pytest

from tests.support import (
    PrivateSentinels,
    Received,
    ServerProcess,
    bearer,
    open_stream,
    publish,
    stream_until,
)

pytestmark = pytest.mark.anyio

USERS = ("alice", "bob", "carol")
KIND = "notification.created"
EVENTS = 40  # per channel; the primary dies after the tenth
PAUSE_S = 0.05  # between publishes: the failover (2-3 s) falls amid them


Acked = dict[str, list[tuple[int, int]]]  # channel -> (n, attempt) the server acknowledged


async def publish_through_failover(
    base_url: str, channel: str, acked: Acked, reached: anyio.Event, killed: anyio.Event
) -> None:
    """Publish EVENTS events, retrying a 503 (the primary is gone) with a new attempt number,
    so that an attempt that was stored before its 503 is told apart from its retry."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        for n in range(EVENTS):
            if n == 10:
                reached.set()
                await killed.wait()
            attempt = 0
            while True:
                body = {"channel": channel, "type": KIND, "data": {"n": n, "attempt": attempt}}
                response = await client.post(
                    "/v1/publish", json=body, headers=bearer("svc", "service")
                )
                if response.status_code == 201:
                    acked[channel].append((n, attempt))
                    break
                assert response.status_code == 503, response.text
                attempt += 1
                await anyio.sleep(PAUSE_S)
            await anyio.sleep(PAUSE_S)


def received_pairs(received: Received) -> list[tuple[int, int]]:
    return [(p["n"], p["attempt"]) for p in received.payloads(KIND)]


async def publish_all(
    url: str, channels: dict[str, str], acked: Acked, sentinels: PrivateSentinels
) -> None:
    """Every channel's publisher at once; the primary is killed once each has published 10
    events, and comes back as the new primary's replica after the failover."""
    killed = anyio.Event()
    async with anyio.create_task_group() as group:
        reached = {channel: anyio.Event() for channel in channels.values()}
        for channel in channels.values():
            group.start_soon(
                publish_through_failover, url, channel, acked, reached[channel], killed
            )
        with anyio.fail_after(10):
            for event in reached.values():
                await event.wait()
        old = await anyio.to_thread.run_sync(sentinels.kill_primary)
        killed.set()
        await anyio.to_thread.run_sync(sentinels.wait_failover, old)
        # Publishes wait for a replica: none is acknowledged until the old primary is back
        # as the new one's replica.
        await anyio.to_thread.run_sync(sentinels.rejoin, old)


async def test_failover_loses_nothing_silently_and_publishing_and_resume_go_on(
    private_sentinels: PrivateSentinels, spawn: Callable[..., ServerProcess]
) -> None:  # the server stops before the Redis processes (fixtures end in reverse order)
    """The primary is killed (SIGKILL) while events are published on several channels: every
    acknowledged event reaches its subscriber once and in order, or the subscriber gets a
    `reset` for that channel; after the failover, publishing and resuming work."""
    # A publish is acknowledged once the replica holds it: none can be lost with the primary.
    server = spawn({"SINAL_REDIS_URL": private_sentinels.url(), "SINAL_REDIS_WAIT_REPLICAS": "1"})
    channels = {user: f"notifications:{user}" for user in USERS}
    acked: Acked = {channel: [] for channel in channels.values()}
    cursors: dict[str, str | None] = {}
    async with (
        open_stream(server.url, bearer("alice")) as (alice, _),
        open_stream(server.url, bearer("bob")) as (bob, _),
        open_stream(server.url, bearer("carol")) as (carol, _),
    ):
        streams = {"alice": alice, "bob": bob, "carol": carol}
        with anyio.fail_after(90):  # the publishers end once every event is acknowledged
            await publish_all(server.url, channels, acked, private_sentinels)
        for user, received in streams.items():
            channel = channels[user]
            last = acked[channel][-1]
            await received.until(
                lambda r, last=last: last in received_pairs(r) or bool(r.of_type("reset")), 20
            )
            resets = [json.loads(e.data) for e in received.of_type("reset")]
            pairs = received_pairs(received)
            assert len(pairs) == len(set(pairs)), f"{user}: duplicates in {pairs}"
            delivered = [pair for pair in pairs if pair in acked[channel]]
            # In order: as acknowledged, with only unacknowledged attempts in between.
            assert delivered == [pair for pair in acked[channel] if pair in delivered], user
            missing = [pair for pair in acked[channel] if pair not in pairs]
            if missing:  # only with a reset that says the channel's data was lost
                assert any(channel in reset["channels"] for reset in resets), (user, missing)
                # ...which is an unacknowledged publish the old primary had delivered.
                assert all(reset["reason"] == "invalid" for reset in resets), resets
            cursors[user] = received.last_id
    # After the failover: a client that resumes from its cursor gets what came meanwhile.
    async with httpx.AsyncClient(base_url=server.url) as client:
        for n in (100, 101):
            await publish(client, channels["alice"], KIND, {"n": n, "attempt": 0})
    resumed = await stream_until(
        server.url,
        bearer("alice"),
        lambda r: len(r.payloads(KIND)) >= 2,
        last_event_id=cursors["alice"],
    )
    assert received_pairs(resumed) == [(100, 0), (101, 0)]
    assert not resumed.of_type("reset")
