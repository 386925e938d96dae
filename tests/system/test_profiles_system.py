"""The real main.py against `python -m simulators` serving a vendor profile: the EMS takes the simulated inverter
over (hand-over, revert timer), reaches SELF_CONSUMPTION, regulates the grid with the inverter under its
control (not the inverter's own self-consumption), and hands it back on stop.

Data-driven by profile name: the profile's own `device:` section gives the unit id and whether the device serves
one Modbus client (then the EMS polls no separate meter: the inverter's grid reading serves). Add a profile by
adding its name to PROFILES (with overrides only where a profile needs them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from interfaces.modbus.pointmap import load_map
from simulators.ctl import send
from tests.helpers.common import wait_for
from tests.helpers.proc import simulators_and_ems
from tests.helpers.site import site_configs

pytestmark = pytest.mark.system

SPEED = 5.0
DEADBAND_W = 10.0

# profile name -> overrides of the EMS's modbus.ess section (device_ids, rating_w, ...), if any
PROFILES: dict[str, dict[str, Any]] = {
    "fronius_gen24": {},
    "goodwe_et": {},
    "huawei_sun2000": {},
    "kostal_plenticore": {},
    "sma_sunny_boy_storage": {},
    "sma_sunny_island": {},
    "solaredge_storedge": {},
    "sungrow_sh": {},
    "sunspec_124": {},
    "victron_gx_ess3": {},  # units from the profile's device_ids (system 100, VE.Bus 227)
}


def _status(port: int) -> dict[str, Any]:
    return dict(json.loads(send("status", port=port)))


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_the_ems_regulates_the_grid_through_the_vendor_profile(profile: str, tmp_path: Path) -> None:
    pmap = load_map(profile)
    device, control = pmap.device, pmap.control
    assert control is not None, f"{profile} is not an inverter profile"
    unit = device.device_id if device.device_id is not None else 1
    site = site_configs(
        tmp_path,
        plant={"speed": SPEED, "step_s": 0.05, "meter_period_s": 1.0},
        control={"period_s": 0.5, "deadband_w": DEADBAND_W},
    )
    site.sim["ess"].update({"map": profile, "device_id": unit})
    site.ems["modbus"]["ess"].update({"map": profile, "device_id": unit, **PROFILES[profile]})
    if device.single_client:  # one Modbus client only: the inverter's own grid reading serves
        site.ems["modbus"]["meter"] = {"enabled": False}
    port = site.ports["control"]
    with simulators_and_ems(tmp_path, site.sim, site.ems, start_timeout_s=20) as (sim, ems):
        ems.wait_event(
            lambda e: e.get("event") == "state_changed" and e.get("to_state") == "SELF_CONSUMPTION", timeout_s=30, what="SELF_CONSUMPTION"
        )
        if control.revert.point is not None:  # the device's own timer was written and read back
            rv = ems.wait_event(lambda e: e.get("event") == "inverter_revert_set", timeout_s=5, what="inverter_revert_set")
            assert rv["device"] == "ess" and rv["verified"] is True

        # 1.5 kW export (FLAT_EXPORT): the battery, under the EMS's command (not its own mode), absorbs it
        def settled() -> bool:
            s = _status(port)
            return bool(
                s["enabled"]  # the EMS's command, not the inverter's own mode
                and abs(s["grid_power_w"]) <= DEADBAND_W
                and s["ess_power_w"] < -1400
                and abs(s["setpoint_w"] - s["ess_power_w"]) <= 50.0
            )

        wait_for(settled, timeout_s=30, what=f"{profile}: grid within the deadband under EMS control")
        assert ems.terminate_and_wait(timeout_s=15) == 0
        if control.release:  # handed back: the inverter runs its own mode
            released = next(e for e in ems.events if e.get("event") == "inverter_released")
            assert released["device"] == "ess"
            # its own mode at once, or (Kostal: 1034 = 0 once) 0 W until its own timer hands it back
            wait_for(
                lambda: (s := _status(port)) and (not s["enabled"] or s["setpoint_w"] == 0.0),
                timeout_s=5,
                what=f"{profile}: released",
            )
        assert sim.proc.poll() is None
