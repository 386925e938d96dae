"""Load and PV forecasts from the site's own history (pure; config in config/planner.py).

- Load: weekday and weekend profiles per local time of day, each a weighted mean of the last
  `history_days` days (a day's weight halves every `half_life_days`), smoothed over neighbouring
  slots; the last hours' deviation from the profile is carried into the next hours and decays.
- PV (no internet): "clear-sky shape x recent yield". Per UTC slot of day, the yield factor is
  sum(w x measured) / sum(w x clear sky) over the recent days, so orientation, shading, the
  installed power and the typical weather of the season are in it; the forecast is that factor x
  the clear-sky value of the target day (the shape follows the season). Without coordinates the
  clear-sky value is 1 (a weighted mean of recent days). Today's measured ratio to the forecast
  is carried into the next hours and decays.

History comes in as `Series` (regular slots, None = no data); the planner thread (or the benchmark)
fits a model once a day or so and predicts at every re-plan.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from config.planner import LoadForecastConfig, PvForecastConfig

__all__ = [
    "LoadModel",
    "PvModel",
    "Series",
    "clear_sky_factor",
    "fit_load_model",
    "fit_pv_model",
    "forecast_errors",
    "forecast_load",
    "forecast_pv",
]

DAY_S = 86400


@dataclass(frozen=True, slots=True)
class Series:
    """Regular slots from `start_unix_s`: the mean power over each slot, None where nothing was measured."""

    start_unix_s: int
    slot_s: int
    values_w: tuple[float | None, ...]

    @property
    def end_unix_s(self) -> int:
        return self.start_unix_s + self.slot_s * len(self.values_w)

    def tail(self, n: int) -> Series:
        k = max(0, len(self.values_w) - n)
        return Series(self.start_unix_s + k * self.slot_s, self.slot_s, self.values_w[k:])


@dataclass(frozen=True, slots=True)
class LoadModel:
    slot_s: int
    timezone: str
    weekday_w: tuple[float, ...]  # per local slot of day
    weekend_w: tuple[float, ...]
    fitted_until_unix_s: int


@dataclass(frozen=True, slots=True)
class PvModel:
    slot_s: int
    yield_w: tuple[float, ...]  # per UTC slot of day: W per unit of clear-sky factor
    latitude_deg: float | None
    longitude_deg: float | None
    peak_w: float | None
    fitted_until_unix_s: int


def _local_slot(t_unix_s: int, slot_s: int, tz: ZoneInfo) -> tuple[int, bool]:
    local = datetime.fromtimestamp(t_unix_s, tz)
    return (local.hour * 3600 + local.minute * 60 + local.second) // slot_s, local.weekday() >= 5


def _smooth(profile: list[float], k: int) -> tuple[float, ...]:
    n = len(profile)
    if k <= 0:
        return tuple(profile)
    return tuple(sum(profile[(i + j) % n] for j in range(-k, k + 1)) / (2 * k + 1) for i in range(n))


def _day_weight(age_s: float, half_life_days: float) -> float:
    return math.pow(0.5, age_s / DAY_S / half_life_days)


def fit_load_model(history: Series, *, cfg: LoadForecastConfig, timezone: str) -> LoadModel | None:
    """Weekday/weekend profiles from the last `cfg.history_days` of `history` (None: no data at all)."""
    tz = ZoneInfo(timezone)
    per_day = DAY_S // history.slot_s
    end = history.end_unix_s
    first = max(0, len(history.values_w) - cfg.history_days * per_day)
    acc = {False: [0.0] * per_day, True: [0.0] * per_day}
    wsum = {False: [0.0] * per_day, True: [0.0] * per_day}
    for i in range(first, len(history.values_w)):
        v = history.values_w[i]
        if v is None or not math.isfinite(v):
            continue
        t = history.start_unix_s + i * history.slot_s
        q, weekend = _local_slot(t, history.slot_s, tz)
        q = min(q, per_day - 1)
        w = _day_weight(end - t, cfg.half_life_days)
        acc[weekend][q] += w * v
        wsum[weekend][q] += w
    total_w = sum(wsum[False]) + sum(wsum[True])
    if total_w == 0:
        return None
    all_mean = (sum(acc[False]) + sum(acc[True])) / total_w
    profiles = {}
    for kind in (False, True):
        other = not kind
        prof = []
        for q in range(per_day):
            if wsum[kind][q] > 0:
                prof.append(acc[kind][q] / wsum[kind][q])
            elif wsum[other][q] > 0:
                prof.append(acc[other][q] / wsum[other][q])
            else:
                prof.append(all_mean)
        profiles[kind] = _smooth(prof, cfg.smoothing_slots)
    return LoadModel(history.slot_s, timezone, profiles[False], profiles[True], end)


def _recent_deviation(recent: Series | None, predict: Sequence[float], n_back: int) -> float | None:
    if recent is None:
        return None
    vals = recent.values_w[-n_back:]
    pairs = [(v, p) for v, p in zip(vals, predict[-len(vals) :], strict=False) if v is not None]
    if not pairs:
        return None
    return sum(v - p for v, p in pairs) / len(pairs)


def _load_profile_at(model: LoadModel, t_unix_s: int, tz: ZoneInfo) -> float:
    q, weekend = _local_slot(t_unix_s, model.slot_s, tz)
    prof = model.weekend_w if weekend else model.weekday_w
    return prof[min(q, len(prof) - 1)]


def forecast_load(
    model: LoadModel, *, start_unix_s: int, n_slots: int, cfg: LoadForecastConfig, recent: Series | None = None
) -> tuple[float, ...]:
    """Mean load per slot from `start_unix_s`. `recent`: the measured slots just before the start (the last hours)."""
    tz = ZoneInfo(model.timezone)
    base = [_load_profile_at(model, start_unix_s + k * model.slot_s, tz) for k in range(n_slots)]
    dev = None
    if recent is not None and recent.values_w and cfg.recent_weight > 0:
        back = max(1, int(2 * 3600 // model.slot_s))
        r = recent.tail(back)
        before = [_load_profile_at(model, r.start_unix_s + k * r.slot_s, tz) for k in range(len(r.values_w))]
        dev = _recent_deviation(r, before, back)
    tau_slots = cfg.recent_decay_h * 3600 / model.slot_s
    out = []
    for k, b in enumerate(base):
        v = b + (cfg.recent_weight * dev * math.exp(-(k + 0.5) / tau_slots) if dev is not None else 0.0)
        out.append(max(0.0, v))
    return tuple(out)


def clear_sky_factor(t_unix_s: float, *, latitude_deg: float, longitude_deg: float) -> float:
    """Cosine of the solar zenith angle (0 at night) at `t_unix_s`: the shape of a clear day (no weather)."""
    tm = time.gmtime(t_unix_s)  # a conversion, not a clock read
    g = 2.0 * math.pi / 365.0 * (tm.tm_yday - 1.0 + (t_unix_s % DAY_S) / DAY_S)
    decl = 0.006918 - 0.399912 * math.cos(g) + 0.070257 * math.sin(g) - 0.006758 * math.cos(2 * g) + 0.000907 * math.sin(2 * g)
    eot_min = 229.18 * (
        0.000075 + 0.001868 * math.cos(g) - 0.032077 * math.sin(g) - 0.014615 * math.cos(2 * g) - 0.040849 * math.sin(2 * g)
    )
    utc_min = (t_unix_s % DAY_S) / 60.0
    solar_min = utc_min + 4.0 * longitude_deg + eot_min
    hour_angle = math.radians(solar_min / 4.0 - 180.0)
    lat = math.radians(latitude_deg)
    cos_z = math.sin(lat) * math.sin(decl) + math.cos(lat) * math.cos(decl) * math.cos(hour_angle)
    return max(0.0, cos_z)


def _cs(t_mid_s: float, lat: float | None, lon: float | None) -> float:
    if lat is None or lon is None:
        return 1.0
    return clear_sky_factor(t_mid_s, latitude_deg=lat, longitude_deg=lon)


def fit_pv_model(history: Series, *, cfg: PvForecastConfig) -> PvModel | None:
    """Yield per UTC slot of day over the last `cfg.history_days` days (None: no data at all)."""
    lat, lon = cfg.latitude_deg, cfg.longitude_deg
    per_day = DAY_S // history.slot_s
    end = history.end_unix_s
    first = max(0, len(history.values_w) - cfg.history_days * per_day)
    num = [0.0] * per_day
    den = [0.0] * per_day
    raw = [0.0] * per_day
    wsum = [0.0] * per_day
    seen = False
    for i in range(first, len(history.values_w)):
        v = history.values_w[i]
        if v is None or not math.isfinite(v):
            continue
        seen = True
        t = history.start_unix_s + i * history.slot_s
        q = (t % DAY_S) // history.slot_s
        w = _day_weight(end - t, cfg.half_life_days)
        c = _cs(t + history.slot_s / 2, lat, lon)
        num[q] += w * max(0.0, v)
        den[q] += w * c
        raw[q] += w * max(0.0, v)
        wsum[q] += w
    if not seen:
        return None
    yield_w = []
    for q in range(per_day):
        if den[q] > 1e-3 * max(wsum[q], 1e-12):
            yield_w.append(num[q] / den[q])
        else:  # the sun is (nearly) down in this slot on the recent days: no shape to scale
            yield_w.append(0.0 if lat is not None else (raw[q] / wsum[q] if wsum[q] > 0 else 0.0))
    return PvModel(history.slot_s, tuple(yield_w), lat, lon, cfg.peak_w, end)


def _pv_base_at(model: PvModel, t_unix_s: int) -> float:
    q = (t_unix_s % DAY_S) // model.slot_s
    v = model.yield_w[q] * _cs(t_unix_s + model.slot_s / 2, model.latitude_deg, model.longitude_deg)
    return min(v, model.peak_w) if model.peak_w is not None else v


def forecast_pv(
    model: PvModel, *, start_unix_s: int, n_slots: int, cfg: PvForecastConfig, recent: Series | None = None
) -> tuple[float, ...]:
    """Mean PV power per slot from `start_unix_s`. `recent`: today's measured slots just before the start."""
    base = [_pv_base_at(model, start_unix_s + k * model.slot_s) for k in range(n_slots)]
    ratio = None
    if recent is not None and recent.values_w and cfg.recent_weight > 0:
        r = recent.tail(max(1, int(2 * 3600 // model.slot_s)))
        meas = pred = 0.0
        for k, v in enumerate(r.values_w):
            if v is None:
                continue
            meas += max(0.0, v)
            pred += _pv_base_at(model, r.start_unix_s + k * r.slot_s)
        scale_w = model.peak_w or max(model.yield_w, default=0.0)
        if scale_w > 0 and pred >= 0.05 * scale_w * len(r.values_w):  # enough sun in the window to judge the day
            ratio = min(max(meas / pred, 0.2), 2.5)
    tau_slots = cfg.recent_decay_h * 3600 / model.slot_s
    out = []
    for k, b in enumerate(base):
        f = 1.0 + (cfg.recent_weight * (ratio - 1.0) * math.exp(-(k + 0.5) / tau_slots) if ratio is not None else 0.0)
        v = max(0.0, b * f)
        out.append(min(v, model.peak_w) if model.peak_w is not None else v)
    return tuple(out)


def forecast_errors(forecast_w: Sequence[float], actual_w: Sequence[float]) -> tuple[float, float]:
    """(MAE, bias = mean(forecast - actual)) in W over the pairs given."""
    n = min(len(forecast_w), len(actual_w))
    if n == 0:
        return 0.0, 0.0
    diffs = [forecast_w[i] - actual_w[i] for i in range(n)]
    return sum(abs(d) for d in diffs) / n, sum(diffs) / n
