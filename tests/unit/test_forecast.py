"""ems.forecast: profiles and the local PV model on synthetic histories with a known answer."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from config.planner import LoadForecastConfig, PvForecastConfig
from ems.forecast import Series, clear_sky_factor, fit_load_model, fit_pv_model, forecast_errors, forecast_load, forecast_pv

SLOT = 900
PER_DAY = 96
MON = int(datetime(2023, 6, 5, tzinfo=UTC).timestamp())  # a Monday, 00:00 UTC (02:00 Brussels)


def _history(days: int, value: object) -> Series:
    vals = []
    for k in range(days * PER_DAY):
        t = MON + k * SLOT
        vals.append(value(t) if callable(value) else value)
    return Series(MON, SLOT, tuple(vals))


def test_weekday_and_weekend_profiles_are_separate() -> None:
    # 1000 W on weekdays, 200 W at weekends (local days in UTC here)
    def load(t: int) -> float:
        return 200.0 if datetime.fromtimestamp(t, UTC).weekday() >= 5 else 1000.0

    cfg = LoadForecastConfig(smoothing_slots=0, recent_weight=0)
    model = fit_load_model(_history(28, load), cfg=cfg, timezone="UTC")
    assert model is not None
    next_monday = MON + 28 * 86400
    saturday = next_monday + 5 * 86400
    assert forecast_load(model, start_unix_s=next_monday, n_slots=4, cfg=cfg) == pytest.approx((1000.0,) * 4)
    assert forecast_load(model, start_unix_s=saturday, n_slots=4, cfg=cfg) == pytest.approx((200.0,) * 4)


def test_profile_follows_the_time_of_day_and_recent_days_weigh_more() -> None:
    # evening peak 2 kW from 18:00 to 20:00 local; the last week's base load rose from 300 to 500 W
    def load(t: int) -> float:
        h = datetime.fromtimestamp(t, UTC).hour
        base = 500.0 if t >= MON + 21 * 86400 else 300.0
        return 2000.0 if 18 <= h < 20 else base

    cfg = LoadForecastConfig(smoothing_slots=0, recent_weight=0, half_life_days=3)
    model = fit_load_model(_history(28, load), cfg=cfg, timezone="UTC")
    assert model is not None
    f = forecast_load(model, start_unix_s=MON + 28 * 86400, n_slots=PER_DAY, cfg=cfg)
    assert f[18 * 4] == pytest.approx(2000.0)
    assert 400.0 < f[3 * 4] < 500.0  # closer to the recent 500 W than to the old 300 W


def test_recent_deviation_is_carried_and_decays() -> None:
    cfg = LoadForecastConfig(smoothing_slots=0, recent_weight=1.0, recent_decay_h=1.0)
    model = fit_load_model(_history(14, 400.0), cfg=cfg, timezone="UTC")
    assert model is not None
    start = MON + 14 * 86400
    recent = Series(start - 8 * SLOT, SLOT, (1400.0,) * 8)  # the last two hours ran 1 kW above the profile
    f = forecast_load(model, start_unix_s=start, n_slots=16, cfg=cfg, recent=recent)
    assert f[0] == pytest.approx(400.0 + 1000.0 * math.exp(-0.5 / 4))
    assert f[0] > f[4] > f[15] > 400.0


def test_no_history_gives_no_model() -> None:
    empty = Series(MON, SLOT, (None,) * 10)
    assert fit_load_model(empty, cfg=LoadForecastConfig(), timezone="UTC") is None
    assert fit_pv_model(empty, cfg=PvForecastConfig()) is None


def _sunny(t: int) -> float:
    """A clear-day shape for Essen: 6 kW x cos(zenith)."""
    return 6000.0 * clear_sky_factor(t + SLOT / 2, latitude_deg=51.45, longitude_deg=7.01)


def test_local_pv_model_learns_the_yield_and_follows_the_season() -> None:
    cfg = PvForecastConfig(latitude_deg=51.45, longitude_deg=7.01, recent_weight=0)
    model = fit_pv_model(_history(14, _sunny), cfg=cfg)
    assert model is not None
    target = MON + 60 * 86400  # two months later: the clear-sky shape moves with the season
    f = forecast_pv(model, start_unix_s=target, n_slots=PER_DAY, cfg=cfg)
    truth = [_sunny(target + k * SLOT) for k in range(PER_DAY)]
    mae, bias = forecast_errors(f, truth)
    assert mae < 60.0 and abs(bias) < 40.0
    assert f[0] == 0.0  # night


def test_todays_measured_ratio_scales_the_next_hours() -> None:
    cfg = PvForecastConfig(recent_weight=1.0, recent_decay_h=8.0)
    model = fit_pv_model(_history(14, _sunny), cfg=cfg)
    assert model is not None
    day = MON + 14 * 86400
    noon = day + 48 * SLOT
    recent = Series(noon - 8 * SLOT, SLOT, tuple(0.5 * _sunny(noon - (8 - k) * SLOT) for k in range(8)))  # a hazy day: half
    hazy = forecast_pv(model, start_unix_s=noon, n_slots=4, cfg=cfg, recent=recent)
    clear = forecast_pv(model, start_unix_s=noon, n_slots=4, cfg=cfg)
    assert all(0.45 < h / c < 0.6 for h, c in zip(hazy, clear, strict=True))


def test_forecast_errors() -> None:
    assert forecast_errors([1.0, 3.0], [2.0, 2.0]) == (1.0, 0.0)
    assert forecast_errors([3.0, 3.0], [1.0, 2.0]) == (1.5, 1.5)
