"""The pure control step: law convergence, opt-in gate, safe states, and the property test."""

from __future__ import annotations

import itertools
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from ems.core import CoreState, step
from ems.model import ExternalSetpoint, Mode, Quantity, State
from ems.statemachine import MachineState
from tests.helpers.core import control_cfg, make_inputs

Q = Quantity
LIVE = {"enabled": True, "dry_run": False}


def _run_step_load(cfg_over: dict[str, object], *, tau_s: float, load_w: list[float]) -> tuple[list[float], list[float]]:
    """Drive the core against a first-order inverter (time constant tau_s) cycle by cycle; no sleeps."""
    cfg = control_cfg(**LIVE, **cfg_over)
    core = CoreState(machine=MachineState(State.SELF_CONSUMPTION, 0.0))
    ess_w, grids, cmds = 0.0, [], []
    alpha = 1 - math.exp(-cfg.period_s / tau_s)
    for n, load in enumerate(load_w):
        grid = load - ess_w
        d = step(core, make_inputs(now_s=float(n), grid_w=grid, ess_w=ess_w, soc_pct=50.0), cfg)
        core = d.core
        grids.append(grid)
        cmds.append(d.written_w)
        ess_w += (d.written_w - ess_w) * alpha
    return grids, cmds


def test_integrating_law_settles_a_load_step_within_the_deadband() -> None:
    grids, cmds = _run_step_load({"deadband_w": 10.0}, tau_s=1.0, load_w=[0.0] * 3 + [2000.0] * 40)
    tail = grids[-15:]
    assert all(abs(g) <= 10.0 for g in tail), tail
    assert abs(cmds[-1] - 2000.0) <= 10.0


def test_no_sustained_oscillation_after_a_step() -> None:
    _grids, cmds = _run_step_load({}, tau_s=1.0, load_w=[0.0] * 3 + [2500.0] * 60)
    deltas = [b - a for a, b in itertools.pairwise(cmds[20:])]
    assert all(abs(d) < 1e-6 for d in deltas), "command still moving 20 cycles after the step"
    reversals = sum(1 for a, b in itertools.pairwise(cmds) if (a > 0 > b) or (a < 0 < b))
    assert reversals == 0


def test_clamped_command_is_the_integrator_state() -> None:
    cfg = control_cfg(**LIVE, max_discharge_w=1000.0)
    core = CoreState(machine=MachineState(State.SELF_CONSUMPTION, 0.0))
    for n in range(20):  # a load the battery can never cover: integrator must not wind up
        d = step(core, make_inputs(now_s=float(n), grid_w=5000.0, ess_w=1000.0), cfg)
        core = d.core
    assert d.setpoint_w == 1000.0 and core.prev_cmd_w == 1000.0
    d = step(core, make_inputs(now_s=21.0, grid_w=-500.0, ess_w=1000.0), cfg)  # load drops: back off at once
    assert d.setpoint_w < 1000.0


def test_dry_run_computes_but_writes_zero() -> None:
    for over, gate in (({"enabled": True, "dry_run": True}, "dry_run"), ({"enabled": False, "dry_run": False}, "control_disabled")):
        cfg = control_cfg(**over)
        core = CoreState(machine=MachineState(State.SELF_CONSUMPTION, 0.0))
        d = step(core, make_inputs(grid_w=800.0, ess_w=0.0), cfg)
        assert d.setpoint_w == 800.0  # the set-point that would balance the grid now
        assert d.written_w == 0.0
        assert d.reasons[-1] == gate


def test_both_opt_ins_let_the_command_through() -> None:
    core = CoreState(machine=MachineState(State.SELF_CONSUMPTION, 0.0))
    d = step(core, make_inputs(grid_w=800.0), control_cfg(**LIVE, gain=0.5))
    assert d.written_w == d.setpoint_w == 400.0


def test_charge_and_discharge_only_modes_use_configured_power() -> None:
    cfg = control_cfg(**LIVE, charge_power_w=1500.0, discharge_power_w=1200.0)
    core = CoreState(machine=MachineState(State.SELF_CONSUMPTION, 0.0))
    assert step(core, make_inputs(mode=Mode.CHARGE_ONLY), cfg).written_w == -1500.0
    assert step(core, make_inputs(mode=Mode.DISCHARGE_ONLY), cfg).written_w == 1200.0
    assert step(core, make_inputs(mode=Mode.DISCHARGE_ONLY, soc_pct=9.0), cfg).written_w == 0.0


def test_external_setpoint_followed_inside_limits_then_ttl_lapses_to_zero() -> None:
    cfg = control_cfg(**LIVE, max_discharge_w=3000.0)
    sp = ExternalSetpoint(5000.0, 110.0, "dispatch", "aggregator")
    core = CoreState(machine=MachineState(State.STANDBY, 0.0))
    d = step(core, make_inputs(now_s=100.0, mode=Mode.EXTERNAL, setpoint=sp), cfg)
    assert (d.state, d.written_w, d.reasons) == (State.EXTERNAL, 3000.0, ("inverter_rating",))
    d = step(d.core, make_inputs(now_s=110.0, mode=Mode.EXTERNAL, setpoint=sp), cfg)
    assert (d.state, d.written_w) == (State.STANDBY, 0.0)


def test_fault_writes_zero_in_the_same_cycle() -> None:
    cfg = control_cfg(**LIVE)
    core = CoreState(machine=MachineState(State.SELF_CONSUMPTION, 0.0), prev_cmd_w=3000.0)
    d = step(core, make_inputs(grid_w=500.0, protections=frozenset({"over_temperature"})), cfg)
    assert (d.state, d.written_w, d.fault_causes) == (State.FAULT, 0.0, ("bms_protection:over_temperature",))


# ---- property test: no input, however wild, yields a command outside the limits ----------------

wild = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.floats(-1e7, 1e7))
plausible = st.one_of(st.floats(-2e4, 2e4), wild)  # mostly healthy, sometimes absurd
soc_values = st.one_of(st.floats(-5, 105), st.sampled_from([0.0, 10.0, 95.0, 100.0]), wild)
cfgs = st.fixed_dictionaries(
    {
        "max_charge_w": st.floats(0, 1e6),
        "max_discharge_w": st.floats(0, 1e6),
        "soc_min_pct": st.floats(0, 40),
        "soc_max_pct": st.floats(60, 100),
        "force_charge_w": st.floats(0, 1e6),
        "gain": st.floats(0.01, 2),
        "ramp_w_per_s": st.one_of(st.none(), st.floats(1, 1e6)),
        "max_import_w": st.one_of(st.none(), st.floats(0, 1e6)),
        "max_export_w": st.one_of(st.none(), st.floats(0, 1e6)),
        "enabled": st.booleans(),
        "dry_run": st.booleans(),
    }
)


@settings(max_examples=600, deadline=None)
@given(
    over=cfgs,
    state=st.sampled_from([State.SELF_CONSUMPTION, State.EXTERNAL, State.SELF_CONSUMPTION, *State]),
    mode=st.sampled_from(list(Mode)),
    grid=plausible,
    ess=plausible,
    soc=soc_values,
    volt=st.one_of(st.floats(0, 1000), wild),
    ccl=plausible,
    dcl=plausible,
    chg_en=st.sampled_from([None, 0.0, 1.0, math.nan]),
    dis_en=st.sampled_from([None, 0.0, 1.0]),
    force=st.sampled_from([None, 0.0, 1.0]),
    prev=st.floats(allow_nan=True, allow_infinity=True),
    sp_w=st.floats(allow_nan=True, allow_infinity=True),
    age=st.one_of(st.just(0.0), st.floats(0, 3), st.floats(0, 20)),
)
def test_no_input_yields_a_command_outside_the_limits(
    over, state, mode, grid, ess, soc, volt, ccl, dcl, chg_en, dis_en, force, prev, sp_w, age
) -> None:  # type: ignore[no-untyped-def]
    cfg = control_cfg(**over)
    extra = {
        Q.BMS_VOLTAGE_V: volt,
        Q.BMS_CCL_A: ccl,
        Q.BMS_DCL_A: dcl,
        Q.BMS_CHARGE_ENABLE: chg_en,
        Q.BMS_DISCHARGE_ENABLE: dis_en,
        Q.BMS_FORCE_CHARGE: force,
    }
    inputs = make_inputs(
        now_s=100.0,
        grid_w=grid,
        ess_w=ess,
        soc_pct=soc,
        extra={k: v for k, v in extra.items() if v is not None},
        age_s=age,
        mode=mode,
        setpoint=ExternalSetpoint(sp_w, 200.0, "x", "y"),
    )
    core = CoreState(machine=MachineState(state, 0.0), prev_cmd_w=prev)
    d = step(core, inputs, cfg)
    cmd = d.setpoint_w
    assert math.isfinite(cmd) and math.isfinite(d.written_w)
    # independent statement of the limits (DESIGN §4), from the raw inputs
    fresh = age <= cfg.fault_timeout_s

    def ok(v: float | None) -> bool:
        return fresh and v is not None and math.isfinite(v)

    max_dis, max_chg = cfg.max_discharge_w, cfg.max_charge_w
    if ok(volt) and ok(dcl):
        max_dis = min(max_dis, max(0.0, dcl) * max(0.0, volt))  # type: ignore[operator]
    if ok(volt) and ok(ccl):
        max_chg = min(max_chg, max(0.0, ccl) * max(0.0, volt))  # type: ignore[operator]
    if fresh and dis_en == 0.0:
        max_dis = 0.0
    if fresh and chg_en == 0.0:
        max_chg = 0.0
    assert -max_chg - 1e-6 <= cmd <= max_dis + 1e-6
    if cmd > 0:
        assert ok(soc) and soc > cfg.soc_min_pct  # type: ignore[operator]
    if cmd < 0:
        assert ok(soc) and soc < cfg.soc_max_pct  # type: ignore[operator]
    if cfg.ramp_w_per_s is not None and math.isfinite(prev):
        step_w = cfg.ramp_w_per_s * cfg.period_s
        assert max(prev, 0.0) + step_w + 1e-6 >= cmd >= min(prev, 0.0) - step_w - 1e-6
    if d.state in (State.STOP, State.STANDBY, State.FAULT):
        assert cmd == 0.0
    if not cfg.live:
        assert d.written_w == 0.0
