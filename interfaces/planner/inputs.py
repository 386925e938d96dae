"""Pure pieces of the planner thread: what to plan on and what to call the outcome (no I/O, no clock).

- `history_series`: the store's quarter-hour rows -> regular `Series` of load and PV (None = not measured);
- `cap_per_slot`: an external import cap (monotonic expiry) -> a cap per plan slot;
- `price_state`: the known points -> the planner's state when prices alone decide it (no_prices, stale)
  and the reason, in a few words for the log, the API and the dashboard.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

from ems.forecast import Series
from ems.model import ImportCap
from ems.prices import PricePoint
from ems.tariff import DayAheadState, day_ahead_state
from interfaces.store.query import HistorySlot

__all__ = ["PriceState", "cap_per_slot", "hhmm", "history_series", "price_state"]


def history_series(rows: Sequence[HistorySlot], *, start_unix_s: int, end_unix_s: int, slot_s: int) -> tuple[Series, Series]:
    """(load, pv) over [start, end) in `slot_s` steps; a slot without a row (or without a value) is None."""
    n = max(0, (end_unix_s - start_unix_s) // slot_s)
    load: list[float | None] = [None] * n
    pv: list[float | None] = [None] * n
    for r in rows:
        k = (r.start_ts - start_unix_s) // slot_s
        if 0 <= k < n:
            load[k], pv[k] = r.load_w, r.pv_w
    return Series(start_unix_s, slot_s, tuple(load)), Series(start_unix_s, slot_s, tuple(pv))


def cap_per_slot(
    cap: ImportCap | None, *, now_s: float, now_unix_s: float, start_unix_s: int, n_slots: int, slot_s: int
) -> tuple[float | None, ...] | None:
    """The cap in force in each slot (None: no cap); a slot that starts before the cap lapses is capped."""
    if cap is None or not cap.active(now_s):
        return None
    until_unix_s = math.inf if math.isinf(cap.expires_at_s) else now_unix_s + (cap.expires_at_s - now_s)
    return tuple(cap.power_w if start_unix_s + k * slot_s < until_unix_s else None for k in range(n_slots))


def hhmm(t_unix_s: float, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(t_unix_s, tz).strftime("%Y-%m-%d %H:%M")


@dataclass(frozen=True, slots=True)
class PriceState:
    state: str  # ok | stale | no_prices
    reason: str
    known_until_unix_s: int | None


def price_state(
    points: Sequence[PricePoint],
    *,
    now_unix_s: float,
    tz: ZoneInfo,
    publish_local_time: time,
    source: str,
    source_error: str | None,
) -> PriceState:
    """What the known prices allow: ok (today and tomorrow, or tomorrow not due yet), stale (tomorrow is
    late: plan on what is left of today) or no_prices (nothing covers now)."""
    st = day_ahead_state(points, now_unix_s=now_unix_s, tz=tz, publish_local_time=publish_local_time)
    until = st.known_until_unix_s
    failing = f"; the {source} source fails: {source_error}" if source_error else ""
    if st.state is DayAheadState.MISSING:
        if until is None:
            what = "no prices pushed yet" if source == "push" and not points else "no price for now"
            return PriceState("no_prices", f"{what}{failing}", None)
        return PriceState("no_prices", f"day-ahead prices missing: known only until {hhmm(until, tz)}{failing}", until)
    if st.state is DayAheadState.LATE and until is not None:
        tomorrow = datetime.fromtimestamp(until, tz).date()
        return PriceState(
            "stale",
            f"day-ahead prices for {tomorrow} late (due {publish_local_time:%H:%M}): planning until {hhmm(until, tz)}{failing}",
            until,
        )
    note = "tomorrow's prices not due yet" if st.state is DayAheadState.AWAITING else "today and tomorrow known"
    return PriceState("ok", f"{note}; prices until {hhmm(until or now_unix_s, tz)}{failing}", until)


def utc_iso(t_unix_s: float) -> str:
    return datetime.fromtimestamp(t_unix_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
