"""Where `measurements` and `events` come from: the store's read-only queries when a store reader
is given, otherwise what the context holds (latest values, recent events). One small seam, so the
handlers do not care which.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

from api.models import EventInfo, MeasurementRow, Resolution
from ems.clock import Clock
from ems.context import EMSContext
from ems.model import EventRecord, Quantity

__all__ = ["ContextSource", "OutboxFigures", "ReadSource", "SourceUnavailable", "StoreSource", "event_info", "jsonable"]

_CMD_FIELDS = ("cmd_computed_w", "cmd_written_w")


_NOW_SLACK_S = 2.0  # s


class SourceUnavailable(Exception):
    """The store cannot answer now (file missing, locked, corrupt): the API says 503."""


@dataclass(frozen=True, slots=True)
class OutboxFigures:
    depth: int
    oldest_pending_age_s: float | None
    last_delivered_ts: float | None


class ReadSource(Protocol):
    name: str

    def measurements(
        self, *, from_ts: float, to_ts: float, fields: Sequence[str], resolution: Resolution, limit: int
    ) -> list[MeasurementRow]:
        """Rows with from_ts <= ts <= to_ts, oldest first, at most `limit`."""
        ...

    def events(
        self, *, kinds: Sequence[str] | None, from_ts: float | None, to_ts: float | None, after_seq: int, limit: int
    ) -> list[EventInfo]:
        """Events with seq > after_seq matching the filters, oldest first, at most `limit`."""
        ...


def jsonable(value: object, depth: int = 0) -> Any:
    """A JSON-safe copy of event data: non-finite floats become null, unknown objects their str()."""
    if depth > 8:
        return str(value)
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Enum):
        return jsonable(value.value, depth + 1)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [jsonable(v, depth + 1) for v in items]
    return str(value)


def event_info(e: EventRecord) -> EventInfo:
    return EventInfo(seq=e.seq, kind=e.kind, ts=e.wall_ts, data=jsonable(e.data))


class ContextSource:
    """Latest values and the events the context keeps in memory (no history)."""

    name = "context"

    def __init__(self, ctx: EMSContext, clock: Clock) -> None:
        self._ctx = ctx
        self._clock = clock

    def measurements(
        self, *, from_ts: float, to_ts: float, fields: Sequence[str], resolution: Resolution, limit: int
    ) -> list[MeasurementRow]:
        snap = self._ctx.snapshot()
        now_ts = self._clock.wall().timestamp()
        # The context holds only the latest values, stamped "now". A to_ts the handler defaulted to
        # "now" a moment ago must still include them, so allow a little slack.
        if not (from_ts <= now_ts and now_ts - to_ts <= _NOW_SLACK_S):
            return []
        cmd = snap.command
        values: dict[str, float | None] = {}
        for f in fields:
            if f in _CMD_FIELDS:
                values[f] = None if cmd is None else (cmd.computed_w if f == "cmd_computed_w" else cmd.written_w)
            else:
                r = snap.reading(Quantity(f))
                values[f] = None if r is None else r.value
        if resolution is Resolution.MINUTE:
            return [MeasurementRow(ts=now_ts, values=values, min=values, max=values)][:limit]
        return [MeasurementRow(ts=now_ts, state=snap.state.value, mode=snap.requested_mode.value, values=values)][:limit]

    def events(
        self, *, kinds: Sequence[str] | None, from_ts: float | None, to_ts: float | None, after_seq: int, limit: int
    ) -> list[EventInfo]:
        out: list[EventInfo] = []
        wanted = set(kinds) if kinds else None
        for e in self._ctx.events_since(after_seq, limit=1_000_000):
            if wanted is not None and e.kind not in wanted:
                continue
            if (from_ts is not None and e.wall_ts < from_ts) or (to_ts is not None and e.wall_ts > to_ts):
                continue
            out.append(event_info(e))
            if len(out) >= limit:
                break
        return out


def _lower_arg(ts: float, scale: float) -> float:
    """A value the store's `int(ts * scale) <= col` turns into ceil(ts * scale): inclusive lower bound."""
    return math.ceil(ts * scale - 1e-6) / scale + 0.1 / scale


def _upper_arg(ts: float, scale: float) -> float:
    """A value the store's `col < int(ts * scale)` turns into col <= floor(ts * scale): inclusive upper bound."""
    return (math.floor(ts * scale + 1e-6) + 1) / scale + 0.1 / scale


class StoreSource:
    """History from the persistence layer's read-only query API (one read-only connection per call)."""

    name = "store"

    def __init__(self, db_path: Path | str, clock: Clock) -> None:
        from interfaces.store import query  # the store is optional: import it only when used

        self._q = query
        self._db = db_path
        self._clock = clock

    def measurements(
        self, *, from_ts: float, to_ts: float, fields: Sequence[str], resolution: Resolution, limit: int
    ) -> list[MeasurementRow]:
        from interfaces.store import FIELDS

        stored = [f for f in fields if f in FIELDS]
        minute = resolution is Resolution.MINUTE
        scale = 1.0 if minute else 1000.0
        try:
            rows = self._q.measurements(
                self._db,
                resolution="minute" if minute else "second",
                from_ts=_lower_arg(from_ts, scale),
                to_ts=_upper_arg(to_ts, scale),
                fields=stored,
                limit=limit,
            )
        except sqlite3.Error as exc:
            raise SourceUnavailable(f"store: {exc}") from exc
        out = []
        for r in rows:
            if minute:
                stats = {f: r.get(f) for f in fields}
                out.append(
                    MeasurementRow(
                        ts=float(r["ts"]),  # type: ignore[arg-type]
                        values={f: _stat(st, "mean") for f, st in stats.items()},
                        min={f: _stat(st, "min") for f, st in stats.items()},
                        max={f: _stat(st, "max") for f, st in stats.items()},
                    )
                )
            else:
                out.append(
                    MeasurementRow(
                        ts=float(r["ts"]),  # type: ignore[arg-type]
                        state=_opt_str(r.get("state")),
                        mode=_opt_str(r.get("mode")),
                        values={f: _num(r.get(f)) for f in fields},
                    )
                )
        return out

    def events(
        self, *, kinds: Sequence[str] | None, from_ts: float | None, to_ts: float | None, after_seq: int, limit: int
    ) -> list[EventInfo]:
        """Rows of the store's events table by row id (insertion order), so `after_seq` alone pages.

        interfaces.store.query.events() orders by time and has no id cursor, so this reads the
        table (schema v1: id, ts_ms, kind, seq, data) itself, through the store's read-only opener.
        """
        from interfaces.store.schema import open_readonly

        clauses, args = ["id > ?"], [after_seq]
        if from_ts is not None:
            clauses.append("ts_ms >= ?")
            args.append(math.ceil(from_ts * 1000.0 - 1e-6))
        if to_ts is not None:
            clauses.append("ts_ms <= ?")
            args.append(math.floor(to_ts * 1000.0 + 1e-6))
        if kinds:
            clauses.append(f"kind IN ({', '.join('?' * len(kinds))})")
            args.extend(kinds)  # type: ignore[arg-type]
        sql = f"SELECT id, ts_ms, kind, data FROM events WHERE {' AND '.join(clauses)} ORDER BY id LIMIT ?"
        try:
            conn = open_readonly(self._db)
            try:
                rows = conn.execute(sql, (*args, limit)).fetchall()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise SourceUnavailable(f"store: {exc}") from exc
        out = []
        for rid, ts_ms, kind, data in rows:
            try:
                parsed = json.loads(data)
            except ValueError:
                parsed = {"raw": str(data)[:1000]}
            payload = jsonable(parsed) if isinstance(parsed, Mapping) else {"value": jsonable(parsed)}
            out.append(EventInfo(seq=int(rid), kind=str(kind), ts=ts_ms / 1000.0, data=payload))
        return out

    def outbox(self) -> OutboxFigures:
        try:
            st = self._q.outbox_status(self._db, now_ts=self._clock.wall().timestamp())
        except sqlite3.Error as exc:
            raise SourceUnavailable(f"store: {exc}") from exc
        return OutboxFigures(st.depth, st.oldest_pending_age_s, st.last_delivered_ts)


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def _stat(st: object, key: str) -> float | None:
    return _num(st.get(key)) if isinstance(st, Mapping) else None


def _opt_str(v: object) -> str | None:
    return None if v is None else str(v)
