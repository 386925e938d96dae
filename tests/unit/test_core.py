"""The pure control step: law convergence, opt-in gate, safe states, and the property test."""

from __future__ import annotations

import itertools
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from config.control import ControlConfig
from ems.core import CoreState, Decision
from ems.core import step as core_step
from ems.inputs import Inputs
from ems.model import ExternalSetpoint, Mode, Quantity, Reading, State
from ems.statemachine import MachineState
from tests.helpers.core import control_cfg, make_inputs

Q = Quantity
LIVE = {"enabled": True, "dry_run": False}


def step(core: CoreState, inputs: Inputs, cfg: ControlConfig) -> Decision:
    """The core step with the core config the `control:` section builds."""
    return core_step(core, inputs, cfg.core())


def _run_step_load(cfg_over: dict[str, object], *, tau_s: float, load_w: list[float]) -> tuple[list[float], list[float]]:
    """Drive the core against a first-order inverter (time constant tau_s) cycle by cycle; no sleeps."""
    cfg = control_cfg(**LIVE, **cfg_over)
    core = CoreState(machine=MachineState(State.SELF_CONSUMPTION))
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
    core = CoreState(machine=MachineState(State.SELF_CONSUMPTION))
    for n in range(20):  # a load the battery can never cover: integrator must not wind up
        d = step(core, make_inputs(now_s=float(n), grid_w=5000.0, ess_w=1000.0), cfg)
        core = d.core
    assert d.setpoint_w == 1000.0 and core.prev_cmd_w == 1000.0
    d = step(core, make_inputs(now_s=21.0, grid_w=-500.0, ess_w=1000.0), cfg)  # load drops: back off at once
    assert d.setpoint_w < 1000.0


def test_dry_run_computes_but_writes_zero() -> None:
    for over, gate in (({"enabled": True, "dry_run": True}, "dry_run"), ({"enabled": False, "dry_run": False}, "control_disabled")):
        cfg = control_cfg(**over)
        core = CoreState(machine=MachineState(State.SELF_CONSUMPTION))
        d = step(core, make_inputs(grid_w=800.0, ess_w=0.0), cfg)
        assert d.setpoint_w == 800.0  # the set-point that would balance the grid now
        assert d.written_w == 0.0
        assert d.reasons[-1] == gate


def test_both_opt_ins_let_the_command_through() -> None:
    core = CoreState(machine=MachineState(State.SELF_CONSUMPTION))
    d = step(core, make_inputs(grid_w=800.0), control_cfg(**LIVE, law="integrating", gain=0.5))
    assert d.written_w == d.setpoint_w == 400.0


def test_charge_and_discharge_only_modes_use_configured_power() -> None:
    cfg = control_cfg(**LIVE, charge_power_w=1500.0, discharge_power_w=1200.0)
    core = CoreState(machine=MachineState(State.SELF_CONSUMPTION))
    assert step(core, make_inputs(mode=Mode.CHARGE_ONLY), cfg).written_w == -1500.0
    assert step(core, make_inputs(mode=Mode.DISCHARGE_ONLY), cfg).written_w == 1200.0
    assert step(core, make_inputs(mode=Mode.DISCHARGE_ONLY, soc_pct=9.0), cfg).written_w == 0.0


def test_external_setpoint_followed_inside_limits_then_ttl_lapses_to_zero() -> None:
    cfg = control_cfg(**LIVE, max_discharge_w=3000.0)
    sp = ExternalSetpoint(5000.0, 110.0, "dispatch", "aggregator")
    core = CoreState(machine=MachineState(State.STANDBY))
    d = step(core, make_inputs(now_s=100.0, mode=Mode.EXTERNAL, setpoint=sp), cfg)
    assert (d.state, d.written_w, d.reasons) == (State.EXTERNAL, 3000.0, ("inverter_rating",))
    d = step(d.core, make_inputs(now_s=110.0, mode=Mode.EXTERNAL, setpoint=sp), cfg)
    assert (d.state, d.written_w) == (State.STANDBY, 0.0)


def test_fault_writes_zero_in_the_same_cycle() -> None:
    cfg = control_cfg(**LIVE)
    core = CoreState(machine=MachineState(State.SELF_CONSUMPTION), prev_cmd_w=3000.0)
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
    ages=st.lists(st.one_of(st.just(0.0), st.floats(0, 3), st.floats(0, 20)), min_size=9, max_size=9),
)
def test_no_input_yields_a_command_outside_the_limits(
    over, state, mode, grid, ess, soc, volt, ccl, dcl, chg_en, dis_en, force, prev, sp_w, ages
) -> None:  # type: ignore[no-untyped-def]
    """Every reading has its own age (a fresh meter beside a stale BMS, ...); the oracle below
    restates DESIGN §4 from the raw inputs, the grid import/export caps included."""
    cfg = control_cfg(**over)
    now = 100.0
    raw = {
        Q.GRID_POWER_W: grid,
        Q.ESS_POWER_W: ess,
        Q.SOC_PCT: soc,
        Q.BMS_VOLTAGE_V: volt,
        Q.BMS_CCL_A: ccl,
        Q.BMS_DCL_A: dcl,
        Q.BMS_CHARGE_ENABLE: chg_en,
        Q.BMS_DISCHARGE_ENABLE: dis_en,
        Q.BMS_FORCE_CHARGE: force,
    }
    age = dict(zip(raw, ages, strict=True))
    m = {q: Reading(v, now - age[q]) for q, v in raw.items() if v is not None}
    inputs = Inputs(
        now_s=now,
        started_at_s=0.0,
        measurements=m,
        bms_flags=None,
        requested_mode=mode,
        external_setpoint=ExternalSetpoint(sp_w, 200.0, "x", "y"),
    )
    core = CoreState(machine=MachineState(state), prev_cmd_w=prev)
    d = step(core, inputs, cfg)
    cmd = d.setpoint_w
    assert math.isfinite(cmd) and math.isfinite(d.written_w)

    def ok(q: Quantity) -> float | None:
        v = raw[q]
        return v if v is not None and math.isfinite(v) and age[q] <= cfg.fault_timeout_s else None

    max_dis, max_chg = cfg.max_discharge_w, cfg.max_charge_w
    v_ok, dcl_ok, ccl_ok = ok(Q.BMS_VOLTAGE_V), ok(Q.BMS_DCL_A), ok(Q.BMS_CCL_A)
    if v_ok is not None and dcl_ok is not None:
        max_dis = min(max_dis, max(0.0, dcl_ok) * max(0.0, v_ok))
    if v_ok is not None and ccl_ok is not None:
        max_chg = min(max_chg, max(0.0, ccl_ok) * max(0.0, v_ok))
    if ok(Q.BMS_DISCHARGE_ENABLE) == 0.0:
        max_dis = 0.0
    if ok(Q.BMS_CHARGE_ENABLE) == 0.0:
        max_chg = 0.0
    assert -max_chg - 1e-6 <= cmd <= max_dis + 1e-6
    soc_ok = ok(Q.SOC_PCT)
    if cmd > 0:
        assert soc_ok is not None and soc_ok > cfg.soc_min_pct
    if cmd < 0:
        assert soc_ok is not None and soc_ok < cfg.soc_max_pct
    grid_ok, ess_ok = ok(Q.GRID_POWER_W), ok(Q.ESS_POWER_W)
    if grid_ok is not None and ess_ok is not None:
        uncontrolled_w = grid_ok + ess_ok  # grid power with the battery at 0 W
        tol = 1e-6 * max(1.0, abs(uncontrolled_w))
        if cfg.max_import_w is not None and cmd < 0:  # charging never pushes import over the cap
            assert uncontrolled_w - cmd <= cfg.max_import_w + tol
        if cfg.max_export_w is not None and cmd > 0:  # discharging never pushes export over the cap
            assert uncontrolled_w - cmd >= -cfg.max_export_w - tol
    if cfg.ramp_w_per_s is not None and math.isfinite(prev):
        step_w = cfg.ramp_w_per_s * cfg.period_s
        assert max(prev, 0.0) + step_w + 1e-6 >= cmd >= min(prev, 0.0) - step_w - 1e-6
    if d.state in (State.STOP, State.STANDBY, State.FAULT):
        assert cmd == 0.0
    if not cfg.live:
        assert d.written_w == 0.0
