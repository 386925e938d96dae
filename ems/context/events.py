"""The event log: state changes, faults, alarms, link edges and audited requests, in order.

Kept in memory (bounded); the store's writer drains it into SQLite. `wait_after` lets a reader
(the live stream) sleep until something new is recorded.
"""

from __future__ import annotations

import threading
from collections import deque
from types import MappingProxyType

from ems.clock import Clock
from ems.context.frozen import freeze
from ems.model import EventRecord

__all__ = ["EventLog"]


class EventLog:
    def __init__(self, *, clock: Clock, kept: int = 5000) -> None:
        self._clock = clock
        self._cond = threading.Condition(threading.Lock())
        self._events: deque[EventRecord] = deque(maxlen=kept)
        self._seq = 0

    def record(self, kind: str, /, **data: object) -> int:
        """Append one event; returns its sequence number."""
        return self.append(kind, **data).seq

    def append(self, kind: str, /, **data: object) -> EventRecord:
        """Append one event; returns it."""
        frozen = MappingProxyType({k: freeze(v) for k, v in data.items()})
        with self._cond:
            self._seq += 1
            rec = EventRecord(self._seq, kind, self._clock.monotonic(), self._clock.wall().timestamp(), frozen)
            self._events.append(rec)
            self._cond.notify_all()
            return rec

    def since(self, seq: int, limit: int = 1000) -> tuple[EventRecord, ...]:
        """Events newer than `seq`, oldest first, at most `limit`."""
        with self._cond:
            out = []
            for e in self._events:
                if e.seq > seq:
                    out.append(e)
                    if len(out) >= limit:
                        break
            return tuple(out)

    @property
    def last_seq(self) -> int:
        with self._cond:
            return self._seq

    def wait_after(self, seq: int, *, timeout_s: float) -> bool:
        """Block until an event newer than `seq` exists (True) or the timeout passes (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._seq > seq, timeout_s)
