"""Debian's nginx, run by an unprivileged test or benchmark: installed with apt-get when missing,
started in the foreground with every file it writes (pid, logs, temporary bodies) under a
private prefix, on a free port, so that several can run side by side and none needs the
system's /etc/nginx or /var. Used by the Nchan baseline (`loadtests.nchan`) and by the test of
the shipped reverse-proxy configuration (`deploy/nginx/sinal.conf`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from loadtests.procs import Child, log

NGINX_PATHS = ("/usr/sbin/nginx",)
# Where nginx puts request and response bodies it spools, by kind, under the prefix.
TEMP_DIRS = {"client_body": "body", "proxy": "proxy", "fastcgi": "fastcgi", "uwsgi": "uwsgi",
             "scgi": "scgi"}  # fmt: skip
Found = TypeVar("Found")


def binary() -> str | None:
    return shutil.which("nginx") or next((p for p in NGINX_PATHS if os.path.exists(p)), None)


def ensure(packages: tuple[str, ...], find: Callable[[], Found | None], hint: str = "") -> Found:
    """What `find` finds, once Debian `packages` are installed with apt-get if need be (as root;
    otherwise SystemExit saying what to install)."""
    found = find()
    if found is not None:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SystemExit(f"not installed: apt-get install {' '.join(packages)}{hint}")
    log(f"installing {' '.join(packages)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]
    if subprocess.run(install, env=env, check=False).returncode != 0:
        # Stale package lists are the usual cause: refresh them once and try again.
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
        subprocess.run(install, env=env, check=True)
    found = find()
    if found is None:
        raise SystemExit(f"{' '.join(packages)} installed, but what was needed is still missing")
    return found


def ensure_nginx() -> str:
    """The nginx binary, installed first if need be."""
    return ensure(("nginx",), binary)


def private_paths(prefix: Path) -> tuple[str, str]:
    """The directives that keep nginx's files under `prefix`: (main context, http context)."""
    main = f"pid {prefix}/nginx.pid;\nerror_log {prefix}/error.log warn;"
    http = "\n    ".join(f"{kind}_temp_path {prefix}/{name};" for kind, name in TEMP_DIRS.items())
    return main, http


def start(
    nginx: str,
    prefix: Path,
    config: str,
    *,
    name: str,
    preexec: Callable[[], None] | None = None,
) -> Child:
    """nginx in the foreground (the configuration must say `daemon off`) with `config` written
    to `prefix`/nginx.conf; its output in `prefix`/`name`.log."""
    prefix.mkdir(parents=True, exist_ok=True)
    path = prefix / "nginx.conf"
    path.write_text(config)
    argv = [nginx, "-p", str(prefix), "-c", str(path), "-e", str(prefix / "error.log")]
    return Child(name, argv, env=dict(os.environ), cwd=prefix, preexec=preexec)
