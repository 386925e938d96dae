"""The SQLite store on a real file: schema, samples, minutes, events, outbox bound, retention,
threads with a concurrent read-only reader, restart."""

from __future__ import annotations

import gzip
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from config import parse_config
from ems.clock import SimClock, SystemClock
from ems.context import EMSContext
from ems.model import Mode, Quantity
from interfaces.store import SCHEMA_VERSION, StoreSampler, StoreWriter, events, measurements, outbox_status
from interfaces.store.schema import open_writer
from main import build_services
from tests.helpers.common import wait_for
from tests.helpers.context import feed
from tests.helpers.uplink import START_WALL, SimSite, make_store, store_cfg


@pytest.fixture
def site(tmp_path: Path) -> Iterator[SimSite]:
    s = SimSite(tmp_path / "ems.db")
    yield s
    s.store.close()


def test_the_database_is_wal_versioned_and_reopens_without_migrating(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "ems.db"
    conn = open_writer(db)
    conn.close()
    ro = sqlite3.connect(db)
    assert ro.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert ro.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {r[0] for r in ro.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"samples", "minutes", "events", "outbox", "meta"} <= tables
    ro.close()
    open_writer(db).close()  # second open: nothing to migrate, no error


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "ems.db"
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(RuntimeError, match="newer"):
        open_writer(db)


def test_a_missing_field_column_is_added_when_opening(tmp_path: Path) -> None:
    db = tmp_path / "ems.db"
    open_writer(db).close()
    conn = sqlite3.connect(db)
    conn.execute("ALTER TABLE samples DROP COLUMN grid_frequency_hz")  # as if written by an older build
    conn.close()
    open_writer(db).close()
    cols = {r[1] for r in sqlite3.connect(db).execute("PRAGMA table_info(samples)")}
    assert "grid_frequency_hz" in cols


def test_samples_minutes_and_batches_hold_what_the_context_had(site: SimSite) -> None:
    c, ctx, store = site.clock, site.ctx, site.store
    feed(ctx, {Quantity.SOC_PCT: 40.0}, at_s=c.monotonic())  # only this once: goes stale
    for i in range(600):  # ten minutes, 1 Hz, grid = second of the minute
        feed(ctx, {Quantity.GRID_POWER_W: float(i % 60)}, at_s=c.monotonic())
        store.sample_once()
        c.advance(1.0)
    store.flush()
    t0 = START_WALL.timestamp()
    rows = measurements(store.path, from_ts=t0, to_ts=t0 + 20, fields=["grid_power_w", "soc_pct"])
    assert [r["grid_power_w"] for r in rows] == [float(i) for i in range(21)]  # bounds inclusive at both ends: t0 .. t0 + 20
    assert [r["ts"] for r in measurements(store.path, from_ts=t0 + 5, to_ts=t0 + 5)] == [t0 + 5]
    assert rows[0]["soc_pct"] == 40.0 and rows[15]["soc_pct"] is None  # stale after stale_after_s (10 s)
    assert rows[0]["state"] == "STOP" and rows[0]["mode"] == "SELF_CONSUMPTION"
    mins = measurements(store.path, resolution="minute", fields=["grid_power_w"])
    assert len(mins) == 9  # the tenth minute closes only after finalize_lag_s
    assert mins[0]["grid_power_w"] == {"min": 0.0, "mean": 29.5, "max": 59.0, "last": 59.0, "n": 60}
    assert mins[0]["n"] == 60 and mins[0]["states"] == {"STOP": 60}
    assert len(measurements(store.path, limit=5, newest_first=True)) == 5
    with pytest.raises(ValueError, match="unknown field"):
        measurements(store.path, fields=["nope_w"])
    body = store._conn.execute("SELECT body FROM outbox ORDER BY id LIMIT 1").fetchone()[0]
    batch = json.loads(gzip.decompress(body))
    assert batch["batch_id"] == f"site-t:{store.installation_id}:2026-03-01T00:00:00Z:{batch['content_sha256'][:16]}"
    assert batch["samples"] == 300 and batch["minutes"] == 5
    assert batch["fields"]["grid_power_w"]["mean"] == 29.5 and batch["state_share"] == {"STOP": 1.0}
    assert outbox_status(store.path, now_ts=c.wall().timestamp()).depth == 1


def test_a_full_queue_drops_the_oldest_samples_and_counts_them(tmp_path: Path) -> None:
    site = SimSite(tmp_path / "ems.db", queue_max=10)
    for i in range(25):
        feed(site.ctx, {Quantity.GRID_POWER_W: float(i)}, at_s=site.clock.monotonic())
        site.store.sample_once()
        site.clock.advance(1.0)
    site.store.flush()
    kept = [r["grid_power_w"] for r in measurements(site.store.path, fields=["grid_power_w"])]
    site.store.close()
    assert kept == [float(i) for i in range(15, 25)]  # the newest ten
    assert site.ctx.snapshot().counters["store_queue_drops"] == 15


def test_events_and_audit_records_are_stored_with_who_and_what(site: SimSite) -> None:
    site.ctx.requests.request_mode(Mode.CHARGE_ONLY, who="alice", via="rest")
    site.ctx.events.record("fault", causes=["stale:grid_power_w"])
    site.store.flush()
    audit = events(site.store.path, kinds=["audit"])
    assert len(audit) == 1 and audit[0]["data"]["who"] == "alice" and audit[0]["data"]["new"] == "CHARGE_ONLY"  # type: ignore[index]
    assert [e["kind"] for e in events(site.store.path, newest_first=False)] == ["audit", "fault"]
    site.store.flush()
    assert len(events(site.store.path)) == 2  # not written twice


def test_the_outbox_bound_drops_the_oldest_batches_counted(tmp_path: Path) -> None:
    site = SimSite(tmp_path / "ems.db", outbox_max_rows=3)
    site.run(3600, pump=False)
    site.store.flush()
    ids = site.outbox_ids("pending")
    site.store.flush()  # records the drop event
    ev = events(site.store.path, kinds=["uplink_outbox_dropped"])
    site.store.close()
    assert len(ids) == 3 and ":2026-03-01T00:50:00Z:" in ids[-1]  # the newest three of eleven
    assert site.ctx.snapshot().counters["outbox_dropped"] == 8
    assert ev and sum(int(e["data"]["rows"]) for e in ev) == 8  # type: ignore[index, call-overload]


def test_retention_deletes_old_rows_in_small_steps(tmp_path: Path) -> None:
    site = SimSite(tmp_path / "ems.db", retention={"samples_days": 0.01, "step_rows": 10})  # 864 s of samples
    site.run(3600, sample_every_s=10, pump=False)
    site.store.flush()
    before = len(measurements(site.store.path, limit=100000))
    first = site.store.retention_step()
    assert first == {"samples": 10}  # one small step
    while site.store.retention_step():
        pass
    rows = measurements(site.store.path, limit=100000)
    site.store.close()
    assert before == 360 and all(r["ts"] >= site.clock.wall().timestamp() - 864 for r in rows)  # type: ignore[operator]
    assert len(measurements(site.store.path, resolution="minute", limit=1000)) == 59  # minutes are kept longer


def test_retention_by_size_removes_only_aggregated_samples(tmp_path: Path) -> None:
    site = SimSite(tmp_path / "ems.db", retention={"max_db_mb": 1.0, "step_rows": 500})
    site.run(6 * 3600, sample_every_s=1, flush_every_s=300, pump=False)
    site.store.flush()
    used = site.store._used_bytes()
    assert used > 1e6
    while site.store.retention_step():
        pass
    assert site.store._used_bytes() <= 1e6
    first = measurements(site.store.path, limit=1)[0]["ts"]
    site.store.close()
    assert first > START_WALL.timestamp()  # the oldest went first
    assert len(measurements(site.store.path, resolution="minute", limit=1000)) == 6 * 60 - 1


def test_a_restart_continues_without_duplicating_minutes_or_batches(tmp_path: Path) -> None:
    site = SimSite(tmp_path / "ems.db")
    site.run(1200, pump=False)
    site.store.flush()
    before = site.outbox_ids()
    site.store.close()
    again = make_store(store_cfg(tmp_path / "ems.db"), EMSContext(clock=site.clock), site_id="site-t", outbox_enabled=True)
    site.clock.advance(600)
    again.flush()
    ids = [r[0] for r in again._conn.execute("SELECT batch_id FROM outbox ORDER BY id")]
    mins = [r[0] for r in again._conn.execute("SELECT ts FROM minutes ORDER BY ts")]
    again.close()
    assert ids[: len(before)] == before and len(ids) == len(set(ids))
    assert len(mins) == len(set(mins)) == 20


def test_threads_write_while_a_read_only_reader_queries(tmp_path: Path) -> None:
    clock = SystemClock()
    ctx = EMSContext(clock=clock)
    store = make_store(store_cfg(tmp_path / "ems.db", sample_period_s=0.1, flush_interval_s=0.1), ctx, site_id="s", outbox_enabled=False)
    writer = StoreWriter(store=store, health=ctx.health, clock=clock)
    sampler = StoreSampler(store=store, health=ctx.health, clock=clock)
    feed(ctx, {Quantity.SOC_PCT: 61.0})
    writer.start()
    sampler.start()
    try:
        rows = wait_for(lambda: measurements(store.path, fields=["soc_pct"], limit=100), what="samples readable")
        assert rows[0]["soc_pct"] == 61.0
    finally:
        sampler.stop()
        writer.stop()
    assert not writer.is_alive() and not sampler.is_alive()
    snap = ctx.snapshot()
    device = snap.device("store")
    assert device is not None and device.errors_total == 0 and device.last_ok_s is not None
    threads = {t.name: t for t in snap.threads}
    for name in ("store", "store-sampler"):  # both threads serve the device, and both ran
        assert threads[name].devices == ("store",) and threads[name].last_beat_s is not None


def test_main_builds_the_store_and_sender_when_enabled(tmp_path: Path) -> None:
    raw = {
        "store": {"enabled": True, "path": str(tmp_path / "x" / "ems.db")},
        "uplink": {"enabled": True, "url": "https://127.0.0.1:9/b", "token": {"env": "T"}, "hmac_key": {"env": "K"}},
    }
    cfg = parse_config(raw, {"T": "t", "K": "k"})
    clock = SimClock()
    services = build_services(cfg, EMSContext(clock=clock), clock)
    assert [s.name for s in services] == ["store", "store-sampler", "uplink"]
    assert (tmp_path / "x" / "ems.db").exists()
    no_store = build_services(parse_config({}, {}), EMSContext(clock=clock), clock)
    assert [s.name for s in no_store if s.name.startswith(("store", "uplink"))] == []


def test_a_failed_flush_loses_nothing_and_the_next_one_writes_it_all(site: SimSite) -> None:
    other = sqlite3.connect(site.store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock (e.g. a manual sqlite3 session)
    site.store._conn.execute("PRAGMA busy_timeout = 50")
    site.ctx.requests.request_mode(Mode.IDLE, who="bob", via="rest")
    for _ in range(400):
        site.store.sample_once()
        site.clock.advance(1.0)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        site.store.flush()
    other.execute("ROLLBACK")
    other.close()
    result = site.store.flush()
    assert (result.samples, result.events, result.minutes, len(result.batches)) == (400, 1, 6, 1)
    assert len(measurements(site.store.path, limit=1000)) == 400 and len(events(site.store.path)) == 1


def test_events_page_by_row_id(site: SimSite) -> None:
    for i in range(5):
        site.ctx.events.record("limit", n=i)
    site.store.flush()
    first = events(site.store.path, after_id=0, limit=2, newest_first=False)
    rest = events(site.store.path, after_id=int(first[-1]["id"]), limit=10, newest_first=False)  # type: ignore[call-overload]
    assert [e["data"]["n"] for e in first + rest] == [0, 1, 2, 3, 4]  # type: ignore[index]
