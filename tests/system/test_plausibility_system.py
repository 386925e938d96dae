"""An implausible meter reading is never regulated on: the real main.py against the simulators.

The simulated meter reads 150 kW (a load offset): inside the SDM630 map's +/-200 kW, far outside
the site's 43 kW connection. The EMS refuses every such reading (logged once), the grid reading
goes stale, and the state is FAULT at 0 W within fault_timeout_s + 1 s; with a sane load it recovers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulators.ctl import send
from tests.helpers.common import wait_for
from tests.helpers.proc import simulators_and_ems
from tests.helpers.site import site_configs

pytestmark = pytest.mark.system
FAULT_TIMEOUT_S = 1.5


@pytest.fixture
def site(tmp_path: Path) -> Iterator[dict[str, Any]]:
    s = site_configs(tmp_path, plant={"step_s": 0.05}, control={"period_s": 0.5, "fault_timeout_s": FAULT_TIMEOUT_S, "recover_s": 1.0})
    with simulators_and_ems(tmp_path, s.sim, s.ems, start_timeout_s=20) as (sim, ems):
        yield {"sim": sim, "ems": ems, "ctl": s.ports["control"]}


def _inverter_w(port: int) -> float:
    return float(json.loads(send("status", port=port))["setpoint_w"])


def test_a_150_kw_meter_reading_is_refused_and_the_battery_goes_to_zero(site: dict[str, Any]) -> None:
    ems, port = site["ems"], site["ctl"]
    ems.wait_event(lambda e: e.get("event") == "state_changed" and e.get("to_state") == "SELF_CONSUMPTION", timeout_s=20, what="SC")
    wait_for(lambda: _inverter_w(port) < -500.0, timeout_s=20, what="the battery charging from the export")
    assert send("load_offset 151500", port=port).startswith("ok")  # grid = 1500 W load + 151.5 kW - 3 kW PV = 150 kW
    bad = ems.wait_event(lambda e: e.get("event") == "reading_implausible", timeout_s=10, what="reading_implausible")
    assert bad["quantity"] == "grid_power_w" and bad["source"] == "meter" and bad["value"] > 100_000
    fault = ems.wait_event(
        lambda e: e.get("event") == "state_changed" and e.get("to_state") == "FAULT", timeout_s=FAULT_TIMEOUT_S + 2, what="FAULT"
    )
    assert "stale:grid_power_w" in fault["reason"] and fault["setpoint_w"] == 0.0
    wait_for(lambda: _inverter_w(port) == 0.0, timeout_s=2, what="0 W at the inverter")
    assert not [e for e in ems.events if e.get("event") == "cycle" and abs(e.get("written_w", 0.0)) > 5000.0]  # never full power
    assert [e["event"] for e in ems.events].count("reading_implausible") == 1  # one line for the whole episode
    assert send("load_offset 0", port=port).startswith("ok")
    ems.wait_event(lambda e: e.get("event") == "reading_plausible_again", timeout_s=10, what="plausible again")
    ems.wait_event(lambda e: e.get("event") == "state_changed" and e.get("from_state") == "FAULT", timeout_s=10, what="FAULT left")
