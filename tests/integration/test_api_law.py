"""What the control law believes about the plant is visible: /api/v1/status `law`, /metrics gauges, emsctl status."""

from __future__ import annotations

from types import MappingProxyType

from ems.clock import SimClock
from ems.context import EMSContext
from ems.model import Command, ControlStatus, Mode, State
from interfaces.cli.render import status_text
from tests.helpers.api import api_config, running_api

BELIEF = {
    "law": "adaptive",
    "inverter_dead_time_s": 1.0,
    "inverter_tau_s": 0.42,
    "inverter_ramp_w_per_s": "none",
    "confidence": 0.87,
    "meter_lag_s": 0.5,
}


def test_the_identified_plant_is_in_status_metrics_and_emsctl() -> None:
    clock = SimClock()
    ctx = EMSContext(clock=clock, start_mode=Mode.SELF_CONSUMPTION)
    cmd = Command(5, -800.0, -800.0, clock.monotonic())
    ctx.commands.publish(ControlStatus(cmd, State.SELF_CONSUMPTION, 0.0, (), None, None, (), 0, MappingProxyType(dict(BELIEF))))
    with running_api(api_config(), ctx, clock) as api:
        status = api.get("/api/v1/status").json()
        metrics = api.get("/metrics").text
    assert status["law"] == BELIEF
    assert "ems_law_inverter_dead_time_seconds 1.0" in metrics
    assert "ems_law_inverter_time_constant_seconds 0.42" in metrics
    assert "ems_law_meter_lag_seconds 0.5" in metrics and "ems_law_confidence_ratio 0.87" in metrics
    assert "ems_law_inverter_ramp_watts_per_second" not in metrics  # no ramp limit identified: no series
    line = next(x for x in status_text(status).splitlines() if x.startswith("law"))
    assert "adaptive" in line and "dead time 1.0 s" in line and "tau 0.42 s" in line and "confidence 0.87" in line
