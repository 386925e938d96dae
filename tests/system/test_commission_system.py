"""`emsctl commission --yes --json` against the real main.py and `python -m simulators` (issue 15).

The simulated inverter has a known time constant and dead time (plant.inverter_tau_s, plant.dead_time_s);
the commissioning run inside the EMS steps the set-point through its own Modbus link and must find both
within 20 %, see the meter's step with the right sign, and leave the battery at 0 W in the mode it found.
Then, with the meter stopped (FAULT), the EMS refuses a second run and emsctl says why.

By default the reference device runs; EMS_TEST_COMMISSION_PROFILES=all (or a comma list) also runs the
vendor profiles with their own `dynamics:` (about a minute each).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from interfaces.modbus.pointmap import available_maps, load_map
from simulators.ctl import send
from tests.helpers.common import PYTHON, REPO_ROOT, wait_for
from tests.helpers.proc import simulators_and_ems
from tests.helpers.site import site_configs

pytestmark = pytest.mark.system

TOKEN = "tok-commissioner-5b1e"
TAU_S, DEAD_S = 0.8, 0.4  # the reference device's response in this test


def _profiles() -> list[str]:
    wanted = os.environ.get("EMS_TEST_COMMISSION_PROFILES", "")
    if wanted == "all":
        return sorted(n for n in available_maps() if n != "sunspec_ess" and load_map(n).control is not None)
    return [n for n in wanted.split(",") if n]


def _emsctl(url: str, *args: str, timeout_s: float = 150.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "interfaces.cli.main", *args, "--url", url],
        cwd=REPO_ROOT,
        env={**os.environ, "EMSCTL_TOKEN": TOKEN},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
    )


def _site(tmp_path: Path, profile: str | None, plant: dict[str, Any]) -> Any:
    site = site_configs(
        tmp_path, api=True, plant={"step_s": 0.02, "meter_noise_w": 5.0, **plant}, control={"period_s": 0.5, "fault_timeout_s": 2.0}
    )
    site.ems["api"]["tokens"] = [{"name": "commissioner", "role": "operator", "secret": {"env": "EMS_TEST_TOKEN_OPERATOR"}}]
    if profile is not None:
        pmap = load_map(profile)
        unit = pmap.device.device_id if pmap.device.device_id is not None else 1
        site.sim["ess"].update({"map": profile, "device_id": unit})
        site.ems["modbus"]["ess"].update({"map": profile, "device_id": unit})
        if pmap.device.single_client:  # one Modbus client only: the inverter's own grid reading serves
            site.ems["modbus"]["meter"] = {"enabled": False}
    return site


def _up(ems: Any) -> None:
    ems.wait_event(
        lambda e: e.get("event") == "state_changed" and e.get("to_state") == "SELF_CONSUMPTION", timeout_s=30, what="SELF_CONSUMPTION"
    )


def _commission(tmp_path: Path, site: Any, *, tau_s: float, dead_s: float) -> dict[str, Any]:
    """Run `emsctl commission --yes --json` and check what the issue asks of its report."""
    url = f"http://127.0.0.1:{site.ports['api']}"
    out = tmp_path / "report.json"
    cli = _emsctl(url, "commission", "--yes", "--json", "-o", str(out))
    assert cli.returncode == 0, cli.stdout[-2000:] + cli.stderr[-2000:]
    report: dict[str, Any] = json.loads(cli.stdout.strip().splitlines()[-1])
    assert json.loads(out.read_text(encoding="utf-8"))["inverter"] == report["inverter"]  # the same report, written as JSON
    inv, meter = report["inverter"], report["meter"]
    assert report["result"] == "done" and inv["responded"] == 4, report.get("reason")
    assert inv["tau_s"] == pytest.approx(tau_s, rel=0.2), inv
    assert inv["dead_time_s"] == pytest.approx(dead_s, rel=0.2, abs=0.1 if dead_s == 0 else 0.0), inv
    assert inv["gain"] == pytest.approx(1.0, abs=0.05) and inv["rate_limited"] is False
    assert meter["verdict"] == "ok" and meter["sign"] == "ok", meter
    assert report["suggested_config"]["control.inverter_tau_s"] == pytest.approx(tau_s, rel=0.2)
    assert "control:" in report["suggested_yaml"]
    end = report["end"]
    assert end["restored"] is True and end["at_zero"] is True and end["mode"] == "SELF_CONSUMPTION"
    # the EMS regulates again in the mode it was in (the inverter under its command, charging the export away)
    wait_for(lambda: json.loads(send("status", port=site.ports["control"]))["ess_power_w"] < -1000, timeout_s=20, what="regulating again")
    return report


def test_emsctl_commission_recovers_the_simulated_inverters_time_constant_and_dead_time(tmp_path: Path) -> None:
    site = _site(tmp_path, None, {"inverter_tau_s": TAU_S, "dead_time_s": DEAD_S, "quantisation_w": 0.0})
    url = f"http://127.0.0.1:{site.ports['api']}"
    with simulators_and_ems(tmp_path, site.sim, site.ems, ems_env={"EMS_TEST_TOKEN_OPERATOR": TOKEN}) as (_sim, ems):
        _up(ems)
        _commission(tmp_path, site, tau_s=TAU_S, dead_s=DEAD_S)

        # the meter stops: FAULT; a second run is refused and emsctl says why (exit 5), audited
        send("meter stop", port=site.ports["control"])
        ems.wait_event(lambda e: e.get("event") == "state_changed" and e.get("to_state") == "FAULT", timeout_s=15, what="FAULT")
        refused = _emsctl(url, "commission", "--yes")
        assert refused.returncode == 5 and "FAULT" in refused.stderr, refused.stderr
        audit = _emsctl(url, "events", "--kind", "audit", "--json", "--limit", "1")
        assert audit.returncode == 0, audit.stderr
        last = json.loads(audit.stdout.strip().splitlines()[-1])
        assert last["data"]["what"] == "commission" and last["data"]["result"] == "refused", last


@pytest.mark.parametrize(
    "profile", _profiles() or [pytest.param("none", marks=pytest.mark.skip(reason="EMS_TEST_COMMISSION_PROFILES unset"))]
)
def test_emsctl_commission_recovers_each_vendor_profiles_dynamics(profile: str, tmp_path: Path) -> None:
    dyn = load_map(profile).dynamics
    site = _site(tmp_path, profile, {})
    with simulators_and_ems(tmp_path, site.sim, site.ems, ems_env={"EMS_TEST_TOKEN_OPERATOR": TOKEN}) as (_sim, ems):
        _up(ems)
        report = _commission(tmp_path, site, tau_s=dyn.tau_s, dead_s=dyn.dead_time_s)
    assert report["profile"] == profile
