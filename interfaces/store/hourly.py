"""Hourly Parquet files (`store.export`, docs/persistence.md "Export"): one file per closed UTC hour
of 1-second samples, as an edge agent collects them, with retention by age.

A thread of the store (`store-export`), beside the writer: it reads through its own read-only
connection (the writer stays the only writer and never waits for pyarrow), writes each file
atomically (temporary name, then rename) and imports pyarrow only when it first writes.
Files: `<dir>/<YYYY-MM-DD>/<site>_<YYYYMMDDTHH>Z.parquet`; an hour is written once its samples
are committed (`lag_s` after its end). After a stop it catches up on the hours it missed (at most
`backfill_hours`), oldest first; files already there are not rewritten.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from config.store import ExportConfig
from ems.clock import Clock
from ems.context import Health
from interfaces.store.aggregate import FIELDS
from interfaces.store.export import ExportRange, columns, rows, write_parquet
from interfaces.worker import Worker

__all__ = ["DEVICE", "HourlyExport", "hour_path"]

DEVICE = "export"
_HOUR_S = 3600
_DAY_S = 86400.0


def hour_path(root: Path, site_id: str, hour_ts: int) -> Path:
    t = datetime.fromtimestamp(hour_ts, UTC)
    return root / t.strftime("%Y-%m-%d") / f"{site_id}_{t.strftime('%Y%m%dT%H')}Z.parquet"


class HourlyExport(Worker):
    critical = False  # never stops the battery
    expected_errors = (*Worker.expected_errors, sqlite3.Error)

    def __init__(self, *, cfg: ExportConfig, db_path: Path, site_id: str, health: Health, clock: Clock, period_s: float = 30.0) -> None:
        super().__init__(name="store-export", health=health, clock=clock, period_s=period_s, devices=(DEVICE,))
        health.register_device(DEVICE, kind="parquet", where=str(cfg.dir), thread=self.name)
        self.cfg = cfg
        self._db = db_path
        self._site = site_id
        self._next_hour: int | None = None
        self._next_retention_s = clock.monotonic()

    def step(self) -> list[Path]:
        """Write every closed hour not written yet (oldest first); returns the files written."""
        now = self._clock.wall().timestamp()
        last_closed = int((now - self.cfg.lag_s) // _HOUR_S) * _HOUR_S - _HOUR_S  # start of the newest hour ready
        if self._next_hour is None:
            self._next_hour = max(last_closed - (self.cfg.backfill_hours - 1) * _HOUR_S, 0)
        written: list[Path] = []
        while self._next_hour <= last_closed:
            h = self._next_hour
            path = hour_path(self.cfg.dir, self._site, h)
            if not path.exists():
                r = ExportRange(float(h), float(h + _HOUR_S), FIELDS, "1s")
                chunks = list(rows(self._db, r))
                if chunks:  # an hour without samples (the EMS was off) has no file
                    size = write_parquet(path, chunks, columns(FIELDS, "1s"), meta=self._meta(h))
                    written.append(path)
                    self.log.info("export_hour_written", path=str(path), rows=sum(len(c) for c in chunks), size_bytes=size)
            self._next_hour = h + _HOUR_S
        self._health.set_info(DEVICE, last_hour=None if not written else datetime.fromtimestamp(self._next_hour - _HOUR_S, UTC).isoformat())
        return written

    def _meta(self, hour_ts: int) -> dict[str, str]:
        return {"ems.site_id": self._site, "ems.resolution": "1s", "ems.hour_start_utc": datetime.fromtimestamp(hour_ts, UTC).isoformat()}

    def retention(self) -> list[Path]:
        """Delete files (and emptied day folders) older than `keep_days`."""
        cut = self._clock.wall().timestamp() - self.cfg.keep_days * _DAY_S
        gone: list[Path] = []
        if not self.cfg.dir.is_dir():
            return gone
        for f in sorted(self.cfg.dir.glob(f"*/{self._site}_*Z.parquet")):
            try:
                hour = datetime.strptime(f.stem.rsplit("_", 1)[1], "%Y%m%dT%HZ").replace(tzinfo=UTC).timestamp()
            except ValueError:
                continue  # not ours
            if hour + _HOUR_S < cut:
                f.unlink(missing_ok=True)
                gone.append(f)
                if not any(f.parent.iterdir()):
                    f.parent.rmdir()
        if gone:
            self.log.info("export_retention_applied", files=len(gone), keep_days=self.cfg.keep_days)
        return gone

    def iterate(self) -> None:
        self.step()
        now = self._clock.monotonic()
        if now >= self._next_retention_s:
            self._next_retention_s = now + 3600.0
            self.retention()
        self.succeeded()
