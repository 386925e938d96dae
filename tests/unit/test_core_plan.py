"""The 1 Hz core following a plan slot (the planner advises, the loop decides) and an external import cap."""

from __future__ import annotations

import math
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from ems.core import CoreState, step
from ems.model import ExternalSetpoint, ImportCap, Mode, State
from ems.plan import PlanBounds
from ems.statemachine import MachineState
from tests.helpers.core import core_cfg, make_inputs

LIVE = {"enabled": True, "dry_run": False}
SC = CoreState(machine=MachineState(State.SELF_CONSUMPTION))


def test_a_grid_charging_slot_sets_the_target_and_the_range() -> None:
    cfg = core_cfg(**LIVE, law="predictive", inverter_tau_s=0.0)
    plan = PlanBounds(grid_target_w=3000.0, lo_w=-5000.0, hi_w=0.0, reason="plan:charge_from_grid")
    d = step(SC, replace(make_inputs(grid_w=500.0, ess_w=0.0), plan=plan), cfg)
    assert d.plan == "plan:charge_from_grid"
    assert d.written_w == -2500.0  # import 500 W -> 3000 W planned: charge 2500 W


def test_a_hold_slot_blocks_discharge_and_names_the_plan() -> None:
    cfg = core_cfg(**LIVE, law="predictive", inverter_tau_s=0.0)
    plan = PlanBounds(grid_target_w=0.0, lo_w=-5000.0, hi_w=0.0, reason="plan:hold")
    d = step(SC, replace(make_inputs(grid_w=1200.0), plan=plan), cfg)
    assert (d.written_w, d.limits, d.plan) == (0.0, ("plan:hold",), "plan:hold")
    surplus = step(SC, replace(make_inputs(grid_w=-800.0), plan=plan), cfg)
    assert surplus.written_w == -800.0 and surplus.limits == ()  # PV surplus may still charge


def test_an_operator_mode_or_set_point_wins_over_the_plan() -> None:
    cfg = core_cfg(**LIVE, charge_power_w=1500.0)
    plan = PlanBounds(grid_target_w=0.0, lo_w=0.0, hi_w=5000.0, reason="plan:discharge_to_grid")  # discharge only
    d = step(SC, replace(make_inputs(mode=Mode.CHARGE_ONLY), plan=plan), cfg)
    assert (d.written_w, d.plan) == (-1500.0, None)
    sp = ExternalSetpoint(-2000.0, 200.0, "dispatch", "agg")
    ext = CoreState(machine=MachineState(State.EXTERNAL))
    d = step(ext, replace(make_inputs(mode=Mode.EXTERNAL, setpoint=sp), plan=plan), cfg)
    assert (d.state, d.written_w, d.plan) == (State.EXTERNAL, -2000.0, None)


def test_limits_still_apply_inside_a_plan_slot() -> None:
    cfg = core_cfg(**LIVE, law="predictive", inverter_tau_s=0.0, max_charge_w=2000.0)
    plan = PlanBounds(grid_target_w=4000.0, lo_w=-5000.0, hi_w=0.0, reason="plan:charge_from_grid")
    d = step(SC, replace(make_inputs(grid_w=0.0), plan=plan), cfg)
    assert d.written_w == -2000.0 and "inverter_rating" in d.limits


def test_an_import_cap_stops_charging_from_the_grid_beyond_it() -> None:
    cfg = core_cfg(**LIVE, charge_power_w=3000.0)
    cap = ImportCap(2000.0, 500.0, "14a", "dso")
    d = step(SC, replace(make_inputs(grid_w=500.0, mode=Mode.CHARGE_ONLY), import_cap=cap), cfg)
    assert d.written_w == -1500.0 and d.limits == ("import_cap",)  # 500 W load + 1500 W charge = the 2 kW cap
    lapsed = ImportCap(2000.0, 50.0, "14a", "dso")  # expired before now (100 s)
    assert step(SC, replace(make_inputs(grid_w=500.0, mode=Mode.CHARGE_ONLY), import_cap=lapsed), cfg).written_w == -3000.0


wild = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-2e4, 2e4))


@settings(max_examples=400, deadline=None)
@given(
    grid=wild,
    ess=wild,
    target=st.floats(-1e7, 1e7),
    lo=st.floats(-1e6, 1e6),
    hi=st.floats(-1e6, 1e6),
    cap=st.one_of(st.none(), st.floats(0, 1e5)),
    mode=st.sampled_from(list(Mode)),
    law=st.sampled_from(["integrating", "predictive"]),
)
def test_a_plan_can_only_narrow_the_command(grid, ess, target, lo, hi, cap, mode, law) -> None:  # type: ignore[no-untyped-def]
    """Whatever the plan says (even nonsense), the command stays inside the rating, the plan's range
    (when it is followed) and the import cap."""
    cfg = core_cfg(**LIVE, law=law, max_charge_w=5000.0, max_discharge_w=5000.0)
    plan = PlanBounds(grid_target_w=target, lo_w=lo, hi_w=hi, reason="plan:x")
    inputs = replace(make_inputs(grid_w=grid, ess_w=ess, mode=mode), plan=plan)
    if cap is not None:
        inputs = replace(inputs, import_cap=ImportCap(cap, 1e9, "t", "t"))
    d = step(SC, inputs, cfg)
    w = d.written_w
    assert math.isfinite(w) and -5000.0 - 1e-6 <= w <= 5000.0 + 1e-6
    if d.plan is not None:
        assert min(lo, 0.0) - 1e-6 <= w <= max(hi, 0.0) + 1e-6
    if cap is not None and w < 0 and math.isfinite(grid) and math.isfinite(ess):
        assert grid + ess - w <= cap + 1e-6 * max(1.0, abs(grid + ess))
