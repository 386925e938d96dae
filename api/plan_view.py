"""Pure builder of `GET /api/v1/plan` (docs/scheduling.md): the snapshot's plan, the planner's state,
the slot followed now and the import cap in force. No I/O, no clock (the caller passes wall now)."""

from __future__ import annotations

import math

from api.models import ImportCapInfo, PlannerInfo, PlanResponse, PlanSlotInfo
from config import EMSConfig
from ems.model import Snapshot, age_s

__all__ = ["plan_response", "planner_info"]


def planner_info(snap: Snapshot, cfg: EMSConfig) -> PlannerInfo:
    ps = snap.planner
    return PlannerInfo(
        enabled=cfg.planner.enabled,
        state=ps.state if ps is not None else "off",
        reason=ps.reason if ps is not None else "planner.enabled is false",
        age_s=None if ps is None else age_s(ps.at_s, now_s=snap.at_s),
        prices_until_ts=None if ps is None else ps.prices_until_unix_s,
        replans=0 if ps is None else ps.replans,
        last_solve_s=None if ps is None else ps.last_solve_s,
    )


def plan_response(snap: Snapshot, cfg: EMSConfig, *, wall_now_ts: float) -> PlanResponse:
    plan = snap.plan
    planner = planner_info(snap, cfg)
    cap = snap.import_cap
    cap_info = None
    if cap is not None and cap.active(snap.at_s):
        remaining = None if math.isinf(cap.expires_at_s) else cap.expires_at_s - snap.at_s
        cap_info = ImportCapInfo(power_w=cap.power_w, remaining_s=remaining, reason=cap.reason, source=cap.source)
    control = snap.control
    followed = control.plan if control is not None else None
    if plan is None:
        return PlanResponse(
            planner=planner, status=None, reason=None, created_ts=None, age_s=None, max_age_s=cfg.planner.max_plan_age_s,
            inputs_digest=None, currency=cfg.tariff.currency, horizon_h=0.0, expected_cost_eur=None, self_consumption_cost_eur=None,
            savings_eur=None, soc_start_pct=None, reserve_soc_pct=None, followed=followed, active_slot=None, import_cap=cap_info, slots=[],
        )  # fmt: skip
    active = next((i for i, s in enumerate(plan.slots) if s.start_unix_s <= wall_now_ts < s.end_unix_s), None)
    slots = [
        PlanSlotInfo(
            start_ts=s.start_unix_s,
            end_ts=s.end_unix_s,
            active=i == active,
            mode=s.mode.value,
            grid_target_w=s.grid_target_w,
            battery_lo_w=s.battery_lo_w,
            battery_hi_w=s.battery_hi_w,
            soc_target_pct=s.soc_target_pct,
            price_import_eur_per_kwh=s.price_import_eur_per_kwh,
            price_export_eur_per_kwh=s.price_export_eur_per_kwh,
            planned_battery_w=s.planned_battery_w,
            planned_grid_w=s.planned_grid_w,
            planned_soc_pct=s.planned_soc_pct,
            load_forecast_w=round(s.load_forecast_w, 1),
            pv_forecast_w=round(s.pv_forecast_w, 1),
            expected_cost_eur=round(s.expected_cost_eur, 5),
        )
        for i, s in enumerate(plan.slots)
    ]
    ok = bool(plan.slots)
    return PlanResponse(
        planner=planner,
        status=plan.status.value,
        reason=plan.reason,
        created_ts=plan.created_at_unix_s,
        age_s=max(0.0, wall_now_ts - plan.created_at_unix_s),
        max_age_s=cfg.planner.max_plan_age_s,
        inputs_digest=plan.inputs_digest or None,
        currency=cfg.tariff.currency,
        horizon_h=round(sum(s.end_unix_s - s.start_unix_s for s in plan.slots) / 3600.0, 2),
        expected_cost_eur=round(plan.expected_cost_eur, 4) if ok else None,
        self_consumption_cost_eur=round(plan.self_consumption_cost_eur, 4) if ok else None,
        savings_eur=round(plan.savings_eur, 4) if ok else None,
        soc_start_pct=plan.soc_start_pct,
        reserve_soc_pct=plan.reserve_soc_pct,
        followed=followed,
        active_slot=active,
        import_cap=cap_info,
        slots=slots,
    )
