"""History export (docs/persistence.md "Export"): the store's samples and minutes as CSV or Parquet, streamed.

`rows()` reads the range one time span at a time through its own read-only connection (an hour
of 1-second samples, a day of minutes), so neither the API nor the hourly writer ever holds a
whole range in memory; `csv_stream()` and `parquet_stream()` turn those chunks into bytes as they
come (one Parquet row group per chunk). pyarrow is heavy: it is imported here only, inside the
functions that need it (the API's export handler, the hourly export thread), never at start-up.

Columns (units in the names, DESIGN §2 signs, UTC):
- `1s`: `time_utc` (timestamp, ms, UTC), `state`, `mode`, then one float64 column per field
  (`grid_power_w`, `soc_pct`, `setpoint_w`, ...; null where the reading was stale or missing);
- `1min`, `5min`: `time_utc` (window start), `samples` (int64), then per field its mean under the
  field's own name plus `<field>_min` and `<field>_max`.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from interfaces.store import query
from interfaces.store.aggregate import FIELDS
from interfaces.store.schema import open_readonly

if TYPE_CHECKING:
    import pyarrow

__all__ = ["RESOLUTIONS", "Column", "ExportRange", "columns", "csv_stream", "parquet_stream", "rows", "unit_of", "write_parquet"]

RESOLUTIONS = {"1s": 1, "1min": 60, "5min": 300}  # name -> row period, s
_SPAN_S = {"1s": 3600, "1min": 86400, "5min": 86400}  # read this much per query
_UNITS = (("_degc", "degC"), ("_pct", "%"), ("_wh", "Wh"), ("_hz", "Hz"), ("_w", "W"), ("_v", "V"), ("_a", "A"))


def unit_of(field: str) -> str:
    """The unit a field's name carries ('' for flags and codes)."""
    base = field.removesuffix("_min").removesuffix("_max")
    return next((u for suffix, u in _UNITS if base.endswith(suffix)), "")


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: str  # time | string | float | int
    unit: str = ""


@dataclass(frozen=True, slots=True)
class ExportRange:
    from_ts: float  # unix s, inclusive
    to_ts: float  # unix s, exclusive
    fields: tuple[str, ...]
    resolution: str  # 1s | 1min | 5min


def columns(fields: Sequence[str], resolution: str) -> list[Column]:
    if resolution == "1s":
        return [Column("time_utc", "time"), Column("state", "string"), Column("mode", "string")] + [
            Column(f, "float", unit_of(f)) for f in fields
        ]
    out = [Column("time_utc", "time"), Column("samples", "int")]
    for f in fields:
        out += [Column(f, "float", unit_of(f)), Column(f"{f}_min", "float", unit_of(f)), Column(f"{f}_max", "float", unit_of(f))]
    return out


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def rows(db_path: Path | str, r: ExportRange) -> Iterator[list[tuple[Any, ...]]]:
    """Chunks of rows (tuples in `columns()` order; time as unix ms), oldest first, one read per time span."""
    unknown = [f for f in r.fields if f not in FIELDS]
    if unknown or r.resolution not in RESOLUTIONS:
        raise ValueError(f"unknown field(s) or resolution: {unknown or r.resolution}")
    span = _SPAN_S[r.resolution]
    t = r.from_ts
    while t < r.to_ts:
        nxt = _next_ts(db_path, r.resolution, t)  # skip spans without data (a range from 1970 costs one query)
        if nxt is None or nxt >= r.to_ts:
            return
        t = max(t, math.floor(nxt / span) * span)
        end = min(r.to_ts, (math.floor(t / span) + 1) * span)
        chunk = _second_chunk(db_path, r, t, end) if r.resolution == "1s" else _agg_chunk(db_path, r, t, end)
        if chunk:
            yield chunk
        t = end


def _next_ts(db_path: Path | str, resolution: str, t: float) -> float | None:
    sql = "SELECT min(ts_ms) / 1000.0 FROM samples WHERE ts_ms >= ?" if resolution == "1s" else "SELECT min(ts) FROM minutes WHERE ts >= ?"
    conn = open_readonly(db_path)
    try:
        got = conn.execute(sql, (math.ceil(t * 1000) if resolution == "1s" else math.floor(t / 60) * 60,)).fetchone()[0]
    finally:
        conn.close()
    return None if got is None else float(got)


def _second_chunk(db_path: Path | str, r: ExportRange, lo: float, hi: float) -> list[tuple[Any, ...]]:
    got = query.measurements(db_path, resolution="second", from_ts=lo, to_ts=hi - 0.001, fields=r.fields, limit=10_000_000)
    return [(round(float(str(x["ts"])) * 1000), x["state"], x["mode"], *(_num(x[f]) for f in r.fields)) for x in got]


def _agg_chunk(db_path: Path | str, r: ExportRange, lo: float, hi: float) -> list[tuple[Any, ...]]:
    period = RESOLUTIONS[r.resolution]
    got = query.measurements(
        db_path, resolution="minute", from_ts=math.ceil(lo), to_ts=math.ceil(hi) - 1, fields=r.fields, limit=10_000_000
    )
    groups: dict[int, list[dict[str, object]]] = {}
    for m in got:
        groups.setdefault(int(float(str(m["ts"])) // period * period), []).append(m)
    out = []
    for start, mins in sorted(groups.items()):
        values: list[float | None] = []
        for f in r.fields:
            stats = [s for m in mins if isinstance(s := m.get(f), dict) and s.get("n")]
            n = sum(int(s["n"]) for s in stats)
            mean = sum(float(s["mean"]) * int(s["n"]) for s in stats) / n if n else None
            values += [
                None if mean is None else round(mean, 4),
                min((float(s["min"]) for s in stats), default=None),
                max((float(s["max"]) for s in stats), default=None),
            ]
        out.append((start * 1000, sum(int(str(m["n"])) for m in mins), *values))
    return out


# ---- CSV ----------------------------------------------------------------------------------------
def _iso_ms(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"


def csv_stream(chunks: Iterable[list[tuple[Any, ...]]], cols: Sequence[Column]) -> Iterator[bytes]:
    """A header line, then one block of lines per chunk. Time is ISO 8601 UTC with milliseconds; null is empty."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([c.name for c in cols])
    yield buf.getvalue().encode()
    for chunk in chunks:
        buf.seek(0)
        buf.truncate()
        for row in chunk:
            w.writerow([_iso_ms(row[0]), *("" if v is None else (f"{v:.10g}" if isinstance(v, float) else v) for v in row[1:])])
        yield buf.getvalue().encode()


# ---- Parquet ------------------------------------------------------------------------------------
def _schema(cols: Sequence[Column], meta: dict[str, str]) -> pyarrow.Schema:
    import pyarrow as pa

    types = {"time": pa.timestamp("ms", tz="UTC"), "string": pa.string(), "float": pa.float64(), "int": pa.int64()}
    fields = [pa.field(c.name, types[c.kind], metadata={"unit": c.unit} if c.unit else None) for c in cols]
    units = {c.name: c.unit for c in cols if c.unit}
    return pa.schema(fields, metadata={**meta, "ems.units": json.dumps(units)})


def _table(schema: pyarrow.Schema, chunk: list[tuple[Any, ...]]) -> pyarrow.Table:
    import pyarrow as pa

    cols = list(zip(*chunk, strict=True))
    return pa.Table.from_arrays([pa.array(list(c), type=f.type) for c, f in zip(cols, schema, strict=True)], schema=schema)


class _Sink(io.RawIOBase):
    """What the Parquet writer writes lands here until the stream takes it."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []
        self._n = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self._parts.append(data)
        self._n += len(data)
        return len(data)

    def tell(self) -> int:
        return self._n

    def take(self) -> bytes:
        out, self._parts = b"".join(self._parts), []
        return out


def parquet_stream(chunks: Iterable[list[tuple[Any, ...]]], cols: Sequence[Column], *, meta: dict[str, str]) -> Iterator[bytes]:
    """A Parquet file, one row group per chunk, yielded as the writer produces it (zstd)."""
    import pyarrow.parquet as pq

    schema = _schema(cols, meta)
    sink = _Sink()
    writer = pq.ParquetWriter(sink, schema, compression="zstd")
    try:
        for chunk in chunks:
            writer.write_table(_table(schema, chunk))
            data = sink.take()
            if data:
                yield data
    finally:
        writer.close()
    yield sink.take()


def write_parquet(path: Path, chunks: Iterable[list[tuple[Any, ...]]], cols: Sequence[Column], *, meta: dict[str, str]) -> int:
    """Write a Parquet file atomically (a temporary file, then rename); returns its size in bytes."""
    tmp = path.with_name(f".{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tmp.open("wb") as f:
        for data in parquet_stream(chunks, cols, meta=meta):
            f.write(data)
    tmp.replace(path)
    return path.stat().st_size
