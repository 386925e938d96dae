"""What the EMS believes about its inverter and meter, learnt online from its own commands (pure).

The inverter is modelled as a dead time `dead_s` (from a written set-point to the first response),
then a slew limit `ramp_w_per_s` and a first-order lag `tau_s`:

    x'(t) = clip((u(t - dead_s) - x(t)) / tau_s, -ramp, +ramp)

`propagate()` moves the inverter's power along that model through the commands it was given
(a short history of `(written at s, W)`), exactly for piecewise-constant commands.

Identification (`learn()`), each time a new inverter reading arrives: for every dead time on a
grid (`DEAD_GRID_S`) a time constant is fitted by recursive Gauss-Newton on log(tau) to the
prediction error of that reading (predicted from the previous reading and the commands in between),
and the dead time whose model predicts best (exponentially weighted squared error, with
hysteresis) is the identified one. A dead time grid, not a gradient, because with readings once a
second the prediction error is flat in the dead time between readings. The ramp limit is the
fastest rate seen on moves the lag model says should have been faster. Only readings after a
command moved carry information; the others are skipped.
Every identified value is clamped into its physical range on use (`Plant.sane()`), so even an
absurd state yields a bounded model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "DEAD_GRID_S",
    "RAMP_GRID_W_PER_S",
    "Commands",
    "IdState",
    "Plant",
    "learn",
    "propagate",
]

DEAD_GRID_S: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
RAMP_GRID_W_PER_S: tuple[float, ...] = (math.inf, 4000.0, 2000.0, 1000.0, 500.0, 250.0)
_RAMP_EVIDENCE_W = 400.0  # a move the lag model expects to be at least this big tells a ramp from a lag
TAU_MIN_S = 0.02
TAU_MAX_S = 10.0
RAMP_MIN_W_PER_S = 50.0
TAU_START_S = 0.3  # a fast plant: the first guess asks for no lag compensation worth speaking of
_LOG_TAU_MIN = math.log(TAU_MIN_S)
_LOG_TAU_MAX = math.log(TAU_MAX_S)
_FORGET = 0.99  # recursive Gauss-Newton forgetting factor (memory ~100 informative readings)
_SCORE_K = 0.01  # weight of a new squared error in a dead time's score (memory ~100 readings)
_SWITCH = 0.85  # another dead time must predict this much better (score ratio) to be chosen
_P_MAX = 4.0  # cap of the log(tau) covariance (no blow-up while the input is quiet)
_DTAU = 0.05  # finite-difference step in log(tau)


@dataclass(frozen=True, slots=True)
class Plant:
    """The inverter model the law acts on."""

    dead_s: float = 0.0
    tau_s: float = TAU_START_S
    ramp_w_per_s: float = math.inf

    def sane(self) -> Plant:
        """The same model with every value inside its physical range (NaN -> the safe default)."""
        dead = self.dead_s if math.isfinite(self.dead_s) else 0.0
        tau = self.tau_s if math.isfinite(self.tau_s) else TAU_START_S
        ramp = self.ramp_w_per_s if not math.isnan(self.ramp_w_per_s) else math.inf
        return Plant(
            dead_s=min(max(dead, 0.0), DEAD_GRID_S[-1]),
            tau_s=min(max(tau, TAU_MIN_S), TAU_MAX_S),
            ramp_w_per_s=max(ramp, RAMP_MIN_W_PER_S),
        )


Commands = tuple[tuple[float, float], ...]  # (written at monotonic s, W), oldest first


def _segment(x: float, u: float, dt_s: float, tau_s: float, ramp_w_per_s: float) -> float:
    """x after dt_s under a constant input u (slew-limited first order)."""
    d = u - x
    if d == 0.0 or dt_s <= 0.0:
        return x
    if abs(d) > ramp_w_per_s * tau_s:  # slope-limited phase first
        t_lin = (abs(d) - ramp_w_per_s * tau_s) / ramp_w_per_s
        if t_lin >= dt_s:
            return x + math.copysign(ramp_w_per_s * dt_s, d)
        dt_s -= t_lin
        d = math.copysign(ramp_w_per_s * tau_s, d)
    return u - d * math.exp(-dt_s / tau_s)


def propagate(x_w: float, t0_s: float, t1_s: float, cmds: Commands, plant: Plant) -> float:
    """The inverter power at t1 given its power x at t0 and the commands it was given (t1 >= t0)."""
    return _prop(x_w, t0_s, t1_s, cmds, plant.dead_s, plant.tau_s, plant.ramp_w_per_s)


def _prop(x_w: float, t0_s: float, t1_s: float, cmds: Commands, dead: float, tau: float, ramp: float) -> float:
    if t1_s <= t0_s or not cmds:
        return x_w
    u = cmds[0][1]
    t = t0_s
    for at_s, w in cmds:
        eff = at_s + dead
        if eff <= t:
            u = w
            continue
        if eff >= t1_s:
            break
        x_w = _segment(x_w, u, eff - t, tau, ramp)
        t, u = eff, w
    return _segment(x_w, u, t1_s - t, tau, ramp)


@dataclass(frozen=True, slots=True)
class IdState:
    """Identifier memory: per dead time on the grid a fitted log(tau), its covariance and a score."""

    log_tau: tuple[float, ...] = (math.log(TAU_START_S),) * len(DEAD_GRID_S)
    cov: tuple[float, ...] = (1.0,) * len(DEAD_GRID_S)
    score: tuple[float, ...] = (0.0,) * len(DEAD_GRID_S)
    best: int = 0
    ramp_score: tuple[float, ...] = (0.0,) * len(RAMP_GRID_W_PER_S)  # per ramp on the grid, on big moves only
    ramp_i: int = 0  # the identified ramp (0: none)
    moves_w2: float = 0.0  # EW mean square error of an instant model (the scale of the scores)
    updates: int = 0  # informative readings so far
    log_tau_small: float = math.log(TAU_START_S)  # the lag small moves show (what a ramp is told apart with)
    cov_small: float = 1.0

    def well_formed(self) -> bool:
        """Shapes and indices the identifier can work with (anything else is restarted from scratch)."""
        n = len(DEAD_GRID_S)
        return (
            len(self.log_tau) == n
            and len(self.cov) == n
            and len(self.score) == n
            and len(self.ramp_score) == len(RAMP_GRID_W_PER_S)
            and 0 <= self.best < n
            and 0 <= self.ramp_i < len(RAMP_GRID_W_PER_S)
            and all(map(math.isfinite, (*self.log_tau, *self.cov, *self.score, *self.ramp_score, self.moves_w2)))
            and math.isfinite(self.log_tau_small)
            and math.isfinite(self.cov_small)
        )

    def plant(self) -> Plant:
        if not self.well_formed():
            return Plant()
        i = self.best
        lt = self.log_tau[i] if i < len(self.log_tau) else math.log(TAU_START_S)
        r = RAMP_GRID_W_PER_S[self.ramp_i] if 0 <= self.ramp_i < len(RAMP_GRID_W_PER_S) else math.inf
        return Plant(dead_s=DEAD_GRID_S[i], tau_s=math.exp(min(max(lt, _LOG_TAU_MIN), _LOG_TAU_MAX)), ramp_w_per_s=r).sane()

    def fit(self) -> float:
        """RMS prediction error of the identified model relative to an instant model's (0 perfect, 1 no better)."""
        if not self.well_formed() or self.moves_w2 <= 0.0:
            return 1.0
        i = self.best
        if not math.isfinite(self.score[i]):
            return 1.0
        return min(1.0, math.sqrt(max(self.score[i], 0.0) / self.moves_w2))


def learn(st: IdState, *, prev: tuple[float, float], new: tuple[float, float], cmds: Commands, noise_w: float) -> IdState:
    """One identification step on a new inverter reading `new` = (at s, W), predicted from `prev`."""
    (t0, x0), (t1, x1) = prev, new
    if not st.well_formed():
        st = IdState()
    dt = t1 - t0
    if not (0.05 < dt < 5.0) or not cmds or not all(map(math.isfinite, (x0, x1))):
        return st
    lo = t0 - DEAD_GRID_S[-1] - 0.01
    span = max((abs(w - x0) for at, w in cmds if at >= lo), default=0.0)
    span = max(span, abs(cmds[-1][1] - x0) if cmds[-1][0] < lo else 0.0)
    if span < max(4.0 * noise_w, 5.0):
        return st  # nothing moved: every model predicts the same
    n = len(DEAD_GRID_S)
    best = st.best
    log_tau, cov, score = list(st.log_tau), list(st.cov), list(st.score)
    # 1. the ramp: a big move scored against each ramp on the grid, with the lag the small moves show
    #    (a lag fitted to big ramp-limited moves would be too slow to tell them apart)
    ramp_score, ramp_i = st.ramp_score, st.ramp_i
    dead = DEAD_GRID_S[best]
    lt_small, cov_small, _ = _fit_step(st.log_tau_small, st.cov_small, x0, x1, t0, t1, cmds, dead, RAMP_GRID_W_PER_S[ramp_i])
    free = _prop(x0, t0, t1, cmds, dead, math.exp(lt_small), math.inf) - x0
    if abs(free) < 0.5 * _RAMP_EVIDENCE_W:
        pass  # a small move: keep the small-move lag fit
    else:
        lt_small, cov_small = st.log_tau_small, st.cov_small
        if st.updates > 300:
            tau_small = math.exp(lt_small)
            errs = [x1 - _prop(x0, t0, t1, cmds, dead, tau_small, r) for r in RAMP_GRID_W_PER_S]
            ramp_score = tuple(s + 0.1 * (min(e * e, 1e12) - s) for s, e in zip(ramp_score, errs, strict=True))
            c = min(range(len(ramp_score)), key=ramp_score.__getitem__)
            if ramp_score[c] < 0.6 * ramp_score[ramp_i] or (c == 0 and ramp_score[0] <= ramp_score[ramp_i]):
                ramp_i = c
    ramp = RAMP_GRID_W_PER_S[ramp_i]
    # 2. per dead time: the time constant (recursive Gauss-Newton on log tau) and the score
    for j in range(n):
        log_tau[j], cov[j], err = _fit_step(log_tau[j], cov[j], x0, x1, t0, t1, cmds, DEAD_GRID_S[j], ramp)
        score[j] += _SCORE_K * (min(err * err, 1e12) - score[j])
    cand = min(range(n), key=score.__getitem__)
    if score[cand] < _SWITCH * score[best]:
        best = cand
    # the reference: an inverter that is at its command as soon as the dead time is over
    ref = x1 - _prop(x0, t0, t1, cmds, DEAD_GRID_S[best], TAU_MIN_S, ramp)
    moves = st.moves_w2 + _SCORE_K * (min(ref * ref, 1e12) - st.moves_w2)
    return IdState(tuple(log_tau), tuple(cov), tuple(score), best, ramp_score, ramp_i, moves, st.updates + 1, lt_small, cov_small)


def _fit_step(
    log_tau: float, cov: float, x0: float, x1: float, t0: float, t1: float, cmds: Commands, dead: float, ramp: float
) -> tuple[float, float, float]:
    """One recursive Gauss-Newton step of log(tau) on the reading x1: (log tau, its covariance, prediction error before)."""
    lt = min(max(log_tau, _LOG_TAU_MIN), _LOG_TAU_MAX)
    p = _prop(x0, t0, t1, cmds, dead, math.exp(lt), ramp)
    p2 = _prop(x0, t0, t1, cmds, dead, math.exp(lt + _DTAU), ramp)
    err = x1 - p
    g = (p2 - p) / _DTAU
    den = _FORGET + g * g * cov
    if g != 0.0 and math.isfinite(den) and den > 0.0:
        k = cov * g / den
        lt += max(-0.5, min(0.5, k * err))  # at most 0.5 per reading: one outlier cannot throw the fit far
        cov = (cov - k * g * cov) / _FORGET
    return min(max(lt, _LOG_TAU_MIN), _LOG_TAU_MAX), min(max(cov, 1e-6), _P_MAX), err
