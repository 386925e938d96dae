"""REST API history from the real SQLite store (issue 6) over real HTTP: paging, minutes, events, 503."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from api.server import ApiServer
from api.sources import StoreSource
from config import parse_config
from config.store import StoreConfig
from ems.clock import SimClock
from ems.context import EMSContext
from ems.model import Mode, Quantity, State
from interfaces.store import Store
from main import build_services
from tests.helpers.api import RunningApi, api_config, running_api
from tests.helpers.context import feed, publish

SECONDS = 180


def _store(ctx: EMSContext, clock: SimClock, path: Path, *, outbox_enabled: bool, **cfg: Any) -> Store:
    return Store(
        cfg=StoreConfig(path=path, **cfg), snapshot=ctx.snapshot, events=ctx.events, counters=ctx.counters, health=ctx.health,
        clock=clock, site_id="t", outbox_enabled=outbox_enabled,
    )  # fmt: skip


@pytest.fixture
def history(tmp_path: Path) -> tuple[SimClock, EMSContext, Path]:
    """Three minutes of 1 Hz samples (grid_power_w = second index) and some events, flushed to SQLite."""
    clock = SimClock()
    ctx = EMSContext(clock=clock, start_mode=Mode.SELF_CONSUMPTION)
    store = _store(ctx, clock, tmp_path / "ems.db", finalize_lag_s=0.0, outbox_enabled=True)
    try:
        for i in range(SECONDS):
            feed(ctx, {Quantity.GRID_POWER_W: float(i), Quantity.SOC_PCT: 50.0})
            publish(ctx, seq=i + 1, setpoint_w=100.0, written_w=0.0, state=State.SELF_CONSUMPTION)
            store.sample_once()
            if i % 10 == 0:
                ctx.events.record("audit", who="op", what="mode", n=i)
            clock.advance(1.0)
        store.flush()
    finally:
        store.close()
    return clock, ctx, tmp_path / "ems.db"


@pytest.fixture
def api(history: tuple[SimClock, EMSContext, Path]) -> Iterator[RunningApi]:
    clock, ctx, db = history
    with running_api(api_config({"max_page_rows": 50}), ctx, clock, store=StoreSource(db, clock)) as running:
        yield running


def _start_ts(clock: SimClock) -> float:
    return clock.wall().timestamp() - SECONDS


def _pages(api: RunningApi, path: str, params: dict[str, Any], cursor: dict[str, str]) -> list[dict[str, Any]]:
    pages = [api.get(path, params=params).json()]
    while any(pages[-1].get(k) is not None for k in cursor.values()):
        nxt = {param: pages[-1][key] for param, key in cursor.items()}
        pages.append(api.get(path, params={**params, **nxt}).json())
        assert len(pages) < 50
    return pages


def test_per_second_history_pages_without_gaps_or_repeats(api: RunningApi, history: tuple[SimClock, EMSContext, Path]) -> None:
    clock = history[0]
    t0 = _start_ts(clock)
    params = {"from_ts": t0, "to_ts": t0 + SECONDS, "fields": ["grid_power_w", "setpoint_w", "written_w"], "limit": 1000}
    pages = _pages(api, "/api/v1/measurements", params, {"from_ts": "next_from_ts"})
    rows = [r for p in pages for r in p["rows"]]
    assert pages[0]["source"] == "store" and len(pages) == 4  # 180 rows, 50 per page (api.max_page_rows)
    assert [r["values"]["grid_power_w"] for r in rows] == [float(i) for i in range(SECONDS)]
    assert all(r["values"]["setpoint_w"] == 100.0 and r["values"]["written_w"] == 0.0 and r["state"] == "SELF_CONSUMPTION" for r in rows)
    assert [r["ts"] for r in rows] == sorted({r["ts"] for r in rows})


def test_to_ts_is_inclusive(api: RunningApi, history: tuple[SimClock, EMSContext, Path]) -> None:
    t0 = _start_ts(history[0])
    rows = api.get("/api/v1/measurements", params={"from_ts": t0 + 10, "to_ts": t0 + 12, "fields": "grid_power_w"}).json()["rows"]
    assert [r["values"]["grid_power_w"] for r in rows] == [10.0, 11.0, 12.0]


def test_per_minute_history_has_mean_min_max(api: RunningApi, history: tuple[SimClock, EMSContext, Path]) -> None:
    t0 = _start_ts(history[0])
    body = api.get(
        "/api/v1/measurements", params={"from_ts": t0, "to_ts": t0 + SECONDS, "fields": "grid_power_w", "resolution": "1m"}
    ).json()
    rows = body["rows"]
    assert body["resolution"] == "1m" and len(rows) >= 2
    first = rows[0]
    assert first["min"]["grid_power_w"] <= first["values"]["grid_power_w"] <= first["max"]["grid_power_w"]
    assert rows[1]["ts"] - rows[0]["ts"] == 60.0


def test_events_come_from_the_store_and_page_by_seq(api: RunningApi) -> None:
    pages = _pages(api, "/api/v1/events", {"kind": "audit", "limit": 7}, {"after_seq": "next_after_seq"})
    events = [e for p in pages for e in p["events"]]
    assert pages[0]["source"] == "store"
    assert [e["data"]["n"] for e in events] == list(range(0, SECONDS, 10))
    assert len({e["seq"] for e in events}) == len(events)
    since = events[5]["seq"]  # a poller's cursor alone (no from_ts) gives what came after it
    later = api.get("/api/v1/events", params={"kind": "audit", "after_seq": since}).json()["events"]
    assert [e["data"]["n"] for e in later] == [e["data"]["n"] for e in events[6:]]


def test_metrics_report_the_outbox_from_the_store(api: RunningApi) -> None:
    text = api.get("/metrics").text
    assert "ems_outbox_depth " in text


def test_a_missing_store_file_gives_503_naming_the_store(tmp_path: Path) -> None:
    clock = SimClock()
    ctx = EMSContext(clock=clock)
    with running_api(api_config(), ctx, clock, store=StoreSource(tmp_path / "absent.db", clock)) as api:
        r = api.get("/api/v1/measurements")
        assert r.status_code == 503 and r.json()["error"] == "store_unavailable"
        assert api.get("/api/v1/events").status_code == 503
        assert api.get("/metrics").status_code == 200
    assert ctx.snapshot().counters["api_store_unavailable"] >= 3


def test_main_wires_the_store_reader_into_the_api(tmp_path: Path) -> None:
    cfg = parse_config({"store": {"enabled": True, "path": str(tmp_path / "ems.db")}, "api": {"enabled": True, "port": 0}}, {})
    clock = SimClock()
    ctx = EMSContext(clock=clock)
    services = build_services(cfg, ctx, clock)
    for svc in services:
        svc.start()
    try:
        (api,) = [s for s in services if isinstance(s, ApiServer)]
        body = requests.get(f"{api.url}/api/v1/measurements", timeout=10).json()
        assert body["source"] == "store"
    finally:
        for svc in reversed(services):
            svc.stop(timeout_s=5.0)


def test_audited_writes_reach_the_store_events_table(tmp_path: Path) -> None:
    clock = SimClock()
    ctx = EMSContext(clock=clock, start_mode=Mode.SELF_CONSUMPTION)
    store = _store(ctx, clock, tmp_path / "ems.db", outbox_enabled=False)
    try:
        with running_api(api_config(), ctx, clock, store=StoreSource(tmp_path / "ems.db", clock)) as api:
            assert api.put("/api/v1/mode", "operator", json={"mode": "IDLE"}).status_code == 200
            assert api.put("/api/v1/mode", "viewer", json={"mode": "CHARGE_ONLY"}).status_code == 403
            store.flush()
            events = api.get("/api/v1/events", params={"kind": "audit"}).json()["events"]
    finally:
        store.close()
    assert [(e["data"]["who"], e["data"]["new"], e["data"]["result"]) for e in events] == [
        ("operator-1", "IDLE", "accepted"),
        ("viewer-1", "CHARGE_ONLY", "refused"),
    ]
    assert events[1]["data"]["status"] == 403
