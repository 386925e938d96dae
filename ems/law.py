"""Control laws (DESIGN.md §4): the raw set-point before limits, by state and requested mode."""

from __future__ import annotations

from config.control import ControlConfig
from ems.model import Mode

__all__ = ["balancing_w", "local_mode_w"]


def balancing_w(*, base_w: float, grid_w: float, gain: float, cfg: ControlConfig) -> float:
    """Integrating law on the previous command: cmd = base + gain * (grid - target), with deadband.

    `base_w` is the previous (limited) command while control is live, so a clamp is the new
    integrator state (anti-windup). Deadband: no correction inside +/- deadband_w.
    """
    error_w = grid_w - cfg.target_grid_w
    if abs(error_w) <= cfg.deadband_w:
        return base_w
    return base_w + gain * error_w


def local_mode_w(mode: Mode, *, base_w: float, grid_w: float | None, gain: float, cfg: ControlConfig) -> tuple[float, str | None]:
    """Raw command in SELF_CONSUMPTION state for the requested local mode; reason when it holds 0 W."""
    if mode is Mode.CHARGE_ONLY:
        return -cfg.charge_power_w, None
    if mode is Mode.DISCHARGE_ONLY:
        return cfg.discharge_power_w, None
    if grid_w is None:
        return 0.0, "grid_unknown"
    return balancing_w(base_w=base_w, grid_w=grid_w, gain=gain, cfg=cfg), None
