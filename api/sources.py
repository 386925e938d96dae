"""Where `measurements` and `events` come from: the store's read-only queries when a store reader
is given, otherwise what the context holds (latest values, recent events). One small seam, so the
handlers do not care which.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from api.models import EventInfo, MeasurementRow, Resolution
from ems.clock import Clock
from ems.context import EventLog
from ems.jsonable import jsonable
from ems.model import EventRecord, Quantity, Snapshot

__all__ = ["ContextSource", "OutboxFigures", "ReadSource", "SourceUnavailable", "StoreSource", "event_info"]

_CMD_FIELDS = ("setpoint_w", "written_w")


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


def event_info(e: EventRecord) -> EventInfo:
    return EventInfo(seq=e.seq, event_seq=e.seq, kind=e.kind, ts=e.wall_ts, data=jsonable(e.data))


class ContextSource:
    """Latest values and the events the context keeps in memory (no history)."""

    name = "context"

    def __init__(self, snapshot: Callable[[], Snapshot], events: EventLog, clock: Clock) -> None:
        self._snapshot = snapshot
        self._events = events
        self._clock = clock

    def measurements(
        self, *, from_ts: float, to_ts: float, fields: Sequence[str], resolution: Resolution, limit: int
    ) -> list[MeasurementRow]:
        snap = self._snapshot()
        now_ts = self._clock.wall().timestamp()
        # The context holds only the latest values, stamped "now". A to_ts the handler defaulted to
        # "now" a moment ago must still include them, so allow a little slack.
        if not (from_ts <= now_ts and now_ts - to_ts <= _NOW_SLACK_S):
            return []
        cmd = snap.command
        values: dict[str, float | None] = {}
        for f in fields:
            if f in _CMD_FIELDS:
                values[f] = None if cmd is None else (cmd.setpoint_w if f == "setpoint_w" else cmd.written_w)
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
        for e in self._events.since(after_seq, limit=1_000_000):
            if wanted is not None and e.kind not in wanted:
                continue
            if (from_ts is not None and e.wall_ts < from_ts) or (to_ts is not None and e.wall_ts > to_ts):
                continue
            out.append(event_info(e))
            if len(out) >= limit:
                break
        return out


class StoreSource:
    """History from the persistence layer's read-only query API (one read-only connection per call)."""

    name = "store"

    def __init__(self, db_path: Path | str, clock: Clock) -> None:
        from interfaces.store import query  # the store is optional: import it only when used

        self._q = query
        self._db = db_path
        self.db_path = db_path  # the export streams from it (api/export.py)
        self._clock = clock

    def measurements(
        self, *, from_ts: float, to_ts: float, fields: Sequence[str], resolution: Resolution, limit: int
    ) -> list[MeasurementRow]:
        from interfaces.store import FIELDS

        stored = [f for f in fields if f in FIELDS]
        minute = resolution is Resolution.MINUTE
        try:
            rows = self._q.measurements(
                self._db, resolution="minute" if minute else "second", from_ts=from_ts, to_ts=to_ts, fields=stored, limit=limit
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
        """Rows of the store's events table by row id (insertion order), so `after_seq` alone pages."""
        try:
            rows = self._q.events(self._db, kinds=kinds, from_ts=from_ts, to_ts=to_ts, limit=limit, newest_first=False, after_id=after_seq)
        except sqlite3.Error as exc:
            raise SourceUnavailable(f"store: {exc}") from exc
        out = []
        for r in rows:
            data = r["data"]
            payload = jsonable(data) if isinstance(data, Mapping) else {"value": jsonable(data)}
            seq = r.get("seq")
            out.append(
                EventInfo(
                    seq=int(str(r["id"])),
                    event_seq=int(seq) if isinstance(seq, int) else None,
                    kind=str(r["kind"]),
                    ts=float(str(r["ts"])),
                    data=payload,
                )
            )
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
