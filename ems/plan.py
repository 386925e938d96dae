"""The plan the planner publishes and what the 1 Hz loop takes from it (DESIGN.md §1: the planner advises, the loop decides).

A `Plan` is a tuple of 15-minute `PlanSlot`s. Each slot says what SELF_CONSUMPTION does during it:
a grid target for the law and the battery range it may use (DESIGN §2 signs: battery + discharge,
- charge; grid + import). The loop keeps regulating at 1 Hz, so a deviation of load or PV from the
forecast is absorbed by the slot's rule instead of being ignored:

| mode | grid target | battery range | a deviation from the forecast goes to |
|---|---|---|---|
| self_consumption | 0 | full (or capped at the planned power) | the battery, inside the range |
| hold | 0 | no discharge; PV surplus may still charge | the grid when short, the battery when long |
| charge_from_grid | the planned import | charge only | the charge power (the import stays as planned) |
| discharge_to_grid | the planned export | discharge only | the discharge power (the export stays as planned) |
| limit_export | minus the feed-in cap | charge only | the battery charges what the cap does not let out |

`slot_guidance(plan, now_utc)` picks the slot for now (None: no plan, stale, or not usable: plain
self-consumption). `active_bounds(guidance, soc_pct)` applies the SOC rules the loop checks each
cycle (stop grid charging at the slot's SOC target; the SOC band: a hold or capped discharge with
energy beyond the plan's end-of-slot SOC is self-consumption, a capped charge below it takes the
whole surplus, exporting from the battery stops at it; no discharge at or below the backup
reserve), and `steady_battery_w(bounds, ...)` is what the law settles at for a constant net load
(the year simulation uses it). Everything here is pure (STYLE S2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

__all__ = [
    "DEFAULT_MAX_AGE_S",
    "SLOT_S",
    "Plan",
    "PlanBounds",
    "PlanSlot",
    "PlanStatus",
    "PlannerStatus",
    "SlotGuidance",
    "SlotMode",
    "SlotRule",
    "active_bounds",
    "slot_guidance",
    "slot_rule",
    "steady_battery_w",
]

SLOT_S = 900
DEFAULT_MAX_AGE_S = 3 * 3600.0  # a plan not refreshed for this long is not followed


class SlotMode(StrEnum):
    SELF_CONSUMPTION = "self_consumption"
    HOLD = "hold"
    CHARGE_FROM_GRID = "charge_from_grid"
    DISCHARGE_TO_GRID = "discharge_to_grid"
    LIMIT_EXPORT = "limit_export"


class PlanStatus(StrEnum):
    OK = "ok"  # optimal plan, follow it
    NO_PRICES = "no_prices"  # nothing to optimise against: the loop stays in plain self-consumption
    FAILED = "failed"  # the solver gave no usable answer (reason says why)


@dataclass(frozen=True, slots=True)
class PlanSlot:
    """One slot of the plan. Powers are means over the slot; SOC at the slot's end."""

    start_unix_s: int
    end_unix_s: int
    mode: SlotMode
    grid_target_w: float  # the law's target in this slot (+ import)
    battery_lo_w: float  # most charge allowed (<= 0)
    battery_hi_w: float  # most discharge allowed (>= 0)
    charge_from_grid: bool
    hold: bool  # no discharge in this slot
    soc_target_pct: float | None  # charge_from_grid: stop importing for the battery at this SOC
    price_import_eur_per_kwh: float
    price_export_eur_per_kwh: float
    planned_battery_w: float  # + discharge
    planned_grid_w: float  # + import
    planned_soc_pct: float  # at the end of the slot
    load_forecast_w: float
    pv_forecast_w: float
    expected_cost_eur: float  # energy cost of the planned grid exchange in this slot


@dataclass(frozen=True, slots=True)
class Plan:
    slots: tuple[PlanSlot, ...]
    created_at_unix_s: float
    inputs_digest: str  # hash of everything the plan was computed from (prices, forecasts, SOC, config)
    status: PlanStatus
    reason: str  # solver status or why there is no plan, for logs and the API
    expected_cost_eur: float  # energy cost over the horizon (+ cycle and peak costs, less the end-SOC value)
    self_consumption_cost_eur: float  # energy cost of plain self-consumption on the same forecast
    reserve_soc_pct: float  # backup reserve the plan keeps (the loop does not discharge at or below it)
    soc_start_pct: float
    solver_s: float  # solver run time reported by HiGHS (model building not included)
    currency: str = "EUR"
    max_charge_w: float = math.inf  # the planner's battery limits: a slot range narrower than these is a cap
    max_discharge_w: float = math.inf

    @property
    def savings_eur(self) -> float:
        """Expected saving over plain self-consumption on the same forecast."""
        return self.self_consumption_cost_eur - self.expected_cost_eur

    @property
    def end_unix_s(self) -> int:
        return self.slots[-1].end_unix_s if self.slots else int(self.created_at_unix_s)


@dataclass(frozen=True, slots=True)
class PlannerStatus:
    state: str  # off | starting | ok | no_prices | stale | failed
    reason: str  # why, in a few words (shown and logged)
    at_s: float | None  # monotonic time of this status
    prices_until_unix_s: float | None = None  # the last slot with a known price ends here
    replans: int = 0
    last_solve_s: float | None = None


@dataclass(frozen=True, slots=True)
class SlotGuidance:
    """What the loop does now: the active slot's rule plus what the plan keeps throughout."""

    mode: SlotMode
    grid_target_w: float
    battery_lo_w: float
    battery_hi_w: float
    charge_from_grid: bool
    hold: bool
    soc_target_pct: float | None
    reserve_soc_pct: float
    slot_start_unix_s: int
    slot_end_unix_s: int
    inputs_digest: str
    planned_soc_pct: float | None = None  # the plan's SOC at the slot's end (the SOC band rules follow it)
    max_charge_w: float = math.inf  # the plan's battery limits (a range narrower than these is a cap)
    max_discharge_w: float = math.inf


@dataclass(frozen=True, slots=True)
class PlanBounds:
    """The guidance after the SOC rules: the law's target and the battery interval (STYLE S4 style)."""

    grid_target_w: float
    lo_w: float
    hi_w: float
    reason: str  # "plan:<mode>" or "plan:<mode>:soc_target_reached" / ":reserve"


@dataclass(frozen=True, slots=True)
class SlotRule:
    mode: SlotMode
    grid_target_w: float
    battery_lo_w: float
    battery_hi_w: float


def slot_rule(
    *,
    planned_battery_w: float,
    load_w: float,
    pv_w: float,
    max_charge_w: float,
    max_discharge_w: float,
    export_cap_w: float | None = None,
    tolerance_w: float = 50.0,
) -> SlotRule:
    """Turn a planned battery power (on the forecast) into a rule that absorbs deviations sensibly.

    Under the forecast, the rule reproduces the plan: grid = load - pv - battery. Off the forecast,
    a grid-charging or grid-exporting slot keeps its grid exchange and lets the battery power move;
    a self-consumption slot keeps the grid at 0 and lets the battery follow inside the planned range.
    """
    net_w = load_w - pv_w
    b_w = planned_battery_w
    g_w = net_w - b_w
    tol = tolerance_w
    if b_w < -tol and g_w > tol:
        return SlotRule(SlotMode.CHARGE_FROM_GRID, g_w, -max_charge_w, 0.0)
    if b_w > tol and g_w < -tol:
        return SlotRule(SlotMode.DISCHARGE_TO_GRID, g_w, 0.0, max_discharge_w)
    if export_cap_w is not None and b_w < -tol and g_w <= -export_cap_w + tol:
        return SlotRule(SlotMode.LIMIT_EXPORT, -export_cap_w, -max_charge_w, 0.0)
    if net_w > 0:  # short: the battery covers the load fully, partly (capped) or not at all (hold)
        lo_w = -max_charge_w
        hi_w = max_discharge_w if b_w >= net_w - tol else max(0.0, b_w) if b_w > tol else 0.0
    else:  # long: the battery takes the surplus fully or up to the planned charge
        hi_w = max_discharge_w
        lo_w = -max_charge_w if -b_w >= -net_w - tol else min(0.0, b_w) if b_w < -tol else 0.0
    mode = SlotMode.HOLD if hi_w == 0.0 else SlotMode.SELF_CONSUMPTION
    return SlotRule(mode, 0.0, lo_w, hi_w)


def slot_guidance(plan: Plan | None, now_utc: datetime, *, max_age_s: float = DEFAULT_MAX_AGE_S) -> SlotGuidance | None:
    """The active slot's guidance, or None (no plan, not usable, older than `max_age_s`, or no slot covers now)."""
    if plan is None or plan.status is not PlanStatus.OK or not plan.slots:
        return None
    if now_utc.tzinfo is None:
        raise ValueError("now_utc must be timezone-aware (UTC)")
    now_s = now_utc.timestamp()
    if now_s - plan.created_at_unix_s > max_age_s or now_s < plan.slots[0].start_unix_s or now_s >= plan.end_unix_s:
        return None
    slot_s = plan.slots[0].end_unix_s - plan.slots[0].start_unix_s
    i = int((now_s - plan.slots[0].start_unix_s) // slot_s) if slot_s > 0 else 0
    i = min(max(i, 0), len(plan.slots) - 1)
    # slots are contiguous and equal in length; walk if a caller built them otherwise
    while i > 0 and plan.slots[i].start_unix_s > now_s:
        i -= 1
    while i < len(plan.slots) - 1 and plan.slots[i].end_unix_s <= now_s:
        i += 1
    s = plan.slots[i]
    if not s.start_unix_s <= now_s < s.end_unix_s:
        return None
    return SlotGuidance(
        mode=s.mode,
        grid_target_w=s.grid_target_w,
        battery_lo_w=s.battery_lo_w,
        battery_hi_w=s.battery_hi_w,
        charge_from_grid=s.charge_from_grid,
        hold=s.hold,
        soc_target_pct=s.soc_target_pct,
        reserve_soc_pct=plan.reserve_soc_pct,
        slot_start_unix_s=s.start_unix_s,
        slot_end_unix_s=s.end_unix_s,
        inputs_digest=plan.inputs_digest,
        planned_soc_pct=s.planned_soc_pct,
        max_charge_w=plan.max_charge_w,
        max_discharge_w=plan.max_discharge_w,
    )


SOC_BAND_PCT = 1.0  # the SOC band rules act this far from the planned SOC


def active_bounds(g: SlotGuidance, soc_pct: float | None, *, follow_soc: bool = True) -> PlanBounds:
    """The guidance after the per-cycle SOC rules.

    - charge_from_grid and SOC at or above the slot's target: stop importing for the battery
      (target back to 0, no discharge; PV surplus may still charge).
    - `follow_soc` (the default): the SOC band rules of `_soc_band`, which follow the planned SOC
      where the forecast was off (a hold with energy beyond the plan is self-consumption, ...).
    - SOC at or below the backup reserve: no discharge (the reserve is for outages).
    An unknown SOC changes nothing here: the limit chain refuses to move the battery anyway.
    """
    target_w, lo_w, hi_w = g.grid_target_w, g.battery_lo_w, g.battery_hi_w
    reason = f"plan:{g.mode.value}"
    if soc_pct is not None and math.isfinite(soc_pct):
        if g.charge_from_grid and g.soc_target_pct is not None and soc_pct >= g.soc_target_pct:
            target_w, hi_w = 0.0, 0.0
            reason += ":soc_target_reached"
        if follow_soc and g.planned_soc_pct is not None:
            target_w, lo_w, hi_w, reason = _soc_band(g, soc_pct, target_w, lo_w, hi_w, reason)
        if soc_pct <= g.reserve_soc_pct and hi_w > 0.0:
            hi_w = 0.0
            reason += ":reserve"
    return PlanBounds(grid_target_w=target_w, lo_w=min(lo_w, 0.0), hi_w=max(hi_w, 0.0), reason=reason)


def _soc_band(g: SlotGuidance, soc_pct: float, target_w: float, lo_w: float, hi_w: float, reason: str) -> tuple[float, float, float, str]:
    """Follow the planned SOC rather than the planned power where the forecast was off:
    - a hold or a capped discharge while the SOC is above the plan's end-of-slot SOC: self-consumption
      (the energy beyond the plan is not needed later);
    - a capped charge (part of the surplus exported) while the SOC is below the plan: take the whole surplus;
    - discharging into the grid stops at the planned SOC (as grid charging stops at its target)."""
    planned = g.planned_soc_pct
    assert planned is not None
    if g.mode is SlotMode.DISCHARGE_TO_GRID:
        if soc_pct <= planned:
            return 0.0, lo_w, hi_w, reason + ":soc_target_reached"
        return target_w, lo_w, hi_w, reason
    if g.charge_from_grid or g.mode is SlotMode.LIMIT_EXPORT:
        return target_w, lo_w, hi_w, reason
    # the cap opens over one band beyond the first (continuous in SOC: no toggling at the edge)
    if soc_pct > planned + SOC_BAND_PCT and hi_w < g.max_discharge_w:
        share = min(1.0, (soc_pct - planned - SOC_BAND_PCT) / SOC_BAND_PCT)
        full = g.max_discharge_w if math.isfinite(g.max_discharge_w) else 1e6
        return target_w, lo_w, hi_w + share * (full - hi_w), reason + ":above_plan"
    if soc_pct < planned - SOC_BAND_PCT and lo_w > -g.max_charge_w and not g.hold:
        share = min(1.0, (planned - SOC_BAND_PCT - soc_pct) / SOC_BAND_PCT)
        full = g.max_charge_w if math.isfinite(g.max_charge_w) else 1e6
        return target_w, lo_w - share * (full + lo_w), hi_w, reason + ":below_plan"
    return target_w, lo_w, hi_w, reason


def steady_battery_w(b: PlanBounds, *, load_w: float, pv_w: float) -> float:
    """Battery power the law settles at for a constant load and PV: grid = target inside the range."""
    return min(max(load_w - pv_w - b.grid_target_w, b.lo_w), b.hi_w)
