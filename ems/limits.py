"""The limit chain (DESIGN.md §4, STYLE S4): a tuple of small pure functions, folded in order.

Every limit after the inverter rating only moves the command toward zero, except the BMS
force-charge request, which is itself bounded by the rating and the BMS charge limit. So the
result of the chain never leaves the bounds of any earlier limit, whatever the input.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from config.control import ControlConfig

__all__ = ["LIMITS", "Limit", "LimitInputs", "apply_limits", "charge_bound_w", "discharge_bound_w", "soc_latches"]


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


Limit = Callable[[float, LimitInputs, ControlConfig], tuple[float, str | None]]


def _bms_bound_w(limit_a: float | None, enable: bool | None, i: LimitInputs, cfg: ControlConfig) -> float:
    if not cfg.use_bms_limits:
        return math.inf
    if enable is False:
        return 0.0
    if limit_a is None or i.bms_voltage_v is None:
        return math.inf  # no BMS on this site (or not yet): staleness is the state machine's job
    return max(0.0, limit_a) * max(0.0, i.bms_voltage_v)


def charge_bound_w(i: LimitInputs, cfg: ControlConfig) -> float:
    """Largest charge power (W, >= 0) limits 1-2 allow."""
    return min(cfg.max_charge_w, _bms_bound_w(i.bms_ccl_a, i.bms_charge_enable, i, cfg))


def discharge_bound_w(i: LimitInputs, cfg: ControlConfig) -> float:
    return min(cfg.max_discharge_w, _bms_bound_w(i.bms_dcl_a, i.bms_discharge_enable, i, cfg))


def inverter_rating(cmd_w: float, i: LimitInputs, cfg: ControlConfig) -> tuple[float, str | None]:
    if cmd_w > cfg.max_discharge_w:
        return cfg.max_discharge_w, "inverter_rating"
    if cmd_w < -cfg.max_charge_w:
        return -cfg.max_charge_w, "inverter_rating"
    return cmd_w, None


def bms_current(cmd_w: float, i: LimitInputs, cfg: ControlConfig) -> tuple[float, str | None]:
    if cmd_w > 0 and cmd_w > (bound := discharge_bound_w(i, cfg)):
        return bound, "bms_discharge_disabled" if i.bms_discharge_enable is False else "bms_dcl"
    if cmd_w < 0 and -cmd_w > (bound := charge_bound_w(i, cfg)):
        return -bound, "bms_charge_disabled" if i.bms_charge_enable is False else "bms_ccl"
    return cmd_w, None


def soc_window(cmd_w: float, i: LimitInputs, cfg: ControlConfig) -> tuple[float, str | None]:
    if i.soc_pct is None:
        return (0.0, "soc_unknown") if cmd_w != 0 else (cmd_w, None)
    if cmd_w < 0 and i.charge_blocked:
        return 0.0, "soc_max"
    if i.bms_force_charge and not i.charge_blocked:
        forced_w = -min(cfg.force_charge_w, charge_bound_w(i, cfg))
        if cmd_w > forced_w:
            return forced_w, "bms_force_charge"
        return cmd_w, None
    if cmd_w > 0 and i.discharge_blocked:
        return 0.0, "soc_min"
    return cmd_w, None


def grid_limits(cmd_w: float, i: LimitInputs, cfg: ControlConfig) -> tuple[float, str | None]:
    if i.grid_w is None or i.ess_w is None:
        return cmd_w, None
    uncontrolled_w = i.grid_w + i.ess_w  # grid power with the battery at 0 W (load - pv)
    if cmd_w < 0 and cfg.max_import_w is not None and uncontrolled_w - cmd_w > cfg.max_import_w:
        return min(0.0, uncontrolled_w - cfg.max_import_w), "max_import"
    if cmd_w > 0 and cfg.max_export_w is not None and uncontrolled_w - cmd_w < -cfg.max_export_w:
        return max(0.0, uncontrolled_w + cfg.max_export_w), "max_export"
    return cmd_w, None


def ramp(cmd_w: float, i: LimitInputs, cfg: ControlConfig) -> tuple[float, str | None]:
    """Limit the rise of |command| per cycle; any move toward zero is immediate (safety first)."""
    if cfg.ramp_w_per_s is None:
        return cmd_w, None
    step_w = cfg.ramp_w_per_s * cfg.period_s
    if cmd_w > 0 and cmd_w > (top := max(i.prev_cmd_w, 0.0) + step_w):
        return top, "ramp"
    if cmd_w < 0 and cmd_w < (bottom := min(i.prev_cmd_w, 0.0) - step_w):
        return bottom, "ramp"
    return cmd_w, None


LIMITS: tuple[Limit, ...] = (inverter_rating, bms_current, soc_window, grid_limits, ramp)


def apply_limits(cmd_w: float, i: LimitInputs, cfg: ControlConfig) -> tuple[float, tuple[str, ...]]:
    """Fold the chain; return the bounded command and every limit that bound, in chain order."""
    if not math.isfinite(cmd_w):
        return 0.0, ("non_finite_command",)
    reasons: list[str] = []
    for limit in LIMITS:
        cmd_w, reason = limit(cmd_w, i, cfg)
        if reason is not None:
            reasons.append(reason)
    return cmd_w + 0.0, tuple(reasons)  # + 0.0 turns -0.0 into 0.0


def soc_latches(*, soc_pct: float | None, discharge_blocked: bool, charge_blocked: bool, cfg: ControlConfig) -> tuple[bool, bool]:
    """SOC window hysteresis: a blocked direction reopens only `soc_hysteresis_pct` inside the window."""
    if soc_pct is None:
        return True, True
    dis = soc_pct <= cfg.soc_min_pct or (discharge_blocked and soc_pct < cfg.soc_min_pct + cfg.soc_hysteresis_pct)
    chg = soc_pct >= cfg.soc_max_pct or (charge_blocked and soc_pct > cfg.soc_max_pct - cfg.soc_hysteresis_pct)
    return dis, chg
