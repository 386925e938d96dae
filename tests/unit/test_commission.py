"""Commissioning's pure parts (ems/commission.py) and its context parts (the board, fast-poll requests)."""

from __future__ import annotations

import math

import pytest

from ems.commission import (
    CheckStatus,
    CommissionParams,
    Directions,
    MeterVerdict,
    StepResult,
    at_rest,
    meter_verdict,
    plan_steps,
    preflight,
    refresh_period_s,
    settled,
    sign_checks,
    suggested_config,
    summarize,
)
from ems.context.commission import CommissionBoard, RunState
from ems.context.polling import MAX_FAST_POLL_S, MIN_POLL_PERIOD_S, PollRequests
from ems.model import Mode, Quantity, Reading
from ems.plausibility import Window
from ems.stepfit import StepFit

Q = Quantity
REQUIRED = frozenset({Q.GRID_POWER_W, Q.ESS_POWER_W, Q.SOC_PCT})


def _plan(soc: float | None, **kw: object) -> tuple[tuple[float, ...], tuple[str, ...]]:
    args: dict[str, object] = {
        "max_charge_w": 5000.0,
        "max_discharge_w": 5000.0,
        "soc_pct": soc,
        "soc_min_pct": 10.0,
        "soc_max_pct": 95.0,
        "hysteresis_pct": 2.0,
    }
    params = kw.pop("params", CommissionParams())
    args.update(kw)
    return plan_steps(params, **args)  # type: ignore[arg-type]


def test_the_run_steps_discharge_then_charge_and_ends_at_0_w() -> None:
    assert _plan(50.0) == ((1000.0, 0.0, -1000.0, 0.0), ())


def test_a_step_is_at_most_half_of_every_limit_of_its_direction() -> None:
    steps, _ = _plan(50.0, max_discharge_w=1200.0, bms_charge_w=800.0)
    assert steps == (600.0, 0.0, -400.0, 0.0)


def test_a_direction_without_room_in_the_soc_window_is_left_out_and_said_why() -> None:
    steps, notes = _plan(12.5)
    assert steps == (-1000.0, 0.0) and "discharge step left out" in notes[0]
    steps, notes = _plan(92.5)
    assert steps == (1000.0, 0.0) and "charge step left out" in notes[0]
    steps, notes = _plan(None)
    assert steps == () and notes


def test_one_direction_only_when_asked() -> None:
    assert _plan(50.0, params=CommissionParams(directions=Directions.CHARGE))[0] == (-1000.0, 0.0)
    assert _plan(50.0, params=CommissionParams(step_w=300.0, directions=Directions.DISCHARGE))[0] == (300.0, 0.0)


def test_a_limit_too_tight_for_a_measurable_step_leaves_the_direction_out() -> None:
    steps, notes = _plan(50.0, bms_discharge_w=60.0)
    assert steps == (-1000.0, 0.0) and "allow only 30 W" in notes[0]


def _r(v: float, at_s: float = 100.0, source: str = "test") -> Reading:
    return Reading(v, at_s, source)


WINDOWS = {Q.GRID_POWER_W: Window(-50_000, 50_000), Q.BMS_VOLTAGE_V: Window(30.0, 70.0)}


def _checks(**values: float) -> dict[str, tuple[CheckStatus, str]]:
    m = {Q(k): _r(v) for k, v in values.items()}
    out = preflight(m, now_s=100.5, max_age_s=2.0, required=REQUIRED, windows=WINDOWS, rating_w=5000.0)
    return {c.name: (c.status, c.detail) for c in out}


def test_preflight_names_each_required_reading_with_its_source_and_window() -> None:
    c = _checks(grid_power_w=800.0, ess_power_w=3.0, soc_pct=55.0, pv_power_w=200.0, bms_voltage_v=52.0)
    assert c["grid_power_w"] == (CheckStatus.OK, "+800 W from test, plausible (-50000..50000)")
    assert c["ess_power_w at rest"][0] is CheckStatus.OK
    assert c["pv_power_w sign"][0] is CheckStatus.OK
    assert c["load = grid + pv + ess"] == (CheckStatus.OK, "+1003 W")
    assert c["bms_voltage_v"][0] is CheckStatus.OK


def test_preflight_fails_a_missing_or_stale_required_reading() -> None:
    m = {Q.GRID_POWER_W: _r(100.0, at_s=90.0), Q.ESS_POWER_W: _r(0.0)}
    out = {c.name: c.status for c in preflight(m, now_s=100.5, max_age_s=2.0, required=REQUIRED, windows={}, rating_w=5000.0)}
    assert out["grid_power_w"] is CheckStatus.FAIL and out["soc_pct"] is CheckStatus.FAIL and out["ess_power_w"] is CheckStatus.OK


def test_preflight_catches_reversed_pv_and_a_negative_load() -> None:
    c = _checks(grid_power_w=-900.0, ess_power_w=0.0, soc_pct=50.0, pv_power_w=-400.0)
    assert c["pv_power_w sign"][0] is CheckStatus.FAIL
    assert c["load = grid + pv + ess"][0] is CheckStatus.WARN  # -1300 W of load: a sign is wrong


def test_preflight_does_not_judge_the_load_without_a_pv_reading() -> None:
    assert _checks(grid_power_w=-1500.0, ess_power_w=0.0, soc_pct=50.0)["load = grid + pv + ess"][0] is CheckStatus.INFO


def test_preflight_warns_when_the_inverter_is_not_at_the_commanded_0_w() -> None:
    status, detail = _checks(grid_power_w=100.0, ess_power_w=-400.0, soc_pct=50.0)["ess_power_w at rest"]
    assert status is CheckStatus.WARN and "-400 W" in detail


def _fit(gain: float, *, dead: float = 0.5, tau: float = 1.0, ramp: float | None = None) -> StepFit:
    return StepFit(dead, tau, gain, 0.0, ramp, 5.0, 0.999, 100, True)


def _step(i: int, frm: float, to: float, ess: StepFit | None, grid: StepFit | None, bms_a: float | None = None) -> StepResult:
    return StepResult(i, frm, to, 10.0 * i, 8.0, ess, grid, bms_a)


@pytest.mark.parametrize(
    ("ratio", "verdict"),
    [
        (1.0, MeterVerdict.OK),
        (0.85, MeterVerdict.OK),
        (-1.0, MeterVerdict.REVERSED),
        (0.33, MeterVerdict.ONE_PHASE),
        (-0.3, MeterVerdict.ONE_PHASE),
        (0.05, MeterVerdict.NOT_SEEN),
        (0.6, MeterVerdict.PARTIAL),
        (None, MeterVerdict.UNKNOWN),
        (math.nan, MeterVerdict.UNKNOWN),
    ],
)
def test_the_meter_verdict_follows_the_share_of_the_step_it_sees(ratio: float | None, verdict: MeterVerdict) -> None:
    assert meter_verdict(ratio)[0] is verdict


def test_summary_takes_medians_over_the_steps_that_responded_and_judges_the_meter() -> None:
    steps = [
        _step(1, 0, 1000, _fit(1.0, dead=0.5, tau=1.0), _fit(-0.99, dead=0.9)),
        _step(2, 1000, 0, _fit(1.0, dead=0.52, tau=1.1), _fit(-1.0, dead=1.0)),
        _step(3, 0, -1000, _fit(0.98, dead=0.48, tau=0.9), _fit(-0.98, dead=0.95)),
    ]
    s = summarize(steps, meter_refresh_s=1.0)
    inv, met = s["inverter"], s["meter"]
    assert isinstance(inv, dict) and isinstance(met, dict)
    assert inv["dead_time_s"] == 0.5 and inv["tau_s"] == 1.0 and inv["gain"] == 1.0 and inv["responded"] == 3
    assert inv["rate_limited"] is False and inv["ramp_w_per_s"] is None
    assert met["verdict"] == "ok" and met["sign"] == "ok" and met["delay_after_inverter_s"] == pytest.approx(0.47)
    keys, lines = suggested_config(s)
    assert keys == {"control.inverter_tau_s": 1.0, "control.meter_age_s": 0.5}
    assert "control:" in lines and any(ln.strip().startswith("inverter_tau_s: 1.00") for ln in lines)


def test_a_reversed_meter_and_a_ramp_show_in_the_suggestions() -> None:
    steps = [_step(i, 0, 1000, _fit(1.0, ramp=400.0), _fit(1.0)) for i in (1, 2)]
    s = summarize(steps, meter_refresh_s=None)
    keys, lines = suggested_config(s)
    assert keys["control.ramp_w_per_s"] == 400 and "control.meter_age_s" not in keys
    assert any("WRONG sign" in ln for ln in lines)


def test_sign_checks_fail_a_reversed_inverter_reading_and_warn_a_reversed_bms_current() -> None:
    bad = sign_checks([_step(1, 0, 1000, _fit(-1.0), None, bms_a=+19.0), _step(2, 1000, 0, _fit(-1.0), None, bms_a=-19.0)])
    named = {c.name: c.status for c in bad}
    assert named["ess_power_w follows the command"] is CheckStatus.FAIL
    assert named["bms_current_a sign"] is CheckStatus.WARN
    good = sign_checks([_step(1, 0, 1000, _fit(1.0), None, bms_a=-19.0)])
    assert all(c.status is CheckStatus.OK for c in good)


def test_settled_needs_half_the_step_and_a_flat_trend() -> None:
    rising = [(t / 10, 1000.0 * (1 - math.exp(-(t / 10)))) for t in range(0, 60)]
    assert not settled(rising[:20], before_w=0.0, change_w=1000.0, noise_w=2.0, now_s=1.9)  # still rising
    assert settled(rising, before_w=0.0, change_w=1000.0, noise_w=2.0, now_s=5.9)
    flat_at_zero = [(t / 10, 0.0) for t in range(0, 60)]
    assert not settled(flat_at_zero, before_w=0.0, change_w=1000.0, noise_w=2.0, now_s=5.9)  # dead time, not settled


def test_at_rest_means_near_0_w_and_not_moving() -> None:
    decaying = [(t / 10, -400.0 * math.exp(-(t / 10) / 2.0)) for t in range(0, 200)]
    assert not at_rest(decaying[:40], now_s=3.9, tol_w=50.0)
    assert not at_rest([(t / 10, -45.0 + t) for t in range(0, 20)], now_s=1.9, tol_w=50.0)  # inside the band, moving
    assert at_rest([(t / 10, 12.0 + (t % 3)) for t in range(0, 20)], now_s=1.9, tol_w=50.0)


def test_refresh_period_is_the_median_time_between_changes() -> None:
    samples = [(t / 10, float(int(t / 10))) for t in range(0, 60)]  # 10 Hz polls of a 1 Hz meter
    assert refresh_period_s(samples) == pytest.approx(1.0)
    assert refresh_period_s([(t / 10, 5.0) for t in range(30)]) is None


def test_the_board_runs_one_at_a_time_and_keeps_the_last_report() -> None:
    b = CommissionBoard()
    req = b.submit(who="op", via="rest", params={"step_w": 500.0}, prev_mode=Mode.IDLE, now_s=1.0)
    assert req is not None and req.run == 1 and b.snapshot().state is RunState.QUEUED
    assert b.submit(who="op2", via="rest", params={}, prev_mode=Mode.IDLE, now_s=1.5) is None
    taken = b.take(timeout_s=0.0)
    assert taken == req and b.snapshot().state is RunState.RUNNING and b.take(timeout_s=0.0) is None
    assert b.touch(1, now_s=3.0) and not b.touch(2, now_s=3.0) and b.touched_s() == 3.0
    b.progress(1, phase="step 1/4", step=1)
    assert b.snapshot().phase == "step 1/4" and b.snapshot().progress["step"] == 1
    assert b.cancel(who="op", reason="enough") == 1 and b.abort_requested() == "enough (op)"
    b.finish(1, state=RunState.ABORTED, report={"result": "aborted", "steps": [{"index": 1}]})
    v = b.snapshot()
    assert v.state is RunState.ABORTED and v.report is not None and v.report["steps"][0]["index"] == 1  # type: ignore[index]
    assert b.cancel(who="op", reason="late") is None and not b.busy()
    again = b.submit(who="op", via="rest", params={}, prev_mode=Mode.SELF_CONSUMPTION, now_s=9.0)
    assert again is not None and again.run == 2 and b.snapshot().abort_requested is None and b.snapshot().report is None
    with pytest.raises(ValueError, match="final"):
        b.finish(2, state=RunState.RUNNING, report={})


def test_a_fast_poll_is_bounded_and_expires_by_itself() -> None:
    p = PollRequests()
    r = p.request(("ess", "meter"), period_s=0.001, duration_s=1e9, now_s=10.0, who="commission:1")
    assert r.period_s == MIN_POLL_PERIOD_S and r.until_s == 10.0 + MAX_FAST_POLL_S
    assert p.period_s("ess", now_s=11.0) == MIN_POLL_PERIOD_S and p.period_s("pv", now_s=11.0) is None
    assert p.period_s("meter", now_s=10.0 + MAX_FAST_POLL_S) is None  # expired: the link's own period again
    p.request(("ess",), period_s=0.1, duration_s=5.0, now_s=20.0, who="commission:2")
    p.withdraw("commission:2")
    assert p.period_s("ess", now_s=21.0) is None
    with pytest.raises(ValueError):
        p.request(("ess",), period_s=math.nan, duration_s=1.0, now_s=0.0, who="x")
