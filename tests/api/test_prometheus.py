"""A real Prometheus (Debian's `prometheus`) scrapes a running Sinal; its HTTP API shows the
figures move as clients come, go, receive events and send a garbage cursor."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.conftest import require_service
from tests.support import ServerProcess, bearer, free_port, open_stream, publish, stream_until

pytestmark = pytest.mark.anyio

TOKEN = "prometheus-scrapes-sinal"
ALICE = bearer("alice")
CHANNEL, KIND = "notifications:alice", "notification.created"


class Prometheus:
    """A private Prometheus on a free port, scraping `targets` every second."""

    def __init__(self, workdir: Path, targets: list[str], token: str) -> None:
        self.port = free_port()
        self.workdir = workdir
        config = workdir / "prometheus.yml"
        config.write_text(
            f"""
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: sinal
    authorization:
      credentials: {token}
    static_configs:
      - targets: [{", ".join(f'"{target}"' for target in targets)}]
"""
        )
        self.log = (workdir / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def ready(self, within: float = 30.0) -> None:
        async with httpx.AsyncClient(base_url=self.url) as client:
            with anyio.fail_after(within):
                while True:
                    try:
                        if (await client.get("/-/ready")).status_code == 200:
                            return
                    except httpx.TransportError:
                        pass
                    assert self.process.poll() is None, (
                        self.workdir / "prometheus.log"
                    ).read_text()
                    await anyio.sleep(0.1)

    async def query(self, expr: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=self.url) as client:
            response = await client.get("/api/v1/query", params={"query": expr})
        body = response.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def until(self, expr: str, holds: Callable[[float], bool], within: float = 20) -> float:
        """The single value of `expr` once `holds` it; fail after `within` seconds."""
        seen: list[dict[str, Any]] = []
        with anyio.move_on_after(within):
            while True:
                seen = await self.query(expr)
                if len(seen) == 1 and holds(float(seen[0]["value"][1])):
                    return float(seen[0]["value"][1])
                await anyio.sleep(0.25)
        pytest.fail(f"{expr} never held; last: {seen}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Callable[[ServerProcess], Prometheus]]:
    if shutil.which("prometheus") is None:
        require_service("prometheus", "Debian's prometheus package is not installed")
    started: list[Prometheus] = []

    def start(server: ServerProcess) -> Prometheus:
        target = server.url.removeprefix("http://")
        prometheus = Prometheus(tmp_path, [target], TOKEN)
        started.append(prometheus)
        return prometheus

    yield start
    for prometheus in started:
        prometheus.stop()


async def test_prometheus_sees_connections_deliveries_and_resets_move(
    spawn: Callable[..., ServerProcess],
    engine_env: dict[str, str],
    prometheus_for: Callable[[ServerProcess], Prometheus],
) -> None:
    server = spawn({**engine_env, "SINAL_METRICS_TOKEN": TOKEN})
    prometheus = prometheus_for(server)
    await prometheus.ready()
    await prometheus.until('up{job="sinal"}', lambda up: up == 1)  # the token was accepted
    await prometheus.until("sinal_engine_up", lambda up: up == 1)

    connections = 'sinal_connections{transport="sse"}'
    async with httpx.AsyncClient(base_url=server.url) as client:
        async with (
            open_stream(server.url, ALICE) as (_, wait),
            open_stream(server.url, bearer("bob")),
        ):
            await prometheus.until(connections, lambda n: n == 2)
            for n in range(10):
                await publish(client, CHANNEL, KIND, {"n": n})
            await wait(lambda r: len(r.payloads()) == 10, 10)
            await prometheus.until("sinal_deliveries_total", lambda n: n >= 10)
        await prometheus.until(connections, lambda n: n == 0)
    await prometheus.until(
        'sinal_connections_closed_total{transport="sse",reason="disconnect"}', lambda n: n == 2
    )

    reset = await stream_until(
        server.url, ALICE, lambda r: bool(r.of_type("ready")), last_event_id="garbage"
    )
    assert reset.of_type("reset")
    await prometheus.until('sinal_resets_total{reason="invalid"}', lambda n: n >= 1)
    await prometheus.until('sinal_resumes_total{outcome="reset"}', lambda n: n == 1)
