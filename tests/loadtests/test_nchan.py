"""The Nchan baseline's configuration (loadtests/nchan/nginx.conf.in) as the benchmarks fill it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from loadtests.nchan import installed, render


def test_every_placeholder_is_filled(tmp_path: Path) -> None:
    text = render(port=8301, prefix=tmp_path, module="/m/ngx_nchan_module.so", nofile=20000)
    assert not re.search(r"@[A-Z]+@", text)
    assert "listen 127.0.0.1:8301 " in text
    assert "load_module /m/ngx_nchan_module.so;" in text
    assert f"pid {tmp_path}/nginx.pid;" in text
    assert "worker_processes 1;" in text
    assert "worker_rlimit_nofile 20000;" in text


@pytest.mark.skipif(installed() is None, reason="nginx with Nchan is not installed")
def test_nginx_accepts_the_configuration(tmp_path: Path) -> None:
    found = installed()
    assert found is not None
    nginx, module = found
    config = tmp_path / "nginx.conf"
    config.write_text(render(port=8301, prefix=tmp_path, module=module, nofile=1024))
    checked = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(config), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
