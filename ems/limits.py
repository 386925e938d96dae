"""Limits as constraints (DESIGN.md §4, STYLE S4): each limit says which set-points it allows.

Every limit is a small pure function `(LimitInputs, its own config) -> Allowed`. `apply_limits`
intersects them once and clamps the law's raw command into the result (OpenEMS's power layer is
the model: controllers add constraints, one place solves them).

Two kinds of constraint:
- a *protection* (inverter rating, BMS current, SOC window, grid limits, ramp) always allows 0 W,
  so the intersection of all protections is never empty and always holds the safe value;
- a *request* (the BMS force-charge) may exclude 0 W. It moves the target first and then yields
  to every protection: a forced charge is honoured as far as the rating, the BMS charge limit,
  the grid import cap and the ramp allow.

A limit is named in the result when the target lies outside the interval it allows (it would
have bound on its own), in chain order.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "LIMITS",
    "Allowed",
    "BmsCurrent",
    "ForceCharge",
    "GridLimits",
    "LimitInputs",
    "LimitsConfig",
    "PlanRange",
    "Ramp",
    "Rating",
    "SocWindow",
    "apply_limits",
    "bms_current",
    "bms_force_charge",
    "constraints",
    "grid_limits",
    "inverter_rating",
    "plan_range",
    "ramp",
    "soc_latches",
    "soc_window",
]

INF = math.inf


@dataclass(frozen=True, slots=True)
class Allowed:
    """The set-points one limit allows: lo_w (most charge, <= 0) .. hi_w (most discharge, >= 0)."""

    lo_w: float = -INF
    hi_w: float = INF
    lo_reason: str | None = None  # named when the target is below lo_w
    hi_reason: str | None = None  # named when the target is above hi_w
    request: bool = False  # may exclude 0 W; yields to every protection


FREE = Allowed()


@dataclass(frozen=True, slots=True)
class LimitInputs:
    """Fresh, finite values only (None = unknown). Built by ems.core from Inputs."""

    soc_pct: float | None
    bms_voltage_v: float | None = None
    bms_ccl_a: float | None = None
    bms_dcl_a: float | None = None
    bms_charge_enable: bool | None = None
    bms_discharge_enable: bool | None = None
    bms_force_charge: bool = False
    grid_w: float | None = None
    ess_w: float | None = None
    prev_cmd_w: float = 0.0
    discharge_blocked: bool = False  # SOC window latch (with hysteresis)
    charge_blocked: bool = False
    plan_lo_w: float = -math.inf  # the active plan slot's battery range (ems/plan.py PlanBounds)
    plan_hi_w: float = math.inf
    plan_reason: str | None = None  # e.g. "plan:hold", "plan:charge_from_grid:soc_target_reached"
    import_cap_w: float | None = None  # an external import limit in force (dimming), beside the configured one


# ---- each limit's own config ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Rating:
    max_charge_w: float = 5000.0
    max_discharge_w: float = 5000.0


@dataclass(frozen=True, slots=True)
class BmsCurrent:
    enabled: bool = True  # apply CCL/DCL x voltage and the enable flags when the BMS reports them


@dataclass(frozen=True, slots=True)
class SocWindow:
    soc_min_pct: float = 10.0
    soc_max_pct: float = 95.0
    hysteresis_pct: float = 2.0


@dataclass(frozen=True, slots=True)
class ForceCharge:
    power_w: float = 1000.0


@dataclass(frozen=True, slots=True)
class GridLimits:
    max_import_w: float | None = None
    max_export_w: float | None = None


@dataclass(frozen=True, slots=True)
class Ramp:
    w_per_s: float | None = None
    period_s: float = 1.0


@dataclass(frozen=True, slots=True)
class PlanRange:
    enabled: bool = True  # follow the planner's battery range when a plan is active


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    plan: PlanRange = field(default_factory=PlanRange)
    rating: Rating = field(default_factory=Rating)
    bms: BmsCurrent = field(default_factory=BmsCurrent)
    soc: SocWindow = field(default_factory=SocWindow)
    force_charge: ForceCharge = field(default_factory=ForceCharge)
    grid: GridLimits = field(default_factory=GridLimits)
    ramp: Ramp = field(default_factory=Ramp)


# ---- the limits, DESIGN §4 order (the plan's range first: the planner advises, the limits decide) ----
def plan_range(i: LimitInputs, c: PlanRange) -> Allowed:
    """The active plan slot's battery range (hold: no discharge; grid charging: charge only ...)."""
    if not c.enabled or i.plan_reason is None:
        return FREE
    return Allowed(min(i.plan_lo_w, 0.0), max(i.plan_hi_w, 0.0), i.plan_reason, i.plan_reason)


def inverter_rating(i: LimitInputs, c: Rating) -> Allowed:
    return Allowed(-c.max_charge_w, c.max_discharge_w, "inverter_rating", "inverter_rating")


def _bms_bound_w(limit_a: float | None, enable: bool | None, i: LimitInputs) -> float:
    if enable is False:
        return 0.0
    if limit_a is None or i.bms_voltage_v is None:
        return INF  # no BMS on this site (or not yet): staleness is the state machine's job
    return max(0.0, limit_a) * max(0.0, i.bms_voltage_v)


def bms_current(i: LimitInputs, c: BmsCurrent) -> Allowed:
    if not c.enabled:
        return FREE
    return Allowed(
        -_bms_bound_w(i.bms_ccl_a, i.bms_charge_enable, i),
        _bms_bound_w(i.bms_dcl_a, i.bms_discharge_enable, i),
        "bms_charge_disabled" if i.bms_charge_enable is False else "bms_ccl",
        "bms_discharge_disabled" if i.bms_discharge_enable is False else "bms_dcl",
    )


def soc_window(i: LimitInputs, c: SocWindow) -> Allowed:
    """No discharge while the low latch holds, no charge while the high latch holds (soc_latches)."""
    if i.soc_pct is None:
        return Allowed(0.0, 0.0, "soc_unknown", "soc_unknown")
    return Allowed(0.0 if i.charge_blocked else -INF, 0.0 if i.discharge_blocked else INF, "soc_max", "soc_min")


def bms_force_charge(i: LimitInputs, c: ForceCharge) -> Allowed:
    """The BMS asks for a charge: at least `power_w` of charge (a request, bounded by the protections)."""
    if not i.bms_force_charge or i.charge_blocked or i.soc_pct is None:
        return FREE
    return Allowed(hi_w=-c.power_w, hi_reason="bms_force_charge", request=True)


def grid_limits(i: LimitInputs, c: GridLimits) -> Allowed:
    """The battery never makes import exceed max_import_w (nor export max_export_w); never forces the other way."""
    if i.grid_w is None or i.ess_w is None:
        return FREE
    uncontrolled_w = i.grid_w + i.ess_w  # grid power with the battery at 0 W (load - pv)
    caps = [cap for cap in (c.max_import_w, i.import_cap_w) if cap is not None]
    max_import_w = min(caps) if caps else None
    lo_w = -INF if max_import_w is None else min(0.0, uncontrolled_w - max_import_w)
    hi_w = INF if c.max_export_w is None else max(0.0, uncontrolled_w + c.max_export_w)
    dimmed = i.import_cap_w is not None and (c.max_import_w is None or i.import_cap_w < c.max_import_w)
    return Allowed(lo_w, hi_w, "import_cap" if dimmed else "max_import", "max_export")


def ramp(i: LimitInputs, c: Ramp) -> Allowed:
    """Limit the rise of |command| per cycle; any move toward zero is immediate (safety first)."""
    if c.w_per_s is None:
        return FREE
    step_w = c.w_per_s * c.period_s
    return Allowed(min(i.prev_cmd_w, 0.0) - step_w, max(i.prev_cmd_w, 0.0) + step_w, "ramp", "ramp")


Limit = Callable[[LimitInputs, Any], Allowed]
LIMITS: tuple[tuple[str, Limit], ...] = (
    ("plan", plan_range),
    ("rating", inverter_rating),
    ("bms", bms_current),
    ("soc", soc_window),
    ("force_charge", bms_force_charge),
    ("grid", grid_limits),
    ("ramp", ramp),
)


def constraints(i: LimitInputs, cfg: LimitsConfig) -> tuple[Allowed, ...]:
    """Every limit's interval, in chain order, each from its own config."""
    return tuple(limit(i, getattr(cfg, key)) for key, limit in LIMITS)


def _outside(target_w: float, a: Allowed) -> str | None:
    if target_w < a.lo_w:
        return a.lo_reason
    if target_w > a.hi_w:
        return a.hi_reason
    return None


def apply_limits(cmd_w: float, i: LimitInputs, cfg: LimitsConfig) -> tuple[float, tuple[str, ...]]:
    """Intersect every limit once, clamp `cmd_w` into it; return the command and the limits that bound."""
    if not math.isfinite(cmd_w):
        return 0.0, ("non_finite_command",)
    allowed = constraints(i, cfg)
    named: dict[int, str] = {}
    target_w = cmd_w
    for n, a in enumerate(allowed):  # requests move the target first
        if a.request and (why := _outside(target_w, a)) is not None:
            named[n] = why
            target_w = min(max(target_w, a.lo_w), a.hi_w)
    lo_w, hi_w = -INF, INF  # every protection allows 0 W (forced below): the intersection always holds it
    for n, a in enumerate(allowed):
        if a.request:
            continue
        if (why := _outside(target_w, a)) is not None:
            named[n] = why
        lo_w, hi_w = max(lo_w, min(a.lo_w, 0.0)), min(hi_w, max(a.hi_w, 0.0))
    out_w = min(max(target_w, lo_w), hi_w)
    return out_w + 0.0, tuple(named[n] for n in sorted(named))  # + 0.0 turns -0.0 into 0.0


def soc_latches(*, soc_pct: float | None, discharge_blocked: bool, charge_blocked: bool, cfg: SocWindow) -> tuple[bool, bool]:
    """SOC window hysteresis: a blocked direction reopens only `hysteresis_pct` inside the window."""
    if soc_pct is None:
        return True, True
    dis = soc_pct <= cfg.soc_min_pct or (discharge_blocked and soc_pct < cfg.soc_min_pct + cfg.hysteresis_pct)
    chg = soc_pct >= cfg.soc_max_pct or (charge_blocked and soc_pct > cfg.soc_max_pct - cfg.hysteresis_pct)
    return dis, chg
