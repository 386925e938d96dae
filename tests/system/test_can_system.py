"""System test: the real main.py with the CAN worker against `python -m simulators` with the simulated BMS
on its loopback socketcand hub. A protection injected through the simulator's command channel drives
the EMS to FAULT (0 W) and back after recover_s; a silent BMS does the same."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulators.ctl import send
from tests.helpers.proc import LoggedProcess, simulators_and_ems
from tests.helpers.site import site_configs

pytestmark = pytest.mark.system

FAULT_TIMEOUT_S = 1.5
RECOVER_S = 2.0


@pytest.fixture
def site(tmp_path: Path) -> Iterator[dict[str, Any]]:
    # no ignore_points: the inverter's battery copies (SunSpec 802) yield to the CAN BMS (readings have owners)
    site = site_configs(
        tmp_path,
        plant={"speed": 1.0, "step_s": 0.05},
        control={"period_s": 0.5, "fault_timeout_s": FAULT_TIMEOUT_S, "recover_s": RECOVER_S},
        bms=True,
    )
    site.sim["bms"]["name"] = "SYSBMS"
    with simulators_and_ems(tmp_path, site.sim, site.ems, start_timeout_s=20) as (sim, ems):
        yield {"sim": sim, "ems": ems, "port": site.ports["control"]}


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
