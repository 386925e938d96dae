"""Pure pieces of the planner's inputs: price points (merge, checks), pushes through the requests part,
the import cap per slot, the history as regular series, the state prices alone decide."""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

from ems.clock import SimClock
from ems.context import EMSContext
from ems.model import ImportCap
from ems.prices import PricePoint, check_points, merge_points
from interfaces.planner.inputs import cap_per_slot, history_series, price_state
from interfaces.store.query import HistorySlot

H = 3600
TZ = ZoneInfo("Europe/Brussels")
DAY0 = int(datetime(2026, 3, 1, 23, tzinfo=UTC).timestamp())  # 2026-03-02 00:00 Brussels


def _day(start: int, price: float, hours: int = 24) -> list[PricePoint]:
    return [PricePoint(start + i * H, start + (i + 1) * H, price) for i in range(hours)]


def test_a_new_batch_replaces_what_it_overlaps_and_keeps_the_rest() -> None:
    known = merge_points((), _day(DAY0, 0.1, 48))
    merged = merge_points(known, _day(DAY0 + 24 * H, 0.2))
    assert [p.price_eur_per_kwh for p in merged] == [0.1] * 24 + [0.2] * 24
    partial = merge_points(merged, [PricePoint(DAY0 + 2 * H, DAY0 + 2 * H + 900, 0.5)])  # a 15-minute correction drops its hour
    assert len(partial) == 48 and partial[2] == PricePoint(DAY0 + 2 * H, DAY0 + 2 * H + 900, 0.5)


def test_bad_batches_are_refused_with_the_point_named() -> None:
    assert check_points([]) == "no points"
    assert check_points([PricePoint(10, 10, 0.1)]) == "point 0: end must be after start"
    assert check_points([PricePoint(0, 900, 120.0)]).startswith("point 0: price_eur_per_kwh must be finite")  # type: ignore[union-attr]
    assert check_points([PricePoint(0, 900, math.nan)]) is not None
    assert check_points([PricePoint(0, 900, 0.1), PricePoint(600, 1200, 0.1)]) == "point 1: overlaps the point before it"
    assert check_points(_day(DAY0, 0.1)) is None


def test_a_push_is_audited_and_wakes_the_planner_and_a_bad_one_is_refused() -> None:
    ctx = EMSContext(clock=SimClock())
    wake = threading.Event()
    ctx.requests.add_listener(wake)
    bad = ctx.requests.push_prices([PricePoint(0, 900, 999.0)], who="op", via="mqtt")
    assert not bad.accepted and not wake.is_set() and ctx.requests.pushes_since(0) == ()
    ok = ctx.requests.push_prices(_day(DAY0, 0.1), who="op", via="rest")
    assert ok.accepted and wake.is_set() and ok.new == {"points": 24, "from_ts": DAY0, "to_ts": DAY0 + 24 * H}
    (push,) = ctx.requests.pushes_since(0)
    assert push.seq == 1 and push.via == "rest" and ctx.requests.pushes_since(1) == ()
    audits = [(e.data["what"], e.data["result"]) for e in ctx.events.since(0) if e.kind == "audit"]
    assert audits == [("prices", "refused"), ("prices", "accepted")]
    wake.clear()
    ctx.requests.set_import_cap(power_w=4200.0, ttl_s=None, reason="14a", who="dso", via="rest")
    assert wake.is_set()


def test_the_import_cap_applies_to_the_slots_that_start_before_it_lapses() -> None:
    cap = ImportCap(4200.0, 1000.0 + 1800.0, "14a", "dso")  # lapses in 30 minutes (monotonic)
    got = cap_per_slot(cap, now_s=1000.0, now_unix_s=DAY0 + 300, start_unix_s=DAY0, n_slots=4, slot_s=900)
    assert got == (4200.0, 4200.0, 4200.0, None)  # slots at 0, 15 and 30 min start before 35 min
    assert cap_per_slot(ImportCap(1.0, math.inf, "", ""), now_s=0, now_unix_s=0, start_unix_s=0, n_slots=2, slot_s=900) == (1.0, 1.0)
    assert cap_per_slot(cap, now_s=5000.0, now_unix_s=0, start_unix_s=0, n_slots=2, slot_s=900) is None  # lapsed


def test_history_rows_become_regular_series_with_gaps() -> None:
    rows = [HistorySlot(DAY0, 400.0, None, 15), HistorySlot(DAY0 + 1800, 500.0, 20.0, 15)]
    load, pv = history_series(rows, start_unix_s=DAY0, end_unix_s=DAY0 + 2700, slot_s=900)
    assert load.values_w == (400.0, None, 500.0) and pv.values_w == (None, None, 20.0)


def test_the_price_state_says_awaiting_late_and_missing_in_words() -> None:
    pts = _day(DAY0, 0.1)
    kw = {"tz": TZ, "publish_local_time": time(13, 0), "source": "entsoe", "source_error": None}
    assert price_state(pts, now_unix_s=DAY0 + 10 * H, **kw).state == "ok"  # type: ignore[arg-type]
    late = price_state(pts, now_unix_s=DAY0 + 14 * H, **kw)  # type: ignore[arg-type]
    assert late.state == "stale" and late.reason == "day-ahead prices for 2026-03-03 late (due 13:00): planning until 2026-03-03 00:00"
    gone = price_state(pts, now_unix_s=DAY0 + 25 * H, **{**kw, "source_error": "timeout"})  # type: ignore[arg-type]
    assert (gone.state, gone.reason) == ("no_prices", "no price for now; the entsoe source fails: timeout")
    both = price_state(_day(DAY0, 0.1, 48), now_unix_s=DAY0 + 14 * H, **kw)  # type: ignore[arg-type]
    assert both.state == "ok" and both.reason == "today and tomorrow known; prices until 2026-03-04 00:00"
