"""ems.plan: the slot rule, slot_guidance and the per-cycle SOC rules the loop applies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ems.plan import (
    Plan,
    PlanSlot,
    PlanStatus,
    SlotGuidance,
    SlotMode,
    active_bounds,
    slot_guidance,
    slot_rule,
    steady_battery_w,
)

T0 = datetime(2023, 6, 1, 10, 0, tzinfo=UTC)
T0_S = int(T0.timestamp())
P_W = 5000.0


def _slot(k: int, *, mode: SlotMode = SlotMode.SELF_CONSUMPTION, target_w: float = 0.0, lo_w: float = -P_W, hi_w: float = P_W) -> PlanSlot:
    start = T0_S + 900 * k
    return PlanSlot(
        start_unix_s=start,
        end_unix_s=start + 900,
        mode=mode,
        grid_target_w=target_w,
        battery_lo_w=lo_w,
        battery_hi_w=hi_w,
        charge_from_grid=mode is SlotMode.CHARGE_FROM_GRID,
        hold=hi_w == 0.0,
        soc_target_pct=80.0 if mode is SlotMode.CHARGE_FROM_GRID else None,
        price_import_eur_per_kwh=0.3,
        price_export_eur_per_kwh=0.05,
        planned_battery_w=0.0,
        planned_grid_w=0.0,
        planned_soc_pct=50.0,
        load_forecast_w=500.0,
        pv_forecast_w=0.0,
        expected_cost_eur=0.0,
    )


def _plan(slots: tuple[PlanSlot, ...], *, created: datetime = T0, status: PlanStatus = PlanStatus.OK, reserve_pct: float = 20.0) -> Plan:
    return Plan(
        slots=slots,
        created_at_unix_s=created.timestamp(),
        inputs_digest="abc",
        status=status,
        reason="optimal",
        expected_cost_eur=1.0,
        self_consumption_cost_eur=2.0,
        reserve_soc_pct=reserve_pct,
        soc_start_pct=50.0,
        solver_s=0.01,
    )


PLAN = _plan((_slot(0), _slot(1, mode=SlotMode.CHARGE_FROM_GRID, target_w=3000.0, hi_w=0.0), _slot(2, mode=SlotMode.HOLD, hi_w=0.0)))


def test_guidance_is_the_slot_that_covers_now() -> None:
    g = slot_guidance(PLAN, T0 + timedelta(minutes=20))
    assert g is not None
    assert g.mode is SlotMode.CHARGE_FROM_GRID
    assert (g.grid_target_w, g.battery_lo_w, g.battery_hi_w) == (3000.0, -P_W, 0.0)
    assert g.charge_from_grid and g.soc_target_pct == 80.0
    assert g.slot_start_unix_s == T0_S + 900 and g.reserve_soc_pct == 20.0


def test_slot_boundaries_belong_to_the_later_slot() -> None:
    g = slot_guidance(PLAN, T0 + timedelta(minutes=30))
    assert g is not None and g.mode is SlotMode.HOLD


@pytest.mark.parametrize(
    "now",
    [T0 - timedelta(seconds=1), T0 + timedelta(minutes=45), T0 + timedelta(days=1)],
    ids=["before_first_slot", "at_plan_end", "long_after"],
)
def test_no_guidance_outside_the_plan(now: datetime) -> None:
    assert slot_guidance(PLAN, now) is None


def test_no_plan_or_unusable_plan_gives_no_guidance() -> None:
    assert slot_guidance(None, T0) is None
    assert slot_guidance(_plan(PLAN.slots, status=PlanStatus.FAILED), T0) is None
    assert slot_guidance(_plan((), status=PlanStatus.NO_PRICES), T0) is None


def test_a_stale_plan_is_not_followed() -> None:
    long = tuple(_slot(k) for k in range(48))
    old = _plan(long, created=T0)
    assert slot_guidance(old, T0 + timedelta(hours=2), max_age_s=3 * 3600) is not None
    assert slot_guidance(old, T0 + timedelta(hours=4), max_age_s=3 * 3600) is None


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        slot_guidance(PLAN, datetime(2023, 6, 1, 10, 5))


def _guidance(**kw: object) -> SlotGuidance:
    base: dict[str, object] = {
        "mode": SlotMode.CHARGE_FROM_GRID,
        "grid_target_w": 3000.0,
        "battery_lo_w": -P_W,
        "battery_hi_w": 0.0,
        "charge_from_grid": True,
        "hold": True,
        "soc_target_pct": 80.0,
        "reserve_soc_pct": 20.0,
        "slot_start_unix_s": T0_S,
        "slot_end_unix_s": T0_S + 900,
        "inputs_digest": "abc",
    }
    base.update(kw)
    return SlotGuidance(**base)  # type: ignore[arg-type]


def test_grid_charging_stops_at_the_slot_soc_target() -> None:
    g = _guidance()
    below = active_bounds(g, 79.0)
    assert (below.grid_target_w, below.lo_w, below.hi_w) == (3000.0, -P_W, 0.0)
    reached = active_bounds(g, 80.0)
    assert (reached.grid_target_w, reached.lo_w, reached.hi_w) == (0.0, -P_W, 0.0)
    assert reached.reason.endswith("soc_target_reached")
    # once the target is reached, only PV surplus charges: 1 kW load, 3 kW PV -> 2 kW charge, no import
    assert steady_battery_w(reached, load_w=1000.0, pv_w=3000.0) == -2000.0
    assert steady_battery_w(reached, load_w=1000.0, pv_w=0.0) == 0.0


def test_no_discharge_at_or_below_the_reserve() -> None:
    g = _guidance(
        mode=SlotMode.SELF_CONSUMPTION, grid_target_w=0.0, battery_hi_w=P_W, charge_from_grid=False, hold=False, soc_target_pct=None
    )
    assert active_bounds(g, 21.0).hi_w == P_W
    at = active_bounds(g, 20.0)
    assert at.hi_w == 0.0 and at.reason.endswith("reserve")
    assert active_bounds(g, None).hi_w == P_W  # unknown SOC: the limit chain handles it


def test_charge_from_grid_keeps_the_import_and_moves_the_charge() -> None:
    r = slot_rule(planned_battery_w=-3000.0, load_w=500.0, pv_w=0.0, max_charge_w=P_W, max_discharge_w=P_W)
    assert r.mode is SlotMode.CHARGE_FROM_GRID and r.grid_target_w == 3500.0
    g = _guidance(grid_target_w=r.grid_target_w, battery_lo_w=r.battery_lo_w, battery_hi_w=r.battery_hi_w)
    b = active_bounds(g, 50.0)
    assert steady_battery_w(b, load_w=500.0, pv_w=0.0) == -3000.0  # as planned
    assert steady_battery_w(b, load_w=1500.0, pv_w=0.0) == -2000.0  # more load: charge less, import stays
    assert steady_battery_w(b, load_w=4500.0, pv_w=0.0) == 0.0  # never discharges in a grid-charging slot


def test_hold_blocks_discharge_but_takes_surplus() -> None:
    r = slot_rule(planned_battery_w=0.0, load_w=800.0, pv_w=100.0, max_charge_w=P_W, max_discharge_w=P_W)
    assert r.mode is SlotMode.HOLD and (r.grid_target_w, r.battery_lo_w, r.battery_hi_w) == (0.0, -P_W, 0.0)


def test_partial_discharge_is_a_cap() -> None:
    r = slot_rule(planned_battery_w=400.0, load_w=1000.0, pv_w=0.0, max_charge_w=P_W, max_discharge_w=P_W)
    assert r.mode is SlotMode.SELF_CONSUMPTION and (r.battery_lo_w, r.battery_hi_w) == (-P_W, 400.0)


def test_plain_self_consumption_keeps_full_bounds() -> None:
    short = slot_rule(planned_battery_w=1000.0, load_w=1000.0, pv_w=0.0, max_charge_w=P_W, max_discharge_w=P_W)
    long = slot_rule(planned_battery_w=-2000.0, load_w=0.0, pv_w=2000.0, max_charge_w=P_W, max_discharge_w=P_W)
    for r in (short, long):
        assert r.mode is SlotMode.SELF_CONSUMPTION and (r.grid_target_w, r.battery_lo_w, r.battery_hi_w) == (0.0, -P_W, P_W)


def test_capped_charge_exports_the_rest() -> None:
    r = slot_rule(planned_battery_w=-500.0, load_w=0.0, pv_w=3000.0, max_charge_w=P_W, max_discharge_w=P_W)
    assert (r.grid_target_w, r.battery_lo_w) == (0.0, -500.0)


def test_discharge_to_grid_keeps_the_export() -> None:
    r = slot_rule(planned_battery_w=4000.0, load_w=1000.0, pv_w=0.0, max_charge_w=P_W, max_discharge_w=P_W)
    assert r.mode is SlotMode.DISCHARGE_TO_GRID and (r.grid_target_w, r.battery_lo_w, r.battery_hi_w) == (-3000.0, 0.0, P_W)


def test_limit_export_targets_the_cap() -> None:
    r = slot_rule(planned_battery_w=-3000.0, load_w=0.0, pv_w=5000.0, max_charge_w=P_W, max_discharge_w=P_W, export_cap_w=2000.0)
    assert r.mode is SlotMode.LIMIT_EXPORT and (r.grid_target_w, r.battery_lo_w, r.battery_hi_w) == (-2000.0, -P_W, 0.0)
    b = active_bounds(_guidance(mode=r.mode, grid_target_w=-2000.0, battery_hi_w=0.0, charge_from_grid=False, soc_target_pct=None), 50.0)
    assert steady_battery_w(b, load_w=0.0, pv_w=6000.0) == -4000.0  # more PV than forecast: the battery takes it
    assert steady_battery_w(b, load_w=0.0, pv_w=1000.0) == 0.0  # less: no discharge to reach the cap


@given(
    b_w=st.floats(-P_W, P_W),
    load_w=st.floats(0, 8000),
    pv_w=st.floats(0, 8000),
    cap_w=st.one_of(st.none(), st.floats(0, 6000)),
)
def test_the_rule_reproduces_the_plan_under_the_forecast(b_w: float, load_w: float, pv_w: float, cap_w: float | None) -> None:
    """Whatever the plan, the loop settles at the planned battery power when load and PV match the forecast."""
    grid_w = load_w - pv_w - b_w
    if cap_w is not None and grid_w < -cap_w:
        cap_w = None  # a plan never exports above its cap
    r = slot_rule(planned_battery_w=b_w, load_w=load_w, pv_w=pv_w, max_charge_w=P_W, max_discharge_w=P_W, export_cap_w=cap_w)
    g = _guidance(
        mode=r.mode,
        grid_target_w=r.grid_target_w,
        battery_lo_w=r.battery_lo_w,
        battery_hi_w=r.battery_hi_w,
        charge_from_grid=r.mode is SlotMode.CHARGE_FROM_GRID,
        soc_target_pct=None,
        reserve_soc_pct=0.0,
    )
    assert -P_W <= r.battery_lo_w <= 0.0 <= r.battery_hi_w <= P_W
    assert abs(steady_battery_w(active_bounds(g, 50.0), load_w=load_w, pv_w=pv_w) - b_w) <= 50.0 + 1e-6


def _hold(
    planned_soc_pct: float, *, mode: SlotMode = SlotMode.HOLD, lo_w: float = -5000.0, hi_w: float = 0.0, target_w: float = 0.0
) -> SlotGuidance:
    return SlotGuidance(
        mode, target_w, lo_w, hi_w, False, mode is SlotMode.HOLD, None, 0.0, 0, 900, "d",
        planned_soc_pct=planned_soc_pct, max_charge_w=5000.0, max_discharge_w=5000.0,
    )  # fmt: skip


def test_a_hold_with_energy_beyond_the_plan_opens_to_self_consumption_continuously() -> None:
    g = _hold(50.0)
    assert active_bounds(g, 50.9).hi_w == 0.0 and active_bounds(g, 50.9).reason == "plan:hold"  # within the band: hold
    half = active_bounds(g, 51.5)
    assert (half.hi_w, half.reason) == (2500.0, "plan:hold:above_plan")  # opening over the second band
    assert active_bounds(g, 53.0).hi_w == 5000.0
    assert active_bounds(g, 53.0, follow_soc=False).hi_w == 0.0  # the plain slot rule


def test_a_capped_charge_below_the_plan_takes_the_whole_surplus_and_export_stops_at_the_planned_soc() -> None:
    capped = _hold(60.0, mode=SlotMode.SELF_CONSUMPTION, lo_w=-1000.0, hi_w=5000.0)
    assert active_bounds(capped, 57.0).lo_w == -5000.0 and active_bounds(capped, 59.5).lo_w == -1000.0
    export = _hold(40.0, mode=SlotMode.DISCHARGE_TO_GRID, lo_w=0.0, hi_w=5000.0, target_w=-2000.0)
    assert active_bounds(export, 45.0).grid_target_w == -2000.0
    stop = active_bounds(export, 40.0)
    assert (stop.grid_target_w, stop.reason) == (0.0, "plan:discharge_to_grid:soc_target_reached")  # down to the plan, no further
