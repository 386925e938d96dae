"""Commissioning (`emsctl commission`): the pure parts. Which steps to make, the sign and plausibility
checks of the readings, the verdict on the grid meter, the report and the config lines it suggests.

The run itself (the thread inside the EMS that steps the set-point through the audited external
set-point path and records the readings) is interfaces/commission/runner.py; the fit of each step's
response is ems/stepfit.py. Nothing here does I/O or reads a clock (STYLE S2).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum

from ems.model import Quantity, Reading
from ems.plausibility import Window
from ems.stepfit import StepFit

__all__ = [
    "Check",
    "CheckStatus",
    "CommissionParams",
    "Directions",
    "MeterVerdict",
    "StepResult",
    "at_rest",
    "fit_dict",
    "meter_verdict",
    "plan_steps",
    "preflight",
    "refresh_period_s",
    "settled",
    "sign_checks",
    "suggested_config",
    "summarize",
]

Q = Quantity
_SOC_MARGIN_PCT = 1.0  # a direction is stepped only this far inside the SOC window (plus its hysteresis)
_RESPONSE_MIN = 0.2  # an inverter that moves less than this share of the step does not follow the set-point


class Directions(StrEnum):
    BOTH = "both"  # +S, 0, -S, 0
    DISCHARGE = "discharge"  # +S, 0
    CHARGE = "charge"  # -S, 0


@dataclass(frozen=True, slots=True)
class CommissionParams:
    step_w: float = 1000.0  # size of each step (bounded by half of every power limit)
    directions: Directions = Directions.BOTH
    min_hold_s: float = 3.0  # each step is held at least this long ...
    max_hold_s: float = 30.0  # ... until its response has settled, at most this long
    no_response_s: float = 10.0  # an inverter that has not moved by then does not follow: abort
    ttl_s: float = 6.0  # TTL of each external set-point (renewed while the run goes on)
    poll_period_s: float = 0.1  # the fast poll of the inverter and the meter during the run
    client_timeout_s: float = 15.0  # the run ends when its client has not polled for this long
    quiet_s: float = 3.0  # before the first step, 0 W commanded at least this long (a late response to an earlier command)
    settle_zero_s: float = 30.0  # at most this long for the battery to come to rest at 0 W at the start and the end


class CheckStatus(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    INFO = "info"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: CheckStatus
    detail: str


@dataclass(frozen=True, slots=True)
class StepResult:
    """One step of the run: the command change and the fitted responses."""

    index: int  # 1-based
    from_w: float
    to_w: float  # the command written (after every limit)
    at_s: float  # monotonic time the command was published (written at once by the ESS link)
    held_s: float
    ess: StepFit | None  # the inverter's own power reading
    grid: StepFit | None  # the grid meter
    bms_current_change_a: float | None = None  # settled change of bms_current_a (+ charge), if read
    samples: Mapping[str, int] = field(default_factory=dict)

    @property
    def change_w(self) -> float:
        return self.to_w - self.from_w


def plan_steps(
    params: CommissionParams,
    *,
    max_charge_w: float,
    max_discharge_w: float,
    soc_pct: float | None,
    soc_min_pct: float,
    soc_max_pct: float,
    hysteresis_pct: float,
    bms_charge_w: float | None = None,
    bms_discharge_w: float | None = None,
) -> tuple[tuple[float, ...], tuple[str, ...]]:
    """The set-points of the run, in order, ending at 0 W, and notes on what was left out and why.
    Each step is at most half of the tightest power limit of its direction (rating, BMS CCL/DCL x V),
    and a direction is stepped only with room in the SOC window."""
    notes: list[str] = []
    room_dis = soc_pct is not None and soc_pct > soc_min_pct + hysteresis_pct + _SOC_MARGIN_PCT
    room_chg = soc_pct is not None and soc_pct < soc_max_pct - hysteresis_pct - _SOC_MARGIN_PCT
    if soc_pct is None:
        notes.append("no SOC reading: no step")
    dis_w = min(params.step_w, 0.5 * max_discharge_w, *(() if bms_discharge_w is None else (0.5 * bms_discharge_w,)))
    chg_w = min(params.step_w, 0.5 * max_charge_w, *(() if bms_charge_w is None else (0.5 * bms_charge_w,)))
    steps: list[float] = []
    if params.directions in (Directions.BOTH, Directions.DISCHARGE):
        if not room_dis:
            notes.append(f"discharge step left out: SOC {soc_pct} % is too close to soc_min {soc_min_pct:g} %")
        elif dis_w < 50.0:
            notes.append(f"discharge step left out: the discharge limits allow only {dis_w:.0f} W")
        else:
            steps += [round(dis_w), 0.0]
    if params.directions in (Directions.BOTH, Directions.CHARGE):
        if not room_chg:
            notes.append(f"charge step left out: SOC {soc_pct} % is too close to soc_max {soc_max_pct:g} %")
        elif chg_w < 50.0:
            notes.append(f"charge step left out: the charge limits allow only {chg_w:.0f} W")
        else:
            steps += [-round(chg_w), 0.0]
    return tuple(float(s) for s in steps), tuple(notes)


def settled(
    samples: Sequence[tuple[float, float]], *, before_w: float, change_w: float, noise_w: float, now_s: float, window_s: float = 2.0
) -> bool:
    """Has a step's response settled? `samples` are (receive time, W) since the step; it has settled
    when it moved at least half of `change_w` from `before_w` and the trend over the last `window_s`
    moves less than 2 % of the step (plus twice the noise)."""
    recent = [(t, v) for t, v in samples if t >= now_s - window_s]
    if len(recent) < 6 or recent[-1][0] - recent[0][0] < 0.75 * window_s:
        return False
    mean_v = sum(v for _t, v in recent) / len(recent)
    if change_w == 0.0 or (mean_v - before_w) / change_w < 0.5:
        return False
    mean_t = sum(t for t, _v in recent) / len(recent)
    stt = sum((t - mean_t) ** 2 for t, _v in recent)
    slope = sum((t - mean_t) * (v - mean_v) for t, v in recent) / stt if stt > 0 else 0.0
    return abs(slope) * window_s <= 0.02 * abs(change_w) + 2.0 * noise_w


def at_rest(samples: Sequence[tuple[float, float]], *, now_s: float, tol_w: float, window_s: float = 1.5) -> bool:
    """The battery is at rest at 0 W: over the last `window_s` its readings average within `tol_w`
    of 0 W and their trend moves less than 10 W (or twice their own scatter)."""
    recent = [(t, v) for t, v in samples if t >= now_s - window_s]
    if len(recent) < 5 or recent[-1][0] - recent[0][0] < 0.6 * window_s:
        return False
    mean_v = sum(v for _t, v in recent) / len(recent)
    if abs(mean_v) > tol_w:
        return False
    mean_t = sum(t for t, _v in recent) / len(recent)
    stt = sum((t - mean_t) ** 2 for t, _v in recent)
    slope = sum((t - mean_t) * (v - mean_v) for t, v in recent) / stt if stt > 0 else 0.0
    scatter = math.sqrt(sum((v - mean_v - slope * (t - mean_t)) ** 2 for t, v in recent) / len(recent))
    return abs(slope) * window_s <= max(10.0, 2.0 * scatter)


def refresh_period_s(samples: Sequence[tuple[float, float]]) -> float | None:
    """How often a polled reading changes (a meter refreshing slower than it is polled): the median
    interval between changes of value; None with fewer than four changes."""
    changes = [t for (t, v), (_t0, v0) in zip(samples[1:], samples, strict=False) if v != v0]
    gaps = [b - a for a, b in itertools.pairwise(changes)]
    return statistics.median(gaps) if len(gaps) >= 3 else None


def _fresh(r: Reading | None, now_s: float, max_age_s: float) -> bool:
    return r is not None and r.fresh(now_s=now_s, max_age_s=max_age_s)


def preflight(
    measurements: Mapping[Quantity, Reading],
    *,
    now_s: float,
    max_age_s: float,
    required: frozenset[Quantity],
    windows: Mapping[Quantity, Window],
    rating_w: float,
    command_w: float = 0.0,
) -> tuple[Check, ...]:
    """The readings' signs and plausibility with the battery held at `command_w` (0 W), before any step."""
    out: list[Check] = []
    for q in sorted(required, key=lambda x: x.value):
        r = measurements.get(q)
        if not _fresh(r, now_s, max_age_s):
            out.append(Check(q.value, CheckStatus.FAIL, "no fresh reading (required)"))
        else:
            assert r is not None
            w = windows.get(q)
            out.append(
                Check(
                    q.value, CheckStatus.OK, f"{_value(q, r.value)} from {r.source or '?'}" + (f", plausible ({w.describe()})" if w else "")
                )
            )
    ess = measurements.get(Q.ESS_POWER_W)
    if _fresh(ess, now_s, max_age_s):
        assert ess is not None
        tol = max(30.0, 0.01 * rating_w)
        ok = abs(ess.value - command_w) <= tol
        out.append(
            Check(
                "ess_power_w at rest",
                CheckStatus.OK if ok else CheckStatus.WARN,
                f"{ess.value:+.0f} W while {command_w:+.0f} W is commanded"
                + ("" if ok else f" (more than {tol:.0f} W off: an offset, another controller, or a sign problem)"),
            )
        )
    pv = measurements.get(Q.PV_POWER_W)
    if _fresh(pv, now_s, max_age_s):
        assert pv is not None
        ok = pv.value >= -20.0
        out.append(
            Check(
                "pv_power_w sign",
                CheckStatus.OK if ok else CheckStatus.FAIL,
                f"{pv.value:+.0f} W" + ("" if ok else ": PV production reads negative: the PV meter's sign is reversed"),
            )
        )
    grid = measurements.get(Q.GRID_POWER_W)
    if _fresh(grid, now_s, max_age_s) and _fresh(ess, now_s, max_age_s):
        assert grid is not None and ess is not None
        have_pv = pv is not None and _fresh(pv, now_s, max_age_s)
        load_w = grid.value + (pv.value if pv is not None and have_pv else 0.0) + ess.value
        if have_pv:
            ok = load_w >= -50.0
            status = CheckStatus.OK if ok else CheckStatus.WARN
            why = "" if ok else ": a negative load: a sign (grid + import, pv >= 0, ess + discharge) may be wrong"
        else:  # unmetered PV makes grid + ess negative: nothing to conclude
            status, why = CheckStatus.INFO, " without PV (no PV reading: unmetered PV makes it negative)"
        out.append(Check("load = grid + pv + ess", status, f"{load_w:+.0f} W{why}"))
    soc = measurements.get(Q.SOC_PCT)
    if _fresh(soc, now_s, max_age_s) and Q.SOC_PCT not in required:
        assert soc is not None
        out.append(Check("soc_pct", CheckStatus.OK if 0.0 <= soc.value <= 100.0 else CheckStatus.FAIL, f"{soc.value:.1f} %"))
    volt = measurements.get(Q.BMS_VOLTAGE_V)
    if _fresh(volt, now_s, max_age_s):
        assert volt is not None
        w = windows.get(Q.BMS_VOLTAGE_V)
        out.append(Check("bms_voltage_v", CheckStatus.OK, f"{volt.value:.1f} V" + (f", plausible ({w.describe()})" if w else "")))
    return tuple(out)


def _value(q: Quantity, v: float) -> str:
    unit = next((u for u in ("_w", "_pct", "_v", "_a", "_degc", "_hz", "_wh") if q.value.endswith(u)), "")
    return f"{v:+.0f} W" if unit == "_w" else f"{v:.1f} %" if unit == "_pct" else f"{v:g} {unit[1:].replace('degc', 'degC')}".strip()


def sign_checks(steps: Sequence[StepResult]) -> tuple[Check, ...]:
    """What the steps show of the signs: the inverter follows the command's sign, the BMS current
    is + charge, the meter sees - the battery's change."""
    out: list[Check] = []
    fitted = [s for s in steps if s.ess is not None and s.change_w != 0.0]
    if fitted:
        gains = [s.ess.gain for s in fitted if s.ess is not None]
        g = statistics.median(gains)
        if g >= _RESPONSE_MIN:
            out.append(Check("ess_power_w follows the command", CheckStatus.OK, f"gain {g:.3f} (+ discharge on both sides)"))
        elif g <= -_RESPONSE_MIN:
            out.append(
                Check(
                    "ess_power_w follows the command",
                    CheckStatus.FAIL,
                    f"gain {g:.3f}: the inverter's power reads with the opposite sign (the profile's sign of ess_power_w)",
                )
            )
        else:
            out.append(
                Check("ess_power_w follows the command", CheckStatus.FAIL, f"gain {g:.3f}: the inverter does not follow the set-point")
            )
    currents = [(s.change_w, s.bms_current_change_a) for s in steps if s.bms_current_change_a is not None and s.change_w != 0.0]
    if currents:
        # a discharge step (change > 0) must make the current fall (+ charge)
        agree = sum(1 for dw, da in currents if dw * da < 0)
        ok = agree * 2 > len(currents)
        out.append(
            Check(
                "bms_current_a sign",
                CheckStatus.OK if ok else CheckStatus.WARN,
                f"{agree} of {len(currents)} steps move the current against the battery's AC power"
                + ("" if ok else ": bms_current_a should be + charge (can.current_positive, or the profile's sign)"),
            )
        )
    return tuple(out)


class MeterVerdict(StrEnum):
    OK = "ok"  # the meter sees the battery's step, right sign
    REVERSED = "reversed"  # it sees it with the wrong sign
    ONE_PHASE = "one_phase"  # about a third of it
    NOT_SEEN = "not_seen"  # hardly at all
    PARTIAL = "partial"  # something else: repeat (a load changed during the step?)
    UNKNOWN = "unknown"  # no grid response to judge (no meter reading, no inverter response)


def meter_verdict(ratio: float | None) -> tuple[MeterVerdict, str]:
    """`ratio` = grid change / (- battery change): 1 when the meter sees the battery's full step."""
    if ratio is None or not math.isfinite(ratio):
        return MeterVerdict.UNKNOWN, "no grid response to judge"
    a = abs(ratio)
    if 0.8 <= ratio <= 1.25:
        return MeterVerdict.OK, f"the meter sees the battery's step with the right sign ({ratio:.2f} x)"
    if -1.25 <= ratio <= -0.8:
        return (
            MeterVerdict.REVERSED,
            f"the meter sees the step with the WRONG sign ({ratio:.2f} x): its CT or wiring is reversed, or the profile's sign of grid_power_w",
        )
    if 0.2 <= a <= 0.45:
        return (
            MeterVerdict.ONE_PHASE,
            f"the meter sees about a third of the step ({ratio:.2f} x): it may measure one phase of three, or the inverter feeds a phase it does not measure",
        )
    if a < 0.2:
        return (
            MeterVerdict.NOT_SEEN,
            f"the meter hardly sees the step ({ratio:.2f} x): the inverter is not behind this meter (wiring, CT position, wrong device)",
        )
    return MeterVerdict.PARTIAL, f"the meter sees {ratio:.2f} x the step: inconclusive (did a load change during the step?); repeat"


def _median(xs: Sequence[float]) -> float | None:
    return statistics.median(xs) if xs else None


def fit_dict(f: StepFit | None) -> dict[str, object] | None:
    if f is None:
        return None
    d = asdict(f)
    for k in ("dead_time_s", "tau_s", "rms_w"):
        d[k] = round(float(d[k]), 3)
    d["gain"] = round(f.gain, 4)
    d["r2"] = round(f.r2, 4)
    d["offset_w"] = round(f.offset_w, 1)
    d["ramp_w_per_s"] = None if f.ramp_w_per_s is None else round(f.ramp_w_per_s, 1)
    return d


def _responded(s: StepResult) -> bool:
    return s.ess is not None and s.change_w != 0.0 and s.ess.gain >= _RESPONSE_MIN


def summarize(steps: Sequence[StepResult], *, meter_refresh_s: float | None) -> dict[str, object]:
    """The inverter and the meter as the steps measured them (medians over the steps that responded)."""
    good = [s for s in steps if _responded(s)]
    fits = [s.ess for s in good if s.ess is not None]
    ramps = [f.ramp_w_per_s for f in fits if f.ramp_w_per_s is not None]
    rate_limited = bool(fits) and len(ramps) * 2 > len(fits)
    inverter = {
        "steps": len(steps),
        "responded": len(good),
        "dead_time_s": _round(_median([f.dead_time_s for f in fits]), 3),
        "tau_s": _round(_median([f.tau_s for f in fits]), 3),
        "gain": _round(_median([f.gain for f in fits]), 4),
        "rate_limited": rate_limited,
        "ramp_w_per_s": _round(_median(ramps), 1) if rate_limited else None,
        "settled": all(f.settled for f in fits) if fits else False,
        "r2_min": _round(min((f.r2 for f in fits), default=None), 4),
    }
    ratios: list[float] = []
    delays: list[float] = []
    for s in good:
        if s.grid is not None and s.ess is not None and s.ess.gain != 0.0:
            ratios.append(s.grid.gain / -s.ess.gain)
            delays.append(s.grid.dead_time_s - s.ess.dead_time_s)
    ratio = _median(ratios)
    verdict, why = meter_verdict(ratio)
    meter = {
        "sees_step": verdict is MeterVerdict.OK,
        "verdict": verdict.value,
        "detail": why,
        "ratio": _round(ratio, 3),
        "sign": None if ratio is None else ("ok" if ratio > 0 else "reversed"),
        "delay_after_inverter_s": _round(_median(delays), 3),
        "refresh_s": _round(meter_refresh_s, 3),
        "phase": "not checked: the meter profile gives no per-phase readings to the EMS; a third of the step would point to one phase",
    }
    return {"inverter": inverter, "meter": meter}


def _round(x: float | None, nd: int) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, nd)


def suggested_config(summary: Mapping[str, object]) -> tuple[dict[str, float], tuple[str, ...]]:
    """(dotted key -> value, YAML lines with comments) the measurement suggests."""
    inv = summary.get("inverter")
    met = summary.get("meter")
    inv = inv if isinstance(inv, Mapping) else {}
    met = met if isinstance(met, Mapping) else {}
    keys: dict[str, float] = {}
    control: list[str] = []
    comments: list[str] = []
    tau, dead, ramp, gain = inv.get("tau_s"), inv.get("dead_time_s"), inv.get("ramp_w_per_s"), inv.get("gain")
    if isinstance(tau, float):
        keys["control.inverter_tau_s"] = round(tau, 2)
        control.append(f"  inverter_tau_s: {tau:.2f}  # measured time constant (used by law: predictive)")
    refresh = met.get("refresh_s")
    if isinstance(refresh, float) and refresh > 0:
        keys["control.meter_age_s"] = round(min(refresh / 2.0, 10.0), 2)
        control.append(f"  meter_age_s: {min(refresh / 2.0, 10.0):.2f}  # half the meter's measured refresh period of {refresh:.2f} s")
    if isinstance(ramp, float):
        keys["control.ramp_w_per_s"] = round(ramp)
        control.append(f"  ramp_w_per_s: {ramp:.0f}  # the inverter's own slew: a faster command only winds the law up")
    if isinstance(dead, float):
        comments.append(f"# dead time {dead:.2f} s (no config key: the adaptive law identifies it online)")
    if isinstance(gain, float) and not 0.9 <= gain <= 1.1:
        comments.append(f"# gain {gain:.3f}: the inverter does not deliver what it is commanded; check its own limits and settings")
    verdict = met.get("verdict")
    if verdict not in (None, MeterVerdict.OK.value, MeterVerdict.UNKNOWN.value):
        comments.append(f"# meter: {met.get('detail')}; fix this before going live")
    lines = (*comments, *(("control:", *control) if control else ()))
    return keys, tuple(lines)
