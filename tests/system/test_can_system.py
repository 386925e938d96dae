"""System test: the real main.py with the CAN worker against `python -m simulators` with the simulated BMS
on its loopback socketcand hub. A protection injected through the simulator's command channel drives
the EMS to FAULT (0 W) and back after recover_s; a silent BMS does the same."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulators.ctl import send
from tests.helpers.common import free_port
from tests.helpers.proc import LoggedProcess, simulators_and_ems

pytestmark = pytest.mark.system

FAULT_TIMEOUT_S = 1.5
RECOVER_S = 2.0


@pytest.fixture
def site(tmp_path: Path) -> Iterator[dict[str, Any]]:
    ports = {"ess": free_port(), "meter": free_port(), "control": free_port(), "bms": free_port()}
    profile = tmp_path / "flat.csv"
    profile.write_text("t_s,load_w,pv_w\n0,1500,3000\n")
    sim_cfg = {
        "plant": {
            "profile": str(profile),
            "speed": 1.0,
            "step_s": 0.05,
            "summary_interval_s": 0,
            "soc_start_pct": 50.0,
            "meter_noise_w": 0.0,
        },
        "ess": {"port": ports["ess"], "device_id": 1},
        "meter": {"port": ports["meter"], "device_id": 2},
        "control": {"port": ports["control"]},
        "bms": {"enabled": True, "port": ports["bms"], "name": "SYSBMS"},
    }
    ems_cfg = {
        "site": {"id": "can-system-test"},
        "control": {
            "enabled": True,
            "dry_run": False,
            "period_s": 0.5,
            "fault_timeout_s": FAULT_TIMEOUT_S,
            "recover_s": RECOVER_S,
            "summary_interval_s": 0,
            "required_sources": ["grid_power_w", "ess_power_w", "soc_pct", "bms_voltage_v", "bms_ccl_a", "bms_dcl_a"],
        },
        "modbus": {
            "enabled": True,
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 0.5,
            "ess": {
                "port": ports["ess"],
                "device_id": 1,
                "map": "auto",
                "poll_period_s": 0.2,
                "timeout_s": 0.5,  # no ignore_points: the inverter's battery copies yield to the CAN BMS (readings have owners)
            },
            "meter": {"port": ports["meter"], "device_id": 2, "map": "sdm630", "poll_period_s": 0.2, "timeout_s": 0.5},
        },
        "can": {"enabled": True, "interface": "socketcand", "port": ports["bms"], "reopen_s": 0.5, "keepalive_period_s": 1.0},
    }
    with simulators_and_ems(tmp_path, sim_cfg, ems_cfg, start_timeout_s=20) as (sim, ems):
        yield {"sim": sim, "ems": ems, "port": ports["control"]}


def _state_event(ems: LoggedProcess, to_state: str, *, after: int, reason: str | None = None) -> dict[str, Any]:
    def match(e: dict[str, Any]) -> bool:
        return (
            e.get("event") == "state_changed"
            and e.get("to_state") == to_state
            and ems.events.index(e) > after
            and (reason is None or e.get("reason") == reason)
        )

    return ems.wait_event(match, timeout_s=20, what=f"state_changed -> {to_state} ({reason or 'any reason'})")


def test_bms_protection_and_silence_drive_the_ems_to_fault_and_back(site: dict[str, Any]) -> None:
    sim, ems, port = site["sim"], site["ems"], site["port"]
    ems.wait_event(lambda e: e.get("event") == "bms_identified" and e.get("name") == "SYSBMS", timeout_s=20, what="BMS identified over CAN")
    up = _state_event(ems, "SELF_CONSUMPTION", after=-1)

    assert send("bms protection over_voltage on", port=port).startswith("ok protections=over_voltage")
    fault = _state_event(ems, "FAULT", after=ems.events.index(up), reason="bms_protection:over_voltage")
    assert fault["setpoint_w"] == 0.0
    assert send("bms clear", port=port).startswith("ok protections=-")
    back = _state_event(ems, "SELF_CONSUMPTION", after=ems.events.index(fault))

    assert send("bms silent on", port=port).startswith("ok")
    silent = _state_event(ems, "FAULT", after=ems.events.index(back))
    assert "bms_protection:bms_silent" in silent["reason"] or "stale:bms_voltage_v" in silent["reason"]
    assert silent["setpoint_w"] == 0.0
    assert send("bms silent off", port=port).startswith("ok")
    _state_event(ems, "SELF_CONSUMPTION", after=ems.events.index(silent))
    assert int(send("bms status", port=port).split("keepalives_received=")[1]) >= 1  # the EMS keep-alive reached the BMS
    assert not [e for e in ems.events if e.get("event") in ("worker_iteration_failed", "can_frame_malformed")]
    assert sim.proc.poll() is None and ems.proc.poll() is None
