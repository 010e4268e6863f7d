"""The ladder's accounting: which deliveries were due, which were lost, which targets were met;
and its publisher pool against a server that answers."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest

from loadtests.ladder import Config, Running, _expected, missing, parse_args, verdict
from loadtests.lean import SseSubscriber, Subscriber
from loadtests.openloop import PublishPool

pytestmark = pytest.mark.anyio


def subscriber_seeing(*locals_: int) -> Subscriber:
    subscriber = SseSubscriber(b"", None)
    for local in locals_:
        subscriber.seen[local] = 1
    return subscriber


async def test_unicast_losses_are_counted_per_channel() -> None:
    # 10 channels, sequences 5..44: channel 3 gets 13, 23, 33, 43 (its 1st to 4th events).
    subscriber = subscriber_seeing(1, 2, 4)
    assert missing(subscriber, 3, 10, 5, 45, []) == 1
    assert missing(subscriber, 3, 10, 5, 45, [3]) == 0  # its publish failed: not a loss
    assert missing(subscriber, 3, 10, 5, 45, [2]) == 1  # a failure it saw anyway changes nothing
    # channel 7 gets 7, 17, 27, 37 (0th to 3rd): nothing seen
    assert missing(subscriber_seeing(), 7, 10, 5, 45, []) == 4


async def test_broadcast_losses_cover_every_sequence_of_the_rung() -> None:
    subscriber = subscriber_seeing(*range(100, 150), *range(151, 200))
    assert missing(subscriber, 0, 1, 100, 200, []) == 1
    assert missing(subscriber, 0, 1, 100, 200, [150]) == 0


def cfg(*argv: str) -> Config:
    return parse_args(list(argv))


def running_with(by_channel: dict[int, list[Subscriber]]) -> Running:
    subscribers = [s for group in by_channel.values() for s in group]
    return Running(
        name="x", port=0, server_pids=(0,), redis_pids=(), subscribers=subscribers,
        by_channel=by_channel, pool=PublishPool(0, 1, lambda *_: True),
        build=lambda *_: b"", batch=1, connect_failures=0,
    )  # fmt: skip


async def test_deliveries_due_skip_channels_nobody_holds_and_failed_publishes() -> None:
    config = cfg("unicast", "--subscribers", "10")
    # channel 4's subscriber failed to connect; sequences 0..29 → 3 events per channel
    running = running_with({c: [subscriber_seeing()] for c in range(10) if c != 4})
    assert _expected(running, config, 0, 30, set()) == 27
    assert _expected(running, config, 0, 30, {4, 5}) == 26
    assert _expected(running, config, 3, 30, set()) == 24  # channels 0-2 had 0, 10, 20
    broadcast = cfg("broadcast", "--subscribers", "3")
    everyone = running_with({0: [subscriber_seeing() for _ in range(3)]})
    assert _expected(everyone, broadcast, 10, 20, {12}) == 27


def row(offered: float, **sides: dict[str, Any]) -> dict[str, Any]:
    base = {"lost": 0, "duplicated": 0, "publish_errors": 0}
    return {"offered": offered, **{name: {**base, **figures} for name, figures in sides.items()}}


def test_unicast_target_is_the_best_sound_rung_within_the_p99_bound() -> None:
    rows = [
        row(2000, sinal={"events_per_s": 2000, "p99_ms": 4}),
        row(5000, sinal={"events_per_s": 5000, "p99_ms": 9}),
        row(10000, sinal={"events_per_s": 9990, "p99_ms": 8, "lost": 3}),  # not sound
        row(20000, sinal={"events_per_s": 12000, "p99_ms": 900}),
    ]
    found = verdict(cfg("unicast"), rows, "sinal")
    assert found == {"unicast_events_per_s_at_p99": 5000, "unicast_events_per_s": False}
    rows[1]["sinal"]["events_per_s"] = 6000
    assert verdict(cfg("unicast"), rows, "sinal")["unicast_events_per_s"] is True


def test_broadcast_targets_compare_with_nchan_rung_by_rung() -> None:
    rows = [
        row(50_000, sinal={"deliveries_per_s": 49_800, "p99_ms": 20},
            nchan={"deliveries_per_s": 50_000, "p99_ms": 11}),
        row(200_000, sinal={"deliveries_per_s": 200_000, "p99_ms": 26},
            nchan={"deliveries_per_s": 180_000, "p99_ms": 13}),
        row(400_000, sinal={"deliveries_per_s": 390_000, "p99_ms": 300},
            nchan={"deliveries_per_s": 250_000, "p99_ms": 40}),
    ]  # fmt: skip
    met = verdict(cfg("broadcast"), rows, "sinal")
    # 49,800 is within the 1 % wobble of 50,000; p99 beyond 200,000 offered is not held to 2x
    assert met == {"broadcast_deliveries_vs_nchan": True, "broadcast_p99_vs_nchan": True}
    rows[1]["sinal"]["p99_ms"] = 27
    assert verdict(cfg("broadcast"), rows, "sinal")["broadcast_p99_vs_nchan"] is False
    rows[0]["sinal"]["deliveries_per_s"] = 49_000
    assert verdict(cfg("broadcast"), rows, "sinal")["broadcast_deliveries_vs_nchan"] is False


def test_batch_rates_default_higher() -> None:
    assert cfg("unicast").loads == (2000, 5000, 10000, 20000)
    assert cfg("unicast", "--batch", "50").loads == (10000, 20000, 40000, 80000)
    assert cfg("broadcast").loads == (50000, 100000, 200000, 400000)
    assert cfg("broadcast").events_per_s(200_000) == 100
    with pytest.raises(SystemExit):
        cfg("broadcast", "--rates", "100")


async def test_pool_answers_in_order_queues_beyond_its_connections_and_counts_refusals() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                body = await reader.readexactly(length)
                status = b"400 Bad Request" if body == b"bad" else b"201 Created"
                writer.write(b"HTTP/1.1 %s\r\ncontent-length: 2\r\n\r\nok" % status)
                await asyncio.sleep(0.001)
        except asyncio.IncompleteReadError:
            pass  # the pool closed its connections
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = PublishPool(port, 2, lambda status, body, events: status == 201 and body == b"ok")
    try:
        await pool.open()
        for seq in range(10):
            body = b"bad" if seq == 7 else b"good"
            raw = b"POST /p HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            pool.send(raw, (seq, 1, 0))
        assert pool.pending == 10
        assert len(pool.queue) == 8
        with anyio.fail_after(5):
            await pool.settle(5)
        assert pool.pending == 0
        assert [job[0] for job in pool.failed] == [7]
        assert len(pool.round_trips_ns) == 9
    finally:
        await pool.close()
        server.close()
        await server.wait_closed()
