"""The store's price cache (schema v3) and the planner's history query, on a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest

from ems.clock import SimClock
from ems.context import EMSContext
from ems.model import Quantity
from ems.prices import PricePoint
from interfaces.store import load_pv_history, prices
from tests.helpers.context import feed
from tests.helpers.uplink import START_WALL, make_store, store_cfg

T0 = int(START_WALL.timestamp())


def _hours(start: int, values: list[float]) -> list[PricePoint]:
    return [PricePoint(start + 3600 * i, start + 3600 * (i + 1), v) for i, v in enumerate(values)]


def test_cached_prices_survive_a_restart_and_a_new_batch_replaces_what_it_overlaps(tmp_path: Path) -> None:
    db = tmp_path / "ems.db"
    clock = SimClock(start_wall=START_WALL)
    store = make_store(store_cfg(db), EMSContext(clock=clock), site_id="s", outbox_enabled=False)
    store.put_prices(_hours(T0, [0.10, 0.20, 0.30, 0.40]), source="entsoe")
    assert prices(db, from_ts=T0, to_ts=T0 + 4 * 3600) == ()  # queued: written with the next flush
    assert store.flush().prices == 4
    store.put_prices(_hours(T0 + 3600, [0.25, 0.35]), source="push")  # corrects hours 1 and 2
    store.flush()
    store.close()

    store = make_store(store_cfg(db), EMSContext(clock=clock), site_id="s", outbox_enabled=False)  # a restart
    got = prices(db, from_ts=T0, to_ts=T0 + 4 * 3600)
    assert [p.price_eur_per_kwh for p in got] == [0.10, 0.25, 0.35, 0.40]
    assert prices(db, from_ts=T0 + 3 * 3600 + 1, to_ts=T0 + 10 * 3600) == (got[-1],)  # overlapping [from, to)
    store.close()


def test_history_gives_quarter_hour_means_of_load_and_pv_from_the_minutes(tmp_path: Path) -> None:
    clock = SimClock(start_wall=START_WALL)
    ctx = EMSContext(clock=clock)
    store = make_store(store_cfg(tmp_path / "ems.db", finalize_lag_s=0.0), ctx, site_id="s", outbox_enabled=False)
    for i in range(40 * 60):  # 40 minutes at 1 Hz: grid 300 W, battery 200 W discharge, PV 1000 W for the first 20 minutes
        pv = 1000.0 if i < 20 * 60 else 0.0
        feed(ctx, {Quantity.GRID_POWER_W: 300.0, Quantity.ESS_POWER_W: 200.0, Quantity.PV_POWER_W: pv})
        store.sample_once()
        clock.advance(1.0)
        if i % 300 == 299:
            store.flush()
    store.flush()
    rows = load_pv_history(store.path, from_ts=T0, to_ts=T0 + 3600)
    store.close()
    assert [r.start_ts - T0 for r in rows] == [0, 900, 1800]
    got = [(r.load_w, r.pv_w, r.minutes) for r in rows[:2]]
    assert got == [(1500.0, 1000.0, 15), (pytest.approx(500.0 + 1000.0 * 5 / 15), pytest.approx(1000.0 * 5 / 15), 15)]
    assert (rows[2].minutes, rows[2].load_w) == (10, 500.0)  # the last slot is still filling: 10 of its 15 minutes so far
