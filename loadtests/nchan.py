"""Nchan, the pub/sub module for nginx (in C), as a baseline of the benchmarks.

Sinal's job in one server: publishers POST an event to a channel, browsers hold an
EventSource stream of the channels they watch. Nchan does the same with no application code,
which makes it the bar for what one core can do per event:

- `POST /pub/<channel>`: the request body is the message (answered 201 when a subscriber was
  there, 202 when none was);
- `GET /sub/<channel>` with `Accept: text/event-stream`: an EventSource stream, opening with the
  comment `: hi`, then `id:` and `data:` (the published body, byte for byte) per message.

The configuration is `loadtests/nchan/nginx.conf.in`, filled in per run with the port and a
temporary prefix. nginx runs in the foreground (`daemon off`), its master and its single worker
pinned to the server core like Sinal's process; the worker does the work, so its CPU is what
the benchmarks report. Debian's `nginx` and `libnginx-mod-nchan` are installed with apt-get
when missing (as root; otherwise the benchmark says what to install).

    uv run python -m loadtests.nchan --port 8300     # serve until Ctrl-C, to try it by hand
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from loadtests.nginx import binary, ensure, private_paths, start
from loadtests.procs import OURS, Child, children, free_port, log, pinned_child

TEMPLATE = Path(__file__).resolve().parent / "nchan" / "nginx.conf.in"
PACKAGES = ("nginx", "libnginx-mod-nchan")
MODULE_PATHS = (
    "/usr/share/nginx/modules/ngx_nchan_module.so",
    "/usr/lib/nginx/modules/ngx_nchan_module.so",
)


def installed() -> tuple[str, str] | None:
    """(nginx binary, Nchan module) when both are there."""
    nginx = binary()
    module = next((path for path in MODULE_PATHS if os.path.exists(path)), None)
    return (nginx, module) if nginx and module else None


def ensure_installed() -> tuple[str, str]:
    """nginx and the Nchan module, installed with apt-get first if need be."""
    return ensure(PACKAGES, installed, " (or --skip-nchan)")


def render(*, port: int, prefix: Path, module: str, nofile: int) -> str:
    """The configuration for one run: `@NAMES@` of the template filled in."""
    main_paths, http_paths = private_paths(prefix)
    values = {
        "@PORT@": str(port),
        "@PREFIX@": str(prefix),
        "@MAIN_PATHS@": main_paths,
        "@HTTP_PATHS@": http_paths,
        "@MODULE@": module,
        "@NOFILE@": str(nofile),
        # Every subscriber, the publishers' connections and some slack.
        "@CONNECTIONS@": str(max(1024, nofile - 64)),
    }
    text = TEMPLATE.read_text()
    for name, value in values.items():
        text = text.replace(name, value)
    return text


@dataclass
class Nchan:
    """A running nginx with Nchan: its master (`server`), its worker, its port."""

    server: Child
    worker_pid: int
    port: int

    def stop(self) -> None:
        OURS.discard(self.worker_pid)
        self.server.stop()  # SIGTERM: nginx's fast shutdown, the worker with it


def start_nchan(workdir: Path, core: int, nofile: int) -> Nchan:
    """nginx with Nchan on a free port, pinned to `core`, once it answers."""
    nginx, module = ensure_installed()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nofile = nofile if hard == resource.RLIM_INFINITY else min(nofile, hard)
    port = free_port()
    prefix = workdir / f"nchan-{port}"
    config = render(port=port, prefix=prefix, module=module, nofile=nofile)
    server = start(nginx, prefix, config, name=f"nchan-{port}", preexec=pinned_child(core, nofile))
    try:
        server.wait_listening(port)
        deadline = time.monotonic() + 20
        while httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nchan not ready:\n{server.tail()}")
            time.sleep(0.1)
        workers = children(server.pid)
        while not workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nginx started no worker:\n{server.tail()}")
            time.sleep(0.05)
            workers = children(server.pid)
    except BaseException:
        server.stop()
        raise
    OURS.add(workers[0])
    return Nchan(server, workers[0], port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, help="(default: a free port)")
    parser.add_argument("--core", type=int, default=0)
    args = parser.parse_args()
    nginx, module = ensure_installed()
    with tempfile.TemporaryDirectory(prefix="sinal-nchan-") as tmp:
        prefix = Path(tmp)
        port = args.port or free_port()
        config = prefix / "nginx.conf"
        config.write_text(render(port=port, prefix=prefix, module=module, nofile=4096))
        log(f"nchan on http://127.0.0.1:{port} (POST /pub/<channel>, GET /sub/<channel>)")
        os.sched_setaffinity(0, {args.core})
        with contextlib.suppress(KeyboardInterrupt):
            subprocess.run([nginx, "-p", tmp, "-c", str(config), "-e", f"{tmp}/error.log"])


if __name__ == "__main__":
    main()
