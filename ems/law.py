"""Control laws as delegates (DESIGN.md §4): the raw set-point that balances the grid, before limits.

A law is chosen once at start (`make_law`), owns its config and its state, and is pure: `command(
inputs, state) -> (raw command, next state)`. The core calls it in SELF_CONSUMPTION with the mode
SELF_CONSUMPTION and a fresh meter value; a cycle that does not call it keeps only `resume(state)`
(what the law learnt about the plant, nothing dynamic).
The state is a frozen value kept in `ems.core.CoreState`, so a step stays replayable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from ems.model import Reading
from ems.plant_model import Commands, IdState, Plant, learn, propagate

__all__ = [
    "LAG_GRID_S",
    "AdaptiveLaw",
    "AdaptiveState",
    "FeedForwardLaw",
    "IntegratingLaw",
    "Law",
    "LawInputs",
    "LawName",
    "PredictiveLaw",
    "PredictiveState",
    "plant_changed",
]


class LawName(StrEnum):
    ADAPTIVE = "adaptive"  # feed-forward of the net load, filtered, driving an inverter model identified online
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
    """What the core needs of a law. `initial()` is the state of a law that has not run yet;
    `resume(state)` is what survives cycles that did not call the law (the core keeps it through
    them: an identified plant, never a dynamic memory); `describe(state)` is what the law reports
    of itself (ControlStatus.law: the API, /metrics, the log)."""

    @property
    def name(self) -> str: ...

    def initial(self) -> object: ...

    def resume(self, state: object) -> object: ...

    def describe(self, state: object) -> Mapping[str, float | str]: ...

    def command(self, i: LawInputs, state: object) -> tuple[float, object]: ...


@dataclass(frozen=True, slots=True)
class _Stateless:
    """resume/describe of a law whose memory is only dynamic (nothing survives a pause)."""

    def initial(self) -> object:
        return None

    def resume(self, state: object) -> object:
        return None

    def describe(self, state: object) -> Mapping[str, float | str]:
        return {"law": str(getattr(self, "name", "law"))}


def _integrate(*, base_w: float, error_w: float, gain: float, deadband_w: float) -> float:
    if abs(error_w) <= deadband_w:
        return base_w
    return base_w + gain * error_w


@dataclass(frozen=True, slots=True)
class IntegratingLaw(_Stateless):
    """cmd = prev_cmd + gain * (grid - target), with deadband. A clamp is the new integrator state."""

    gain: float = 0.6
    deadband_w: float = 10.0
    name: str = LawName.INTEGRATING.value

    def command(self, i: LawInputs, state: object) -> tuple[float, object]:
        return _integrate(base_w=i.prev_cmd_w, error_w=i.grid.value - i.target_grid_w, gain=self.gain, deadband_w=self.deadband_w), None


@dataclass(frozen=True, slots=True)
class FeedForwardLaw(_Stateless):
    """cmd = ess + grid - target: the set-point that would balance the grid now.

    The law of a process that does not drive the inverter (an opt-in missing): with 0 W written,
    an integrator would wind up, so the API and log show this instead.
    """

    deadband_w: float = 10.0
    name: str = "feed_forward"

    def command(self, i: LawInputs, state: object) -> tuple[float, object]:
        base_w = i.ess.value if i.ess is not None else 0.0
        return _integrate(base_w=base_w, error_w=i.grid.value - i.target_grid_w, gain=1.0, deadband_w=self.deadband_w), None


@dataclass(frozen=True, slots=True)
class PredictiveState:
    goal_w: float  # the filtered balancing goal


@dataclass(frozen=True, slots=True)
class PredictiveLaw(_Stateless):
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


# ---- the adaptive law -------------------------------------------------------------------------------
LAG_GRID_S: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)  # meter value measured this long before it was first seen
_LAG_EVIDENCE_W = 200.0  # a net-load step this big (and > 5 sigma) is followed by scoring the meter lags
_CMDS_KEPT = 8
_READINGS_KEPT = 3


@dataclass(frozen=True, slots=True)
class AdaptiveState:
    """The adaptive law's memory (frozen; a fresh one per cycle)."""

    t_s: float  # now_s of the cycle that left this state
    cmds: Commands  # recent limited commands (written at s, W), oldest first
    readings: tuple[tuple[float, float], ...]  # recent inverter readings (at s, W), oldest first
    grid_w: float  # last meter value
    grid_seen_s: float  # when that value was first seen (meters that refresh slower than they are polled repeat it)
    level_w: float  # filtered net load (load - pv) the goal follows
    gain: float  # the level filter's gain for small changes (self-tuned)
    innov_w2: float  # mean square innovation of the level filter
    prev_innov_w: float
    lag_score: tuple[float, ...]  # per meter lag on LAG_GRID_S: mean square change of the net-load estimate
    lag_net_w: tuple[float, ...]  # per meter lag: the last net-load estimate
    lag_best: int
    after_jump: int  # fresh meter values left in which the meter lags are scored (after a step)
    jump_w: float  # that step's size (the lags' scores are relative to it)
    ident: IdState


def _ess_at(t_s: float, readings: tuple[tuple[float, float], ...], cmds: Commands, plant: Plant) -> float:
    """The inverter power at t_s: the model from the reading before, corrected toward the reading after."""
    a = readings[0]
    b: tuple[float, float] | None = None
    for r in readings:
        if r[0] <= t_s:
            a = r
        else:
            b = r
            break
    if t_s <= a[0]:
        return a[1]
    p = propagate(a[1], a[0], t_s, cmds, plant)
    if b is not None and b[0] > a[0]:
        pb = propagate(a[1], a[0], b[0], cmds, plant)
        p += (b[1] - pb) * (t_s - a[0]) / (b[0] - a[0])
    return p


@dataclass(frozen=True, slots=True)
class AdaptiveLaw:
    """Feed-forward of the measured net load, filtered, driving an inverter model identified online.

    Needs no plant constant (docs/benchmarks.md, "The adaptive law"):
    1. net load = meter + inverter power *when the meter measured*: the inverter's trajectory comes
       from its readings and the identified model; the meter's lag (measured how long before it was
       first seen) is chosen from LAG_GRID_S as the one whose net-load estimate our own inverter
       moves disturb least; a repeated meter value is an old value (slow meters);
    2. the goal follows a level filter of the net load: small changes are smoothed with a self-tuned
       gain (meter noise, load flicker), a change beyond `jump_sigmas` x the innovation's RMS is
       taken at once (real steps are not delayed);
    3. the command drives the inverter from its predicted power when this command starts to act
       (dead time: the commands in flight are in the model, a Smith predictor) to the goal within one
       period (first-order lag), unless a ramp limit binds; the compensation grows with the
       identifier's confidence from none (a conservative start: plain feed-forward);
    4. a command change smaller than `hold_w` is not made (fewer reversals; the inverter's own
       resolution makes it moot anyway).
    """

    period_s: float = 1.0
    hold_w: float = 4.0
    jump_sigmas: float = 3.5
    gain_min: float = 0.1
    aim: float = 0.97  # share of a move the lag compensation aims to finish in one period
    noise_w: float = 2.0  # inverter reading resolution the identifier ignores
    name: str = "adaptive"

    def initial(self) -> object:
        return None

    def resume(self, state: object) -> object:
        """What survives cycles that did not call the law: the identified plant, nothing dynamic."""
        if isinstance(state, AdaptiveState):
            return state.ident
        return state if isinstance(state, IdState) else None

    def describe(self, state: object) -> Mapping[str, float | str]:
        ident = state.ident if isinstance(state, AdaptiveState) else state if isinstance(state, IdState) else IdState()
        pl = ident.plant()
        out: dict[str, float | str] = {
            "law": self.name,
            "inverter_dead_time_s": pl.dead_s,
            "inverter_tau_s": round(pl.tau_s, 3),
            "inverter_ramp_w_per_s": round(pl.ramp_w_per_s, 1) if math.isfinite(pl.ramp_w_per_s) else "none",
            "confidence": round(_confidence(ident), 3),
            "updates": float(ident.updates),
        }
        if isinstance(state, AdaptiveState):
            i = state.lag_best if 0 <= state.lag_best < len(LAG_GRID_S) else 0
            out["meter_lag_s"] = LAG_GRID_S[i]
            out["level_gain"] = round(state.gain, 3)
        return out

    def command(self, i: LawInputs, state: object) -> tuple[float, object]:
        grid, ess = i.grid, i.ess
        plain = (i.now_s, grid.value, grid.at_s, i.prev_cmd_w, i.target_grid_w)
        if ess is None or not all(map(math.isfinite, (*plain, ess.value, ess.at_s))):
            # nothing to model with: plain feed-forward, the identified plant kept
            base_w = ess.value if ess is not None and math.isfinite(ess.value) else 0.0
            return base_w + grid.value - i.target_grid_w, self.resume(state)
        st = state if isinstance(state, AdaptiveState) and _well_formed(state) else self._fresh(i, self.resume(state))
        cmd_w, nxt = self._step(i, ess, st)
        if not math.isfinite(cmd_w):  # cannot happen with a well-formed state; never let it stick
            return ess.value + grid.value - i.target_grid_w, self.resume(nxt)
        return cmd_w, nxt

    def _fresh(self, i: LawInputs, state: object) -> AdaptiveState:
        ident = state if isinstance(state, IdState) and state.well_formed() else IdState()
        assert i.ess is not None
        net_w = i.grid.value + i.ess.value
        n = len(LAG_GRID_S)
        return AdaptiveState(
            t_s=math.nan,
            cmds=(),
            readings=((i.ess.at_s, i.ess.value),),
            grid_w=i.grid.value,
            grid_seen_s=i.grid.at_s,
            level_w=net_w,
            gain=0.3,
            innov_w2=400.0,
            prev_innov_w=0.0,
            lag_score=(0.0,) * n,
            lag_net_w=(net_w,) * n,
            lag_best=min(1, n - 1),
            after_jump=0,
            jump_w=0.0,
            ident=ident,
        )

    def _step(self, i: LawInputs, ess: Reading, st: AdaptiveState) -> tuple[float, AdaptiveState]:
        now = i.now_s
        cmds = st.cmds
        if math.isfinite(st.t_s) and st.t_s < now:
            cmds = (*cmds[-(_CMDS_KEPT - 1) :], (st.t_s, i.prev_cmd_w))
        readings, ident = st.readings, st.ident
        if ess.at_s > readings[-1][0]:
            if cmds:
                ident = learn(ident, prev=readings[-1], new=(ess.at_s, ess.value), cmds=cmds, noise_w=self.noise_w)
            readings = (*readings[-(_READINGS_KEPT - 1) :], (ess.at_s, ess.value))
        plant = ident.plant()
        # 1. the net load when the meter measured
        fresh = grid_changed = i.grid.value != st.grid_w
        seen_s = i.grid.at_s if fresh else st.grid_seen_s
        if not fresh and i.grid.at_s - st.grid_seen_s > 5.0:
            fresh, seen_s = True, i.grid.at_s  # a steady meter repeats itself: take it as new after a while

        def all_nets() -> tuple[float, ...]:
            return tuple(i.grid.value + _ess_at(seen_s - lag, readings, cmds, plant) for lag in LAG_GRID_S)

        lag_score, lag_best = st.lag_score, st.lag_best
        nets: tuple[float, ...] | None = None  # every lag's estimate: only needed around steps
        if grid_changed and st.after_jump > 0:
            nets = all_nets()
            # right after a real step the inverter moves a lot and the load little: the wrong lags show it
            k = 0.1
            j2 = max(st.jump_w * st.jump_w, 1.0)
            # a heavy-tailed (log) loss: one lag fitting almost exactly is strong evidence; a load
            # that kept changing after the step (all lags off) says little
            lag_score = tuple(
                s + k * (math.log(0.001 + min((a - b) ** 2 / j2, 1e6)) - s) for s, a, b in zip(lag_score, nets, st.lag_net_w, strict=True)
            )
            cand = min(range(len(lag_score)), key=lag_score.__getitem__)
            if lag_score[cand] < lag_score[lag_best] - 1.0:
                lag_best = cand
        net_w = nets[lag_best] if nets is not None else i.grid.value + _ess_at(seen_s - LAG_GRID_S[lag_best], readings, cmds, plant)
        # 2. the level filter
        level, gain, innov_w2, prev_innov = st.level_w, st.gain, st.innov_w2, st.prev_innov_w
        after_jump = max(0, st.after_jump - 1) if grid_changed else st.after_jump
        jump_w = st.jump_w
        if fresh:
            nu = net_w - level
            if nu * nu > self.jump_sigmas**2 * innov_w2:
                level, prev_innov = net_w, 0.0
                if abs(nu) > max(_LAG_EVIDENCE_W, 5.0 * math.sqrt(innov_w2)):
                    after_jump, jump_w = 3, nu
            else:
                innov_w2 += 0.02 * (nu * nu - innov_w2)
                gain = min(1.0, max(self.gain_min, gain + 0.05 * nu * prev_innov / max(innov_w2, 1.0)))
                level += gain * nu
                prev_innov = nu
        lag_net_w = st.lag_net_w
        if grid_changed and after_jump > 0:  # the next fresh value scores the lags against these
            lag_net_w = nets if nets is not None else all_nets()
        goal_w = level - i.target_grid_w
        # 3. drive the inverter model to the goal
        x_act = _ess_at(now + plant.dead_s, readings, cmds, plant) if cmds else ess.value
        move = goal_w - x_act
        conf = _confidence(ident)
        reach = 1.0 - math.exp(-self.period_s / plant.tau_s)
        # compensate real moves only: the lag smooths flicker and noise for free (and fewer reversals)
        sigma_w = math.sqrt(max(innov_w2, 0.0))
        real = min(1.0, max(0.0, (abs(move) - 2.0 * sigma_w) / (2.0 * sigma_w + 1.0)))
        boost = max(0.0, self.aim / reach - 1.0) * conf * real
        if math.isfinite(plant.ramp_w_per_s):
            # the ramp finishes what it can within a period; overdrive only within the lag's share
            room_w = max(0.0, plant.ramp_w_per_s * plant.tau_s - abs(move)) if abs(move) < plant.ramp_w_per_s * self.period_s else 0.0
            over = min(boost * abs(move), room_w)
        else:
            over = boost * abs(move)
        cmd_w = goal_w + math.copysign(over, move)
        # 4. hold small changes
        if abs(cmd_w - i.prev_cmd_w) < self.hold_w and abs(move) < 2.0 * self.hold_w:
            cmd_w = i.prev_cmd_w
        nxt = AdaptiveState(
            t_s=now,
            cmds=cmds,
            readings=readings,
            grid_w=i.grid.value,
            grid_seen_s=seen_s,
            level_w=level,
            gain=gain,
            innov_w2=innov_w2,
            prev_innov_w=prev_innov,
            lag_score=lag_score,
            lag_net_w=lag_net_w,
            lag_best=lag_best,
            after_jump=after_jump,
            jump_w=jump_w,
            ident=ident,
        )
        return cmd_w, nxt


def _finite_pairs(pairs: tuple[tuple[float, float], ...]) -> bool:
    try:
        return all(len(p) == 2 for p in pairs) and math.isfinite(sum(a + b for a, b in pairs))
    except TypeError:
        return False


def _well_formed(st: AdaptiveState) -> bool:
    """A state the adaptive law can step from (anything else starts afresh, keeping a sound identification).
    Cheap: a sum is finite only if every term is (an overflow counts as malformed too)."""
    n = len(LAG_GRID_S)
    return (
        len(st.readings) >= 1
        and len(st.lag_score) == n
        and len(st.lag_net_w) == n
        and 0 <= st.lag_best < n
        and st.after_jump >= 0
        and 0.0 <= st.gain <= 1.0
        and st.innov_w2 >= 0.0
        and (math.isnan(st.t_s) or math.isfinite(st.t_s))
        and math.isfinite(st.grid_w + st.grid_seen_s + st.level_w + st.innov_w2 + st.prev_innov_w + st.jump_w)
        and math.isfinite(sum(st.lag_score) + sum(st.lag_net_w))
        and _finite_pairs(st.cmds)
        and _finite_pairs(st.readings)
        and isinstance(st.ident, IdState)
        and st.ident.well_formed()
    )


def _confidence(ident: IdState) -> float:
    """0 (no lag compensation) .. 1: grows with informative readings and how well the model predicts."""
    fit = ident.fit()
    return min(1.0, max(0.0, (0.8 - fit) / 0.4)) * min(1.0, ident.updates / 30.0)


_PLANT_KEYS = ("inverter_dead_time_s", "inverter_ramp_w_per_s", "meter_lag_s")


def plant_changed(before: Mapping[str, object], after: Mapping[str, object]) -> bool:
    """A change of what the law believes about the plant worth a log line: another dead time, ramp
    or meter lag, a time constant 20 % off, or the confidence crossing one half."""
    if any(before.get(k) != after.get(k) for k in _PLANT_KEYS):
        return True
    t0, t1 = before.get("inverter_tau_s"), after.get("inverter_tau_s")
    if isinstance(t0, float | int) != isinstance(t1, float | int):
        return True
    if isinstance(t0, float | int) and isinstance(t1, float | int) and t0 > 0 and t1 > 0 and max(t0 / t1, t1 / t0) > 1.2:
        return True
    c0, c1 = before.get("confidence"), after.get("confidence")
    if isinstance(c0, float | int) and isinstance(c1, float | int):
        return (c0 >= 0.5) != (c1 >= 0.5)
    return (c0 is None) != (c1 is None)
