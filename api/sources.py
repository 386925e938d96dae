"""Where `measurements` and `events` come from: the store's read-only queries when a store reader
is given, otherwise what the context holds (latest values, recent events). One small seam, so the
handlers do not care which.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any, Protocol

from api.models import EventInfo, MeasurementRow, Resolution
from ems.clock import Clock
from ems.context import EMSContext
from ems.model import EventRecord, Quantity

__all__ = ["ContextSource", "ReadSource", "event_info", "jsonable"]


class ReadSource(Protocol):
    name: str

    def measurements(
        self, *, from_ts: float, to_ts: float, fields: Sequence[Quantity], resolution: Resolution, limit: int
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
        self, *, from_ts: float, to_ts: float, fields: Sequence[Quantity], resolution: Resolution, limit: int
    ) -> list[MeasurementRow]:
        snap = self._ctx.snapshot()
        now_ts = self._clock.wall().timestamp()
        if not from_ts <= now_ts <= to_ts:
            return []
        values: dict[str, float | None] = {}
        for q in fields:
            r = snap.reading(q)
            values[q.value] = None if r is None else r.value
        if resolution is Resolution.MINUTE:
            return [MeasurementRow(ts=now_ts, values=values, min=values, max=values)][:limit]
        return [MeasurementRow(ts=now_ts, values=values)][:limit]

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
