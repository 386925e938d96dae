"""Fit an inverter's step response (commissioning, `emsctl commission`): dead time, time constant,
gain and an optional ramp (slew) limit, by least squares on samples with their receive times.

The model of a measured power y(t) (W) driven by a piecewise-constant command u(t) (W):

    y(t) = offset + gain * lag_tau( ramp_R( u(t - dead_time) - u0 ) )

`u0` is the command the system rests at before the first change; `ramp_R` moves toward each new
command at most R W/s (R = inf: no ramp); `lag_tau` is a first-order lag. Each change's response
has a closed form (a saturated ramp through a first-order lag) and the responses add up, which is
exact when a change comes after the ramp of the previous one has finished (commissioning waits for
each step to settle). For given (dead time, tau, R) the model is linear in (offset, gain): those two
are solved exactly; the three others are searched on a grid refined around the best point, so the
fit needs no starting guess and no solver library. Pure: no I/O, no clock.

Through a ramp much longer than tau, a lag looks like more dead time (both delay the ramp): there the
sum of dead time and tau is well measured, the split between them less so.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy (~11 MB) is imported by the first fit, in the commission thread, not at start-up
    import numpy as np
    import numpy.typing as npt

    Array = npt.NDArray[np.float64]

__all__ = ["StepFit", "fit_response", "model_response"]

_TAU_MIN_S = 0.02  # below this a lag is not measurable at commissioning poll rates
_LEVELS = 5  # grid refinements
_POINTS = 13  # grid points per parameter and level
_RAMP_MIN_S = 0.2  # a ramp shorter than this is not told apart from dead time
_RAMP_SSE_RATIO = 0.8  # the ramp model must explain this much more ...
_RAMP_F_MIN = 10.0  # ... and be significant against the residual noise


@dataclass(frozen=True, slots=True)
class StepFit:
    """The fitted response of one signal to the command changes in a window."""

    dead_time_s: float  # from a command change to the first response
    tau_s: float  # first-order time constant
    gain: float  # change of the signal per W of command (an ideal inverter: 1; a grid meter: -1)
    offset_w: float  # the signal at rest before the first change (minus gain * u0)
    ramp_w_per_s: float | None  # the signal's slew limit, W/s (None: not rate-limited)
    rms_w: float  # residual, W
    r2: float  # share of the signal's variance the model explains (1 = all)
    samples: int
    settled: bool  # the window lasts past dead time + ramp + 4 tau after the last change


def model_response(
    changes: Sequence[tuple[float, float]],
    times_s: Sequence[float] | Array,
    *,
    dead_time_s: float,
    tau_s: float,
    ramp_w_per_s: float | None = None,
) -> Array:
    """The unit-gain model response (W, relative to rest) at `times_s` (for tests and plots)."""
    import numpy as np

    t = np.asarray(times_s, dtype=np.float64)
    r = math.inf if ramp_w_per_s is None else ramp_w_per_s
    h = _responses(changes, t, np.array([dead_time_s]), np.array([max(tau_s, 1e-9)]), np.array([r]))
    return np.asarray(h[0], dtype=np.float64)


def _responses(changes: Sequence[tuple[float, float]], t: Array, dead: Array, tau: Array, ramp: Array) -> Array:
    """Unit-gain responses, shape (parameter sets, samples), to every change after the first."""
    import numpy as np

    h = np.zeros((dead.size, t.size))
    tau_c = tau[:, None]
    prev = changes[0][1]
    for at_s, value in changes[1:]:
        d = value - prev
        prev = value
        if d == 0.0:
            continue
        s = t[None, :] - at_s - dead[:, None]  # time since the delayed change
        ramp_s = np.where(np.isfinite(ramp), abs(d) / np.where(np.isfinite(ramp), ramp, 1.0), 0.0)
        ramp_s = np.maximum(ramp_s, 1e-6 * tau)[:, None]
        pos = np.maximum(s, 0.0)
        rising = (d / ramp_s) * (pos + tau_c * np.expm1(-pos / tau_c))  # 0 < s <= T
        after = np.maximum(s - ramp_s, 0.0)
        tail = d - (d / ramp_s) * tau_c * (np.exp(-after / tau_c) - np.exp(-pos / tau_c))  # s > T
        h += np.where(s <= 0.0, 0.0, np.where(s <= ramp_s, rising, tail))
    return h


def _solve(h: Array, y: Array) -> tuple[Array, Array, Array]:
    """Per parameter set: (offset, gain, SSE) of y ~ offset + gain * h."""
    import numpy as np

    hm = h.mean(axis=1)
    ym = y.mean()
    hc = h - hm[:, None]
    yc = y - ym
    var = np.einsum("ij,ij->i", hc, hc)
    cov = hc @ yc
    gain = np.where(var > 1e-12, cov / np.where(var > 1e-12, var, 1.0), 0.0)
    offset = ym - gain * hm
    sse = float(yc @ yc) - gain * cov
    return offset, gain, np.maximum(sse, 0.0)


@dataclass(frozen=True, slots=True)
class _Best:
    dead_time_s: float
    tau_s: float
    ramp_w_per_s: float  # inf: none
    offset_w: float
    gain: float
    sse: float


def _search(
    changes: Sequence[tuple[float, float]],
    t: Array,
    y: Array,
    *,
    max_dead_s: float,
    max_tau_s: float,
    ramps: tuple[float, float] | None,
    levels: int = _LEVELS,
    points: int = _POINTS,
) -> _Best:
    """Grid search, refined `levels` times around the best point. `ramps`: (min, max) W/s of command to try, or None."""
    import numpy as np

    dead_lo, dead_hi = 0.0, max_dead_s
    ltau_lo, ltau_hi = math.log(_TAU_MIN_S), math.log(max(max_tau_s, _TAU_MIN_S * 2))
    lr = None if ramps is None else (math.log(ramps[0]), math.log(ramps[1]))
    best: _Best | None = None
    for _ in range(levels):
        deads = np.linspace(dead_lo, dead_hi, points)
        taus = np.exp(np.linspace(ltau_lo, ltau_hi, points))
        rs = np.array([math.inf]) if lr is None else np.concatenate(([math.inf], np.exp(np.linspace(lr[0], lr[1], points))))
        gd, gt, gr = np.meshgrid(deads, taus, rs, indexing="ij")
        dead, tau, ramp = gd.ravel(), gt.ravel(), gr.ravel()
        offset, gain, sse = _solve(_responses(changes, t, dead, tau, ramp), y)
        i = int(np.argmin(sse))
        if best is None or float(sse[i]) <= best.sse:
            best = _Best(float(dead[i]), float(tau[i]), float(ramp[i]), float(offset[i]), float(gain[i]), float(sse[i]))
        # narrow to two grid steps around the best point (the search stays inside its first bounds)
        step_d = (dead_hi - dead_lo) / (points - 1)
        dead_lo, dead_hi = max(0.0, best.dead_time_s - 2 * step_d), min(max_dead_s, best.dead_time_s + 2 * step_d)
        step_lt = (ltau_hi - ltau_lo) / (points - 1)
        lt = math.log(best.tau_s)
        ltau_lo, ltau_hi = max(math.log(_TAU_MIN_S), lt - 2 * step_lt), min(math.log(max(max_tau_s, _TAU_MIN_S * 2)), lt + 2 * step_lt)
        if lr is not None and ramps is not None:
            step_lr = (lr[1] - lr[0]) / (points - 1)
            centre = math.log(ramps[1]) if math.isinf(best.ramp_w_per_s) else math.log(best.ramp_w_per_s)
            lr = (max(math.log(ramps[0]), centre - 2 * step_lr), min(math.log(ramps[1]), centre + 2 * step_lr))
    assert best is not None
    return best


def fit_response(
    changes: Sequence[tuple[float, float]],
    samples: Sequence[tuple[float, float]],
    *,
    max_dead_time_s: float = 10.0,
    max_tau_s: float = 30.0,
    ramp: bool = True,
    quick: bool = False,
) -> StepFit | None:
    """Fit the model to `samples` ((receive time s, value W), any order) driven by `changes`
    ((time s, command W), ascending; the first is the command the system rests at). None when there
    is nothing to fit (fewer than 8 samples, no command change, or a flat signal).

    `max_dead_time_s` must stay below the time between two changes of opposite sign: beyond it a
    response to the earlier change, delayed, fits as well as the later one with the gain's sign
    flipped. `quick`: a coarser search (no ramp), for deciding whether a step has settled."""
    import numpy as np

    if len(changes) < 2 or len(samples) < 8:
        return None
    pts = sorted(samples)
    t = np.array([p[0] for p in pts], dtype=np.float64)
    y = np.array([p[1] for p in pts], dtype=np.float64)
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(y))):
        return None
    span_s = float(t[-1] - changes[1][0])
    if span_s <= 0.0:
        return None
    max_dead = max(0.0, min(max_dead_time_s, span_s * 0.8))
    max_tau = max(_TAU_MIN_S * 2, min(max_tau_s, span_s))
    grid = {"levels": 4, "points": 9} if quick else {}
    plain = _search(changes, t, y, max_dead_s=max_dead, max_tau_s=max_tau, ramps=None, **grid)
    chosen = plain
    ramp = ramp and not quick
    moves = [abs(b[1] - a[1]) for a, b in itertools.pairwise(changes) if b[1] != a[1]]
    if ramp and moves:
        big = max(moves)
        ramped = _search(changes, t, y, max_dead_s=max_dead, max_tau_s=max_tau, ramps=(big / span_s, big / 0.05))
        ramp_s = big / ramped.ramp_w_per_s if math.isfinite(ramped.ramp_w_per_s) else 0.0
        dof = max(1, len(y) - 5)
        f_stat = (plain.sse - ramped.sse) / max(ramped.sse / dof, 1e-9)
        if ramp_s >= _RAMP_MIN_S and ramped.sse <= _RAMP_SSE_RATIO * plain.sse and f_stat >= _RAMP_F_MIN:
            chosen = ramped
    sst = float(((y - y.mean()) ** 2).sum())
    if sst <= 0.0:
        return None
    last_change_s = max(c[0] for c in changes[1:])
    ramp_s = max(moves) / chosen.ramp_w_per_s if moves and math.isfinite(chosen.ramp_w_per_s) else 0.0
    settled = float(t[-1]) - last_change_s >= chosen.dead_time_s + ramp_s + 4.0 * chosen.tau_s
    return StepFit(
        dead_time_s=chosen.dead_time_s,
        tau_s=chosen.tau_s,
        gain=chosen.gain,
        offset_w=chosen.offset_w,
        ramp_w_per_s=None if math.isinf(chosen.ramp_w_per_s) else abs(chosen.gain) * chosen.ramp_w_per_s,
        rms_w=math.sqrt(chosen.sse / len(y)),
        r2=1.0 - chosen.sse / sst,
        samples=len(y),
        settled=settled,
    )
