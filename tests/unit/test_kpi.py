"""Replay KPIs on hand-fed samples with answers worked out by hand (simulators/kpi.py)."""

from __future__ import annotations

import math

import pytest

from simulators.kpi import KpiAccumulator, percentile


def _four_seconds() -> KpiAccumulator:
    acc = KpiAccumulator(capacity_wh=0.5, reversal_min_w=1.0)
    # (grid, load, pv, ess, soc): grid = load - pv - ess
    rows = [
        (100.0, 300.0, 0.0, 200.0, 50.0),
        (-50.0, 100.0, 350.0, 200.0, 49.0),
        (0.0, 200.0, 0.0, 200.0, 48.0),
        (200.0, 0.0, 0.0, -200.0, 49.0),
    ]
    for grid, load, pv, ess, soc in rows:
        acc.add_sample(dt_s=1.0, grid_w=grid, target_w=0.0, load_w=load, pv_w=pv, ess_w=ess, soc_pct=soc)
    return acc


def test_grid_error_energies_and_ratios_match_the_hand_computed_answer() -> None:
    k = _four_seconds().result()
    assert k.duration_s == 4.0
    assert k.grid_error_mean_w == pytest.approx((100 + 50 + 0 + 200) / 4)  # 87.5 W
    assert k.grid_error_p95_w == 200.0  # nearest rank: ceil(0.95 * 4) = 4th of [0, 50, 100, 200]
    assert k.import_wh == pytest.approx(300 / 3600)
    assert k.export_wh == pytest.approx(50 / 3600)
    assert k.load_wh == pytest.approx(600 / 3600)
    assert k.pv_wh == pytest.approx(350 / 3600)
    assert k.self_consumption == pytest.approx(1 - 50 / 350)
    assert k.self_sufficiency == pytest.approx(1 - 300 / 600)
    assert k.discharge_wh == pytest.approx(600 / 3600)
    assert k.charge_wh == pytest.approx(200 / 3600)
    assert k.throughput_wh == pytest.approx(800 / 3600)
    assert k.equivalent_cycles == pytest.approx((800 / 3600) / (2 * 0.5))
    assert (k.soc_min_pct, k.soc_max_pct) == (48.0, 50.0)


def test_error_is_taken_against_the_target_not_zero() -> None:
    acc = KpiAccumulator(capacity_wh=1.0)
    acc.add_sample(dt_s=2.0, grid_w=150.0, target_w=100.0, load_w=150.0, pv_w=0.0, ess_w=0.0, soc_pct=50.0)
    acc.add_sample(dt_s=1.0, grid_w=40.0, target_w=100.0, load_w=40.0, pv_w=0.0, ess_w=0.0, soc_pct=50.0)
    assert acc.result().grid_error_mean_w == pytest.approx((50 * 2 + 60 * 1) / 3)  # time-weighted


def test_states_limits_and_command_reversals_are_counted_per_cycle() -> None:
    acc = KpiAccumulator(capacity_wh=1.0, reversal_min_w=1.0)
    cycles = [
        (0.0, "STANDBY", ()),
        (100.0, "SELF_CONSUMPTION", ("ramp",)),
        (50.0, "SELF_CONSUMPTION", ()),  # down: reversal 1
        (60.0, "SELF_CONSUMPTION", ("soc_min", "ramp")),  # up: reversal 2
        (60.5, "SELF_CONSUMPTION", ()),  # a move below 1 W is no direction
        (40.0, "FAULT", ()),  # down: reversal 3
    ]
    for cmd, state, limits in cycles:
        acc.add_cycle(cmd_w=cmd, state=state, limits=limits)
    k = acc.result()
    assert k.cycles == 6
    assert k.command_reversals == 3
    assert k.state_share == {"FAULT": pytest.approx(1 / 6), "SELF_CONSUMPTION": pytest.approx(4 / 6), "STANDBY": pytest.approx(1 / 6)}
    assert k.limit_cycles == {"ramp": 2, "soc_min": 1}


def test_avoidable_energy_is_taken_against_the_reference_run() -> None:
    mine = _four_seconds().result()
    ref_acc = KpiAccumulator(capacity_wh=0.5)
    ref_acc.add_sample(dt_s=4.0, grid_w=25.0, target_w=0.0, load_w=150.0, pv_w=0.0, ess_w=125.0, soc_pct=50.0)
    ref = ref_acc.result()
    k = mine.with_reference(ref)
    assert k.avoidable_import_wh == pytest.approx(300 / 3600 - 100 / 3600)
    assert k.avoidable_export_wh == pytest.approx(50 / 3600)
    assert mine.avoidable_import_wh is None  # without a reference


def test_no_pv_and_no_load_give_no_ratio_instead_of_a_division_by_zero() -> None:
    acc = KpiAccumulator(capacity_wh=1.0)
    acc.add_sample(dt_s=1.0, grid_w=0.0, target_w=0.0, load_w=0.0, pv_w=0.0, ess_w=0.0, soc_pct=50.0)
    k = acc.result()
    assert k.self_consumption is None and k.self_sufficiency is None


def test_percentile_nearest_rank() -> None:
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50) == 3.0
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 100) == 5.0
    assert percentile([7.0], 1) == 7.0
    assert math.isnan(percentile([], 50))
