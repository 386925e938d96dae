"""One pure control step: state machine -> law -> limits -> gate (DESIGN.md §3-4, STYLE S2).

`step(core, inputs, cfg) -> Decision`. Same inputs, same Decision: replay, hypothesis and bug
reports rely on it. No I/O, no clock, no logging here. `CoreConfig` is built from the `control:`
section by `config.control.ControlConfig.core()` (ems does not import config).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ems import statemachine
from ems.inputs import Inputs
from ems.law import FeedForwardLaw, Law, LawInputs
from ems.limits import LimitInputs, LimitsConfig, apply_limits, soc_latches
from ems.model import Mode, Quantity, Reading, State
from ems.plausibility import CrossChecks, cross_check
from ems.statemachine import MachineConfig, MachineState, Transition

__all__ = ["CoreConfig", "CoreState", "Decision", "step"]

Q = Quantity
_DRIVING = (State.SELF_CONSUMPTION, State.EXTERNAL)  # the only states that command anything but 0 W


@dataclass(frozen=True, slots=True)
class CoreConfig:
    machine: MachineConfig = field(default_factory=MachineConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    law: Law = field(default_factory=FeedForwardLaw)  # chosen once at start
    target_grid_w: float = 0.0
    charge_power_w: float = 2000.0  # CHARGE_ONLY
    discharge_power_w: float = 2000.0  # DISCHARGE_ONLY
    enabled: bool = False  # opt-in 1 of 2
    dry_run: bool = True  # opt-in 2 of 2 (must be False)
    cross_checks: CrossChecks = field(default_factory=CrossChecks)  # plausibility across sources

    @property
    def live(self) -> bool:
        return self.enabled and not self.dry_run

    @property
    def fresh_s(self) -> float:
        """Readings older than this are not used (the fault timeout: one freshness rule for the core)."""
        return self.machine.fault_timeout_s


@dataclass(frozen=True, slots=True)
class CoreState:
    """The core's memory between cycles."""

    machine: MachineState = field(default_factory=MachineState)
    prev_cmd_w: float = 0.0  # last limited command: the integrator state (anti-windup)
    discharge_blocked: bool = False  # SOC window latches
    charge_blocked: bool = False
    ess: Reading | None = None  # the last fresh inverter reading
    law_state: object = None  # the law's own memory; a cycle that does not call the law keeps only law.resume(it)
    law_ran: bool = False
    suspects: tuple[tuple[str, float], ...] = ()  # cross-checks violated now, with the time each started


@dataclass(frozen=True, slots=True)
class Decision:
    core: CoreState  # memory for the next cycle
    state: State
    setpoint_w: float  # computed, every limit applied
    written_w: float  # what goes to the inverter (0 unless both opt-ins are given)
    limits: tuple[str, ...]  # limits that bound, DESIGN §4 order
    hold: str | None  # why the law gives 0 W
    gate: str | None  # control_disabled / dry_run when a non-zero set-point is not written
    transition: Transition
    fault_causes: tuple[str, ...]
    plan: str | None = None  # the plan slot followed ("plan:hold", ...), None: plain self-consumption or an operator's mode

    @property
    def reasons(self) -> tuple[str, ...]:
        return self.limits + ((self.hold,) if self.hold else ()) + ((self.gate,) if self.gate else ())


def _follows_plan(state: State, inputs: Inputs) -> bool:
    """The plan shapes plain self-consumption only: an operator's mode or set-point always wins."""
    return inputs.plan is not None and state is State.SELF_CONSUMPTION and inputs.requested_mode is Mode.SELF_CONSUMPTION


def _limit_inputs(inputs: Inputs, core: CoreState, cfg: CoreConfig, *, plan: bool) -> LimitInputs:
    fresh = cfg.fresh_s
    soc = inputs.value(Q.SOC_PCT, max_age_s=fresh)
    dis_blocked, chg_blocked = soc_latches(
        soc_pct=soc, discharge_blocked=core.discharge_blocked, charge_blocked=core.charge_blocked, cfg=cfg.limits.soc
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
        plan_lo_w=inputs.plan.lo_w if plan and inputs.plan is not None else -math.inf,
        plan_hi_w=inputs.plan.hi_w if plan and inputs.plan is not None else math.inf,
        plan_reason=inputs.plan.reason if plan and inputs.plan is not None else None,
        import_cap_w=inputs.import_cap.power_w if inputs.import_cap is not None and inputs.import_cap.active(inputs.now_s) else None,
    )


def _raw_command(state: State, inputs: Inputs, li: LimitInputs, core: CoreState, cfg: CoreConfig) -> tuple[float, str | None, object, bool]:
    """(raw command, reason it holds 0 W, law state, whether the law ran)."""
    if state is State.EXTERNAL:
        sp = inputs.external_setpoint
        if sp is not None and sp.active(inputs.now_s):
            return sp.power_w, None, None, False
        return 0.0, "setpoint_missing", None, False
    if state is not State.SELF_CONSUMPTION:
        return 0.0, None, None, False
    mode = inputs.requested_mode
    if mode is Mode.CHARGE_ONLY:
        return -cfg.charge_power_w, None, None, False
    if mode is Mode.DISCHARGE_ONLY:
        return cfg.discharge_power_w, None, None, False
    grid = inputs.fresh(Q.GRID_POWER_W, max_age_s=cfg.fresh_s)
    if grid is None:
        return 0.0, "grid_unknown", None, False
    law_in = LawInputs(
        now_s=inputs.now_s,
        grid=grid,
        ess=inputs.fresh(Q.ESS_POWER_W, max_age_s=cfg.fresh_s),
        prev_ess=core.ess,
        prev_cmd_w=li.prev_cmd_w,
        target_grid_w=inputs.plan.grid_target_w if _follows_plan(state, inputs) and inputs.plan is not None else cfg.target_grid_w,
    )
    raw_w, law_state = cfg.law.command(law_in, core.law_state if core.law_ran else cfg.law.resume(core.law_state))
    return raw_w, None, law_state, True


_CROSS = (Q.GRID_POWER_W, Q.PV_POWER_W, Q.ESS_POWER_W, Q.BMS_VOLTAGE_V, Q.BMS_CURRENT_A, Q.BMS_CVL_V, Q.BMS_DVL_V)


def _implausible(inputs: Inputs, core: CoreState, cfg: CoreConfig) -> tuple[tuple[tuple[str, float], ...], tuple[str, ...]]:
    """(cross-checks violated now with their start times, the FAULT causes of those that persisted)."""
    fresh = {q: v for q in _CROSS if (v := inputs.value(q, max_age_s=cfg.fresh_s)) is not None}
    started = dict(core.suspects)
    now = cross_check(fresh, cfg.cross_checks)
    suspects = tuple((name, started.get(name, inputs.now_s)) for name in now)
    causes = tuple(f"implausible:{name}" for name, since in suspects if inputs.now_s - since >= cfg.cross_checks.persist_s)
    return suspects, causes


def step(core: CoreState, inputs: Inputs, cfg: CoreConfig) -> Decision:
    suspects, implausible = _implausible(inputs, core, cfg)
    tr = statemachine.step(core.machine, inputs, cfg.machine, extra_causes=implausible)
    state = tr.machine.state
    li = _limit_inputs(inputs, core, cfg, plan=_follows_plan(state, inputs))
    raw_w, hold, law_state, law_ran = _raw_command(state, inputs, li, core, cfg)
    if not law_ran:
        law_state = cfg.law.resume(core.law_state)  # what the law keeps through a pause (an identified plant)
    limits: tuple[str, ...] = ()
    if state not in _DRIVING:
        setpoint_w = 0.0
    elif not math.isfinite(raw_w):
        setpoint_w, hold = 0.0, "non_finite_command"
    else:
        setpoint_w, limits = apply_limits(raw_w, li, cfg.limits)
    gate = None
    if setpoint_w != 0.0 and not cfg.live:
        gate = "control_disabled" if not cfg.enabled else "dry_run"
    written_w = setpoint_w if cfg.live and state in _DRIVING else 0.0
    nxt = CoreState(
        machine=tr.machine,
        prev_cmd_w=setpoint_w,
        discharge_blocked=li.discharge_blocked,
        charge_blocked=li.charge_blocked,
        ess=inputs.fresh(Q.ESS_POWER_W, max_age_s=cfg.fresh_s),
        law_state=law_state,
        law_ran=law_ran,
        suspects=suspects,
    )
    followed = inputs.plan.reason if _follows_plan(state, inputs) and inputs.plan is not None else None
    return Decision(nxt, state, setpoint_w, written_w, limits, hold, gate, tr, tr.causes, followed)
