"""A live message lost on its way while the server's Redis connection stays up."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.api.test_metrics import scrape, value
from tests.support import ADMIN, ServerProcess, bearer, open_stream, publish, publish_without_live

pytestmark = pytest.mark.anyio

ALICE = bearer("alice")
CHANNEL, KIND = "notifications:alice", "notification.created"


async def test_event_whose_live_message_was_lost_reaches_an_open_stream_in_order_once(
    spawn: Callable[..., ServerProcess], redis_url: str
) -> None:
    """Events in the stream whose live messages never came (a direct XADD, as the publish
    script minus its PUBLISH) reach an open stream when the next event is published: after
    the ones before them, before the next, each once; and the server counts the gap."""
    server = spawn({"SINAL_REDIS_URL": redis_url})
    async with (
        httpx.AsyncClient(base_url=server.url) as client,
        open_stream(server.url, ALICE) as (received, wait),
    ):
        for n in range(3):
            await publish(client, CHANNEL, KIND, {"n": n})
        await wait(lambda r: len(r.payloads()) == 3, 10)
        for n in (3, 4):
            await publish_without_live(redis_url, CHANNEL, KIND, {"n": n})
        for n in (5, 6):
            await publish(client, CHANNEL, KIND, {"n": n})
        await wait(lambda r: len(r.payloads()) >= 7, 10)
        # One more, so that a duplicate delivered late would be seen before it.
        await publish(client, CHANNEL, KIND, {"n": 7})
        await wait(lambda r: len(r.payloads()) >= 8, 10)
        stats = (await client.get("/v1/admin/stats", headers=ADMIN)).json()
    assert [payload["n"] for payload in received.payloads()] == list(range(8))
    assert not received.of_type("reset")
    ids = [event.id for event in received.events if event.event == KIND]
    assert len(set(ids)) == len(ids)
    assert (stats["gaps_while_connected"], stats["gaps_caught_up"]) == (1, 0)
    samples = await scrape(server.url)
    assert value(samples, "sinal_live_gaps_while_connected_total") == 1
    assert value(samples, "sinal_live_gaps_total") == 0
