"""`sinal serve --workers N`: N server processes on one port, supervised by the parent.

Each worker is a whole `sinal serve` process (its own event loop, engine reader, hub and node on
the control bus) that binds its own listening socket with `SO_REUSEPORT`. The kernel then hashes
each new connection to one of the sockets of the group, so connections spread evenly over the
workers. The alternative, one listening socket shared by every worker, lets whichever worker
wakes first accept: a worker that is busy with a burst keeps winning the race for new
connections while the others idle (nginx moved to `reuseport` for the same reason).

The parent only supervises: it starts the workers, restarts one that dies (after a delay that
doubles with each quick death, so a worker that cannot start does not spin), and on SIGTERM or
SIGINT asks every worker to drain (SIGTERM: each runs the graceful shutdown of a single process,
sending `disconnect` `shutdown` to its streams), waits for them and exits; a worker still running
at the deadline is killed. The clients of a worker that died reconnect with their cursor and
land on another worker (or the restarted one): with the Redis engine nothing is lost.

Workers must share their events, so several need the Redis engine, and their database is
PostgreSQL: the outbox relay takes turns between processes only there (see `db.outbox`).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

log = logging.getLogger("sinal.workers")

# How long the parent waits for its workers to drain on SIGTERM before it kills them: above a
# worker's own shutdown (10 s for requests in progress, then the engine and background loops).
STOP_DEADLINE_S = 30.0
# A worker that ran at least this long before dying is restarted at once; one that died sooner
# waits FIRST_BACKOFF_S, doubled with each further quick death, up to MAX_BACKOFF_S.
STABLE_AFTER_S = 30.0
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0

_PR_SET_PDEATHSIG = 1


def refusal(workers: int, redis_url: str | None, database_url: str) -> str | None:
    """Why `workers` processes cannot serve these settings, or None when they can."""
    if workers <= 1:
        return None
    if not redis_url:
        return (
            f"--workers {workers} needs the Redis engine (SINAL_REDIS_URL): with the memory "
            "engine each process holds its own streams, so an event published through one "
            "worker would never reach the clients of another"
        )
    if not database_url.startswith("postgresql"):
        return (
            f"--workers {workers} needs PostgreSQL (SINAL_DATABASE_URL=postgresql://...): "
            "SQLite takes one writer at a time for the whole file, and its outbox relay serves "
            "a single process (only PostgreSQL makes the relays of several processes take turns)"
        )
    return None


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A socket bound to `host:port` with `SO_REUSEPORT`, so that several processes can bind
    the same address and the kernel spreads new connections over them."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def port_in_use(host: str, port: int) -> str | None:
    """Why `host:port` cannot be served by workers, or None. `SO_REUSEPORT` lets processes of
    the same user share a port silently, so a server already answering there (another
    `sinal serve --workers`, say) is found by connecting to it, not by a failed bind."""
    probe_host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    with contextlib.suppress(OSError), socket.create_connection((probe_host, port), 0.5):
        return "another server already listens there"
    try:
        reuse_port_socket(host, port).close()
    except OSError as error:
        return error.strerror or str(error)
    return None


def die_with_parent(parent: int) -> None:
    """Have the kernel send SIGTERM (a graceful drain) to this worker when its supervisor dies,
    even by SIGKILL, so that no orphan keeps serving the port (Linux only; elsewhere a no-op)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the supervisor died before the request above
        os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class _Slot:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    quick_deaths: int = 0
    restart_at: float | None = None


class Supervisor:
    """Runs `command(index)` for each of `count` workers until SIGTERM or SIGINT."""

    def __init__(
        self,
        count: int,
        command: Callable[[int], list[str]],
        *,
        stop_deadline_s: float = STOP_DEADLINE_S,
    ) -> None:
        self.command = command
        self.stop_deadline_s = stop_deadline_s
        self.slots = [_Slot(index) for index in range(1, count + 1)]
        self.stopping: int | None = None  # the signal that asked to stop
        self._signals: list[int] = []

    def run(self) -> int:
        """Supervise until told to stop; 0 when every worker drained in time."""
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_write, False)
        previous_fd = signal.set_wakeup_fd(wake_write)
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            for slot in self.slots:
                self._start(slot)
            while self.stopping is None:
                self._wait(wake_read, self._next_timeout())
                self._handle_signals()
                if self.stopping is None:
                    self._reap_and_restart()
            return self._drain(wake_read)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(previous_fd)
            os.close(wake_read)
            os.close(wake_write)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self._signals.append(sig)  # acted on in the loop: nothing is done inside a handler

    def _handle_signals(self) -> None:
        signals, self._signals = self._signals, []
        for sig in signals:
            if sig == signal.SIGCHLD:
                continue
            if self.stopping is None:
                self.stopping = sig
                log.info(
                    "%s: draining %d worker(s) (at most %g s)",
                    signal.Signals(sig).name,
                    len(self._live()),
                    self.stop_deadline_s,
                )
                # SIGTERM whatever the signal: a worker that got SIGINT from the terminal too
                # is not hurried by it (to uvicorn, only a second SIGINT means "now").
                self._send(signal.SIGTERM)
            elif sig == signal.SIGINT:
                log.warning("SIGINT again: workers stop without waiting for requests")
                self._send(signal.SIGINT)

    def _start(self, slot: _Slot) -> None:
        slot.restart_at = None
        slot.started = time.monotonic()
        slot.process = subprocess.Popen(self.command(slot.index))
        log.info("worker %d started (pid %d)", slot.index, slot.process.pid)

    def _reap_and_restart(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            process = slot.process
            if process is not None and process.poll() is not None:
                slot.process = None
                lived = now - slot.started
                slot.quick_deaths = 0 if lived >= STABLE_AFTER_S else slot.quick_deaths + 1
                delay = (
                    0.0
                    if slot.quick_deaths == 0
                    else min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (slot.quick_deaths - 1))
                )
                slot.restart_at = now + delay
                log.warning(
                    "worker %d (pid %d) %s after %.1f s; restarting it in %g s",
                    slot.index,
                    process.pid,
                    _ending(process.returncode),
                    lived,
                    delay,
                )
            if slot.restart_at is not None and slot.restart_at <= now:
                self._start(slot)

    def _next_timeout(self) -> float:
        """Until the next restart is due; a second at most, in case a SIGCHLD was coalesced."""
        due = [slot.restart_at for slot in self.slots if slot.restart_at is not None]
        return max(0.0, min([1.0, *(at - time.monotonic() for at in due)]))

    def _drain(self, wake_read: int) -> int:
        deadline = time.monotonic() + self.stop_deadline_s
        while self._live() and time.monotonic() < deadline:
            self._wait(wake_read, min(0.5, deadline - time.monotonic()))
            self._handle_signals()
        late = self._live()
        for slot in late:
            assert slot.process is not None
            pid = slot.process.pid
            log.error("worker %d (pid %d) did not drain in time: killed", slot.index, pid)
            slot.process.kill()
            slot.process.wait()
        log.info("all workers stopped")
        return 1 if late else 0

    def _live(self) -> list[_Slot]:
        return [s for s in self.slots if s.process is not None and s.process.poll() is None]

    def _send(self, sig: int) -> None:
        for slot in self._live():
            assert slot.process is not None
            with contextlib.suppress(ProcessLookupError):
                slot.process.send_signal(sig)

    @staticmethod
    def _wait(wake_read: int, timeout: float) -> None:
        """Sleep until a signal arrives (the wakeup fd) or `timeout` passes."""
        readable, _, _ = select.select([wake_read], [], [], max(0.0, timeout))
        if readable:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_read, 512)


def _ending(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


def worker_command(index: int, host: str, port: int) -> list[str]:
    """The command line of worker `index`: `sinal serve` told it is a supervised worker."""
    return [
        sys.executable, "-m", "api", "serve", "--host", host, "--port", str(port),
        "--worker", str(index), "--supervisor", str(os.getpid()),
    ]  # fmt: skip
