"""Spot price points and the two rules every holder of them follows (pure; no config, no I/O).

A `PricePoint` is a price per kWh over [start, end) in unix seconds, in the tariff's currency (the
`_eur` names hold that currency). Price sources (interfaces/prices/), a push over REST or MQTT and
the store's cache all deliver points; `merge_points` folds a new batch into what is known (the new
batch replaces whatever it overlaps), `check_points` says why a batch cannot be used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["MAX_POINTS", "MAX_PRICE_EUR_PER_KWH", "PricePoint", "check_points", "merge_points", "prune_points"]

MAX_POINTS = 2000  # a push or a fetch of more points than this (20 days of quarters) is refused
MAX_PRICE_EUR_PER_KWH = 100.0  # |price| above this is a unit mistake (EUR/MWh sent as EUR/kWh)
_MAX_POINT_S = 86400  # one point covers a day at most


@dataclass(frozen=True, slots=True)
class PricePoint:
    start_unix_s: int
    end_unix_s: int
    price_eur_per_kwh: float


def check_points(points: Sequence[PricePoint]) -> str | None:
    """None when the batch is usable, else why not (a short sentence naming the point)."""
    if not points:
        return "no points"
    if len(points) > MAX_POINTS:
        return f"at most {MAX_POINTS} points (got {len(points)})"
    prev_end: int | None = None
    for i, p in enumerate(sorted(points, key=lambda p: p.start_unix_s)):
        if not p.start_unix_s < p.end_unix_s:
            return f"point {i}: end must be after start"
        if p.end_unix_s - p.start_unix_s > _MAX_POINT_S:
            return f"point {i}: covers more than a day"
        if not math.isfinite(p.price_eur_per_kwh) or abs(p.price_eur_per_kwh) > MAX_PRICE_EUR_PER_KWH:
            return f"point {i}: price_eur_per_kwh must be finite and within +/-{MAX_PRICE_EUR_PER_KWH:g} (per kWh, not per MWh)"
        if prev_end is not None and p.start_unix_s < prev_end:
            return f"point {i}: overlaps the point before it"
        prev_end = p.end_unix_s
    return None


def merge_points(known: Sequence[PricePoint], new: Sequence[PricePoint]) -> tuple[PricePoint, ...]:
    """`known` with `new` folded in: a known point that overlaps the span of `new` is dropped, so a
    corrected day replaces the old one and a fetch that does not cover tomorrow yet keeps it."""
    if not new:
        return tuple(sorted(known, key=lambda p: p.start_unix_s))
    lo = min(p.start_unix_s for p in new)
    hi = max(p.end_unix_s for p in new)
    kept = [p for p in known if p.end_unix_s <= lo or p.start_unix_s >= hi]
    return tuple(sorted([*kept, *new], key=lambda p: p.start_unix_s))


def prune_points(points: Sequence[PricePoint], *, before_unix_s: float) -> tuple[PricePoint, ...]:
    """Drop points that ended before `before_unix_s` (the past is not planned on)."""
    return tuple(p for p in points if p.end_unix_s > before_unix_s)
