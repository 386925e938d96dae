"""`store:` section: SQLite persistence (DESIGN.md §6, docs/persistence.md)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from config.common import Section

__all__ = ["ExportConfig", "RetentionConfig", "StoreConfig"]


class RetentionConfig(Section):
    samples_days: float = Field(7.0, gt=0, le=3650, description="keep per-second samples this long, days")
    minutes_days: float = Field(400.0, gt=0, le=3650, description="keep per-minute aggregates this long, days")
    events_days: float = Field(
        400.0, gt=0, le=3650, description="keep events (state changes, faults, audit) and cached prices this long, days"
    )
    delivered_days: float = Field(7.0, gt=0, le=3650, description="keep delivered or parked outbox rows this long, days")
    max_db_mb: float = Field(
        1024.0, ge=1, le=1_000_000, description="above this many MB of used pages, the oldest samples (then minutes, events) go first, MB"
    )
    step_rows: int = Field(
        2000, ge=10, le=1_000_000, description="rows deleted per table per retention step (small steps keep transactions short)"
    )
    interval_s: float = Field(60.0, gt=0, le=86400, description="time between retention steps, s")


class ExportConfig(Section):
    """Hourly Parquet files of the 1-second samples (docs/persistence.md "Export"); needs pyarrow (requirements.txt)."""

    enabled: bool = Field(
        False, description="write one Parquet file per closed UTC hour (thread store-export; pyarrow is imported only then)"
    )
    dir: Path = Field(
        Path("var/export"), description="files go to <dir>/<YYYY-MM-DD>/<site.id>_<YYYYMMDDTHH>Z.parquet; created when missing"
    )
    keep_days: float = Field(30.0, gt=0, le=3650, description="files older than this are deleted, days")
    lag_s: float = Field(
        60.0, ge=0, le=3600, description="an hour is written this long after its end (its samples are committed by then), s"
    )
    backfill_hours: int = Field(24, ge=1, le=24 * 400, description="at start, catch up on at most this many closed hours without a file")


class StoreConfig(Section):
    enabled: bool = Field(False, description="start the persistence threads (sampler + SQLite writer)")
    path: Path = Field(Path("var/ems.db"), description="SQLite database file (production: /var/lib/ems/ems.db); its directory is created")
    sample_period_s: float = Field(1.0, gt=0.05, le=60, description="take one context snapshot as a sample this often, s")
    flush_interval_s: float = Field(
        5.0, gt=0.01, le=300, description="write queued samples and new events in one transaction this often, s"
    )
    audit_commit_timeout_s: float = Field(
        2.0,
        gt=0,
        le=30,
        description="an accepted mode or set-point request waits at most this for its audit row's commit; if none is confirmed it is refused (not applied), s",
    )
    queue_max: int = Field(
        600, ge=10, le=1_000_000, description="samples held in memory between flushes; when full the oldest is dropped and counted"
    )
    stale_after_s: float = Field(
        10.0, gt=0, le=3600, description="a reading older than this is not written into a sample (stored as null), s"
    )
    finalize_lag_s: float = Field(
        2.0, ge=0, le=60, description="a minute or 5-minute window is closed this long after its end (late samples), s"
    )
    outbox_max_rows: int = Field(
        25920,
        ge=1,
        le=10_000_000,
        description="most undelivered uplink batches kept (25920 = 90 days); beyond, the oldest is dropped, counted and logged",
    )
    retention: RetentionConfig = Field(default_factory=RetentionConfig, description="how long and how much data is kept")
    export: ExportConfig = Field(default_factory=ExportConfig, description="hourly Parquet files of the samples")
