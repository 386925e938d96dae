"""Store benchmark (issue 6): samples/s the SQLite store sustains, and bytes written per simulated
day at 1 Hz (an SD card's wear budget matters on a Pi).

    python -m bench.bench_store        (6 simulated hours scaled to a day; BENCH_QUICK=1: 3 hours)

Both run the real store (WAL, synchronous=NORMAL, batched transactions, minute aggregates,
5-minute outbox batches, retention steps) in simulated time on a temporary file. "Bytes written"
is what SQLite hands to the kernel (`wchar` of /proc/self/io: WAL frames + checkpoints + file
growth), measured side by side for two flush intervals.
"""

from __future__ import annotations

import math
import os
import random
import sqlite3
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

import structlog

from bench.common import emit
from config.store import StoreConfig
from ems.clock import SimClock
from ems.context import EMSContext
from ems.model import Mode, Quantity
from interfaces.store import Store
from interfaces.store.aggregate import Sample

DAY_S = 86400
START = datetime(2026, 6, 1, tzinfo=UTC)


def _io_bytes() -> dict[str, int]:
    try:
        text = Path("/proc/self/io").read_text()
    except OSError:
        return {}
    return {k: int(v) for k, v in (line.split(": ") for line in text.splitlines())}


def _files_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))


def _site_values(t: float, rng: random.Random) -> dict[Quantity, float]:
    """A plausible site: 12 live quantities with noise (fractional values, as real meters give)."""
    pv = max(0.0, 4000.0 * math.sin(math.pi * ((t % DAY_S) / DAY_S * 24 - 6) / 12)) + rng.uniform(0, 50)
    load = 600.0 + rng.uniform(-150, 900)
    ess = rng.uniform(-2500, 2500)
    return {
        Quantity.GRID_POWER_W: load - pv - ess,
        Quantity.PV_POWER_W: pv,
        Quantity.ESS_POWER_W: ess,
        Quantity.SOC_PCT: 50 + 30 * math.sin(t / 20000),
        Quantity.BMS_VOLTAGE_V: 51.2 + rng.uniform(-1, 1),
        Quantity.BMS_CURRENT_A: -ess / 51.2,
        Quantity.BMS_TEMPERATURE_DEGC: 24 + rng.uniform(-0.5, 0.5),
        Quantity.BMS_CCL_A: 100.0,
        Quantity.BMS_DCL_A: 100.0,
        Quantity.GRID_VOLTAGE_V: 230 + rng.uniform(-3, 3),
        Quantity.GRID_FREQUENCY_HZ: 50 + rng.uniform(-0.05, 0.05),
        Quantity.GRID_IMPORT_WH: 1e6 + t * 0.3,
    }


def _store(cfg: StoreConfig, ctx: EMSContext, clock: SimClock) -> Store:
    """The real store, handed the context parts it uses (as main.py does)."""
    return Store(
        cfg=cfg,
        snapshot=ctx.snapshot,
        events=ctx.events,
        counters=ctx.counters,
        health=ctx.health,
        clock=clock,
        site_id="bench",
        outbox_enabled=True,
    )


def day_at_1hz(tmp: Path, *, flush_interval_s: float, sim_s: int) -> dict[str, float | int]:
    """`sim_s` simulated seconds at 1 Hz through sample_once/flush/retention; figures scaled to a day."""
    db = tmp / f"day-{flush_interval_s:g}.db"
    clock = SimClock(start_wall=START)
    ctx = EMSContext(clock=clock, start_mode=Mode.SELF_CONSUMPTION)
    store = _store(StoreConfig(enabled=True, path=db), ctx, clock)
    site = ctx.readings.claim("bench", _site_values(0.0, random.Random(0)).keys())  # the meters, BMS and inverter at once
    rng = random.Random(1)
    files0, io0, t0 = _files_bytes(db), _io_bytes(), time.perf_counter()
    every = int(flush_interval_s)
    for i in range(sim_s):
        site.update(_site_values(float(i), rng), at_s=clock.monotonic())
        if i % 600 == 0:
            ctx.events.record("state", old="STANDBY", new="SELF_CONSUMPTION", reason="bench")
        store.sample_once()
        if i % every == every - 1:
            store.flush()
        if i % 60 == 59:
            store.retention_step()
        clock.advance(1.0)
    store.flush()
    wall_s = time.perf_counter() - t0
    io1 = _io_bytes()
    store.close()  # checkpoints and removes the -wal file: what is left is the data
    files1 = _files_bytes(db)
    scale = DAY_S / sim_s
    written = io1.get("wchar", 0) - io0.get("wchar", 0)
    out: dict[str, float | int] = {
        "flush_interval_s": flush_interval_s,
        "simulated_s": sim_s,
        "written_mb_per_day": round(written * scale / 1e6, 1),
        "db_growth_mb_per_day": round((files1 - files0) * scale / 1e6, 1),
        "written_bytes_per_sample": round(written / sim_s),
        "run_s": round(wall_s, 2),
    }
    if io1.get("write_bytes", 0) - io0.get("write_bytes", 0) > 0:  # block-layer figure, when the kernel reports it
        out["block_write_mb_per_day"] = round((io1["write_bytes"] - io0["write_bytes"]) * scale / 1e6, 1)
    return out


def throughput(tmp: Path, *, n: int, chunk: int) -> dict[str, float | int]:
    """Samples/s the writer sustains: `n` queued samples flushed `chunk` at a time (each a transaction)."""
    db = tmp / "throughput.db"
    clock = SimClock(start_wall=START)
    ctx = EMSContext(clock=clock)
    store = _store(StoreConfig(enabled=True, path=db, queue_max=max(chunk, 10)), ctx, clock)
    rng = random.Random(2)
    values = [MappingProxyType({q.value: v for q, v in _site_values(float(i), rng).items()}) for i in range(1000)]
    base_ms = int(START.timestamp() * 1000)
    t0 = time.perf_counter()
    for i in range(n):
        store.put(Sample(base_ms + i * 1000, "SELF_CONSUMPTION", "SELF_CONSUMPTION", values[i % 1000]))
        if i % chunk == chunk - 1:
            clock.advance(chunk)
            store.flush()
    store.flush()
    write_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    for _ in range(2000):
        store.sample_once()
    snap_us = (time.perf_counter() - t1) / 2000 * 1e6
    store.close()
    rows = sqlite3.connect(db).execute("SELECT count(*) FROM samples").fetchone()[0]
    return {"samples": rows, "chunk": chunk, "samples_per_s": round(rows / write_s), "sample_once_us": round(snap_us, 1)}


def main() -> int:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only: stdout carries the JSON
    quick = os.environ.get("BENCH_QUICK") == "1"
    sim_s = DAY_S // 8 if quick else DAY_S // 4
    with tempfile.TemporaryDirectory(prefix="bench-store-") as d:
        tmp = Path(d)
        tp = throughput(tmp, n=30_000 if quick else 100_000, chunk=5)  # 5 samples a flush: the 1 Hz / 5 s shape
        tp_bulk = throughput(tmp, n=30_000 if quick else 100_000, chunk=500)
        day5 = day_at_1hz(tmp, flush_interval_s=5.0, sim_s=sim_s)
        day30 = day_at_1hz(tmp, flush_interval_s=30.0, sim_s=sim_s)
    emit(
        {
            "bench": "store",
            "sqlite": sqlite3.sqlite_version,
            "samples_per_s": tp["samples_per_s"],
            "samples_per_s_bulk": tp_bulk["samples_per_s"],
            "sample_once_us": tp["sample_once_us"],
            "written_mb_per_day_1hz": day5["written_mb_per_day"],
            "db_growth_mb_per_day_1hz": day5["db_growth_mb_per_day"],
            "throughput": {"flush_5": tp, "flush_500": tp_bulk},
            "day_1hz": {"flush_5s": day5, "flush_30s": day30},
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
