"""Pure pieces of the store and uplink: samples, minute aggregates, 5-minute batches, signatures."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType

from hypothesis import given
from hypothesis import strategies as st

from ems.clock import SimClock
from ems.context import EMSContext
from ems.model import Mode, Quantity, State
from interfaces.store import SCHEMA_VERSION, measurements
from interfaces.store.aggregate import (
    FIELDS,
    WINDOW_S,
    MinuteAgg,
    Sample,
    batch_id,
    batch_payload,
    content_digest,
    minute_aggregate,
    sample_from_snapshot,
    window_start,
)
from interfaces.store.schema import _v1
from interfaces.store.store import SampleQueue
from interfaces.uplink import parse_retry_after, sign, timestamp_fresh, verify
from tests.helpers.context import feed, publish
from tests.helpers.uplink import make_store, store_cfg


def test_a_sample_keeps_fresh_readings_and_the_command_only() -> None:
    clock = SimClock()
    ctx = EMSContext(clock=clock, start_mode=Mode.SELF_CONSUMPTION)
    feed(ctx, {Quantity.SOC_PCT: 50.0})
    clock.advance(11.0)
    feed(ctx, {Quantity.GRID_POWER_W: -300.0})
    s = sample_from_snapshot(ctx.snapshot(), wall_ts=1000.0004, stale_after_s=10.0)
    assert s.values == {"grid_power_w": -300.0}  # soc is 11 s old: left out
    assert (s.ts_ms, s.state, s.mode) == (1000000, "STOP", "SELF_CONSUMPTION")
    publish(ctx, seq=1, setpoint_w=800.0, written_w=0.0, state=State.SELF_CONSUMPTION, gate="dry_run")
    s = sample_from_snapshot(ctx.snapshot(), wall_ts=1001.0, stale_after_s=10.0)
    assert s.values == {"grid_power_w": -300.0, "setpoint_w": 800.0, "written_w": 0.0}  # the command, computed and written
    assert s.state == "SELF_CONSUMPTION"


def test_a_minute_has_min_mean_max_last_count_and_state_time() -> None:
    rows = [
        ("SELF_CONSUMPTION", {"grid_power_w": 10.0, "soc_pct": None}),
        ("FAULT", {"grid_power_w": -20.0, "soc_pct": 50.0}),
        ("FAULT", {"grid_power_w": 40.0}),
    ]
    agg = minute_aggregate(60, rows)
    assert agg.n == 3
    assert agg.stats["grid_power_w"] == (-20.0, 10.0, 40.0, 40.0, 3)
    assert agg.stats["soc_pct"] == (50.0, 50.0, 50.0, 50.0, 1)
    assert agg.states == {"SELF_CONSUMPTION": 1, "FAULT": 2}


def test_a_batch_weights_means_by_samples_and_shares_state_time() -> None:
    minutes = [
        MinuteAgg(300, 60, {"grid_power_w": (0.0, 10.0, 20.0, 5.0, 60)}, {"STANDBY": 60}),
        MinuteAgg(360, 20, {"grid_power_w": (-5.0, 50.0, 90.0, 7.0, 20)}, {"FAULT": 20}),
    ]
    b = batch_payload(site_id="s1", installation_id="00ab", start_ts=300, minutes=minutes, events_by_kind={"state": 2, "audit": 1})
    assert b["batch_id"] == f"s1:00ab:1970-01-01T00:05:00Z:{str(b['content_sha256'])[:16]}" and b["window_end"] == "1970-01-01T00:10:00Z"
    assert b["content_sha256"] == content_digest(b) and b["installation_id"] == "00ab"
    assert b["fields"] == {"grid_power_w": {"min": -5.0, "mean": 20.0, "max": 90.0, "last": 7.0, "n": 80}}
    assert b["state_share"] == {"FAULT": 0.25, "STANDBY": 0.75}
    assert (b["minutes"], b["samples"], b["events"]) == (2, 80, 3)


def test_batch_ids_are_stable_and_windows_are_wall_clock_aligned() -> None:
    t = datetime(2026, 5, 1, 12, 7, 31, tzinfo=UTC).timestamp()
    assert window_start(t) == datetime(2026, 5, 1, 12, 5, tzinfo=UTC).timestamp()
    ident = {"installation_id": "0f", "content_sha256": "ab" * 32}
    assert batch_id("site-1", window_start(t), **ident) == batch_id("site-1", window_start(t + 100), **ident)
    assert batch_id("site-1", window_start(t), **ident) == "site-1:0f:2026-05-01T12:05:00Z:" + "ab" * 8


def test_a_batch_id_changes_with_the_installation_and_the_content() -> None:
    minutes = [MinuteAgg(300, 60, {"grid_power_w": (0.0, 10.0, 20.0, 5.0, 60)}, {"STANDBY": 60})]
    other = [MinuteAgg(300, 60, {"grid_power_w": (0.0, 10.5, 20.0, 5.0, 60)}, {"STANDBY": 60})]
    a, b, c, d = (
        batch_payload(site_id="s", installation_id=i, start_ts=300, minutes=m, events_by_kind={})
        for i, m in (("01", minutes), ("02", minutes), ("01", other), ("01", minutes))
    )
    assert a["batch_id"] == d["batch_id"]  # same database, same content: the same id (retries, re-sends)
    assert len({a["batch_id"], b["batch_id"], c["batch_id"]}) == 3  # a replaced database; other content


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_every_time_falls_in_exactly_one_window(t: float) -> None:
    w = window_start(t)
    assert w <= t < w + WINDOW_S and w % WINDOW_S == 0


def test_the_sample_fields_are_the_quantities_plus_the_command() -> None:
    assert set(FIELDS) == {q.value for q in Quantity} | {"setpoint_w", "written_w"}  # schema v2 names (were cmd_computed_w/cmd_written_w)


def test_a_v1_database_is_migrated_to_the_current_schema_with_the_command_under_its_new_names(tmp_path: Path) -> None:
    db = tmp_path / "v1.db"
    conn = sqlite3.connect(db, isolation_level=None)
    _v1(conn)  # as an older build left it: schema v1 only
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO samples (ts_ms, state, mode, grid_power_w, cmd_computed_w, cmd_written_w) VALUES (?, ?, ?, ?, ?, ?)",
        (60_000, "SELF_CONSUMPTION", "SELF_CONSUMPTION", 120.0, 1500.0, 0.0),
    )
    v1_stats = {
        "grid_power_w": [100.0, 110.0, 120.0, 120.0, 2],
        "cmd_computed_w": [1400.0, 1450.0, 1500.0, 1500.0, 2],
        "cmd_written_w": [0.0, 0.0, 0.0, 0.0, 2],
    }
    conn.execute("INSERT INTO minutes (ts, n, stats, states) VALUES (60, 2, ?, ?)", (json.dumps(v1_stats), '{"SELF_CONSUMPTION": 2}'))
    conn.close()

    clock = SimClock()
    store = make_store(store_cfg(db), EMSContext(clock=clock), site_id="s", outbox_enabled=False)
    store.close()

    conn = sqlite3.connect(db)
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    cols = {r[1] for r in conn.execute("PRAGMA table_info(samples)")}
    stats = json.loads(conn.execute("SELECT stats FROM minutes WHERE ts = 60").fetchone()[0])
    price_cols = [r[1] for r in conn.execute("PRAGMA table_info(prices)")]  # v3: the planner's price cache
    command_cols = [r[1] for r in conn.execute("PRAGMA table_info(cloud_commands)")]  # v4: the cloud command log (nonces, acks)
    conn.close()
    assert version == SCHEMA_VERSION == 4
    assert price_cols == ["start_ts", "end_ts", "price_per_kwh", "source", "stored_ms"]
    assert {"command_id", "nonce", "result", "event_seq", "batch_id"} <= set(command_cols)
    assert {"setpoint_w", "written_w"} <= cols and not {"cmd_computed_w", "cmd_written_w"} & cols
    assert stats == {
        "grid_power_w": [100.0, 110.0, 120.0, 120.0, 2],
        "setpoint_w": [1400.0, 1450.0, 1500.0, 1500.0, 2],
        "written_w": [0.0, 0.0, 0.0, 0.0, 2],
    }
    (sample,) = measurements(db, fields=["grid_power_w", "setpoint_w", "written_w"])
    assert (sample["ts"], sample["grid_power_w"], sample["setpoint_w"], sample["written_w"]) == (60.0, 120.0, 1500.0, 0.0)
    (minute,) = measurements(db, resolution="minute", fields=["setpoint_w", "written_w"])
    assert minute["setpoint_w"] == {"min": 1400.0, "mean": 1450.0, "max": 1500.0, "last": 1500.0, "n": 2}
    assert minute["written_w"] == {"min": 0.0, "mean": 0.0, "max": 0.0, "last": 0.0, "n": 2}


def test_a_full_queue_drops_its_oldest_item() -> None:
    q = SampleQueue(3)
    drops = [q.put(Sample(i, "STOP", "IDLE", MappingProxyType({}))) for i in range(5)]
    assert drops == [False, False, False, True, True]
    assert [s.ts_ms for s in q.drain()] == [2, 3, 4] and len(q) == 0


def test_a_signature_covers_timestamp_and_body() -> None:
    sig = sign(b"k", "1700000000", b"body")
    assert sig.startswith("sha256=") and verify(b"k", "1700000000", b"body", sig)
    assert not verify(b"k", "1700000001", b"body", sig)
    assert not verify(b"k", "1700000000", b"bodY", sig)
    assert not verify(b"other", "1700000000", b"body", sig)
    assert not verify(b"k", "1700000000", b"body", "sha256=\u00e9")


def test_only_a_recent_integer_timestamp_is_fresh() -> None:
    assert timestamp_fresh("1000", now_s=1200.0, max_skew_s=300)
    assert not timestamp_fresh("1000", now_s=1400.0, max_skew_s=300)
    assert not timestamp_fresh("-5", now_s=0.0, max_skew_s=300)
    assert not timestamp_fresh("1e3", now_s=1000.0, max_skew_s=300)


def test_retry_after_is_seconds_or_an_http_date() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("120", now=now) == 120.0
    assert parse_retry_after("Thu, 01 Jan 2026 00:01:30 GMT", now=now) == 90.0
    assert parse_retry_after("Thu, 01 Jan 2026 00:01:30 GMT", now=now + timedelta(hours=1)) == 0.0
    assert parse_retry_after("soon", now=now) is None and parse_retry_after(None, now=now) is None


def test_a_command_envelope_signature_covers_every_field_and_is_not_a_batch_signature() -> None:
    from interfaces.uplink import sign_command, verify_command

    env: dict[str, object] = {"id": "c-1", "nonce": "n" * 32, "issued_at": 100, "expires_at": 700, "kind": "mode", "body": {"mode": "IDLE"}}
    env["signature"] = sign_command(b"k", env)
    assert verify_command(b"k", env) and not verify_command(b"other", env)
    for field, value in (("body", {"mode": "EXTERNAL"}), ("nonce", "m" * 32), ("expires_at", 9999), ("issuer", "x")):
        assert not verify_command(b"k", {**env, field: value}), field
    assert not verify_command(b"k", {**env, "signature": None}) and not verify_command(b"k", {**env, "body": {1, 2}})
    canonical = json.dumps({k: v for k, v in env.items() if k != "signature"}, sort_keys=True, separators=(",", ":"))
    assert env["signature"] != sign(b"k", "", canonical.encode())  # domain-separated from the batch signature


def test_acks_are_part_of_a_batch_and_of_its_digest() -> None:
    minutes = [MinuteAgg(300, 60, {"grid_power_w": (0.0, 10.0, 20.0, 5.0, 60)}, {"STANDBY": 60})]
    plain = batch_payload(site_id="s", installation_id="01", start_ts=300, minutes=minutes, events_by_kind={})
    ack = {"command_id": "c-1", "result": "accepted", "message": "", "event_seq": 7, "received_ms": 1}
    acked = batch_payload(site_id="s", installation_id="01", start_ts=300, minutes=minutes, events_by_kind={}, acks=[ack])
    assert plain["schema"] == acked["schema"] == "ems.batch/3" and plain["acks"] == [] and acked["acks"] == [ack]
    assert plain["batch_id"] != acked["batch_id"] and acked["content_sha256"] == content_digest(acked)
