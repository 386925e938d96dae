"""Data out (docs/api.md "Export"): history as CSV or Parquet, streamed; the catalogue (latest readings
with units, age and source; the active register maps as loaded).

    GET /api/v1/export?from=&to=&fields=&resolution=1s|1min|5min&format=parquet|csv
    GET /api/v1/export/snapshot
    GET /api/v1/registermaps

The export streams one time span at a time (interfaces/store/export.py): a range of a year costs
no more memory than an hour. pyarrow is imported inside the handler (the first Parquet export
pays for it), never at start-up.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import structlog
from flask import Response
from flask_openapi3.blueprint import APIBlueprint
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator

from api.deps import deps
from api.models import ApiError
from api.routes import PREFIX, error_response, json_response, register, responses
from config.api import Role
from ems.model import Quantity, Snapshot
from interfaces.store.aggregate import FIELDS

__all__ = ["ExportQuery", "ExportSnapshot", "RegisterMapsResponse", "export_blueprint", "load_reading", "snapshot_readings"]

log = structlog.get_logger("api.export")

_MAX_TS = 1e11
_DEFAULT_SPAN_S = 3600.0
_NAME = "(" + "|".join(FIELDS) + ")"
_FIELDS_RE = f"^({_NAME}(,{_NAME})*)?$"  # one name or a comma list of them (empty = all)


def _time(v: object) -> object:
    """Unix seconds, or an ISO 8601 time (a `Z` or an offset; none = UTC)."""
    if v is None or isinstance(v, int | float):
        return v
    text = str(v).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "+", 1) if "T" in text else text)
    except ValueError as exc:
        raise ValueError(f"not unix seconds or an ISO 8601 time: {text[:40]!r}") from exc
    if t.tzinfo is None:
        from datetime import UTC

        t = t.replace(tzinfo=UTC)
    return t.timestamp()


def _in_range(v: float) -> float:
    if not (math.isfinite(v) and 0 <= v <= _MAX_TS):
        raise ValueError(f"must be a time between 0 and {_MAX_TS:g} unix seconds")
    return v


# the schema says number (unix seconds); an ISO 8601 string is accepted too (docs/api.md)
TimeArg = Annotated[
    float, BeforeValidator(_time), AfterValidator(_in_range), WithJsonSchema({"type": "number", "minimum": 0, "maximum": _MAX_TS})
]


class ExportFormat(StrEnum):
    PARQUET = "parquet"
    CSV = "csv"


class ExportResolution(StrEnum):
    SECOND = "1s"
    MINUTE = "1min"
    FIVE_MINUTES = "5min"


class ExportQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, regex_engine="python-re")

    from_ts: TimeArg | None = Field(
        None,
        alias="from",
        ge=0,
        le=_MAX_TS,
        allow_inf_nan=False,
        description="start (inclusive): unix seconds or ISO 8601; default: to - 1 h",
    )
    to_ts: TimeArg | None = Field(None, alias="to", description="end (exclusive): unix seconds or ISO 8601; default: now")
    fields: list[Annotated[str, WithJsonSchema({"type": "string", "pattern": _FIELDS_RE})]] | None = Field(
        None, max_length=64, description="fields (comma-separated or repeated): quantities, setpoint_w, written_w; default: all"
    )
    resolution: ExportResolution = Field(ExportResolution.SECOND, description="1s samples, or 1min / 5min aggregates (mean, min, max)")
    format: ExportFormat = Field(ExportFormat.PARQUET, description="parquet (zstd, typed columns) or csv")

    @model_validator(mode="after")
    def _known(self) -> ExportQuery:
        unknown = [f for f in self.wanted() if f not in FIELDS]
        if unknown:
            raise ValueError(f"fields: unknown {', '.join(unknown)} (known: {', '.join(FIELDS)})")
        return self

    def wanted(self) -> tuple[str, ...]:
        named = tuple(dict.fromkeys(p.strip() for f in self.fields or () for p in f.split(",") if p.strip()))
        return named or FIELDS


class SnapshotReading(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str = Field(description="quantity, unit in the name (grid_power_w, soc_pct, ...); load_power_w is derived")
    value: float | None
    unit: str = Field(description="W, Wh, V, A, %, degC, Hz, or '' for flags and codes")
    age_s: float | None = Field(description="seconds since it was received (derived: its oldest input)")
    ts: float | None = Field(description="when it was received, unix seconds")
    stale: bool = Field(description="older than control.fault_timeout_s (derived: any input stale or missing)")
    source: str = Field(description="who wrote it: a device (meter, ess, bms), an MQTT topic, or derived:<inputs>")
    device: str | None = Field(None, description="the device whose health answers for it")


class ExportSnapshot(BaseModel):
    model_config = ConfigDict(frozen=True)
    site_id: str
    ts: float = Field(description="when this snapshot was taken, unix seconds")
    state: str
    readings: list[SnapshotReading]


class RegisterMap(BaseModel):
    model_config = ConfigDict(frozen=True)
    device: str = Field(description="ess, meter, pv, ...")
    address: str
    map: str | None = Field(description="point map / device profile name (null: SunSpec discovery has not picked one yet)")
    profile: dict[str, Any] | None = Field(description="the map as loaded: device, points (register, type, scale, unit, sign), control")


class RegisterMapsResponse(BaseModel):
    model_config = ConfigDict(frozen=True)
    maps: list[RegisterMap]


# ---- the catalogue --------------------------------------------------------------------------
_LOAD_INPUTS = (Quantity.GRID_POWER_W, Quantity.PV_POWER_W, Quantity.ESS_POWER_W)


def load_reading(snap: Snapshot, *, fresh_s: float, wall_now_ts: float) -> SnapshotReading | None:
    """load = grid + pv + ess (DESIGN §2), stale when any input is; None without grid and ess. A site
    without a PV reading counts 0 W of PV."""
    got = {q: snap.reading(q) for q in _LOAD_INPUTS}
    if got[Quantity.GRID_POWER_W] is None or got[Quantity.ESS_POWER_W] is None:
        return None
    present = [r for r in got.values() if r is not None]
    oldest = min(r.at_s for r in present)
    stale = any(not r.fresh(now_s=snap.at_s, max_age_s=fresh_s) for r in present)
    value = sum(r.value for r in present)
    age = max(0.0, snap.at_s - oldest)
    return SnapshotReading(
        name="load_power_w",
        value=value if math.isfinite(value) else None,
        unit="W",
        age_s=age,
        ts=wall_now_ts - age,
        stale=stale,
        source="derived:" + "+".join(q.value for q in _LOAD_INPUTS if got[q] is not None),
    )


def snapshot_readings(snap: Snapshot, *, fresh_s: float, wall_now_ts: float) -> list[SnapshotReading]:
    from interfaces.store.export import unit_of

    owner = {q: d.name for d in snap.devices for q in d.owns}
    out = []
    for q, r in sorted(snap.measurements.items()):
        age = max(0.0, snap.at_s - r.at_s)
        out.append(
            SnapshotReading(
                name=q.value,
                value=r.value if math.isfinite(r.value) else None,
                unit=unit_of(q.value),
                age_s=age,
                ts=wall_now_ts - age,
                stale=not r.fresh(now_s=snap.at_s, max_age_s=fresh_s),
                source=r.source or "unknown",
                device=owner.get(q),
            )
        )
    load = load_reading(snap, fresh_s=fresh_s, wall_now_ts=wall_now_ts)
    return out + ([load] if load is not None else [])


def get_export_snapshot() -> Response:
    d = deps()
    snap = d.snapshot()
    now_ts = d.clock.wall().timestamp()
    readings = snapshot_readings(snap, fresh_s=d.cfg.control.fault_timeout_s, wall_now_ts=now_ts)
    return json_response(ExportSnapshot(site_id=d.cfg.site.id, ts=now_ts, state=snap.state.value, readings=readings))


def get_registermaps() -> Response:
    snap = deps().snapshot()
    maps = []
    for dev in snap.devices:
        if dev.kind != "modbus":
            continue
        name = dev.info.get("map")
        profile = None
        if isinstance(name, str) and name:
            from interfaces.modbus.pointmap import MapError, load_map

            try:
                profile = load_map(name).model_dump(mode="json", exclude_defaults=False)
            except MapError as exc:
                log.warning("registermap_unavailable", device=dev.name, map=name, error=str(exc)[:200])
        maps.append(RegisterMap(device=dev.name, address=dev.where, map=name if isinstance(name, str) else None, profile=profile))
    return json_response(RegisterMapsResponse(maps=maps))


# ---- the export -----------------------------------------------------------------------------
def get_export(query: ExportQuery) -> Response:
    d = deps()
    db = getattr(d.source, "db_path", None)
    if db is None:
        return error_response(503, "store_unavailable", "export: no history without a store (store.enabled: false)")
    now_ts = d.clock.wall().timestamp()
    to_ts = query.to_ts if query.to_ts is not None else now_ts
    from_ts = query.from_ts if query.from_ts is not None else max(0.0, to_ts - _DEFAULT_SPAN_S)
    to_ts = max(from_ts, to_ts)  # from after to: an empty range (an empty file), as /measurements answers no rows
    from interfaces.store.export import ExportRange, columns, csv_stream, parquet_stream, rows

    fields = query.wanted()
    res = query.resolution.value
    cols = columns(fields, res)
    chunks = rows(db, ExportRange(from_ts, to_ts, fields, res))
    site = d.cfg.site.id
    stamp = f"{_stamp(from_ts)}-{_stamp(to_ts)}"
    if query.format is ExportFormat.CSV:
        body, mimetype, ext = csv_stream(chunks, cols), "text/csv", "csv"
    else:
        meta = {"ems.site_id": site, "ems.resolution": res, "ems.from_ts": f"{from_ts:.3f}", "ems.to_ts": f"{to_ts:.3f}"}
        body, mimetype, ext = parquet_stream(chunks, cols, meta=meta), "application/vnd.apache.parquet", "parquet"
    first = _first(body)  # a store that cannot be read fails here, as a 503, before any byte is sent
    headers = {"Content-Disposition": f'attachment; filename="{site}_{res}_{stamp}.{ext}"', "Cache-Control": "no-store"}
    return Response(_guarded(first, body), mimetype=mimetype, headers=headers)


def _stamp(ts: float) -> str:
    from datetime import UTC

    return datetime.fromtimestamp(ts, UTC).strftime("%Y%m%dT%H%M%SZ")


def _first(body: Iterator[bytes]) -> bytes:
    import sqlite3

    from api.sources import SourceUnavailable

    try:
        return next(body, b"")
    except sqlite3.Error as exc:
        raise SourceUnavailable(f"store: {exc}") from exc


def _guarded(first: bytes, body: Iterator[bytes]) -> Iterator[bytes]:
    """The rest of the stream; an error mid-way ends it (truncated: a Parquet reader sees no footer) and is logged."""
    yield first
    try:
        yield from body
    except Exception:
        log.exception("api_export_failed")


def export_blueprint(read_role: Role | None, roles: dict[str, Role | None]) -> APIBlueprint:
    bp = APIBlueprint("v1_export", __name__, url_prefix=PREFIX)
    r = read_role
    file_answer = {
        "description": "the file, streamed (chunked)",
        "content": {
            "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
            "text/csv": {"schema": {"type": "string"}},
        },
    }
    register(bp, roles, "get", "/export", get_export, role=r,
             answers={**responses(file_answer, role=r, params=True), 503: ApiError},
             summary="History as Parquet or CSV (1s, 1min, 5min), streamed")  # fmt: skip
    register(bp, roles, "get", "/export/snapshot", get_export_snapshot, role=r, answers=responses(ExportSnapshot, role=r),
             summary="Latest readings with unit, age and source (the derived load too)")  # fmt: skip
    register(bp, roles, "get", "/registermaps", get_registermaps, role=r, answers=responses(RegisterMapsResponse, role=r),
             summary="The active Modbus point maps / device profiles, as loaded")  # fmt: skip
    return bp
