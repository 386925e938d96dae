"""Replay on tiny hand-made profiles with known answers (simulators/replay.py); no timing asserted."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from config.control import LawName
from simulators.profile import Profile
from simulators.replay import ReplayOptions, _step_metrics, live_config, main, run, step_response


def _opts(**over: float) -> ReplayOptions:
    return replace(CLEAN, **over)  # type: ignore[arg-type]


CLEAN = ReplayOptions(meter_noise_w=0.0, quantisation_w=0.0, load_phase_s=0.0, duration_s=3600.0)


def test_empty_battery_leaves_the_whole_load_on_the_grid() -> None:
    # SOC 5 % is below soc_min (10 %): the core may not discharge, so grid = load = 1000 W all hour
    profile = Profile.constant(load_w=1000.0, pv_w=0.0, duration_s=3600)
    k = run(profile, "ems", live_config(), _opts(soc_start_pct=5.0)).kpis
    assert k.cycles == 3600
    assert k.grid_error_mean_w == pytest.approx(1000.0)
    assert k.grid_error_p95_w == pytest.approx(1000.0)
    assert k.import_wh == pytest.approx(1000.0)
    assert k.export_wh == 0.0
    assert k.self_sufficiency == pytest.approx(0.0)
    assert k.throughput_wh == 0.0
    assert k.soc_min_pct == k.soc_max_pct == pytest.approx(5.0)
    # STOP -> STANDBY -> SELF_CONSUMPTION: one cycle in STANDBY, then the law (bound by soc_min) the rest
    assert k.state_share["STANDBY"] == pytest.approx(1 / 3600)
    assert k.state_share["SELF_CONSUMPTION"] == pytest.approx(3599 / 3600)
    assert k.limit_cycles["soc_min"] == 3599


def test_ideal_cancels_the_load_exactly_and_pays_it_from_the_battery() -> None:
    profile = Profile.constant(load_w=1000.0, pv_w=0.0, duration_s=3600)
    k = run(profile, "ideal", live_config(), _opts(soc_start_pct=50.0)).kpis
    assert k.grid_error_mean_w == pytest.approx(0.0, abs=1e-9)
    assert k.import_wh == pytest.approx(0.0, abs=1e-9)
    assert k.discharge_wh == pytest.approx(1000.0)
    assert k.self_sufficiency == pytest.approx(1.0)
    assert k.equivalent_cycles == pytest.approx(1000.0 / (2 * 10_000.0))
    # 1000 Wh AC at 95 % discharge efficiency out of 10 kWh
    assert k.soc_min_pct == pytest.approx(50.0 - 1000.0 / 0.95 / 10_000.0 * 100.0)


def test_surplus_pv_beyond_a_full_battery_is_exported_by_every_controller() -> None:
    profile = Profile.constant(load_w=0.0, pv_w=2000.0, duration_s=3600)
    for name in ("ideal", "naive", "ems"):
        k = run(profile, name, live_config(), _opts(soc_start_pct=96.0)).kpis  # above soc_max (95 %): no charge
        assert k.export_wh == pytest.approx(2000.0), name
        assert k.self_consumption == pytest.approx(0.0), name


def test_step_metrics_on_a_hand_made_trace() -> None:
    # a +1000 W load step at t=10; grid after each cycle: 500, -100 (10 % overshoot), 20, 5, then 0
    grids = [500.0, -100.0, 20.0, 5.0] + [0.0] * 20
    cmds = [500.0, 1100.0, 980.0, 995.0] + [1000.0] * 20
    trace = [(11.0 + i, c, g) for i, (c, g) in enumerate(zip(cmds, grids, strict=True))]
    m = _step_metrics(trace, [(10, 1000.0)], live_config())
    step = m["steps"][0]  # type: ignore[index]
    assert step["overshoot_pct"] == pytest.approx(10.0)
    assert step["settle_cycles"] == 4  # inside +/-10 W from the 4th cycle on
    assert step["command_reversals"] == 2  # up 600, down 120, up 15, up 5 (moves below the 10 W band ignored: 995 -> 1000)
    assert step["reversals_after_settle"] == 0


def test_predictive_law_beats_the_integrating_law_on_a_half_rating_step() -> None:
    # default replay timing: meter value ~0.75 s old, inverter reading 0.25 s old, inverter tau 1 s
    results = {}
    for law in (LawName.INTEGRATING, LawName.PREDICTIVE):
        cfg = live_config().model_copy(update={"law": law})
        results[law] = step_response(cfg, ReplayOptions(), controllers=("ems",))["controllers"]["ems"]  # type: ignore[index]
    pred, integ = results[LawName.PREDICTIVE], results[LawName.INTEGRATING]
    assert pred["overshoot_pct_max"] <= 5.0
    assert pred["settle_cycles_max"] is not None and pred["settle_cycles_max"] <= 6
    assert pred["overshoot_pct_max"] < integ["overshoot_pct_max"]
    assert integ["settle_cycles_max"] is None or pred["settle_cycles_max"] < integ["settle_cycles_max"]


def test_command_line_prints_kpis_and_ratios_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "tiny.csv"
    rows = ["t_s,load_w,pv_w"] + [f"{t},{800 if t < 300 else 1800},{0 if t < 450 else 2500}" for t in range(600)]
    csv.write_text("\n".join(rows) + "\n")
    assert main(["--profile", str(csv), "--controller", "ems", "--json", "--meter-noise", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["profile"] == "tiny"
    assert set(out["controllers"]) == {"ideal", "ems"}
    assert out["controllers"]["ems"]["cycles"] == 600
    assert out["controllers"]["ideal"]["grid_error_mean_w"] < 1e-6
    assert out["controllers"]["ems"]["grid_error_mean_w"] > 0  # the load steps cost a real controller something
    assert out["ratios"]["ems"]["grid_error_over_ideal"] is None  # an exact ideal has no ratio
    assert out["ratios"]["ems"]["excess_grid_error_w"] > 0


def test_unknown_profile_is_a_clean_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--profile", "no-such-profile"]) == 2
    assert "profile not found" in capsys.readouterr().err
