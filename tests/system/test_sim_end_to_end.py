"""The real main.py against the real `python -m simulators` (sped up): regulation, load step, meter loss
-> FAULT and 0 W at the inverter, recovery after recover_s, clean stop with 0 W written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from simulators.ctl import send
from tests.helpers.common import wait_for
from tests.helpers.proc import simulators_and_ems
from tests.helpers.site import site_configs

pytestmark = pytest.mark.system

SPEED = 5.0
DEADBAND_W = 10.0
FAULT_TIMEOUT_S = 1.5
RECOVER_S = 2.0


@pytest.fixture
def site(tmp_path: Path) -> Iterator[dict[str, Any]]:
    site = site_configs(
        tmp_path,
        plant={"speed": SPEED, "step_s": 0.05, "meter_period_s": 1.0, "inverter_tau_s": 1.0},
        control={"period_s": 0.5, "fault_timeout_s": FAULT_TIMEOUT_S, "recover_s": RECOVER_S, "deadband_w": DEADBAND_W},
    )
    with simulators_and_ems(tmp_path, site.sim, site.ems, start_timeout_s=20) as (sim, ems):
        yield {"sim": sim, "ems": ems, "port": site.ports["control"]}


def _status(port: int) -> dict[str, Any]:
    return dict(json.loads(send("status", port=port)))


def _ts(ev: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(ev["timestamp"])


def test_regulates_survives_meter_loss_and_recovers(site: dict[str, Any]) -> None:
    sim, ems, port = site["sim"], site["ems"], site["port"]
    ems.wait_event(
        lambda e: e.get("event") == "state_changed" and e.get("to_state") == "SELF_CONSUMPTION", timeout_s=20, what="SELF_CONSUMPTION"
    )

    # Settles: the meter reads within the deadband while the battery absorbs the 1.5 kW surplus.
    st = wait_for(
        lambda: (s := _status(port)) and abs(s["grid_power_w"]) <= DEADBAND_W and s["ess_power_w"] < -1400 and s,
        timeout_s=20,
        what="grid within deadband",
    )
    assert st["enabled"] and st["soc_pct"] > 50.0

    # Load step +1 kW: the battery charges 1 kW less and the grid settles again.
    assert send("load_offset 1000", port=port).startswith("ok")
    wait_for(
        lambda: (s := _status(port)) and abs(s["grid_power_w"]) <= DEADBAND_W and abs(s["ess_power_w"] + 500.0) < 30.0,
        timeout_s=20,
        what="grid back within deadband after the load step",
    )

    # Meter lost: FAULT and 0 W at the inverter within fault_timeout_s + 1 s.
    assert send("meter stop", port=port).startswith("ok")
    wait_for(lambda: (s := _status(port)) and s["setpoint_w"] == 0.0, timeout_s=FAULT_TIMEOUT_S + 1.0, what="inverter set-point 0 W")
    fault = ems.wait_event(lambda e: e.get("event") == "state_changed" and e.get("to_state") == "FAULT", timeout_s=1.0, what="FAULT")
    assert "stale:grid_power_w" in fault["reason"]
    wait_for(lambda: abs(_status(port)["ess_power_w"]) < 5.0, timeout_s=5, what="inverter output decays to 0 W")

    # Meter back: FAULT is left only after recover_s, then regulation resumes.
    assert send("meter start", port=port).startswith("ok")
    cleared = ems.wait_event(lambda e: e.get("event") == "fault_cleared", timeout_s=10, what="fault_cleared")
    left = ems.wait_event(lambda e: e.get("event") == "state_changed" and e.get("from_state") == "FAULT", timeout_s=10, what="FAULT left")
    assert left["to_state"] == "STANDBY"
    assert (_ts(left) - _ts(cleared)).total_seconds() >= RECOVER_S - 0.05
    ems.wait_event(
        lambda e: (
            e.get("event") == "state_changed"
            and e.get("from_state") == "STANDBY"
            and _ts(e) > _ts(left)
            and e.get("to_state") == "SELF_CONSUMPTION"
        ),
        timeout_s=10,
        what="back to SELF_CONSUMPTION",
    )
    wait_for(
        lambda: (s := _status(port)) and abs(s["grid_power_w"]) <= DEADBAND_W and s["ess_power_w"] < -400,
        timeout_s=20,
        what="regulating again",
    )

    # Clean stop: 0 W written before the EMS exits.
    assert ems.terminate_and_wait(timeout_s=15) == 0
    stopped = next(e for e in ems.events if e.get("event") == "controller_stopped")
    assert stopped["zero_written"] is True
    assert _status(port)["setpoint_w"] == 0.0
    assert sim.proc.poll() is None
