"""Held-out variants of the shipped year, for checking that a planner change is not tuned to it.

- `shift7`: prices shifted by a week against the household (the same weather and load, other prices);
- `scaled`: the household's load x 1.3 and its PV x 0.8 (another household on the same prices);
- `months`: the prices of each month taken from the month six months away (other seasons' price shapes);
each is a `Year` like `load_year()` gives, so `simulators.schedule.run` runs it unchanged.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from ems.prices import PricePoint
from simulators.schedule.year import Year

__all__ = ["VARIANTS", "variant"]

VARIANTS = ("shared", "shift7", "scaled", "months")
WEEK_S = 7 * 86400


def _shift_prices(year: Year, shift_s: int) -> tuple[PricePoint, ...]:
    """Prices moved `shift_s` later, wrapping at the year's end (the last week's prices come first)."""
    span = year.prices[-1].end_unix_s - year.prices[0].start_unix_s
    t0 = year.prices[0].start_unix_s
    out = [
        PricePoint(
            t0 + (p.start_unix_s - t0 + shift_s) % span,
            t0 + (p.start_unix_s - t0 + shift_s) % span + (p.end_unix_s - p.start_unix_s),
            p.price_eur_per_kwh,
        )
        for p in year.prices
    ]
    return tuple(sorted(out, key=lambda p: p.start_unix_s))


def _month_swap(year: Year) -> tuple[PricePoint, ...]:
    """Each hour gets the price of the same day-of-month and hour six months away (clamped to that month's length)."""
    by_key: dict[tuple[int, int, int], float] = {}
    for p in year.prices:
        d = datetime.fromtimestamp(p.start_unix_s, UTC)
        by_key[(d.month, d.day, d.hour)] = p.price_eur_per_kwh
    out = []
    for p in year.prices:
        d = datetime.fromtimestamp(p.start_unix_s, UTC)
        m = (d.month + 5) % 12 + 1
        day = d.day
        while (m, day, d.hour) not in by_key and day > 1:
            day -= 1
        out.append(PricePoint(p.start_unix_s, p.end_unix_s, by_key.get((m, day, d.hour), p.price_eur_per_kwh)))
    return tuple(out)


def variant(year: Year, name: str) -> Year:
    if name == "shared":
        return year
    if name == "shift7":
        return replace(year, prices=_shift_prices(year, WEEK_S))
    if name == "scaled":
        return replace(year, load_w=tuple(v * 1.3 for v in year.load_w), pv_w=tuple(v * 0.8 for v in year.pv_w))
    if name == "months":
        return replace(year, prices=_month_swap(year))
    raise ValueError(f"unknown variant {name!r} (choose from {', '.join(VARIANTS)})")
