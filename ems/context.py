"""The shared context (DESIGN.md §1): one lock, narrow methods, frozen snapshots.

Workers write through `update_measurements`, `update_bms_flags`, `mark_ok`, `mark_error`,
`heartbeat`, `count`. Operators' requests come through `request_mode`, `set_external_setpoint`,
`release_setpoint` and are audited as events. The controller publishes one `Command` per cycle
and wakes the Modbus worker through a condition. Readers call `snapshot()`. Nobody gets a
mutable internal, and no method does I/O while holding the lock.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from ems.clock import Clock
from ems.model import (
    BmsFlags,
    Command,
    EventRecord,
    ExternalSetpoint,
    Mode,
    Quantity,
    Reading,
    Snapshot,
    State,
    WorkerHealth,
)

__all__ = ["EMSContext", "RequestResult"]


@dataclass(frozen=True, slots=True)
class RequestResult:
    accepted: bool
    old: object
    new: object
    message: str
    event_seq: int


@dataclass(slots=True)
class _Worker:
    name: str
    last_ok_s: float | None = None
    last_beat_s: float | None = None
    error_streak: int = 0
    errors_total: int = 0
    last_error: str | None = None

    def frozen(self) -> WorkerHealth:
        return WorkerHealth(self.name, self.last_ok_s, self.last_beat_s, self.error_streak, self.errors_total, self.last_error)


class EMSContext:
    def __init__(self, *, clock: Clock, start_mode: Mode = Mode.IDLE, max_ttl_s: float = 3600.0, events_kept: int = 5000) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._command_cond = threading.Condition(self._lock)
        self._started_at_s = clock.monotonic()
        self._max_ttl_s = max_ttl_s
        self._measurements: dict[Quantity, Reading] = {}
        self._bms_flags: BmsFlags | None = None
        self._mode = start_mode
        self._setpoint: ExternalSetpoint | None = None
        self._state = State.STOP
        self._state_since_s = self._started_at_s
        self._command: Command | None = None
        self._written_seq: int | None = None
        self._written_at_s: float | None = None
        self._fault_causes: tuple[str, ...] = ()
        self._limits_bound: tuple[str, ...] = ()
        self._workers: dict[str, _Worker] = {}
        self._counters: dict[str, int] = {}
        self._cycles = 0
        self._overruns = 0
        self._events: deque[EventRecord] = deque(maxlen=events_kept)
        self._event_seq = 0
        self._command_consumers = 0
        self._status: Mapping[str, object] = MappingProxyType({})

    # ---- workers -------------------------------------------------------------------------
    def update_measurements(self, values: Mapping[Quantity, float], *, at_s: float) -> int:
        """Store finite values with their receive time; count and drop the rest. Returns drops."""
        good = {q: Reading(float(v), at_s) for q, v in values.items() if isinstance(v, int | float) and math.isfinite(v)}
        dropped = len(values) - len(good)
        with self._lock:
            self._measurements.update(good)
            if dropped:
                self._counters["measurements_rejected"] = self._counters.get("measurements_rejected", 0) + dropped
        return dropped

    def update_bms_flags(self, *, protections: Iterable[str], warnings: Iterable[str], at_s: float) -> None:
        flags = BmsFlags(frozenset(protections), frozenset(warnings), at_s)
        with self._lock:
            self._bms_flags = flags

    def register_worker(self, name: str) -> None:
        with self._lock:
            self._workers.setdefault(name, _Worker(name))

    def register_command_consumer(self) -> None:
        """Called once by the worker that writes commands to the inverter (shutdown waits for it)."""
        with self._lock:
            self._command_consumers += 1

    def heartbeat(self, name: str, *, at_s: float) -> None:
        with self._lock:
            self._workers.setdefault(name, _Worker(name)).last_beat_s = at_s

    def mark_ok(self, name: str, *, at_s: float) -> int:
        """Record a good unit of work; returns the error streak that this ends (0 if none)."""
        with self._lock:
            w = self._workers.setdefault(name, _Worker(name))
            ended, w.error_streak, w.last_ok_s, w.last_beat_s = w.error_streak, 0, at_s, at_s
        return ended

    def mark_error(self, name: str, *, reason: str, at_s: float) -> int:
        """Record a failed unit of work; returns the streak (1 = the ok -> failed edge, log it)."""
        with self._lock:
            w = self._workers.setdefault(name, _Worker(name))
            w.error_streak += 1
            w.errors_total += 1
            w.last_error = reason
            w.last_beat_s = at_s
            return w.error_streak

    def count(self, name: str, n: int = 1) -> int:
        with self._lock:
            total = self._counters[name] = self._counters.get(name, 0) + n
            return total

    def set_status(self, key: str, value: object) -> None:
        """Small named status values a worker exposes (e.g. device identity, link state)."""
        with self._lock:
            status = dict(self._status)
            status[key] = value
            self._status = MappingProxyType(status)

    # ---- events and operator requests ----------------------------------------------------
    def record_event(self, kind: str, **data: object) -> int:
        with self._lock:
            return self._append_event(kind, **data)

    def _append_event(self, kind: str, /, **data: object) -> int:
        self._event_seq += 1
        rec = EventRecord(self._event_seq, kind, self._clock.monotonic(), self._clock.wall().timestamp(), MappingProxyType(dict(data)))
        self._events.append(rec)
        return self._event_seq

    def events_since(self, seq: int, limit: int = 1000) -> tuple[EventRecord, ...]:
        with self._lock:
            return tuple(e for e in self._events if e.seq > seq)[:limit]

    def request_mode(self, mode: Mode, *, who: str, via: str) -> RequestResult:
        with self._lock:
            old = self._mode
            self._mode = mode
            if mode is not Mode.EXTERNAL:
                self._setpoint = None
            seq = self._append_event("audit", who=who, via=via, what="mode", old=old.value, new=mode.value, result="accepted")
        return RequestResult(True, old.value, mode.value, "accepted", seq)

    def set_external_setpoint(
        self, *, power_w: float, ttl_s: float, reason: str, who: str, via: str, seq: int | None = None
    ) -> RequestResult:
        """Set an external set-point (and mode EXTERNAL). Refused (and audited) when not finite or TTL out of range."""
        with self._lock:
            old = self._setpoint
            old_desc = None if old is None else old.power_w
            if not (math.isfinite(power_w) and math.isfinite(ttl_s) and 0 < ttl_s <= self._max_ttl_s):
                msg = f"ttl_s must be in (0, {self._max_ttl_s:g}] and power_w finite"
                ev = self._append_event(
                    "audit",
                    who=who,
                    via=via,
                    what="setpoint",
                    old=old_desc,
                    new=power_w,
                    ttl_s=ttl_s,
                    reason=reason,
                    result="refused",
                    message=msg,
                )
                return RequestResult(False, old_desc, power_w, msg, ev)
            now = self._clock.monotonic()
            self._setpoint = ExternalSetpoint(float(power_w), now + ttl_s, reason, who, seq)
            self._mode = Mode.EXTERNAL
            ev = self._append_event(
                "audit", who=who, via=via, what="setpoint", old=old_desc, new=power_w, ttl_s=ttl_s, reason=reason, result="accepted"
            )
        return RequestResult(True, old_desc, power_w, "accepted", ev)

    def release_setpoint(self, *, who: str, via: str, mode: Mode) -> RequestResult:
        """Drop the external set-point and request `mode` instead."""
        with self._lock:
            old = None if self._setpoint is None else self._setpoint.power_w
            self._setpoint = None
            old_mode, self._mode = self._mode, mode
            ev = self._append_event(
                "audit",
                who=who,
                via=via,
                what="release",
                old=old,
                new=None,
                old_mode=old_mode.value,
                new_mode=mode.value,
                result="accepted",
            )
        return RequestResult(True, old, None, "accepted", ev)

    # ---- controller ----------------------------------------------------------------------
    def publish_command(self, command: Command, *, fault_causes: tuple[str, ...], limits_bound: tuple[str, ...]) -> None:
        with self._command_cond:
            if command.state is not self._state:
                self._state, self._state_since_s = command.state, command.at_s
            self._command = command
            self._fault_causes = fault_causes
            self._limits_bound = limits_bound
            self._cycles += 1
            self._command_cond.notify_all()

    def add_overruns(self, n: int) -> None:
        with self._lock:
            self._overruns += n

    def wait_command(self, *, after_seq: int, timeout_s: float) -> Command | None:
        """Block until a command newer than `after_seq` is published (or timeout). For the Modbus worker."""
        with self._command_cond:
            self._command_cond.wait_for(lambda: self._command is not None and self._command.seq > after_seq, timeout_s)
            return self._command if self._command is not None and self._command.seq > after_seq else None

    def ack_command(self, seq: int, *, at_s: float) -> None:
        """The inverter took command `seq`."""
        with self._command_cond:
            if self._written_seq is None or seq > self._written_seq:
                self._written_seq, self._written_at_s = seq, at_s
            self._command_cond.notify_all()

    def wait_command_written(self, seq: int, *, timeout_s: float) -> bool:
        """For shutdown: True once command `seq` (or newer) was written; False on timeout or no writer."""
        with self._command_cond:
            if self._command_consumers == 0:
                return False
            return self._command_cond.wait_for(lambda: self._written_seq is not None and self._written_seq >= seq, timeout_s)

    # ---- readers -------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        now = self._clock.monotonic()
        with self._lock:
            return Snapshot(
                at_s=now,
                started_at_s=self._started_at_s,
                measurements=MappingProxyType(dict(self._measurements)),
                bms_flags=self._bms_flags,
                requested_mode=self._mode,
                external_setpoint=self._setpoint,
                state=self._state,
                state_since_s=self._state_since_s,
                command=self._command,
                command_written_seq=self._written_seq,
                command_written_at_s=self._written_at_s,
                fault_causes=self._fault_causes,
                limits_bound=self._limits_bound,
                workers=tuple(w.frozen() for w in self._workers.values()),
                counters=MappingProxyType(dict(self._counters)),
                cycles=self._cycles,
                overruns=self._overruns,
                last_event_seq=self._event_seq,
                status=self._status,
            )
