"""History export over real HTTP from a real SQLite store, read back with pyarrow: Parquet and CSV,
1s / 1min / 5min, streamed; the hourly Parquet files with retention; the catalogue endpoints."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from api.sources import StoreSource
from config.store import ExportConfig
from ems.clock import SimClock
from ems.context import EMSContext
from ems.model import Mode, Quantity, State
from interfaces.store.hourly import HourlyExport, hour_path
from tests.helpers.api import RunningApi, api_config, running_api
from tests.helpers.context import feed, publish
from tests.helpers.uplink import make_store, store_cfg

Q = Quantity
T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)  # an hour boundary
SECONDS = 2 * 3600 + 600  # two hours and ten minutes of 1 Hz samples


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[SimClock, EMSContext, Path]:
    """grid_power_w = seconds since T0, soc_pct 50, pv absent; flushed to SQLite with minutes closed."""
    db = tmp_path_factory.mktemp("export") / "ems.db"
    clock = SimClock(start_wall=T0)
    ctx = EMSContext(clock=clock, start_mode=Mode.SELF_CONSUMPTION)
    store = make_store(store_cfg(db, finalize_lag_s=0.0), ctx, site_id="site-x", outbox_enabled=False)
    try:
        for i in range(SECONDS):
            feed(ctx, {Q.GRID_POWER_W: float(i), Q.SOC_PCT: 50.0, Q.ESS_POWER_W: -100.0}, source="meter")
            publish(ctx, seq=i + 1, setpoint_w=-100.0, written_w=-100.0, state=State.SELF_CONSUMPTION)
            store.sample_once()
            clock.advance(1.0)
            if i % 600 == 599:
                store.flush()
        store.flush()
    finally:
        store.close()
    return clock, ctx, db


@pytest.fixture
def api(history: tuple[SimClock, EMSContext, Path]) -> Iterator[RunningApi]:
    clock, ctx, db = history
    with running_api(api_config(), ctx, clock, store=StoreSource(db, clock)) as running:
        yield running


def _parquet(body: bytes) -> pa.Table:
    return pq.read_table(io.BytesIO(body))


def test_a_parquet_export_reads_back_with_utc_times_typed_columns_and_units(api: RunningApi) -> None:
    t0 = T0.timestamp()
    r = api.get("/api/v1/export", params={"from": t0, "to": t0 + 3600, "fields": "grid_power_w,soc_pct", "format": "parquet"})
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/vnd.apache.parquet"
    assert r.headers.get("Transfer-Encoding") == "chunked" and "Content-Length" not in r.headers  # streamed
    assert 'filename="site-001_1s_20260301T100000Z-20260301T110000Z.parquet"' in r.headers["Content-Disposition"]
    t = _parquet(r.content)
    assert t.column_names == ["time_utc", "state", "mode", "grid_power_w", "soc_pct"]
    assert t.schema.field("time_utc").type == pa.timestamp("ms", tz="UTC")
    assert t.schema.field("grid_power_w").type == pa.float64() and t.schema.field("state").type == pa.string()
    assert t.schema.field("grid_power_w").metadata == {b"unit": b"W"} and t.schema.field("soc_pct").metadata == {b"unit": b"%"}
    assert t.num_rows == 3600  # [from, to): the hour, not the first second of the next
    times = t.column("time_utc").to_pylist()
    assert times[0] == T0 and times[-1] == datetime(2026, 3, 1, 10, 59, 59, tzinfo=UTC)
    assert t.column("grid_power_w").to_pylist() == [float(i) for i in range(3600)]
    assert set(t.column("soc_pct").to_pylist()) == {50.0} and set(t.column("state").to_pylist()) == {"SELF_CONSUMPTION"}
    assert t.schema.metadata[b"ems.site_id"] == b"site-001"  # the API config's site.id


def test_iso_times_and_aggregates_at_one_and_five_minutes(api: RunningApi) -> None:
    q = {"from": "2026-03-01T10:00:00Z", "to": "2026-03-01T11:00:00+00:00", "fields": ["grid_power_w", "written_w"]}
    one = _parquet(api.get("/api/v1/export", params={**q, "resolution": "1min"}).content)
    assert one.num_rows == 60 and one.column_names == [
        "time_utc", "samples", "grid_power_w", "grid_power_w_min", "grid_power_w_max", "written_w", "written_w_min", "written_w_max",
    ]  # fmt: skip
    assert one.column("samples").type == pa.int64() and one.column("samples").to_pylist() == [60] * 60
    assert one.column("grid_power_w").to_pylist()[:2] == [29.5, 89.5]
    five = _parquet(api.get("/api/v1/export", params={**q, "resolution": "5min"}).content)
    assert five.num_rows == 12 and five.column("time_utc").to_pylist()[1] == datetime(2026, 3, 1, 10, 5, tzinfo=UTC)
    assert five.column("grid_power_w").to_pylist()[0] == 149.5  # mean of 0..299
    assert (five.column("grid_power_w_min")[0].as_py(), five.column("grid_power_w_max")[0].as_py()) == (0.0, 299.0)
    assert set(five.column("written_w").to_pylist()) == {-100.0}


def test_a_csv_export_has_a_header_and_iso_utc_times(api: RunningApi) -> None:
    t0 = T0.timestamp()
    r = api.get("/api/v1/export", params={"from": t0, "to": t0 + 3, "fields": "grid_power_w,pv_power_w", "format": "csv"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/csv")
    lines = list(csv.reader(io.StringIO(r.text)))
    assert lines == [
        ["time_utc", "state", "mode", "grid_power_w", "pv_power_w"],
        ["2026-03-01T10:00:00.000Z", "SELF_CONSUMPTION", "SELF_CONSUMPTION", "0", ""],
        ["2026-03-01T10:00:01.000Z", "SELF_CONSUMPTION", "SELF_CONSUMPTION", "1", ""],
        ["2026-03-01T10:00:02.000Z", "SELF_CONSUMPTION", "SELF_CONSUMPTION", "2", ""],
    ]


def test_a_long_range_streams_in_several_chunks(api: RunningApi) -> None:
    t0 = T0.timestamp()
    with api.session.get(
        api.url + "/api/v1/export", params={"from": t0, "to": t0 + SECONDS, "format": "csv"}, stream=True, timeout=10
    ) as r:
        sizes = [len(c) for c in r.raw.stream(1 << 20, decode_content=False)]
    assert len(sizes) >= 3  # header, then one block per hour read


def test_bad_queries_are_refused_naming_the_field(api: RunningApi) -> None:
    r = api.get("/api/v1/export", params={"fields": "grid_power_w,nope_w"})
    assert r.status_code == 422 and "nope_w" in r.json()["message"]
    assert api.get("/api/v1/export", params={"resolution": "2min"}).status_code == 422
    assert api.get("/api/v1/export", params={"from": "yesterday"}).status_code == 422
    r = api.get("/api/v1/export", params={"from": 2000.0, "to": 1000.0, "format": "csv"})
    assert r.status_code == 200 and r.text.count("\n") == 1  # an empty range: the header only


def test_without_a_store_the_export_is_503(ctx_and_clock: tuple[EMSContext, SimClock]) -> None:
    ctx, clock = ctx_and_clock
    with running_api(api_config(), ctx, clock) as running:
        r = running.get("/api/v1/export")
    assert r.status_code == 503 and r.json()["error"] == "store_unavailable"


@pytest.fixture
def ctx_and_clock() -> tuple[EMSContext, SimClock]:
    clock = SimClock()
    return EMSContext(clock=clock), clock


# ---- hourly files ---------------------------------------------------------------------------
def test_the_store_writes_one_parquet_file_per_closed_hour_and_removes_old_ones(
    history: tuple[SimClock, EMSContext, Path], tmp_path: Path
) -> None:
    _clock, ctx, db = history
    clock = SimClock(start_wall=datetime(2026, 3, 1, 12, 11, tzinfo=UTC))  # 12:00-12:10 is not closed yet
    cfg = ExportConfig(enabled=True, dir=tmp_path / "export", keep_days=1, lag_s=60)
    exporter = HourlyExport(cfg=cfg, db_path=db, site_id="site-x", health=ctx.health, clock=clock)
    written = exporter.step()
    h10, h11 = (hour_path(cfg.dir, "site-x", int(datetime(2026, 3, 1, h, tzinfo=UTC).timestamp())) for h in (10, 11))
    assert written == [h10, h11]
    assert h10 == tmp_path / "export" / "2026-03-01" / "site-x_20260301T10Z.parquet"
    t = pq.read_table(h11)
    assert t.num_rows == 3600 and t.column("time_utc").to_pylist()[0] == datetime(2026, 3, 1, 11, tzinfo=UTC)
    assert t.column("grid_power_w").to_pylist()[0] == 3600.0 and t.schema.field("time_utc").type == pa.timestamp("ms", tz="UTC")
    assert {"grid_power_w", "soc_pct", "setpoint_w", "written_w", "bms_voltage_v"} <= set(t.column_names)
    assert exporter.step() == []  # nothing new: no rewrite
    clock.advance(2 * 86400)
    assert sorted(exporter.retention()) == [h10, h11] and not (tmp_path / "export" / "2026-03-01").exists()


# ---- catalogue ------------------------------------------------------------------------------
def test_the_snapshot_lists_readings_with_unit_age_source_and_a_derived_load(ctx_and_clock: tuple[EMSContext, SimClock]) -> None:
    ctx, clock = ctx_and_clock
    feed(ctx, {Q.GRID_POWER_W: 500.0}, source="meter")
    feed(ctx, {Q.ESS_POWER_W: -200.0, Q.SOC_PCT: 61.0}, source="ess")
    clock.advance(5.0)  # both older than control.fault_timeout_s (3 s)
    feed(ctx, {Q.PV_POWER_W: 1200.0}, source="pv")
    with running_api(api_config(), ctx, clock) as running:
        body = running.get("/api/v1/export/snapshot").json()
    got = {r["name"]: r for r in body["readings"]}
    assert got["grid_power_w"] | {} == {
        "name": "grid_power_w", "value": 500.0, "unit": "W", "age_s": 5.0, "ts": got["grid_power_w"]["ts"],
        "stale": True, "source": "meter", "device": None,
    }  # fmt: skip
    assert got["soc_pct"]["unit"] == "%" and got["pv_power_w"]["stale"] is False
    load = got["load_power_w"]
    assert load["value"] == 1500.0 and load["stale"] is True and load["age_s"] == 5.0
    assert load["source"] == "derived:grid_power_w+pv_power_w+ess_power_w"


def test_registermaps_show_each_modbus_devices_map_as_loaded(ctx_and_clock: tuple[EMSContext, SimClock]) -> None:
    ctx, clock = ctx_and_clock
    ctx.health.register_device("meter", kind="modbus", where="tcp://127.0.0.1:15021 unit 2", thread="modbus-meter")
    ctx.health.set_info("meter", connected=True, map="sdm630")
    ctx.health.register_device("ess", kind="modbus", where="tcp://127.0.0.1:15020 unit 1", thread="modbus-ess", actuator=True)
    ctx.health.register_device("bms", kind="can", where="virtual:vcan0", thread="can")
    with running_api(api_config(), ctx, clock) as running:
        maps = {m["device"]: m for m in running.get("/api/v1/registermaps").json()["maps"]}
    assert set(maps) == {"meter", "ess"}
    assert maps["ess"]["map"] is None and maps["ess"]["profile"] is None  # discovery has not picked one yet
    meter = maps["meter"]
    assert meter["map"] == "sdm630" and meter["address"] == "tcp://127.0.0.1:15021 unit 2"
    points = {p["name"]: p for p in meter["profile"]["points"]}
    assert (points["grid_voltage_v"]["offset"], points["grid_voltage_v"]["type"]) == (0, "float32")
    assert meter["profile"]["name"] == "sdm630" and meter["profile"]["function"] == "input"


def test_emsctl_export_streams_to_a_file(api: RunningApi, tmp_path: Path) -> None:
    from interfaces.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    target = tmp_path / "hour.parquet"
    argv = ["export", "--url", api.url, "--from", "2026-03-01T10:00:00Z", "--to", "2026-03-01T11:00:00Z",
            "--fields", "grid_power_w", "--resolution", "1min", "-o", str(target)]  # fmt: skip
    assert main(argv, environ={}, stdout=out, stderr=err) == 0, err.getvalue()
    t = pq.read_table(target)
    assert t.num_rows == 60 and t.column("grid_power_w").to_pylist()[0] == 29.5
    assert out.getvalue().startswith(f"wrote {target.stat().st_size} bytes of parquet to {target}")
    csv_file = tmp_path / "x.csv"
    assert main(["export", "--url", api.url, "--from=-1d", "--to=-0s", "-o", str(csv_file)], environ={}, stdout=out, stderr=err) == 0
    assert csv_file.read_text().startswith("time_utc,state,mode,grid_power_w,")  # the last day of real time: no rows
    assert main(["export", "--url", api.url, "--fields", "nope_w", "-o", str(csv_file)], environ={}, stdout=out, stderr=err) == 5
    assert "nope_w" in err.getvalue()
