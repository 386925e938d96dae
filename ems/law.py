"""Control laws (DESIGN.md §4): the raw set-point before limits, by state and requested mode."""

from __future__ import annotations

import math

from config.control import ControlConfig
from ems.model import Mode

__all__ = ["balancing_w", "lag_gain", "local_mode_w", "predictive_w"]


def balancing_w(*, base_w: float, grid_w: float, gain: float, cfg: ControlConfig) -> float:
    """Integrating law on the previous command: cmd = base + gain * (grid - target), with deadband.

    `base_w` is the previous (limited) command while control is live, so a clamp is the new
    integrator state (anti-windup). Deadband: no correction inside +/- deadband_w.
    """
    error_w = grid_w - cfg.target_grid_w
    if abs(error_w) <= cfg.deadband_w:
        return base_w
    return base_w + gain * error_w


def lag_gain(cfg: ControlConfig) -> float:
    """Multiplier that makes a first-order inverter (tau) reach a new goal within one period."""
    if cfg.inverter_tau_s <= 0:
        return 1.0
    reach = 1.0 - math.exp(-cfg.period_s / cfg.inverter_tau_s)  # share of a change done in one period
    return 1.0 + cfg.lag_compensation * (1.0 / reach - 1.0)


def predictive_w(
    *, ess_w: float, ess_at_grid_w: float, grid_w: float, prev_cmd_w: float, prev_goal_w: float | None, moved_w: float, cfg: ControlConfig
) -> tuple[float, float]:
    """Predictive law: (command, goal). Feed-forward of the measured inverter power, lag compensated.

    goal = the inverter power that would have balanced the grid when the meter measured:
    `ess_at_grid_w` (the inverter power then, interpolated by the caller `meter_age_s` before the
    meter poll) + grid - target. The goal is a filtered estimate: a change smaller than
    `smoothing_band_w` is taken at `smoothing_gain` (meter noise, load flicker), and a reading
    taken while the inverter moved `moved_w` since its last reading counts 1 / (1 + (moved /
    trust_scale_w)^2) (its timing is uncertain, so it is a poor sample of the net load). The command
    drives the inverter from `ess_w` (its power now) toward the goal so that a first-order
    response with `inverter_tau_s` gets there within one period (`lag_compensation` = 1). No
    integrator: a clamp needs no anti-windup. Inside the deadband (goal within deadband_w of the
    last command) the last command is held.
    """
    goal_w = ess_at_grid_w + grid_w - cfg.target_grid_w
    if prev_goal_w is not None:
        # a reading taken while the inverter was moving has an uncertain time, so it counts less
        # (r * r, not r ** 2: a float power raises OverflowError where a product gives inf -> trust 0)
        r = moved_w / cfg.trust_scale_w if cfg.trust_scale_w > 0 else 0.0
        trust = 1.0 / (1.0 + r * r)
        gain = cfg.smoothing_gain if abs(goal_w - prev_goal_w) < cfg.smoothing_band_w else 1.0
        goal_w = prev_goal_w + gain * trust * (goal_w - prev_goal_w)
    if abs(goal_w - prev_cmd_w) <= cfg.deadband_w:
        return prev_cmd_w, goal_w
    return ess_w + lag_gain(cfg) * (goal_w - ess_w), goal_w


def local_mode_w(mode: Mode, *, base_w: float, grid_w: float | None, gain: float, cfg: ControlConfig) -> tuple[float, str | None]:
    """Raw command in SELF_CONSUMPTION state for the requested local mode; reason when it holds 0 W."""
    if mode is Mode.CHARGE_ONLY:
        return -cfg.charge_power_w, None
    if mode is Mode.DISCHARGE_ONLY:
        return cfg.discharge_power_w, None
    if grid_w is None:
        return 0.0, "grid_unknown"
    return balancing_w(base_w=base_w, grid_w=grid_w, gain=gain, cfg=cfg), None
