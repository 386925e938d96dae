"""ems.tariff and config.tariff: formulas on hand-computed examples, time-of-use windows, resampling, day-ahead state."""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from config.tariff import PriceFormula, TariffConfig, TariffSide
from ems.tariff import DayAheadState, PricePoint, apply_formula, day_ahead_state, side_price, slot_prices, spot_per_slot

BRU = ZoneInfo("Europe/Brussels")
H = 3600


def unix(*args: int, tz: Any = UTC) -> int:
    return int(datetime(*args, tzinfo=tz).timestamp())  # type: ignore[misc]


ISSUE_TARIFF: dict[str, Any] = {
    "timezone": "Europe/Brussels",
    "import_price": {"kind": "dynamic", "formula": {"adder_eur_per_kwh": 0.14, "vat_pct": 6}},
    "export_price": {"kind": "dynamic", "formula": {"adder_eur_per_kwh": -0.01}},
    "source": {"kind": "csv", "path": "prices.csv"},
}


@pytest.mark.parametrize(
    ("spot", "imp", "exp"),
    [(0.10, 1.06 * 0.24, 0.09), (0.0, 1.06 * 0.14, -0.01), (-0.05, 1.06 * 0.09, -0.06), (-0.12, 1.06 * 0.02, -0.13)],
)
def test_the_issue_formula(spot: float, imp: float, exp: float) -> None:
    """import = 1.06 x (spot + 0.14), export = spot - 0.01, negative spot prices pass through."""
    cfg = TariffConfig.model_validate(ISSUE_TARIFF)
    assert apply_formula(spot, cfg.import_price.formula) == pytest.approx(imp)
    assert apply_formula(spot, cfg.export_price.formula) == pytest.approx(exp)


def test_floor_and_ceiling_clamp_after_vat() -> None:
    f = PriceFormula(spot_factor=1.0, adder_eur_per_kwh=0.0, vat_pct=20.0, floor_eur_per_kwh=0.0, ceiling_eur_per_kwh=0.5)
    assert apply_formula(-0.10, f) == 0.0
    assert apply_formula(0.25, f) == pytest.approx(0.30)
    assert apply_formula(1.00, f) == 0.5


def test_spot_factor_scales_before_fees() -> None:
    f = PriceFormula(spot_factor=0.9, adder_eur_per_kwh=0.1, vat_pct=10.0)
    assert apply_formula(0.2, f) == pytest.approx((0.18 + 0.1) * 1.1)


def test_fixed_and_zero_sides() -> None:
    fixed = TariffSide(kind="fixed", price_eur_per_kwh=0.31)  # type: ignore[arg-type]
    zero = TariffSide(kind="zero")  # type: ignore[arg-type]
    assert side_price(fixed, at_unix_s=0, spot_eur_per_kwh=None, tz=BRU) == 0.31
    assert side_price(zero, at_unix_s=0, spot_eur_per_kwh=0.5, tz=BRU) == 0.0


TOU = TariffSide.model_validate(
    {
        "kind": "time_of_use",
        "price_eur_per_kwh": 0.30,
        "windows": [
            {"start": "22:00", "end": "06:00", "days": ["mon", "tue", "wed", "thu", "fri"], "price_eur_per_kwh": 0.20},
            {"start": "00:00", "end": "00:00", "days": ["sat", "sun"], "price_eur_per_kwh": 0.15},
            {"start": "17:00", "end": "20:00", "price_eur_per_kwh": 0.45},
        ],
    }
)


@pytest.mark.parametrize(
    ("local", "price"),
    [
        (datetime(2023, 6, 5, 23, 0), 0.20),  # Monday night
        (datetime(2023, 6, 6, 5, 45), 0.20),  # Tuesday early: window started Monday
        (datetime(2023, 6, 6, 6, 0), 0.30),  # end is exclusive
        (datetime(2023, 6, 6, 18, 0), 0.45),  # peak window, every day
        (datetime(2023, 6, 10, 18, 0), 0.15),  # Saturday: the all-day weekend window comes first
        (datetime(2023, 6, 12, 3, 0), 0.30),  # Monday 03:00: that night began on Sunday, not one of the night window's days
    ],
)
def test_time_of_use_windows(local: datetime, price: float) -> None:
    at = local.replace(tzinfo=BRU).timestamp()
    assert side_price(TOU, at_unix_s=at, spot_eur_per_kwh=None, tz=BRU) == price


def test_time_of_use_follows_local_time_across_dst() -> None:
    night = TariffSide.model_validate(
        {"kind": "time_of_use", "price_eur_per_kwh": 0.3, "windows": [{"start": "01:00", "end": "02:00", "price_eur_per_kwh": 0.1}]}
    )
    # 26 March 2023: 01:00 CET = 00:00 UTC; 27 March: 01:00 CEST = 23:00 UTC the day before
    assert side_price(night, at_unix_s=unix(2023, 3, 26, 0, 30), spot_eur_per_kwh=None, tz=BRU) == 0.1
    assert side_price(night, at_unix_s=unix(2023, 3, 26, 23, 30), spot_eur_per_kwh=None, tz=BRU) == 0.1
    assert side_price(night, at_unix_s=unix(2023, 3, 27, 0, 30), spot_eur_per_kwh=None, tz=BRU) == 0.3


def test_hourly_prices_fill_four_quarters_and_gaps_are_none() -> None:
    t0 = unix(2023, 6, 1)
    pts = [PricePoint(t0, t0 + H, 0.10), PricePoint(t0 + H, t0 + 2 * H, 0.20), PricePoint(t0 + 3 * H, t0 + 4 * H, 0.40)]
    got = spot_per_slot(pts, start_unix_s=t0, n_slots=16, slot_s=900)
    assert got == (0.10,) * 4 + (0.20,) * 4 + (None,) * 4 + (0.40,) * 4


def test_quarter_prices_and_a_partly_covered_slot() -> None:
    t0 = unix(2023, 6, 1)
    pts = [PricePoint(t0 + 900 * k, t0 + 900 * (k + 1), 0.01 * k) for k in range(3)] + [PricePoint(t0 + 2700, t0 + 3000, 0.9)]
    assert spot_per_slot(pts, start_unix_s=t0, n_slots=4, slot_s=900) == (0.0, 0.01, 0.02, None)


def test_hourly_slots_average_quarter_prices() -> None:
    t0 = unix(2023, 6, 1)
    pts = [PricePoint(t0 + 900 * k, t0 + 900 * (k + 1), v) for k, v in enumerate((0.1, 0.2, 0.3, 0.4))]
    assert spot_per_slot(pts, start_unix_s=t0, n_slots=1, slot_s=3600) == (pytest.approx(0.25),)


def test_slot_prices_end_where_spot_prices_end() -> None:
    cfg = TariffConfig.model_validate(ISSUE_TARIFF)
    t0 = unix(2023, 6, 1)
    sp = slot_prices(cfg, [PricePoint(t0, t0 + H, -0.05)], start_unix_s=t0, n_slots=8, slot_s=900)
    assert sp.known_slots == 4
    assert sp.import_eur_per_kwh[0] == pytest.approx(1.06 * 0.09)
    assert sp.export_eur_per_kwh[3] == pytest.approx(-0.06)
    assert sp.import_eur_per_kwh[4] is None


def test_fixed_tariff_needs_no_spot_prices() -> None:
    cfg = TariffConfig()
    sp = slot_prices(cfg, [], start_unix_s=0, n_slots=3, slot_s=900)
    assert sp.known_slots == 3 and sp.import_eur_per_kwh == (0.30,) * 3 and sp.export_eur_per_kwh == (0.0,) * 3


def _day(start_local: datetime, hours: int = 24) -> list[PricePoint]:
    t0 = int(start_local.replace(tzinfo=BRU).timestamp())
    return [PricePoint(t0 + H * k, t0 + H * (k + 1), 0.1) for k in range(hours)]


def test_day_ahead_state_awaiting_then_late_then_complete() -> None:
    today = _day(datetime(2023, 6, 1))
    tomorrow = _day(datetime(2023, 6, 2))
    pub = time(13, 0)
    morning = datetime(2023, 6, 1, 9, 0, tzinfo=BRU).timestamp()
    afternoon = datetime(2023, 6, 1, 14, 0, tzinfo=BRU).timestamp()
    assert day_ahead_state(today, now_unix_s=morning, tz=BRU, publish_local_time=pub).state is DayAheadState.AWAITING
    late = day_ahead_state(today, now_unix_s=afternoon, tz=BRU, publish_local_time=pub)
    assert late.state is DayAheadState.LATE
    assert late.known_until_unix_s == int(datetime(2023, 6, 2, tzinfo=BRU).timestamp())
    assert day_ahead_state(today + tomorrow, now_unix_s=afternoon, tz=BRU, publish_local_time=pub).state is DayAheadState.COMPLETE


def test_day_ahead_state_missing_today() -> None:
    now = datetime(2023, 6, 1, 9, 0, tzinfo=BRU).timestamp()
    assert day_ahead_state([], now_unix_s=now, tz=BRU, publish_local_time=time(13)).state is DayAheadState.MISSING
    half = _day(datetime(2023, 6, 1), hours=12)
    st = day_ahead_state(half, now_unix_s=now, tz=BRU, publish_local_time=time(13))
    assert st.state is DayAheadState.MISSING and st.known_until_unix_s == int(datetime(2023, 6, 1, 12, tzinfo=BRU).timestamp())


def test_day_ahead_state_on_the_23_hour_dst_day() -> None:
    day = _day(datetime(2023, 3, 26), hours=23)  # spring forward: the market day has 23 hours
    now = datetime(2023, 3, 26, 9, 0, tzinfo=BRU).timestamp()
    assert day_ahead_state(day, now_unix_s=now, tz=BRU, publish_local_time=time(13)).state is DayAheadState.AWAITING


def _errors(model: Any, doc: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as ei:
        model.model_validate(doc)
    return [".".join(str(p) for p in e["loc"]) + ": " + e["msg"] for e in ei.value.errors()]


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"import_price": {"kind": "fixed"}}, "price_eur_per_kwh: required when kind is fixed"),
        ({"import_price": {"kind": "time_of_use", "price_eur_per_kwh": 0.3}}, "windows: time_of_use needs"),
        (
            {
                "import_price": {
                    "kind": "fixed",
                    "price_eur_per_kwh": 0.3,
                    "windows": [{"start": "1:00", "end": "2:00", "price_eur_per_kwh": 1}],
                }
            },
            "windows",
        ),
        ({"import_price": {"kind": "dynamic"}}, "source: a dynamic import or export price needs a price source"),
        ({"import_price": {"kind": "fixed", "price_eur_per_kwh": 99}}, "import_price.price_eur_per_kwh"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"source": {"kind": "entsoe", "token": {"env": "T"}, "bidding_zone": "BE"}}, "bidding_zone: a 16-character EIC"),
        ({"source": {"kind": "tibber"}}, "token: required for tibber"),
        ({"source": {"kind": "octopus", "product_code": "A", "tariff_code": "B"}}, "currency: Octopus Agile prices are in GBP"),
        ({"source": {"kind": "csv"}}, "path: required for csv"),
        (
            {
                "export_price": {"kind": "dynamic", "formula": {"floor_eur_per_kwh": 1, "ceiling_eur_per_kwh": 0}},
                "source": {"kind": "csv", "path": "p.csv"},
            },
            "floor_eur_per_kwh: must be <=",
        ),
        ({"import": {"kind": "fixed"}}, "import: Extra inputs are not permitted"),
    ],
)
def test_bad_tariff_config_names_the_key(doc: dict[str, Any], needle: str) -> None:
    assert any(needle in e for e in _errors(TariffConfig, doc)), _errors(TariffConfig, doc)


def test_issue_tariff_is_valid_and_needs_spot() -> None:
    cfg = TariffConfig.model_validate(ISSUE_TARIFF)
    assert cfg.needs_spot and cfg.currency == "EUR"
