"""Read-only queries for the REST API and tools: the one place for the store's SELECTs.

Each call opens (and closes) its own read-only connection, so readers never share the writer's
connection or block it (WAL). Time bounds are inclusive at both ends: `from_ts <= ts <= to_ts`,
at the column's resolution (milliseconds for samples and events, seconds for minutes).
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ems.prices import PricePoint
from interfaces.store.aggregate import FIELDS
from interfaces.store.schema import open_readonly

__all__ = ["HistorySlot", "OutboxStatus", "events", "load_pv_history", "measurements", "outbox_status", "prices"]

MIN_MINUTES_PER_SLOT = 5  # a slot with fewer minutes of readings counts as not measured

_STAT_KEYS = ("min", "mean", "max", "last", "n")


@dataclass(frozen=True, slots=True)
class OutboxStatus:
    depth: int  # batches waiting to be delivered
    oldest_pending_age_s: float | None  # age of the oldest waiting batch's window end, s
    oldest_pending_batch_id: str | None
    parked: int  # refused by the receiver (4xx other than 408/429), kept for inspection
    delivered: int  # delivered rows still kept (retention: delivered_days)
    last_delivered_ts: float | None  # unix s


@dataclass(frozen=True, slots=True)
class HistorySlot:
    start_ts: int  # slot start, unix s (a multiple of slot_s)
    load_w: float | None  # mean of grid + pv + ess over the slot's minutes (DESIGN §2), None: too few minutes
    pv_w: float | None  # mean PV power, None: no PV reading (or too few minutes)
    minutes: int


@contextmanager
def _ro(db_path: Path | str) -> Iterator[sqlite3.Connection]:
    conn = open_readonly(db_path)
    try:
        yield conn
    finally:
        conn.close()


def _fields(fields: Sequence[str] | None) -> tuple[str, ...]:
    if fields is None:
        return FIELDS
    unknown = [f for f in fields if f not in FIELDS]
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(unknown)} (known: {', '.join(FIELDS)})")
    return tuple(dict.fromkeys(fields))


def _where(col: str, from_ts: float | None, to_ts: float | None, scale: float) -> tuple[list[str], list[object]]:
    """Inclusive bounds on an integer column holding `ts * scale`."""
    clauses: list[str] = []
    args: list[object] = []
    if from_ts is not None:
        clauses.append(f"{col} >= ?")
        args.append(math.ceil(round(from_ts * scale, 6)))
    if to_ts is not None:
        clauses.append(f"{col} <= ?")
        args.append(math.floor(round(to_ts * scale, 6)))
    return clauses, args


def measurements(
    db_path: Path | str,
    *,
    resolution: Literal["second", "minute"] = "second",
    from_ts: float | None = None,
    to_ts: float | None = None,
    fields: Sequence[str] | None = None,
    limit: int = 1000,
    newest_first: bool = False,
) -> list[dict[str, object]]:
    """Samples with from_ts <= ts <= to_ts (unix s), oldest first unless `newest_first`; at most `limit` rows.

    second: {"ts": s, "state", "mode", <field>: value or None, ...}
    minute: {"ts": minute start s, "n": samples, "states": {state: samples}, <field>: {"min","mean","max","last","n"} or None}
    Raises ValueError for an unknown field or resolution.
    """
    want = _fields(fields)
    order = "DESC" if newest_first else "ASC"
    limit = max(0, int(limit))
    with _ro(db_path) as conn:
        if resolution == "second":
            clauses, args = _where("ts_ms", from_ts, to_ts, 1000)
            where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
            sql = f"SELECT ts_ms, state, mode, {', '.join(want)} FROM samples {where} ORDER BY ts_ms {order} LIMIT ?"
            return [
                {"ts": r[0] / 1000, "state": r[1], "mode": r[2], **dict(zip(want, r[3:], strict=True))}
                for r in conn.execute(sql, (*args, limit))
            ]
        if resolution == "minute":
            clauses, args = _where("ts", from_ts, to_ts, 1)
            where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
            out: list[dict[str, object]] = []
            for ts, n, stats, states in conn.execute(
                f"SELECT ts, n, stats, states FROM minutes {where} ORDER BY ts {order} LIMIT ?", (*args, limit)
            ):
                s = json.loads(stats)
                row: dict[str, object] = {"ts": float(ts), "n": n, "states": json.loads(states)}
                row.update({f: dict(zip(_STAT_KEYS, s[f], strict=True)) if f in s else None for f in want})
                out.append(row)
            return out
    raise ValueError(f"resolution must be 'second' or 'minute' (got {resolution!r})")


def events(
    db_path: Path | str,
    *,
    kinds: Sequence[str] | None = None,
    from_ts: float | None = None,
    to_ts: float | None = None,
    limit: int = 1000,
    newest_first: bool = True,
    after_id: int | None = None,
) -> list[dict[str, object]]:
    """Stored events with from_ts <= ts <= to_ts: {"id", "ts" (unix s), "kind", "seq", "data": {...}}; newest first by default.

    `after_id` pages by row id (insertion order): only rows with id > after_id, ordered by id.
    A row whose data is not valid JSON comes back as {"raw": <text>}.
    """
    clauses, args = _where("ts_ms", from_ts, to_ts, 1000)
    if after_id is not None:
        clauses.append("id > ?")
        args.append(int(after_id))
    if kinds:
        clauses.append(f"kind IN ({', '.join('?' * len(kinds))})")
        args.extend(kinds)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    order = "DESC" if newest_first else "ASC"
    with _ro(db_path) as conn:
        by = f"id {order}" if after_id is not None else f"ts_ms {order}, id {order}"
        rows = conn.execute(f"SELECT id, ts_ms, kind, seq, data FROM events {where} ORDER BY {by} LIMIT ?", (*args, max(0, int(limit))))
        return [{"id": i, "ts": ts / 1000, "kind": k, "seq": seq, "data": _data(d)} for i, ts, k, seq, d in rows]


def _data(text: object) -> object:
    try:
        return json.loads(str(text))
    except ValueError:
        return {"raw": str(text)[:1000]}


def outbox_status(db_path: Path | str, *, now_ts: float) -> OutboxStatus:
    """Depth and age of the uplink outbox; `now_ts` is the caller's wall clock (unix s)."""
    with _ro(db_path) as conn:
        counts = dict(conn.execute("SELECT status, count(*) FROM outbox GROUP BY status").fetchall())
        oldest = conn.execute("SELECT batch_id, window_start FROM outbox WHERE status = 'pending' ORDER BY id LIMIT 1").fetchone()
        last = conn.execute("SELECT max(done_ms) FROM outbox WHERE status = 'delivered'").fetchone()[0]
    return OutboxStatus(
        depth=int(counts.get("pending", 0)),
        oldest_pending_age_s=None if oldest is None else max(0.0, now_ts - (oldest[1] + 300)),
        oldest_pending_batch_id=None if oldest is None else oldest[0],
        parked=int(counts.get("parked", 0)),
        delivered=int(counts.get("delivered", 0)),
        last_delivered_ts=None if last is None else last / 1000,
    )


def load_pv_history(db_path: Path | str, *, from_ts: float, to_ts: float, slot_s: int = 900) -> list[HistorySlot]:
    """Mean load and PV per `slot_s` slot from the minute aggregates, slots starting in [from_ts, to_ts), oldest first.

    Load per minute is grid + ess + pv (pv counts 0 where the site has no PV reading); a slot needs
    MIN_MINUTES_PER_SLOT minutes with grid and ess to count. For the planner's forecasts.
    """
    lo = int(from_ts // slot_s * slot_s)
    hi = int(to_ts)
    sql = """
        SELECT slot, avg(g + e + coalesce(p, 0)), count(g + e), avg(p), count(p)
        FROM (SELECT (ts / ?) * ? AS slot,
                     stats ->> '$.grid_power_w[1]' AS g,
                     stats ->> '$.ess_power_w[1]' AS e,
                     stats ->> '$.pv_power_w[1]' AS p
              FROM minutes WHERE ts >= ? AND ts < ?)
        GROUP BY slot ORDER BY slot"""
    out: list[HistorySlot] = []
    with _ro(db_path) as conn:
        for slot, load, n_load, pv, n_pv in conn.execute(sql, (slot_s, slot_s, lo, hi)):
            ok = n_load >= MIN_MINUTES_PER_SLOT
            out.append(
                HistorySlot(
                    int(slot),
                    float(load) if ok and load is not None else None,
                    float(pv) if n_pv >= MIN_MINUTES_PER_SLOT and pv is not None else None,
                    int(n_load),
                )
            )
    return out


def prices(db_path: Path | str, *, from_ts: float, to_ts: float) -> tuple[PricePoint, ...]:
    """Cached price points that overlap [from_ts, to_ts), oldest first."""
    with _ro(db_path) as conn:
        rows = conn.execute(
            "SELECT start_ts, end_ts, price_per_kwh FROM prices WHERE end_ts > ? AND start_ts < ? ORDER BY start_ts",
            (int(from_ts), math.ceil(to_ts)),
        )
        return tuple(PricePoint(int(a), int(b), float(v)) for a, b, v in rows)
