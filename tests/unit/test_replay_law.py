"""The predictive law inside the pure core: bounded whatever its memory and inputs, 0 W when not operating."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from config.control import LawName
from ems.core import CoreState, step
from ems.inputs import Inputs
from ems.law import LawInputs, PredictiveLaw, PredictiveState
from ems.model import Mode, Quantity, Reading, State
from ems.statemachine import MachineState
from tests.helpers.core import control_cfg

Q = Quantity
wild = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-1e7, 1e7))
maybe_wild = st.one_of(st.none(), wild)


@settings(max_examples=400, deadline=None)
@given(
    grid=wild,
    ess=wild,
    soc=st.floats(0, 100),
    grid_age=st.floats(0, 5),
    ess_age=st.floats(0, 5),
    goal=maybe_wild,
    prev_ess=maybe_wild,
    prev_ess_at=maybe_wild,
    prev_cmd=wild,
    state=st.sampled_from(list(State)),
    mode=st.sampled_from(list(Mode)),
    tau=st.floats(0, 5),
    meter_age=st.floats(0, 2),
    trust=st.floats(0, 1000),
    rating=st.floats(0, 1e5),
)
def test_predictive_command_stays_inside_the_rating_and_is_zero_when_not_operating(  # type: ignore[no-untyped-def]
    grid, ess, soc, grid_age, ess_age, goal, prev_ess, prev_ess_at, prev_cmd, state, mode, tau, meter_age, trust, rating
) -> None:
    cfg = control_cfg(
        enabled=True,
        dry_run=False,
        law="predictive",
        inverter_tau_s=tau,
        meter_age_s=meter_age,
        trust_scale_w=trust,
        max_charge_w=rating,
        max_discharge_w=rating,
    ).core()
    now = 100.0
    m = {Q.GRID_POWER_W: Reading(grid, now - grid_age), Q.ESS_POWER_W: Reading(ess, now - ess_age), Q.SOC_PCT: Reading(soc, now)}
    inputs = Inputs(now_s=now, started_at_s=0.0, measurements=m, bms_flags=None, requested_mode=mode, external_setpoint=None)
    law_state = PredictiveState(goal) if goal is not None else None
    prev = Reading(prev_ess, prev_ess_at) if prev_ess is not None and prev_ess_at is not None else None
    core = CoreState(machine=MachineState(state), prev_cmd_w=prev_cmd, ess=prev, law_state=law_state, law_ran=law_state is not None)
    d = step(core, inputs, cfg)
    assert math.isfinite(d.setpoint_w)
    assert -rating - 1e-6 <= d.setpoint_w <= rating + 1e-6
    if d.state in (State.STOP, State.STANDBY, State.FAULT):
        assert d.written_w == 0.0
    d2 = step(d.core, inputs, cfg)  # the memory it left behind is usable
    assert math.isfinite(d2.setpoint_w) and -rating - 1e-6 <= d2.setpoint_w <= rating + 1e-6


def test_predictive_law_is_selected_by_config_and_integrating_stays_available() -> None:
    now = 100.0
    m = {Q.GRID_POWER_W: Reading(800.0, now), Q.ESS_POWER_W: Reading(0.0, now), Q.SOC_PCT: Reading(50.0, now)}
    inputs = Inputs(
        now_s=now, started_at_s=0.0, measurements=m, bms_flags=None, requested_mode=Mode.SELF_CONSUMPTION, external_setpoint=None
    )
    core = CoreState(machine=MachineState(State.SELF_CONSUMPTION))
    integrating = step(core, inputs, control_cfg(enabled=True, dry_run=False, law="integrating", gain=0.5).core())
    predictive = step(core, inputs, control_cfg(enabled=True, dry_run=False, law="predictive", inverter_tau_s=0.0).core())
    assert integrating.written_w == 400.0  # prev 0 + 0.5 * 800
    assert predictive.written_w == 800.0  # instant inverter: the goal itself
    assert control_cfg(enabled=True, dry_run=False, law=LawName.PREDICTIVE).make_law().name == "predictive"
    assert control_cfg(enabled=True, dry_run=True, law=LawName.PREDICTIVE).make_law().name == "feed_forward"  # not live: shown, not driven


def test_predictive_law_survives_an_absurd_inverter_jump() -> None:
    """CI found it: an inverter reading of ~1e154 W squared overflowed (float ** raises). Now it just gets no trust."""
    law = PredictiveLaw(trust_scale_w=500.0, meter_age_s=0.0)

    def goal_after(prev_ess_w: float) -> tuple[float, float]:
        i = LawInputs(
            now_s=100.0,
            grid=Reading(300.0, 100.0),
            ess=Reading(0.0, 100.0),
            prev_ess=Reading(prev_ess_w, 99.0),
            prev_cmd_w=0.0,
            target_grid_w=0.0,
        )
        cmd_w, st = law.command(i, PredictiveState(100.0))
        assert isinstance(st, PredictiveState)
        return cmd_w, st.goal_w

    cmd_w, goal_w = goal_after(-1.34e154)  # the inverter "moved" 1.34e154 W since its last reading
    assert goal_w == 100.0  # a reading taken while the inverter moved that far counts nothing
    assert math.isfinite(cmd_w)
    _, trusted_goal_w = goal_after(0.0)
    assert trusted_goal_w > 100.0  # and a still inverter's reading does move the goal
