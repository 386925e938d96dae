"""What a process death leads to (issue 18): the real main.py against the real simulators.

At start-up the EMS writes the inverter's revert (watchdog) time (the profile's `control.revert`,
`watchdog_s` of the reference 64901 map) to `control.fault_timeout_s` and reads it back, and says
in /api/v1/status and `emsctl status` what a process death leads to and after how long. A killed
(SIGKILL) or hung (SIGSTOP: systemd's watchdog restarts it later) EMS writes nothing more, so the
inverter's own timer takes it back to 0 W within fault_timeout_s + 1 s.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from simulators.ctl import send
from tests.helpers.common import PYTHON, REPO_ROOT, wait_for
from tests.helpers.proc import LoggedProcess, stop_all
from tests.helpers.site import site_configs

pytestmark = pytest.mark.system

FAULT_TIMEOUT_S = 2.0


def _sim(port: int) -> dict[str, Any]:
    return dict(json.loads(send("status", port=port)))


def _status(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/api/v1/status", timeout=5) as r:
        return dict(json.loads(r.read()))


def _charging(port: int) -> bool:
    s = _sim(port)
    return bool(s["enabled"]) and s["setpoint_w"] < -500.0


def _safe(port: int) -> bool:
    s = _sim(port)
    return not s["enabled"] and s["setpoint_w"] == 0.0


def _start_ems(workdir: Path) -> LoggedProcess:
    ems = LoggedProcess(["main.py", "--config", str(workdir / "ems.yaml"), "--log-format", "json"])
    ems.wait_event(lambda e: e.get("event") == "api_started", timeout_s=30, what="api_started")
    return ems


def _seconds_until_safe(port: int) -> float:
    t0 = time.monotonic()
    wait_for(lambda: _safe(port), timeout_s=FAULT_TIMEOUT_S + 10, interval_s=0.02, what="the inverter back at 0 W")
    return time.monotonic() - t0


def test_a_killed_or_hung_ems_leaves_the_inverter_at_0_w_within_fault_timeout_plus_1_s(tmp_path: Path) -> None:
    site = site_configs(tmp_path, api=True, plant={"step_s": 0.02}, control={"period_s": 0.5, "fault_timeout_s": FAULT_TIMEOUT_S})
    (tmp_path / "sim.yaml").write_text(yaml.safe_dump(site.sim), encoding="utf-8")
    (tmp_path / "ems.yaml").write_text(yaml.safe_dump(site.ems), encoding="utf-8")
    url, ctl = f"http://127.0.0.1:{site.ports['api']}", site.ports["control"]
    sim = LoggedProcess(["-m", "simulators", "--config", str(tmp_path / "sim.yaml"), "--log-format", "json"])
    ems: LoggedProcess | None = None
    try:
        sim.wait_event(lambda e: e.get("event") == "simulator_started", timeout_s=20, what="simulator_started")
        ems = _start_ems(tmp_path)
        wait_for(lambda: _charging(ctl), timeout_s=30, what="the battery charging under the EMS's control")

        # what a process death leads to, as /status and emsctl say
        pd = wait_for(lambda: _status(url).get("process_death"), timeout_s=10, what="process_death in /status")
        assert pd["device"] == "ess" and pd["verified"] is True, pd
        assert pd["after_s"] == FAULT_TIMEOUT_S and "0 W" in pd["leads_to"], pd
        assert _sim(ctl)["devices"]["ess"]["running"]
        cli = subprocess.run(
            [PYTHON, "-c", "import sys; from interfaces.cli.main import main; sys.exit(main())", "status", "--url", url],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert cli.returncode == 0, cli.stderr
        death = [ln for ln in cli.stdout.splitlines() if ln.startswith("death")]
        assert death and f"{FAULT_TIMEOUT_S:g} s" in death[0] and "read back" in death[0], cli.stdout

        # SIGKILL: nothing more is written; the inverter's timer takes it to 0 W
        ems.proc.send_signal(signal.SIGKILL)
        ems.proc.wait(10)
        killed_s = _seconds_until_safe(ctl)
        assert killed_s <= FAULT_TIMEOUT_S + 1.0, killed_s
        assert _sim(ctl)["watchdog_tripped"]

        # a hung EMS (SIGSTOP): the same, long before systemd's watchdog (WatchdogSec=10) restarts it
        ems = _start_ems(tmp_path)
        wait_for(lambda: _charging(ctl), timeout_s=30, what="charging again after the restart")
        ems.proc.send_signal(signal.SIGSTOP)
        try:
            hung_s = _seconds_until_safe(ctl)
        finally:
            ems.proc.send_signal(signal.SIGCONT)
        assert hung_s <= FAULT_TIMEOUT_S + 1.0, hung_s
    finally:
        stop_all(ems, sim)
