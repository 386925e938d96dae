"""ems.planner: the LP on small problems whose optimum is known by hand."""

from __future__ import annotations

from typing import Any

import pytest

from config.planner import PlannerConfig
from ems.plan import PlanStatus, SlotMode
from ems.planner import PlanInputs, inputs_digest, make_plan, self_consumption_cost_eur

T0_S = 1_685_613_600  # 2023-06-01 10:00 UTC
DT_H = 0.25
ROUND_TRIP = 0.95 * 0.95


def cfg(**over: Any) -> PlannerConfig:
    doc: dict[str, Any] = {
        "end_value": "zero",
        "battery": {
            "capacity_wh": 10000,
            "max_charge_w": 5000,
            "max_discharge_w": 5000,
            "charge_efficiency_pct": 95,
            "discharge_efficiency_pct": 95,
            "soc_min_pct": 0,
            "soc_max_pct": 100,
        },
    }
    for key, value in over.items():
        section, _, field = key.partition("__")
        if field:
            doc.setdefault(section, {})[field] = value
        else:
            doc[section] = value
    return PlannerConfig.model_validate(doc)


def inputs(load_w: list[float], prices: list[float], *, pv_w: list[float] | None = None, soc_pct: float = 0.0, **kw: Any) -> PlanInputs:
    n = len(load_w)
    return PlanInputs(
        start_unix_s=T0_S,
        slot_s=900,
        load_w=tuple(load_w),
        pv_w=tuple(pv_w or [0.0] * n),
        import_eur_per_kwh=tuple(prices),
        export_eur_per_kwh=tuple(kw.pop("export", [0.0] * n)),
        soc_pct=soc_pct,
        **kw,
    )


def test_charges_when_cheap_and_discharges_when_expensive() -> None:
    plan = make_plan(inputs([2000.0] * 4, [0.10, 0.10, 0.50, 0.50]), cfg(), created_at_unix_s=T0_S)
    assert plan.status is PlanStatus.OK
    b = [s.planned_battery_w for s in plan.slots]
    # 1 kWh needed later costs 1 / 0.9025 kWh charged in the cheap half hour
    assert sum(b[:2]) * DT_H == pytest.approx(-1000.0 / ROUND_TRIP, abs=1)
    assert b[2:] == pytest.approx([2000.0, 2000.0], abs=1)  # the expensive load comes from the battery
    assert any(s.mode is SlotMode.CHARGE_FROM_GRID for s in plan.slots[:2])
    assert [s.mode for s in plan.slots[2:]] == [SlotMode.SELF_CONSUMPTION] * 2
    # by hand: (1 kWh load + 1.108 kWh for later) at 0.10, nothing at 0.50
    assert plan.expected_cost_eur == pytest.approx(0.10 * (1 + 1 / ROUND_TRIP), abs=1e-6)
    assert plan.self_consumption_cost_eur == pytest.approx(0.60, abs=1e-6)
    assert plan.savings_eur == pytest.approx(0.60 - 0.10 * (1 + 1 / ROUND_TRIP), abs=1e-6)
    assert plan.slots[-1].planned_soc_pct == pytest.approx(0.0, abs=1e-6)


def test_losses_make_a_small_spread_not_worth_cycling() -> None:
    plan = make_plan(inputs([2000.0] * 4, [0.40, 0.40, 0.44, 0.44]), cfg(), created_at_unix_s=T0_S)
    assert all(abs(s.planned_battery_w) < 1 for s in plan.slots)  # 0.40 / 0.9025 > 0.44


def test_cycle_cost_counts_against_the_spread() -> None:
    costly = cfg(battery__cycle_cost_eur_per_kwh=0.25)  # 2 x 0.25 per kWh moved > 0.40 spread
    plan = make_plan(inputs([2000.0] * 4, [0.10, 0.10, 0.50, 0.50]), costly, created_at_unix_s=T0_S)
    assert all(abs(s.planned_battery_w) < 1 for s in plan.slots)


def test_soc_window_is_respected() -> None:
    c = cfg(battery__soc_min_pct=20, battery__soc_max_pct=50)
    plan = make_plan(inputs([4000.0] * 12, [0.1] * 4 + [0.5] * 8, soc_pct=20.0), c, created_at_unix_s=T0_S)
    socs = [s.planned_soc_pct for s in plan.slots]
    assert max(socs) == pytest.approx(50.0, abs=1e-6)  # would like 8 kWh, may store 3 kWh
    assert min(socs) >= 20.0 - 1e-6


def test_backup_reserve_is_kept() -> None:
    c = cfg(battery__reserve_soc_pct=30)
    plan = make_plan(inputs([4000.0] * 8, [0.5] * 8, soc_pct=50.0), c, created_at_unix_s=T0_S)
    assert min(s.planned_soc_pct for s in plan.slots) == pytest.approx(30.0, abs=1e-6)
    # 2 kWh stored above the reserve deliver 1.9 kWh
    assert sum(s.planned_battery_w for s in plan.slots) * DT_H == pytest.approx(2000.0 * 0.95, abs=1)
    assert plan.reserve_soc_pct == 30.0


def test_a_start_below_the_reserve_recovers_instead_of_failing() -> None:
    c = cfg(battery__reserve_soc_pct=30)
    plan = make_plan(inputs([500.0] * 8, [0.3] * 8, soc_pct=10.0), c, created_at_unix_s=T0_S)
    assert plan.status is PlanStatus.OK
    assert plan.slots[0].mode is SlotMode.CHARGE_FROM_GRID
    assert plan.slots[-1].planned_soc_pct >= 30.0 - 1e-6


def test_feed_in_cap_is_respected_by_charging() -> None:
    c = cfg(grid__export_max_w=2000)
    plan = make_plan(
        inputs([0.0] * 4, [0.3] * 4, pv_w=[6000.0] * 4, export=[0.08] * 4, soc_pct=0.0), c.model_copy(update={}), created_at_unix_s=T0_S
    )
    for s in plan.slots:
        assert s.planned_grid_w >= -2000.0 - 1e-3
        assert s.planned_battery_w == pytest.approx(-4000.0, abs=1)
        assert s.mode is SlotMode.LIMIT_EXPORT and s.grid_target_w == -2000.0


def test_feed_in_cap_as_a_share_of_the_pv_peak() -> None:
    c = cfg(grid__export_max_pct_of_pv_peak=60, grid__pv_peak_w=5000)
    plan = make_plan(inputs([0.0] * 2, [0.3] * 2, pv_w=[5000.0] * 2, export=[0.08] * 2), c, created_at_unix_s=T0_S)
    assert all(s.planned_grid_w >= -3000.0 - 1e-3 for s in plan.slots)


def test_no_grid_charging_when_disallowed() -> None:
    c = cfg(grid__allow_grid_charging=False)
    plan = make_plan(inputs([2000.0] * 4, [0.10, 0.10, 0.50, 0.50], soc_pct=0.0), c, created_at_unix_s=T0_S)
    assert all(s.planned_battery_w >= -1e-6 for s in plan.slots)
    assert not any(s.charge_from_grid for s in plan.slots)
    surplus = make_plan(
        inputs([0.0, 0.0, 2000.0, 2000.0], [0.1, 0.1, 0.5, 0.5], pv_w=[1000.0, 1000.0, 0.0, 0.0]), c, created_at_unix_s=T0_S
    )
    assert [s.planned_battery_w for s in surplus.slots[:2]] == pytest.approx([-1000.0, -1000.0], abs=1)  # surplus only


def test_no_battery_export_when_disallowed() -> None:
    prices = [0.3] * 4
    export = [0.05, 0.05, 0.9, 0.9]
    free = make_plan(inputs([500.0] * 4, prices, export=export, soc_pct=50.0), cfg(), created_at_unix_s=T0_S)
    assert any(s.mode is SlotMode.DISCHARGE_TO_GRID for s in free.slots)
    c = cfg(grid__allow_battery_export=False)
    kept = make_plan(inputs([500.0] * 4, prices, export=export, soc_pct=50.0), c, created_at_unix_s=T0_S)
    assert all(s.planned_grid_w >= -1e-3 for s in kept.slots)
    assert all(s.planned_grid_w >= -5000.0 - 1e-3 for s in free.slots)  # export pays more than import: still bounded


def test_external_import_cap_limits_grid_charging() -> None:
    caps: tuple[float | None, ...] = (1500.0, 1500.0, None, None)
    plan = make_plan(inputs([500.0, 500.0, 4000.0, 4000.0], [0.1, 0.1, 0.5, 0.5], import_cap_w=caps), cfg(), created_at_unix_s=T0_S)
    assert [s.planned_grid_w for s in plan.slots[:2]] == pytest.approx([1500.0, 1500.0], abs=1)


def test_peak_charge_shaves_the_import_peak() -> None:
    load = [500.0, 500.0, 6000.0, 500.0]
    flat = make_plan(inputs(load, [0.3] * 4, soc_pct=0.0), cfg(), created_at_unix_s=T0_S)
    assert max(s.planned_grid_w for s in flat.slots) == pytest.approx(6000.0, abs=1)
    shaved = make_plan(inputs(load, [0.3] * 4, soc_pct=0.0), cfg(grid__peak_charge_eur_per_kw=10.0), created_at_unix_s=T0_S)
    # by hand: the battery gives 6000 - P in the peak slot, charged at P - 500 in the two slots before:
    # (6000 - P) / 0.9025 = 2 (P - 500)  ->  P = 6902.5 / 2.805
    assert max(s.planned_grid_w for s in shaved.slots) == pytest.approx(6902.5 / 2.805, abs=1)


def test_end_value_keeps_energy_for_after_the_horizon() -> None:
    # load only in the cheap slots; the median import price (0.2) says stored energy is worth more later
    load, prices = [1000.0, 1000.0, 0.0, 0.0], [0.1, 0.1, 0.3, 0.3]
    zero = make_plan(inputs(load, prices, soc_pct=50.0), cfg(), created_at_unix_s=T0_S)
    assert zero.slots[-1].planned_soc_pct < 50.0 - 4.0  # worth nothing at the end: used now
    kept = make_plan(inputs(load, prices, soc_pct=50.0), cfg(end_value="median_import"), created_at_unix_s=T0_S)
    assert kept.slots[-1].planned_soc_pct >= 50.0 - 1e-3


def test_negative_prices_and_surplus_solve() -> None:
    plan = make_plan(
        inputs([300.0] * 4, [-0.05, -0.05, 0.3, 0.3], pv_w=[3000.0, 3000.0, 0.0, 0.0], export=[-0.12, -0.12, 0.05, 0.05]),
        cfg(),
        created_at_unix_s=T0_S,
    )
    assert plan.status is PlanStatus.OK
    assert plan.slots[0].planned_battery_w < -2500.0  # soak up the surplus rather than pay to export it


def test_empty_horizon_is_a_state_not_an_error() -> None:
    plan = make_plan(inputs([], []), cfg(), created_at_unix_s=T0_S)
    assert plan.status is PlanStatus.NO_PRICES and plan.slots == ()


def test_digest_changes_with_inputs_and_config() -> None:
    a = inputs([1000.0] * 4, [0.1] * 4)
    assert inputs_digest(a, cfg()) == inputs_digest(inputs([1000.0] * 4, [0.1] * 4), cfg())
    assert inputs_digest(a, cfg()) != inputs_digest(inputs([1000.0] * 4, [0.1] * 4, soc_pct=5.0), cfg())
    assert inputs_digest(a, cfg()) != inputs_digest(a, cfg(battery__reserve_soc_pct=10))


def test_mismatched_series_are_refused() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        PlanInputs(T0_S, 900, (1.0,), (1.0, 2.0), (0.1,), (0.0,), 50.0)


def test_self_consumption_cost_on_the_forecast() -> None:
    # 1 kWh stored (10 %) delivers 0.95 kWh; 2 kW for 4 quarters = 2 kWh: 1.05 kWh imported at 0.3
    c = cfg()
    assert self_consumption_cost_eur(inputs([2000.0] * 4, [0.3] * 4, soc_pct=10.0), c) == pytest.approx(1.05 * 0.3)
