"""The adaptive law: its plant model, its identifier, and that no input or memory yields a command outside the limits."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ems.core import CoreState, step
from ems.inputs import Inputs
from ems.law import LAG_GRID_S, AdaptiveLaw, AdaptiveState, LawInputs, plant_changed
from ems.model import Mode, Quantity, Reading, State
from ems.plant_model import DEAD_GRID_S, RAMP_GRID_W_PER_S, IdState, Plant, learn, propagate
from ems.statemachine import MachineState
from tests.helpers.core import control_cfg

Q = Quantity
wild = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-1e7, 1e7))
wild_tuple = st.one_of(st.tuples(), st.lists(wild, min_size=1, max_size=12).map(tuple))
pairs = st.lists(st.tuples(wild, wild), max_size=9).map(tuple)
ids = st.builds(
    IdState,
    log_tau=wild_tuple,
    cov=wild_tuple,
    score=wild_tuple,
    best=st.integers(-3, 20),
    ramp_score=wild_tuple,
    ramp_i=st.integers(-3, 10),
    moves_w2=wild,
    updates=st.integers(-5, 10**6),
)
states = st.builds(
    AdaptiveState,
    t_s=wild,
    cmds=pairs,
    readings=pairs,
    grid_w=wild,
    grid_seen_s=wild,
    level_w=wild,
    gain=wild,
    innov_w2=wild,
    prev_innov_w=wild,
    lag_score=wild_tuple,
    lag_net_w=wild_tuple,
    lag_best=st.integers(-3, 10),
    after_jump=st.integers(-3, 5),
    jump_w=wild,
    ident=st.one_of(ids, st.just(IdState())),
)


# ---- the plant model ---------------------------------------------------------------------------------
def test_propagate_is_exact_for_a_first_order_lag_with_dead_time() -> None:
    cmds = ((10.0, 1000.0),)
    pl = Plant(dead_s=0.5, tau_s=2.0)
    assert propagate(0.0, 10.0, 10.5, ((9.0, 0.0), *cmds), pl) == 0.0  # still in the dead time
    x = propagate(0.0, 10.0, 12.5, ((9.0, 0.0), *cmds), pl)
    assert x == pytest.approx(1000.0 * (1.0 - math.exp(-2.0 / 2.0)))


def test_propagate_respects_the_ramp_then_the_lag() -> None:
    pl = Plant(dead_s=0.0, tau_s=0.1, ramp_w_per_s=1000.0)
    x = propagate(0.0, 0.0, 1.0, ((0.0, 5000.0),), pl)
    assert x == pytest.approx(1000.0)  # slope-limited all along: |u - x| > ramp * tau
    x = propagate(0.0, 0.0, 10.0, ((0.0, 500.0),), pl)
    assert x == pytest.approx(500.0)


def test_sane_clamps_absurd_identified_values() -> None:
    for p in (Plant(math.nan, math.nan, math.nan), Plant(-5.0, -1.0, -1.0), Plant(1e9, 1e9, 0.0)):
        s = p.sane()
        assert 0.0 <= s.dead_s <= DEAD_GRID_S[-1]
        assert 0.0 < s.tau_s <= 10.0
        assert s.ramp_w_per_s > 0.0


# ---- the identifier ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("dead_s", "tau_s"), [(0.0, 0.1), (0.0, 1.0), (1.0, 0.5), (0.0, 3.0), (1.0, 3.0)])
def test_identifier_finds_dead_time_and_time_constant_from_the_laws_own_commands(dead_s: float, tau_s: float) -> None:
    truth = Plant(dead_s=dead_s, tau_s=tau_s)
    ident, cmds, x, t = IdState(), (), 0.0, 0.0
    reading = (t - 0.25, x)
    for k in range(600):
        u = 800.0 * math.sin(k * 0.37) + 300.0 * ((k // 7) % 3)  # what a law does on a lively day
        cmds = (*cmds[-7:], (t, u))
        t_next = t + 1.0
        x = propagate(reading[1], reading[0], t_next - 0.25, cmds, truth)
        new = (t_next - 0.25, x)
        ident = learn(ident, prev=reading, new=new, cmds=cmds, noise_w=2.0)
        reading, t = new, t_next
    got = ident.plant()
    assert got.dead_s == pytest.approx(dead_s, abs=0.26)
    assert got.tau_s == pytest.approx(tau_s, rel=0.15) if tau_s >= 0.5 else got.tau_s < 0.3
    assert not math.isfinite(got.ramp_w_per_s)


def test_identifier_sees_a_ramp_on_big_moves() -> None:
    truth = Plant(dead_s=0.0, tau_s=0.1, ramp_w_per_s=1000.0)
    ident, cmds, t = IdState(), (), 0.0
    reading = (t - 0.25, 0.0)
    for k in range(800):
        u = 2500.0 if (k // 10) % 2 else 0.0
        u += 40.0 * math.sin(k * 0.9)
        cmds = (*cmds[-7:], (t, u))
        x = propagate(reading[1], reading[0], t + 0.75, cmds, truth)
        ident = learn(ident, prev=reading, new=(t + 0.75, x), cmds=cmds, noise_w=2.0)
        reading, t = (t + 0.75, x), t + 1.0
    assert ident.plant().ramp_w_per_s == 1000.0


def test_a_malformed_identifier_restarts_instead_of_failing() -> None:
    bad = IdState(log_tau=(1.0,), best=99, ramp_i=-1)
    assert not bad.well_formed()
    out = learn(bad, prev=(0.0, 0.0), new=(1.0, 100.0), cmds=((0.0, 500.0),), noise_w=2.0)
    assert out.well_formed()
    assert math.isfinite(bad.plant().tau_s)


# ---- the law, pure --------------------------------------------------------------------------------------
def _law_inputs(now: float, grid: float, ess: float, prev_cmd: float) -> LawInputs:
    return LawInputs(now, Reading(grid, now - 0.25), Reading(ess, now - 0.25), None, prev_cmd, 0.0)


def test_a_cold_law_is_plain_feed_forward() -> None:
    law = AdaptiveLaw()
    cmd, state = law.command(_law_inputs(100.0, 800.0, 200.0, 200.0), law.initial())
    assert cmd == pytest.approx(1000.0)
    assert isinstance(state, AdaptiveState)


def test_resume_keeps_the_identified_plant_and_describe_reports_it() -> None:
    law = AdaptiveLaw()
    ident = IdState(log_tau=(math.log(2.0),) * len(DEAD_GRID_S), best=4, updates=500)
    _, state = law.command(_law_inputs(100.0, 800.0, 200.0, 200.0), ident)
    kept = law.resume(state)
    assert isinstance(kept, IdState) and kept.plant().dead_s == DEAD_GRID_S[4]
    d = law.describe(state)
    assert d["law"] == "adaptive" and d["inverter_tau_s"] == pytest.approx(2.0) and d["inverter_dead_time_s"] == DEAD_GRID_S[4]
    assert d["inverter_ramp_w_per_s"] == "none" and d["meter_lag_s"] in LAG_GRID_S
    assert law.describe(None)["inverter_tau_s"] > 0


def test_a_repeated_meter_value_is_an_old_value() -> None:
    law = AdaptiveLaw()
    _, s1 = law.command(_law_inputs(100.0, 800.0, 0.0, 0.0), None)
    assert isinstance(s1, AdaptiveState)
    _, s2 = law.command(_law_inputs(101.0, 800.0, 400.0, 800.0), s1)
    assert isinstance(s2, AdaptiveState) and s2.grid_seen_s == s1.grid_seen_s  # first seen a cycle ago


def test_plant_changed_names_meaningful_changes_only() -> None:
    a = {"law": "adaptive", "inverter_dead_time_s": 1.0, "inverter_tau_s": 1.0, "inverter_ramp_w_per_s": "none", "confidence": 0.9}
    assert not plant_changed(a, {**a, "inverter_tau_s": 1.1, "confidence": 0.8})
    assert plant_changed(a, {**a, "inverter_tau_s": 1.3})
    assert plant_changed(a, {**a, "inverter_dead_time_s": 0.5})
    assert plant_changed(a, {**a, "inverter_ramp_w_per_s": 1000.0})
    assert plant_changed(a, {**a, "confidence": 0.3})


# ---- inside the core: bounded whatever the input and the memory --------------------------------------------
@settings(max_examples=500, deadline=None)
@given(
    grid=wild,
    ess=wild,
    soc=st.floats(0, 100),
    grid_age=st.floats(-1, 5),
    ess_age=st.floats(-1, 5),
    prev_cmd=wild,
    law_state=st.one_of(st.none(), states, ids),
    law_ran=st.booleans(),
    state=st.sampled_from(list(State)),
    mode=st.sampled_from(list(Mode)),
    rating=st.floats(0, 1e5),
)
def test_adaptive_command_stays_inside_the_rating_whatever_its_memory(  # type: ignore[no-untyped-def]
    grid, ess, soc, grid_age, ess_age, prev_cmd, law_state, law_ran, state, mode, rating
) -> None:
    cfg = control_cfg(enabled=True, dry_run=False, law="adaptive", max_charge_w=rating, max_discharge_w=rating).core()
    now = 100.0
    m = {Q.GRID_POWER_W: Reading(grid, now - grid_age), Q.ESS_POWER_W: Reading(ess, now - ess_age), Q.SOC_PCT: Reading(soc, now)}
    inputs = Inputs(now_s=now, started_at_s=0.0, measurements=m, bms_flags=None, requested_mode=mode, external_setpoint=None)
    core = CoreState(machine=MachineState(state), prev_cmd_w=prev_cmd, law_state=law_state, law_ran=law_ran)
    d = step(core, inputs, cfg)
    assert math.isfinite(d.setpoint_w) and -rating - 1e-6 <= d.setpoint_w <= rating + 1e-6
    if d.state in (State.STOP, State.STANDBY, State.FAULT):
        assert d.written_w == 0.0
    describe = cfg.law.describe(d.core.law_state)  # what the API shows is always a plain, finite mapping
    assert all(isinstance(v, str) or math.isfinite(v) for v in describe.values())
    later = Inputs(now_s=now + 1.0, started_at_s=0.0, measurements=m, bms_flags=None, requested_mode=mode, external_setpoint=None)
    d2 = step(d.core, later, cfg)  # the memory it left behind is usable
    assert math.isfinite(d2.setpoint_w) and -rating - 1e-6 <= d2.setpoint_w <= rating + 1e-6


def test_a_pause_keeps_the_identified_plant_in_the_core() -> None:
    cfg = control_cfg(enabled=True, dry_run=False, law="adaptive").core()
    ident = IdState(log_tau=(math.log(2.0),) * len(DEAD_GRID_S), best=2, ramp_i=len(RAMP_GRID_W_PER_S) - 1, updates=900)
    now = 100.0
    m = {Q.GRID_POWER_W: Reading(300.0, now), Q.ESS_POWER_W: Reading(0.0, now), Q.SOC_PCT: Reading(50.0, now)}
    idle = Inputs(now_s=now, started_at_s=0.0, measurements=m, bms_flags=None, requested_mode=Mode.IDLE, external_setpoint=None)
    core = CoreState(machine=MachineState(State.STANDBY), law_state=ident, law_ran=False)
    d = step(core, idle, cfg)
    assert d.core.law_state == ident and not d.core.law_ran
