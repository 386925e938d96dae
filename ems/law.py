"""Control laws as delegates (DESIGN.md §4): the raw set-point that balances the grid, before limits.

A law is chosen once at start (`make_law`), owns its config and its state, and is pure: `command(
inputs, state) -> (raw command, next state)`. The core calls it in SELF_CONSUMPTION with the mode
SELF_CONSUMPTION and a fresh meter value; its state is reset whenever a cycle did not call it.
The state is a frozen value kept in `ems.core.CoreState`, so a step stays replayable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from ems.model import Reading

__all__ = [
    "FeedForwardLaw",
    "IntegratingLaw",
    "Law",
    "LawInputs",
    "LawName",
    "PredictiveLaw",
    "PredictiveState",
]


class LawName(StrEnum):
    INTEGRATING = "integrating"  # DESIGN.md §4: cmd = prev_cmd + gain * (grid - target)
    PREDICTIVE = "predictive"  # feed-forward of the measured inverter power + inverter lag compensation


@dataclass(frozen=True, slots=True)
class LawInputs:
    now_s: float  # monotonic
    grid: Reading  # fresh meter value, + import
    ess: Reading | None  # fresh inverter power, + discharge (None: unknown)
    prev_ess: Reading | None  # the inverter reading the previous cycle saw
    prev_cmd_w: float  # last limited command: the integrator state (anti-windup)
    target_grid_w: float


class Law(Protocol):
    """What the core needs of a law. `initial()` is the state of a law that has not run yet."""

    @property
    def name(self) -> str: ...

    def initial(self) -> object: ...

    def command(self, i: LawInputs, state: object) -> tuple[float, object]: ...


def _integrate(*, base_w: float, error_w: float, gain: float, deadband_w: float) -> float:
    if abs(error_w) <= deadband_w:
        return base_w
    return base_w + gain * error_w


@dataclass(frozen=True, slots=True)
class IntegratingLaw:
    """cmd = prev_cmd + gain * (grid - target), with deadband. A clamp is the new integrator state."""

    gain: float = 0.6
    deadband_w: float = 10.0
    name: str = LawName.INTEGRATING.value

    def initial(self) -> object:
        return None

    def command(self, i: LawInputs, state: object) -> tuple[float, object]:
        return _integrate(base_w=i.prev_cmd_w, error_w=i.grid.value - i.target_grid_w, gain=self.gain, deadband_w=self.deadband_w), None


@dataclass(frozen=True, slots=True)
class FeedForwardLaw:
    """cmd = ess + grid - target: the set-point that would balance the grid now.

    The law of a process that does not drive the inverter (an opt-in missing): with 0 W written,
    an integrator would wind up, so the API and log show this instead.
    """

    deadband_w: float = 10.0
    name: str = "feed_forward"

    def initial(self) -> object:
        return None

    def command(self, i: LawInputs, state: object) -> tuple[float, object]:
        base_w = i.ess.value if i.ess is not None else 0.0
        return _integrate(base_w=base_w, error_w=i.grid.value - i.target_grid_w, gain=1.0, deadband_w=self.deadband_w), None


@dataclass(frozen=True, slots=True)
class PredictiveState:
    goal_w: float  # the filtered balancing goal


@dataclass(frozen=True, slots=True)
class PredictiveLaw:
    """Feed-forward of the measured inverter power, lag compensated (docs/benchmarks.md).

    goal = the inverter power that would have balanced the grid when the meter measured: the
    inverter power then (interpolated `meter_age_s` before the meter poll between the last two
    inverter readings) + grid - target. The goal is filtered: a change smaller than
    `smoothing_band_w` is taken at `smoothing_gain` (meter noise, load flicker), and a reading
    taken while the inverter moved counts 1 / (1 + (moved / trust_scale_w)^2) (its timing is
    uncertain). The command drives the inverter from its power now (the last reading moved on
    toward the last command by a first-order model with `inverter_tau_s`) to the goal within one
    period (`lag_compensation` = 1). No integrator, so a clamp needs no anti-windup. Inside the
    deadband (goal within deadband_w of the last command) the last command is held. Without a
    fresh inverter reading it integrates like IntegratingLaw (`gain`).
    """

    period_s: float = 1.0
    inverter_tau_s: float = 1.0
    meter_age_s: float = 0.5
    lag_compensation: float = 1.0
    smoothing_band_w: float = 60.0
    trust_scale_w: float = 100.0
    smoothing_gain: float = 0.3
    deadband_w: float = 10.0
    gain: float = 0.6
    name: str = LawName.PREDICTIVE.value

    def initial(self) -> object:
        return None

    def lag_gain(self) -> float:
        """Multiplier that makes a first-order inverter (tau) reach a new goal within one period."""
        if self.inverter_tau_s <= 0:
            return 1.0
        reach = 1.0 - math.exp(-self.period_s / self.inverter_tau_s)  # share of a change done in one period
        return 1.0 + self.lag_compensation * (1.0 / reach - 1.0)

    def _ess_at(self, t_s: float, ess: Reading, prev: Reading | None) -> float:
        """Inverter power at monotonic `t_s` (when the meter measured), between the last two readings."""
        if prev is None or t_s >= ess.at_s or ess.at_s <= prev.at_s:
            return ess.value
        share = max(0.0, (t_s - prev.at_s) / (ess.at_s - prev.at_s))
        return prev.value + (ess.value - prev.value) * share

    def _ess_now(self, now_s: float, ess: Reading, prev_cmd_w: float) -> float:
        """Inverter power now: the last reading moved on toward the last command by the first-order model."""
        age_s = now_s - ess.at_s
        if age_s <= 0:
            return ess.value
        if self.inverter_tau_s <= 0:
            return prev_cmd_w  # an instant inverter is already there
        return prev_cmd_w + (ess.value - prev_cmd_w) * math.exp(-age_s / self.inverter_tau_s)

    def command(self, i: LawInputs, state: object) -> tuple[float, object]:
        ess, grid = i.ess, i.grid
        if ess is None:
            return _integrate(base_w=i.prev_cmd_w, error_w=grid.value - i.target_grid_w, gain=self.gain, deadband_w=self.deadband_w), None
        goal_w = self._ess_at(grid.at_s - self.meter_age_s, ess, i.prev_ess) + grid.value - i.target_grid_w
        if isinstance(state, PredictiveState):
            # a reading taken while the inverter was moving has an uncertain time, so it counts less
            # (r * r, not r ** 2: a float power raises OverflowError where a product gives inf -> trust 0)
            moved_w = ess.value - i.prev_ess.value if i.prev_ess is not None else 0.0
            r = moved_w / self.trust_scale_w if self.trust_scale_w > 0 else 0.0
            trust = 1.0 / (1.0 + r * r)
            gain = self.smoothing_gain if abs(goal_w - state.goal_w) < self.smoothing_band_w else 1.0
            goal_w = state.goal_w + gain * trust * (goal_w - state.goal_w)
        nxt = PredictiveState(goal_w) if math.isfinite(goal_w) else None
        if abs(goal_w - i.prev_cmd_w) <= self.deadband_w:
            return i.prev_cmd_w, nxt
        ess_now_w = self._ess_now(i.now_s, ess, i.prev_cmd_w)
        return ess_now_w + self.lag_gain() * (goal_w - ess_now_w), nxt
