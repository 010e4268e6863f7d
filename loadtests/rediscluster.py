"""A private Redis Cluster on free loopback ports: the one the test suite runs the cluster
tests against and the one `loadtests.cluster` measures, so both start it the same way.

No persistence, and a short node timeout so that a killed primary's replica takes over in about
two seconds. Every node is a `redis-server` child of this process, stopped by its pid.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import redis

from loadtests.procs import free_port


class PrivateCluster:
    """`primaries` primaries with `replicas` replicas each (3 and 1: six processes)."""

    NODE_TIMEOUT_MS = 1000

    def __init__(self, workdir: Path, primaries: int = 3, replicas: int = 1) -> None:
        if primaries < 3:
            raise ValueError("a Redis Cluster needs at least 3 primaries")
        self.workdir = workdir
        self.primary_count = primaries
        self.replicas = replicas
        self.ports = [free_port() for _ in range(primaries * (1 + replicas))]
        self.bus_ports = {port: free_port() for port in self.ports}  # set, or port + 10000
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports[:2])

    def pids(self) -> list[int]:
        """The pids of the nodes running now."""
        return [process.pid for process in self.processes.values() if process.poll() is None]

    def start(self) -> None:
        try:
            for port in self.ports:
                self._launch(port)
            for port in self.ports:
                self._wait_ping(port)
            subprocess.run(
                ["redis-cli", "--cluster", "create",
                 *(f"127.0.0.1:{port}" for port in self.ports),
                 "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                check=True, stdout=subprocess.DEVNULL, timeout=60,
            )  # fmt: skip
            self.wait_ok(self.ports)
        except BaseException:
            self.stop()
            raise

    def _launch(self, port: int) -> None:
        directory = self.workdir / str(port)
        directory.mkdir(parents=True, exist_ok=True)
        self.processes[port] = subprocess.Popen(
            ["redis-server", "--port", str(port), "--cluster-port", str(self.bus_ports[port]),
             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(directory), "--cluster-enabled", "yes",
             "--cluster-config-file", str(directory / "nodes.conf"),
             "--cluster-node-timeout", str(self.NODE_TIMEOUT_MS),
             # A replica whose primary died takes over whatever its replication lag.
             "--cluster-replica-validity-factor", "0"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip

    def _wait_ping(self, port: int) -> None:
        client = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                client.close()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def wait_ok(self, ports: list[int], within: float = 30.0) -> None:
        """Until every node of `ports` says `cluster_state:ok` and agrees on the primaries."""
        deadline = time.monotonic() + within
        for port in ports:
            client = redis.Redis(host="127.0.0.1", port=port)
            while True:
                try:
                    info = client.execute_command("CLUSTER", "INFO").decode()
                    if (
                        "cluster_state:ok" in info
                        and len(self.primaries(port)) == self.primary_count
                        and self._replicas_synced(client)
                    ):
                        break
                except redis.RedisError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the cluster is not ok on {port}")
                time.sleep(0.05)
            client.close()

    def _replicas_synced(self, client: redis.Redis) -> bool:
        """A primary has all its replicas, and each finished its first sync (a replica still
        loading it acknowledges no `WAIT`); true of a replica."""
        replication: dict[str, Any] = client.info("replication")
        if replication["role"] != "master":
            return True
        replicas = [v for k, v in replication.items() if k.startswith("slave") and k[5:].isdigit()]
        return len(replicas) >= self.replicas and all(r["state"] == "online" for r in replicas)

    def primaries(self, via: int | None = None) -> list[int]:
        """The ports of the primaries that serve slots, as node `via` sees them."""
        client = redis.Redis(host="127.0.0.1", port=via or next(iter(self.live_ports())))
        try:
            slots: Any = client.execute_command("CLUSTER", "SLOTS")
        finally:
            client.close()
        return sorted({int(entry[2][1]) for entry in slots})

    def live_ports(self) -> list[int]:
        return [port for port, process in self.processes.items() if process.poll() is None]

    def flush(self) -> None:
        for port in self.primaries():
            client = redis.Redis(host="127.0.0.1", port=port)
            client.flushall()  # the cluster is private to its owner
            client.close()

    def kill(self, port: int) -> None:
        process = self.processes[port]
        process.kill()
        process.wait()

    def restart(self, port: int) -> None:
        """Start a killed node again: it rejoins as a replica; waits until the cluster is ok."""
        if self.processes[port].poll() is None:
            return
        self._launch(port)
        self._wait_ping(port)
        self.wait_ok(self.ports)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
