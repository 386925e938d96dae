"""Tariffs: spot prices in, import and export prices per slot out (pure; config in config/tariff.py).

Price sources (interfaces/prices/) deliver `PricePoint`s: [start, end) in unix seconds and a price
per kWh in the tariff's currency (EUR-named fields hold that currency). `slot_prices` resamples
them to the planner's slots and applies each side's rule; `day_ahead_state` says whether the
next market day is there, due, or late (a missing or late day is a state, never an exception).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from config.tariff import PriceFormula, PriceKind, TariffConfig, TariffSide, TouWindow
from ems.prices import PricePoint

__all__ = [
    "DayAheadState",
    "DayAheadStatus",
    "PricePoint",
    "SlotPrices",
    "apply_formula",
    "day_ahead_state",
    "side_price",
    "slot_prices",
    "spot_per_slot",
    "tou_price",
]

_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class SlotPrices:
    start_unix_s: int
    slot_s: int
    import_eur_per_kwh: tuple[float | None, ...]
    export_eur_per_kwh: tuple[float | None, ...]

    @property
    def known_slots(self) -> int:
        """Number of leading slots whose import and export prices are both known (the plannable horizon)."""
        n = 0
        for imp, exp in zip(self.import_eur_per_kwh, self.export_eur_per_kwh, strict=True):
            if imp is None or exp is None:
                break
            n += 1
        return n


def apply_formula(spot_eur_per_kwh: float, f: PriceFormula) -> float:
    """(spot x spot_factor + adder) x (1 + vat_pct / 100), clamped to [floor, ceiling] when given."""
    p = (spot_eur_per_kwh * f.spot_factor + f.adder_eur_per_kwh) * (1.0 + f.vat_pct / 100.0)
    if f.floor_eur_per_kwh is not None:
        p = max(p, f.floor_eur_per_kwh)
    if f.ceiling_eur_per_kwh is not None:
        p = min(p, f.ceiling_eur_per_kwh)
    return p


def _in_window(w: TouWindow, local: datetime) -> bool:
    start_min = w.start.hour * 60 + w.start.minute
    end_min = w.end.hour * 60 + w.end.minute or 1440
    tod_min = local.hour * 60 + local.minute
    today = _WEEKDAYS[local.weekday()]
    yesterday = _WEEKDAYS[(local.weekday() - 1) % 7]
    days = {d.value for d in w.days}
    if end_min > start_min:
        return today in days and start_min <= tod_min < end_min
    return (today in days and tod_min >= start_min) or (yesterday in days and tod_min < end_min)


def tou_price(side: TariffSide, local: datetime) -> float:
    """Time-of-use price at a local time: the first matching window, else the default."""
    for w in side.windows:
        if _in_window(w, local):
            return w.price_eur_per_kwh
    assert side.price_eur_per_kwh is not None  # validated in config
    return side.price_eur_per_kwh


def side_price(side: TariffSide, *, at_unix_s: float, spot_eur_per_kwh: float | None, tz: ZoneInfo) -> float | None:
    """One side's price at an instant (None: dynamic and no spot price known)."""
    if side.kind is PriceKind.ZERO:
        return 0.0
    if side.kind is PriceKind.FIXED:
        assert side.price_eur_per_kwh is not None
        return side.price_eur_per_kwh
    if side.kind is PriceKind.TIME_OF_USE:
        return tou_price(side, datetime.fromtimestamp(at_unix_s, tz))
    return None if spot_eur_per_kwh is None else apply_formula(spot_eur_per_kwh, side.formula)


def spot_per_slot(points: Sequence[PricePoint], *, start_unix_s: int, n_slots: int, slot_s: int) -> tuple[float | None, ...]:
    """Time-weighted mean spot price per slot; None where the points do not cover the whole slot.

    Hourly prices give four equal quarters; 15-minute prices map one to one; a point longer or
    shorter than a slot is weighted by its overlap. Later points win where two overlap.
    """
    out: list[float | None] = []
    pts = sorted(points, key=lambda p: p.start_unix_s)
    j0 = 0
    for k in range(n_slots):
        a = start_unix_s + k * slot_s
        b = a + slot_s
        while j0 < len(pts) and pts[j0].end_unix_s <= a:
            j0 += 1
        covered: dict[int, tuple[int, float]] = {}
        j = j0
        while j < len(pts) and pts[j].start_unix_s < b:
            p = pts[j]
            lo, hi = max(a, p.start_unix_s), min(b, p.end_unix_s)
            if hi > lo and math.isfinite(p.price_eur_per_kwh):
                covered[lo] = (hi, p.price_eur_per_kwh)
            j += 1
        t, acc = a, 0.0
        for lo in sorted(covered):
            hi, price = covered[lo]
            if lo > t:
                break
            if hi > t:
                acc += (hi - t) * price
                t = hi
        out.append(acc / slot_s if t >= b else None)
    return tuple(out)


def slot_prices(cfg: TariffConfig, points: Sequence[PricePoint], *, start_unix_s: int, n_slots: int, slot_s: int) -> SlotPrices:
    """Import and export price per slot (None where a dynamic side has no spot price yet)."""
    tz = ZoneInfo(cfg.timezone)
    spot = spot_per_slot(points, start_unix_s=start_unix_s, n_slots=n_slots, slot_s=slot_s) if cfg.needs_spot else (None,) * n_slots
    imp: list[float | None] = []
    exp: list[float | None] = []
    for k in range(n_slots):
        at = start_unix_s + k * slot_s
        imp.append(side_price(cfg.import_price, at_unix_s=at, spot_eur_per_kwh=spot[k], tz=tz))
        exp.append(side_price(cfg.export_price, at_unix_s=at, spot_eur_per_kwh=spot[k], tz=tz))
    return SlotPrices(start_unix_s, slot_s, tuple(imp), tuple(exp))


class DayAheadState(StrEnum):
    COMPLETE = "complete"  # today and tomorrow are there
    AWAITING = "awaiting"  # today is there; tomorrow is not due yet (before the publication time)
    LATE = "late"  # tomorrow was due (publication time passed) and is missing
    MISSING = "missing"  # the rest of today is not covered: nothing reliable to plan on


@dataclass(frozen=True, slots=True)
class DayAheadStatus:
    state: DayAheadState
    known_until_unix_s: int | None  # end of the contiguous coverage from now (None: now is not covered)


def _local_midnight_unix_s(day: datetime, tz: ZoneInfo) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC).timestamp())


def day_ahead_state(points: Sequence[PricePoint], *, now_unix_s: float, tz: ZoneInfo, publish_local_time: time) -> DayAheadStatus:
    """Coverage of today and tomorrow (market days in `tz`) by `points`, as of `now_unix_s`."""
    now_local = datetime.fromtimestamp(now_unix_s, tz)
    end_today = _local_midnight_unix_s(now_local + timedelta(days=1), tz)
    end_tomorrow = _local_midnight_unix_s(now_local + timedelta(days=2), tz)
    t = int(now_unix_s)
    for p in sorted(points, key=lambda p: p.start_unix_s):
        if p.end_unix_s <= t:
            continue
        if p.start_unix_s > t:
            break
        t = p.end_unix_s
    known = t if t > now_unix_s else None
    if known is None or known < end_today:
        return DayAheadStatus(DayAheadState.MISSING, known)
    if known >= end_tomorrow:
        return DayAheadStatus(DayAheadState.COMPLETE, known)
    due = now_local.replace(hour=publish_local_time.hour, minute=publish_local_time.minute, second=0, microsecond=0)
    return DayAheadStatus(DayAheadState.LATE if now_local >= due else DayAheadState.AWAITING, known)
