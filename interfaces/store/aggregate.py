"""Pure pieces of the store: a snapshot becomes a sample, samples become a minute, minutes a 5-minute batch.

No I/O, no clock: the caller passes wall times. Used by the writer thread and tested on their own.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from ems.model import Quantity, Snapshot

__all__ = [
    "BATCH_SCHEMA",
    "FIELDS",
    "WINDOW_S",
    "MinuteAgg",
    "Sample",
    "batch_id",
    "batch_payload",
    "content_digest",
    "iso_utc",
    "minute_aggregate",
    "sample_from_snapshot",
    "window_start",
]

# Numeric fields of a sample: every measured quantity plus the command the controller computed/wrote.
FIELDS: tuple[str, ...] = (*(q.value for q in Quantity), "setpoint_w", "written_w")
WINDOW_S = 300  # uplink batch window (wall-clock aligned), s
BATCH_SCHEMA = "ems.batch/3"  # /2: installation_id and content_sha256 in the batch and its id; /3: acks (cloud command results)


@dataclass(frozen=True, slots=True)
class Sample:
    ts_ms: int  # wall time, unix milliseconds
    state: str
    mode: str
    values: Mapping[str, float]  # field -> value; a stale or missing reading is absent


@dataclass(frozen=True, slots=True)
class MinuteAgg:
    ts: int  # minute start, unix seconds
    n: int  # samples in the minute
    stats: Mapping[str, tuple[float, float, float, float, int]]  # field -> (min, mean, max, last, count)
    states: Mapping[str, int]  # state -> samples spent in it


def sample_from_snapshot(snap: Snapshot, *, wall_ts: float, stale_after_s: float) -> Sample:
    """Fresh readings only: a reading older than `stale_after_s` (monotonic) is left out."""
    values: dict[str, float] = {}
    for q, r in snap.measurements.items():
        if r.fresh(now_s=snap.at_s, max_age_s=stale_after_s):
            values[q.value] = r.value
    if snap.command is not None:
        values["setpoint_w"] = snap.command.setpoint_w
        values["written_w"] = snap.command.written_w
    return Sample(round(wall_ts * 1000), snap.state.value, snap.requested_mode.value, values)


def minute_aggregate(minute_ts: int, rows: Iterable[tuple[str | None, Mapping[str, float | None]]]) -> MinuteAgg:
    """Aggregate the samples of one minute, given in time order as (state, {field: value or None})."""
    acc: dict[str, list[float]] = {}
    states: Counter[str] = Counter()
    n = 0
    for state, values in rows:
        n += 1
        if state:
            states[state] += 1
        for f, v in values.items():
            if v is None:
                continue
            a = acc.get(f)
            if a is None:
                acc[f] = [v, v, v, v, 1.0]  # min, sum, max, last, count
            else:
                a[0] = min(a[0], v)
                a[1] += v
                a[2] = max(a[2], v)
                a[3] = v
                a[4] += 1
    stats = {f: (a[0], a[1] / a[4], a[2], a[3], int(a[4])) for f, a in acc.items()}
    return MinuteAgg(minute_ts, n, stats, dict(states))


def window_start(ts: float) -> int:
    """Start of the wall-clock aligned 5-minute window holding `ts` (unix seconds)."""
    return int(ts // WINDOW_S) * WINDOW_S


def iso_utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def batch_id(site_id: str, start_ts: int, *, installation_id: str, content_sha256: str) -> str:
    """Stable across restarts and retries (the outbox keeps the row): the receiver drops duplicates by it.
    The installation (kept in the database) and the content digest make a replaced or restored
    database's batch for the same window a different id, not a silent duplicate."""
    return f"{site_id}:{installation_id}:{iso_utc(start_ts)}:{content_sha256[:16]}"


def content_digest(payload: Mapping[str, object]) -> str:
    """SHA-256 of a batch's canonical JSON (sorted keys, compact), without its id and digest fields."""
    body = {k: v for k, v in payload.items() if k not in ("batch_id", "content_sha256")}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _r(v: float) -> float:
    return round(v, 3)


def batch_payload(
    *,
    site_id: str,
    installation_id: str,
    start_ts: int,
    minutes: Sequence[MinuteAgg],
    events_by_kind: Mapping[str, int],
    acks: Sequence[Mapping[str, object]] = (),
) -> dict[str, object]:
    """One 5-minute batch (JSON-ready) from the minute rows of its window, in time order; `acks`: the
    results of cloud commands not yet reported (docs/uplink.md)."""
    fields: dict[str, dict[str, float | int]] = {}
    for f in FIELDS:
        parts = [m.stats[f] for m in minutes if f in m.stats]
        if not parts:
            continue
        count = sum(p[4] for p in parts)
        fields[f] = {
            "min": _r(min(p[0] for p in parts)),
            "mean": _r(sum(p[1] * p[4] for p in parts) / count),
            "max": _r(max(p[2] for p in parts)),
            "last": _r(parts[-1][3]),
            "n": count,
        }
    states: Counter[str] = Counter()
    for m in minutes:
        states.update(m.states)
    total = sum(states.values())
    payload: dict[str, object] = {
        "schema": BATCH_SCHEMA,
        "site_id": site_id,
        "installation_id": installation_id,
        "window_start": iso_utc(start_ts),
        "window_end": iso_utc(start_ts + WINDOW_S),
        "window_start_ts": start_ts,
        "window_s": WINDOW_S,
        "minutes": len(minutes),
        "samples": sum(m.n for m in minutes),
        "fields": fields,
        "state_share": {s: round(c / total, 4) for s, c in sorted(states.items())} if total else {},
        "events": sum(events_by_kind.values()),
        "events_by_kind": dict(sorted(events_by_kind.items())),
        "acks": [dict(a) for a in acks],
    }
    digest = content_digest(payload)
    bid = batch_id(site_id, start_ts, installation_id=installation_id, content_sha256=digest)
    return {"schema": BATCH_SCHEMA, "batch_id": bid, "content_sha256": digest, **payload}
