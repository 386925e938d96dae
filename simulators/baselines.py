"""Controllers the replay compares (issue 11): the project's core and three baselines.

Every controller sees one `Observation` per cycle (what the EMS would read) and returns an
`Action`. The baselines differ from the EMS only in the law: they go through the same limit
chain (`ems.limits.apply_limits`, same config), so a comparison measures regulation, not limits.

- `ems`: the real core, `ems.core.step` (state machine, law, limits) on `Inputs` built from the
  observation, exactly as `ems.controller.Controller` builds them from a context snapshot.
- `naive`: `cmd = ess_measured + grid_measured - target` each cycle (what many home EMSs do).
- `pid`: the balancing controller of OpenEMS Edge as its source describes it, written here from
  that description: `required = grid + ess - target` filtered by a PID (P 0.3, I 0.3, D 0.1) whose
  input is the measured ESS power, the integral clamped to the output limits.
- `bound_1hz`: the ideal asked once per cycle with the information the EMS has: the true net
  power at the instant the meter value it reads was measured, and an instant inverter. Perfect
  *tracking* on that information: a reference for what following the meter can achieve (a
  controller that smooths noise-like load can beat it; nothing that only tracks can).
- `ideal`: an oracle. It is asked before every plant sub-step and knows the load and PV of that
  sub-step; with an instant inverter (tau 0) and no meter it is bounded only by the battery and
  the configured limits: the physical bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from config.control import ControlConfig, LawName
from ems.core import CoreState, step
from ems.inputs import Inputs
from ems.limits import LimitInputs, apply_limits, soc_latches
from ems.model import Quantity, Reading, State

__all__ = ["CONTROLLERS", "Action", "Controller", "Observation", "make_controller"]

Q = Quantity


@dataclass(frozen=True, slots=True)
class Observation:
    now_s: float  # simulated monotonic time of the cycle
    grid_w: float  # meter value as the EMS reads it (may be old and noisy), + import
    grid_at_s: float  # when that meter value was taken
    ess_w: float  # measured inverter AC power, + discharge
    ess_at_s: float  # when that inverter value was taken
    soc_pct: float
    voltage_v: float
    ccl_a: float
    dcl_a: float


@dataclass(frozen=True, slots=True)
class Action:
    cmd_w: float  # what goes to the inverter
    state: str
    reasons: tuple[str, ...]


class Controller(Protocol):
    @property
    def name(self) -> str: ...

    oracle: bool  # True: asked again before every plant sub-step with the true net power
    truth: bool  # True: sees the true grid and inverter power at the cycle instant (no poll delay, no noise)

    def decide(self, obs: Observation) -> Action: ...


class EmsController:
    """`ems.core.step`: the same pure function the 1 Hz controller calls."""

    oracle = False
    truth = False

    def __init__(self, cfg: ControlConfig, *, started_at_s: float, name: str = "ems") -> None:
        self.name = name
        self._cfg = cfg.core()
        self._core = CoreState()
        self._started_at_s = started_at_s
        self._mode = cfg.start_mode

    def decide(self, obs: Observation) -> Action:
        now = obs.now_s
        m = {
            Q.GRID_POWER_W: Reading(obs.grid_w, obs.grid_at_s),
            Q.ESS_POWER_W: Reading(obs.ess_w, obs.ess_at_s),
            Q.SOC_PCT: Reading(obs.soc_pct, now),
            Q.BMS_VOLTAGE_V: Reading(obs.voltage_v, now),
            Q.BMS_CCL_A: Reading(obs.ccl_a, now),
            Q.BMS_DCL_A: Reading(obs.dcl_a, now),
        }
        inputs = Inputs(
            now_s=now, started_at_s=self._started_at_s, measurements=m, bms_flags=None, requested_mode=self._mode, external_setpoint=None
        )
        d = step(self._core, inputs, self._cfg)
        self._core = d.core
        return Action(d.written_w, d.state.value, d.reasons)


class _Limited:
    """The EMS limit chain (with its SOC latches and previous command) around a baseline law."""

    def __init__(self, cfg: ControlConfig) -> None:
        self._cfg = cfg
        self._limits = cfg.limits()
        self._prev_w = 0.0
        self._dis_blocked = False
        self._chg_blocked = False

    def limit(self, raw_w: float, obs: Observation, *, grid_w: float | None = None) -> Action:
        self._dis_blocked, self._chg_blocked = soc_latches(
            soc_pct=obs.soc_pct, discharge_blocked=self._dis_blocked, charge_blocked=self._chg_blocked, cfg=self._limits.soc
        )
        li = LimitInputs(
            soc_pct=obs.soc_pct,
            bms_voltage_v=obs.voltage_v,
            bms_ccl_a=obs.ccl_a,
            bms_dcl_a=obs.dcl_a,
            grid_w=obs.grid_w if grid_w is None else grid_w,
            ess_w=obs.ess_w,
            prev_cmd_w=self._prev_w,
            discharge_blocked=self._dis_blocked,
            charge_blocked=self._chg_blocked,
        )
        cmd_w, reasons = apply_limits(raw_w, li, self._limits)
        self._prev_w = cmd_w
        return Action(cmd_w, State.SELF_CONSUMPTION.value, reasons)


class NaiveController(_Limited):
    name = "naive"
    oracle = False
    truth = False

    def decide(self, obs: Observation) -> Action:
        return self.limit(obs.ess_w + obs.grid_w - self._cfg.target_grid_w, obs)


class PidController(_Limited):
    """PID on `required = grid + ess - target` with the measured ESS power as its input."""

    name = "pid"
    oracle = False
    truth = False

    def __init__(self, cfg: ControlConfig, *, p: float = 0.3, i: float = 0.3, d: float = 0.1) -> None:
        super().__init__(cfg)
        self._p, self._i, self._d = p, i, d
        self._error_sum = 0.0
        self._last_error: float | None = None
        self._lo_w, self._hi_w = -cfg.max_charge_w, cfg.max_discharge_w

    def decide(self, obs: Observation) -> Action:
        required_w = obs.grid_w + obs.ess_w - self._cfg.target_grid_w
        error_w = required_w - obs.ess_w
        # integral clamped so that its contribution alone stays inside the output limits
        self._error_sum = min(max(self._error_sum + error_w, self._lo_w / self._i), self._hi_w / self._i)
        d_w = 0.0 if self._last_error is None else error_w - self._last_error
        self._last_error = error_w
        out_w = self._p * error_w + self._i * self._error_sum + self._d * d_w
        return self.limit(min(max(out_w, self._lo_w), self._hi_w), obs)


class IdealController(_Limited):
    """Oracle: `obs.grid_w` is the true grid power with the battery at its current output."""

    name = "ideal"
    oracle = True
    truth = True

    def decide(self, obs: Observation) -> Action:
        net_w = obs.grid_w + obs.ess_w  # load - pv of the coming sub-step
        return self.limit(net_w - self._cfg.target_grid_w, obs)


class CycleBoundController(IdealController):
    """Perfect tracking with the EMS's information: the exact net power when the meter value it
    reads was measured, an instant inverter, no noise; asked once per cycle."""

    name = "bound_1hz"
    oracle = False
    truth = True


CONTROLLERS: tuple[str, ...] = ("ideal", "naive", "pid", "ems")


def make_controller(name: str, cfg: ControlConfig, *, started_at_s: float) -> Controller:
    """By name; `ems:<law>` is the core with `control.law` set to <law> (e.g. `ems:integrating`)."""
    if name == "ems":
        return EmsController(cfg, started_at_s=started_at_s)
    if name.startswith("ems:"):
        law = name.removeprefix("ems:")
        if law not in {lw.value for lw in LawName}:
            raise ValueError(f"unknown law {law!r} (known: {', '.join(lw.value for lw in LawName)})")
        return EmsController(cfg.model_copy(update={"law": LawName(law)}), started_at_s=started_at_s, name=name)
    if name == "naive":
        return NaiveController(cfg)
    if name == "pid":
        return PidController(cfg)
    if name == "ideal":
        return IdealController(cfg)
    if name == "bound_1hz":
        return CycleBoundController(cfg)
    raise ValueError(f"controller must be one of {', '.join(CONTROLLERS)} (got {name!r})")
