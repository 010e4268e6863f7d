"""A Redis server that restarts empty: open streams and resuming clients are told, not misled."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import httpx
import pytest
import redis

from tests.conftest import require_service
from tests.support import ServerProcess, bearer, free_port, open_stream, publish, stream_until

pytestmark = pytest.mark.anyio

ALICE = bearer("alice")
CHANNEL, KIND = "notifications:alice", "notification.created"


class PrivateRedis:
    """A redis-server of the test's own, with no persistence, so a restart loses everything."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        require_service("redis-server", "the binary is not on PATH")
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


async def test_open_stream_gets_epoch_reset_then_new_events(
    spawn: Callable[..., ServerProcess], private_redis: PrivateRedis
) -> None:
    server = spawn({"SINAL_REDIS_URL": private_redis.url})
    async with (
        httpx.AsyncClient(base_url=server.url) as client,
        open_stream(server.url, ALICE) as (received, wait),
    ):
        await publish(client, CHANNEL, KIND, {"n": 0})
        await wait(lambda r: len(r.payloads()) == 1)
        before = received.last_id
        await anyio.to_thread.run_sync(private_redis.stop)
        await anyio.to_thread.run_sync(private_redis.start)
        # Publishing works again once the pools reconnect; until then it answers 503.
        for _ in range(100):
            response = await client.post(
                "/v1/publish",
                json={"channel": CHANNEL, "type": KIND, "data": {"n": 1}},
                headers=bearer("svc", "service"),
            )
            if response.status_code == 201:
                break
            assert response.status_code == 503, response.text
            await anyio.sleep(0.1)
        else:
            pytest.fail("publishing did not recover within 10 s of Redis coming back")
        await wait(lambda r: bool(r.of_type("reset")) and len(r.payloads()) == 2, 15)
    assert received.of_type("reset")[0].json() == {"channels": [CHANNEL], "reason": "epoch"}
    assert [p["n"] for p in received.payloads()] == [0, 1]

    # A client resuming from before the restart is told too.
    resumed = await stream_until(
        server.url, ALICE, lambda r: bool(r.of_type("ready")), last_event_id=before
    )
    reasons = {event.json()["reason"] for event in resumed.of_type("reset")}
    assert reasons == {"epoch"}
