"""Plausible readings only: windows from the site's facts, episodes logged once, cross-checks as FAULT causes."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from structlog.testing import capture_logs

from config import parse_config
from ems.clock import SimClock
from ems.context import EMSContext
from ems.core import CoreState, step
from ems.model import Quantity, State
from ems.plausibility import CrossChecks, cross_check
from ems.statemachine import MachineState
from tests.helpers.core import make_inputs

Q = Quantity


def _ctx(**plausibility: object) -> EMSContext:
    cfg = parse_config({"plausibility": dict(plausibility)}, {})
    return EMSContext(clock=SimClock(), windows=cfg.windows())


@pytest.mark.parametrize(
    ("source", "quantity", "value"),
    [
        ("meter", Q.GRID_POWER_W, 150_000.0),  # inside the SDM630 map's +/-200 kW, far beyond a 43 kW connection
        ("meter", Q.GRID_POWER_W, -150_000.0),
        ("mqtt:pv", Q.PV_POWER_W, 1e30),
        ("mqtt:pv", Q.PV_POWER_W, -5000.0),  # pv >= 0 (DESIGN §2)
        ("mqtt:grid", Q.GRID_VOLTAGE_V, -400.0),
        ("bms", Q.BMS_CCL_A, 3000.0),
        ("bms", Q.BMS_CCL_A, -100.0),
        ("bms", Q.BMS_VOLTAGE_V, 300.0),  # a 300 V pack on a 51.2 V system: 300 V x CCL would loosen the BMS limit six-fold
        ("ess", Q.ESS_POWER_W, 60_000.0),  # a 5 kW inverter
    ],
)
def test_a_reading_outside_the_sites_window_is_refused_and_counted(source: str, quantity: Quantity, value: float) -> None:
    ctx = _ctx()
    w = ctx.readings.claim(source, [quantity])
    assert w.update({quantity: value}, at_s=1.0) == 1
    snap = ctx.snapshot()
    assert snap.reading(quantity) is None and snap.counters["readings_implausible"] == 1


def test_plausible_values_pass_and_each_episode_is_logged_once() -> None:
    ctx = _ctx()
    w = ctx.readings.claim("meter", [Q.GRID_POWER_W])
    with capture_logs() as logs:
        assert w.update({Q.GRID_POWER_W: 12_000.0}, at_s=1.0) == 0
        for t in range(2, 12):
            w.update({Q.GRID_POWER_W: 150_000.0}, at_s=float(t))
        w.update({Q.GRID_POWER_W: 800.0}, at_s=12.0)
        w.update({Q.GRID_POWER_W: 150_000.0}, at_s=13.0)
    events = [(e["event"], e.get("value")) for e in logs if e["event"].startswith("reading_")]
    assert events == [("reading_implausible", 150_000.0), ("reading_plausible_again", None), ("reading_implausible", 150_000.0)]
    first = next(e for e in logs if e["event"] == "reading_implausible")
    assert first["window"] == "-52164..52164" and first["source"] == "meter"
    r = ctx.snapshot().reading(Q.GRID_POWER_W)
    assert r is not None and (r.value, r.at_s) == (800.0, 12.0)  # the last plausible value, aging toward stale
    assert ctx.snapshot().counters["readings_implausible"] == 11


def test_windows_follow_the_site_config() -> None:
    big = _ctx(grid_connection_w=200_000.0, battery_nominal_voltage_v=400.0)
    w = big.readings.claim("x", [Q.GRID_POWER_W, Q.BMS_VOLTAGE_V])
    assert w.update({Q.GRID_POWER_W: 150_000.0, Q.BMS_VOLTAGE_V: 380.0}, at_s=1.0) == 0
    explicit = _ctx(windows={"grid_power_w": [-1000.0, 1000.0]})
    w2 = explicit.readings.claim("x", [Q.GRID_POWER_W])
    assert w2.update({Q.GRID_POWER_W: 1500.0}, at_s=1.0) == 1


def test_a_bad_window_or_check_name_refuses_the_config() -> None:
    from config import ConfigError

    with pytest.raises(ConfigError, match=r"plausibility\.windows\.grid_power_w: lo must be <= hi"):
        parse_config({"plausibility": {"windows": {"grid_power_w": [10, -10]}}}, {})
    with pytest.raises(ConfigError, match=r"plausibility\.cross_checks: unknown"):
        parse_config({"plausibility": {"cross_checks": ["nope"]}}, {})


def test_cross_checks_name_what_the_physics_forbids() -> None:
    c = CrossChecks(enabled=frozenset({"load", "bms_power", "bms_voltage"}))
    assert cross_check({Q.GRID_POWER_W: -3000.0, Q.PV_POWER_W: 500.0, Q.ESS_POWER_W: 0.0}, c) == ("load",)  # load -2.5 kW
    assert cross_check({Q.GRID_POWER_W: -3000.0, Q.PV_POWER_W: 3200.0, Q.ESS_POWER_W: 0.0}, c) == ()
    assert cross_check({Q.GRID_POWER_W: -3000.0, Q.ESS_POWER_W: 0.0}, c) == ()  # no PV reading: unseen PV, not a negative load
    steady = {Q.ESS_POWER_W: -2000.0, Q.BMS_VOLTAGE_V: 52.0, Q.BMS_CURRENT_A: 38.0}  # charging ~1976 W DC
    assert cross_check(steady, c) == ()
    assert cross_check({**steady, Q.BMS_CURRENT_A: -38.0}, c) == ("bms_power",)  # the BMS says discharge
    assert cross_check({Q.BMS_VOLTAGE_V: 60.0, Q.BMS_CVL_V: 56.0, Q.BMS_DVL_V: 46.0}, c) == ("bms_voltage",)
    assert cross_check({Q.BMS_VOLTAGE_V: 53.0, Q.BMS_CVL_V: 56.0, Q.BMS_DVL_V: 46.0}, c) == ()


def test_a_persistent_cross_check_violation_is_a_fault_a_transient_one_is_not() -> None:
    cfg = replace(parse_config({"control": {"enabled": True, "dry_run": False}}, {}).core(), cross_checks=CrossChecks(persist_s=5.0))
    core = CoreState(machine=MachineState(State.SELF_CONSUMPTION))
    impossible = {"grid_w": -4000.0, "ess_w": 0.0, "extra": {Q.PV_POWER_W: 0.0}}  # 4 kW export, no PV, idle battery: load -4 kW
    for t in (100.0, 102.0, 104.9):
        d = step(core, make_inputs(now_s=t, **impossible), cfg)  # type: ignore[arg-type]
        core = d.core
        assert d.state is State.SELF_CONSUMPTION
    d = step(core, make_inputs(now_s=105.0, **impossible), cfg)  # type: ignore[arg-type]
    assert (d.state, d.written_w, d.fault_causes) == (State.FAULT, 0.0, ("implausible:load",))
    flap = CoreState(machine=MachineState(State.SELF_CONSUMPTION))
    for t, grid in ((100.0, -4000.0), (103.0, 200.0), (106.0, -4000.0), (108.0, -4000.0)):
        d = step(flap, make_inputs(now_s=t, grid_w=grid, ess_w=0.0, extra={Q.PV_POWER_W: 0.0}), cfg)
        flap = d.core
        assert d.state is State.SELF_CONSUMPTION, t  # each episode shorter than persist_s


def test_a_non_finite_value_is_not_implausible_but_rejected() -> None:
    ctx = _ctx()
    w = ctx.readings.claim("meter", [Q.GRID_POWER_W])
    assert w.update({Q.GRID_POWER_W: math.nan}, at_s=1.0) == 1
    assert ctx.snapshot().counters == {"measurements_rejected": 1}
