"""One pure control step: state machine -> law -> limits -> gate (DESIGN.md §3-4, STYLE S2).

`step(core, inputs, cfg) -> Decision`. Same inputs, same Decision: replay, hypothesis and bug
reports rely on it. No I/O, no clock, no logging here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from config.control import ControlConfig, Law
from ems import statemachine
from ems.inputs import Inputs
from ems.law import local_mode_w, predictive_w
from ems.limits import LimitInputs, apply_limits, soc_latches
from ems.model import Mode, Quantity, State
from ems.statemachine import MachineState, Transition

__all__ = ["CoreState", "Decision", "step"]

Q = Quantity


@dataclass(frozen=True, slots=True)
class CoreState:
    """The core's memory between cycles."""

    machine: MachineState = field(default_factory=MachineState)
    prev_cmd_w: float = 0.0  # last limited command: the integrator state (anti-windup)
    discharge_blocked: bool = False  # SOC window latches
    charge_blocked: bool = False
    goal_w: float | None = None  # predictive law: last balancing goal (smoothing state)
    ess_w: float | None = None  # last fresh inverter power reading and its receive time (interpolation)
    ess_at_s: float | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    core: CoreState  # memory for the next cycle
    state: State
    setpoint_w: float  # computed, every limit applied
    written_w: float  # what goes to the inverter (0 unless both opt-ins are given)
    reasons: tuple[str, ...]  # limits that bound, then the gate ("dry_run", "control_disabled")
    transition: Transition
    fault_causes: tuple[str, ...]


def _limit_inputs(inputs: Inputs, core: CoreState, cfg: ControlConfig) -> LimitInputs:
    fresh = cfg.fault_timeout_s
    soc = inputs.value(Q.SOC_PCT, max_age_s=fresh)
    dis_blocked, chg_blocked = soc_latches(
        soc_pct=soc, discharge_blocked=core.discharge_blocked, charge_blocked=core.charge_blocked, cfg=cfg
    )
    return LimitInputs(
        soc_pct=soc,
        bms_voltage_v=inputs.value(Q.BMS_VOLTAGE_V, max_age_s=fresh),
        bms_ccl_a=inputs.value(Q.BMS_CCL_A, max_age_s=fresh),
        bms_dcl_a=inputs.value(Q.BMS_DCL_A, max_age_s=fresh),
        bms_charge_enable=inputs.flag(Q.BMS_CHARGE_ENABLE, max_age_s=fresh),
        bms_discharge_enable=inputs.flag(Q.BMS_DISCHARGE_ENABLE, max_age_s=fresh),
        bms_force_charge=inputs.flag(Q.BMS_FORCE_CHARGE, max_age_s=fresh) is True,
        grid_w=inputs.value(Q.GRID_POWER_W, max_age_s=fresh),
        ess_w=inputs.value(Q.ESS_POWER_W, max_age_s=fresh),
        prev_cmd_w=core.prev_cmd_w if math.isfinite(core.prev_cmd_w) else 0.0,
        discharge_blocked=dis_blocked,
        charge_blocked=chg_blocked,
    )


def _ess_at(t_s: float, ess_w: float, ess_at_s: float, core: CoreState) -> float:
    """Inverter power at monotonic `t_s` (when the meter measured), between the last two readings."""
    prev_w, prev_at_s = core.ess_w, core.ess_at_s
    if prev_w is None or prev_at_s is None or t_s >= ess_at_s or ess_at_s <= prev_at_s:
        return ess_w
    share = max(0.0, (t_s - prev_at_s) / (ess_at_s - prev_at_s))
    return prev_w + (ess_w - prev_w) * share


def _ess_now(now_s: float, ess_w: float, ess_at_s: float, prev_cmd_w: float, cfg: ControlConfig) -> float:
    """Inverter power now: the last reading moved on toward the last command by the first-order model."""
    age_s = now_s - ess_at_s
    if age_s <= 0:
        return ess_w
    if cfg.inverter_tau_s <= 0:
        return prev_cmd_w  # an instant inverter is already there
    return prev_cmd_w + (ess_w - prev_cmd_w) * math.exp(-age_s / cfg.inverter_tau_s)


def _raw_command(
    state: State, inputs: Inputs, li: LimitInputs, core: CoreState, cfg: ControlConfig
) -> tuple[float, str | None, float | None]:
    """(raw command, reason it holds 0 W, predictive goal)."""
    if state is State.EXTERNAL:
        sp = inputs.external_setpoint
        if sp is not None and inputs.setpoint_active():
            return sp.power_w, None, None
        return 0.0, "setpoint_missing", None
    if state is not State.SELF_CONSUMPTION:
        return 0.0, None, None
    grid, ess = inputs.measurements.get(Q.GRID_POWER_W), inputs.measurements.get(Q.ESS_POWER_W)
    if (
        cfg.live
        and cfg.law is Law.PREDICTIVE
        and inputs.requested_mode is Mode.SELF_CONSUMPTION
        and li.grid_w is not None
        and li.ess_w is not None
        and grid is not None
        and ess is not None
    ):
        cmd_w, goal_w = predictive_w(
            ess_w=_ess_now(inputs.now_s, li.ess_w, ess.at_s, li.prev_cmd_w, cfg),
            ess_at_grid_w=_ess_at(grid.at_s - cfg.meter_age_s, li.ess_w, ess.at_s, core),
            grid_w=li.grid_w,
            prev_cmd_w=li.prev_cmd_w,
            prev_goal_w=core.goal_w,
            moved_w=li.ess_w - core.ess_w if core.ess_w is not None else 0.0,
            cfg=cfg,
        )
        return cmd_w, None, goal_w
    if cfg.live:
        base_w, gain = li.prev_cmd_w, cfg.gain
    else:  # not driving the inverter: show the set-point that would balance the grid now
        base_w, gain = (li.ess_w or 0.0), 1.0
    raw_w, reason = local_mode_w(inputs.requested_mode, base_w=base_w, grid_w=li.grid_w, gain=gain, cfg=cfg)
    return raw_w, reason, None


def step(core: CoreState, inputs: Inputs, cfg: ControlConfig) -> Decision:
    tr = statemachine.step(core.machine, inputs, cfg)
    li = _limit_inputs(inputs, core, cfg)
    state = tr.machine.state
    raw_w, hold_reason, goal_w = _raw_command(state, inputs, li, core, cfg)
    if state in (State.SELF_CONSUMPTION, State.EXTERNAL):
        setpoint_w, bound = apply_limits(raw_w, li, cfg)
    else:
        setpoint_w, bound = 0.0, ()
    reasons = bound + ((hold_reason,) if hold_reason else ())
    if setpoint_w != 0.0 and not cfg.live:
        reasons += ("control_disabled",) if not cfg.enabled else ("dry_run",)
    written_w = setpoint_w if cfg.live else 0.0
    ess_r = inputs.measurements.get(Q.ESS_POWER_W)
    nxt = CoreState(
        machine=tr.machine,
        prev_cmd_w=setpoint_w,
        discharge_blocked=li.discharge_blocked,
        charge_blocked=li.charge_blocked,
        goal_w=goal_w if goal_w is None or math.isfinite(goal_w) else None,
        ess_w=li.ess_w,
        ess_at_s=ess_r.at_s if li.ess_w is not None and ess_r is not None else None,
    )
    return Decision(nxt, state, setpoint_w, written_w, reasons, tr, tr.causes)
