"""The systemd units (deploy/systemd/): valid for systemd, and stopping gracefully in time."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from api.workers import STOP_DEADLINE_S
from tests.conftest import require_service
from tests.support import ROOT

UNITS = ROOT / "deploy" / "systemd"
# The template as `systemctl enable sinal@8001` instantiates it.
INSTANCES = {"sinal.service": "sinal.service", "sinal@.service": "sinal@8001.service"}
# A single process's drain: 10 s for requests in progress, then its engine and background loops.
SINGLE_DRAIN_S = 15


def directives(unit: Path) -> dict[str, str]:
    pairs = re.findall(r"(?m)^([A-Za-z]+)=(.*)$", unit.read_text())
    return dict(pairs)


@pytest.mark.parametrize("name", sorted(INSTANCES))
def test_units_stop_gracefully(name: str) -> None:
    unit = directives(UNITS / name)
    assert unit["KillSignal"] == "SIGTERM"
    assert unit["EnvironmentFile"] == "/etc/sinal/sinal.env"
    assert int(unit["LimitNOFILE"]) >= 65536
    stop_s = int(unit["TimeoutStopSec"])
    if "--workers" in unit["ExecStart"]:
        # SIGTERM to the supervisor alone, which drains its workers before its own deadline.
        assert unit["KillMode"] == "mixed"
        assert stop_s > STOP_DEADLINE_S
    else:
        assert stop_s > SINGLE_DRAIN_S


@pytest.mark.parametrize("name", sorted(INSTANCES))
def test_systemd_accepts_the_units(name: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        require_service("systemd-analyze", "not on PATH")
    sinal = Path(sys.executable).with_name("sinal")  # this checkout's `sinal` in place of /opt's
    text = (UNITS / name).read_text().replace("/opt/sinal/.venv/bin/sinal", str(sinal))
    unit = tmp_path / INSTANCES[name]
    unit.write_text(text)
    checked = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == ""
