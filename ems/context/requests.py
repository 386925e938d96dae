"""Operator requests and their audit (DESIGN.md §3, §6): the requested mode, the external set-point,
an external import cap and pushed spot prices (the last two are the planner's inputs).

Every request through REST, MQTT or the CLI lands here and is audited, accepted or refused, as an
`audit` event. An optional audit sink (the store) makes each audit row durable: an accepted request
is audited first, the sink returns once the row is committed, and only then is the change applied
and reported accepted. When the sink cannot confirm the commit (`AuditNotDurable`: the database is
failing, or its writer is gone), the request is refused and NOT applied, and a second audit event
(result "refused", `withdraws` = the first one's seq) says so. Requests are serialised among
themselves (a request may wait for a commit); readers of the snapshot never wait for one.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ems.clock import Clock
from ems.context.events import EventLog
from ems.model import EventRecord, ExternalSetpoint, ImportCap, Mode
from ems.prices import PricePoint, check_points

__all__ = ["AuditNotDurable", "AuditSink", "PricePush", "RequestResult", "Requests"]

_PUSHES_KEPT = 16  # pushes not yet taken by the planner (it takes them within a cycle or two)

AuditSink = Callable[[EventRecord], None]  # called with each audit event before the request returns


class AuditNotDurable(Exception):
    """Raised by an audit sink that cannot confirm the audit row is committed: the request is refused."""


@dataclass(frozen=True, slots=True)
class RequestResult:
    accepted: bool
    old: object
    new: object
    message: str
    event_seq: int
    not_durable: bool = False  # refused only because its audit could not be committed (try again; API: 503)


@dataclass(frozen=True, slots=True)
class PricePush:
    """Spot prices pushed over REST or MQTT (tariff.source kind push, or beside a fetching source)."""

    seq: int  # increases with every accepted push
    points: tuple[PricePoint, ...]
    who: str
    via: str


class Requests:
    def __init__(self, *, events: EventLog, clock: Clock, start_mode: Mode = Mode.IDLE, max_ttl_s: float = 3600.0) -> None:
        self._events = events
        self._clock = clock
        self._max_ttl_s = max_ttl_s
        self._lock = threading.Lock()  # the state: held for a few attribute copies
        self._serial = threading.RLock()  # one request at a time, across its audit commit
        self._mode = start_mode
        self._setpoint: ExternalSetpoint | None = None
        self._import_cap: ImportCap | None = None
        self._pushes: deque[PricePush] = deque(maxlen=_PUSHES_KEPT)
        self._push_seq = 0
        self._listeners: list[threading.Event] = []
        self._sink: AuditSink | None = None

    def add_listener(self, event: threading.Event) -> None:
        """`event` is set whenever a planner input changes (import cap, pushed prices): the planner waits on it."""
        with self._lock:
            self._listeners.append(event)

    def _notify(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for ev in listeners:
            ev.set()

    def set_audit_sink(self, sink: AuditSink | None) -> None:
        self._sink = sink

    def snapshot(self) -> tuple[Mode, ExternalSetpoint | None]:
        with self._lock:
            return self._mode, self._setpoint

    def import_cap(self) -> ImportCap | None:
        with self._lock:
            return self._import_cap

    def set_import_cap(self, *, power_w: float, ttl_s: float | None, reason: str, who: str, via: str) -> RequestResult:
        """An external import limit (dimming): the loop and the planner keep grid import at or below it."""
        with self._serial:
            with self._lock:
                old = None if self._import_cap is None else self._import_cap.power_w
            ok = math.isfinite(power_w) and power_w >= 0 and (ttl_s is None or (math.isfinite(ttl_s) and ttl_s > 0))
            if not ok:
                msg = "power_w must be finite and >= 0, ttl_s > 0 or null"
                ev = self.audit_refused("import_cap", who=who, via=via, old=old, new=power_w, message=msg, ttl_s=ttl_s, reason=reason)
                return RequestResult(False, old, power_w, msg, ev)

            def apply() -> None:
                until = math.inf if ttl_s is None else self._clock.monotonic() + ttl_s
                self._import_cap = ImportCap(float(power_w), until, reason, who)

            r = self._accept(apply, who=who, via=via, what="import_cap", old=old, new=power_w, ttl_s=ttl_s, reason=reason)
        if r.accepted:
            self._notify()
        return r

    def clear_import_cap(self, *, who: str, via: str) -> RequestResult:
        with self._serial:
            with self._lock:
                old = None if self._import_cap is None else self._import_cap.power_w

            def apply() -> None:
                self._import_cap = None

            r = self._accept(apply, who=who, via=via, what="import_cap", old=old, new=None)
        if r.accepted:
            self._notify()
        return r

    def push_prices(self, points: Sequence[PricePoint], *, who: str, via: str) -> RequestResult:
        """Spot prices for the planner (audited as what="prices"); refused when `check_points` finds a problem."""
        pts = tuple(sorted(points, key=lambda p: p.start_unix_s))
        problem = check_points(pts)
        span = {"points": len(pts)} | ({"from_ts": pts[0].start_unix_s, "to_ts": pts[-1].end_unix_s} if pts else {})
        if problem is not None:
            ev = self.audit_refused("prices", who=who, via=via, old=None, new=span, message=problem)
            return RequestResult(False, None, span, problem, ev)

        def apply() -> None:
            self._push_seq += 1
            self._pushes.append(PricePush(self._push_seq, pts, who, via))

        with self._serial:
            r = self._accept(apply, who=who, via=via, what="prices", old=None, new=span)
        if r.accepted:
            self._notify()
        return r

    def pushes_since(self, seq: int) -> tuple[PricePush, ...]:
        """Pushes newer than `seq`, oldest first (the planner keeps its cursor)."""
        with self._lock:
            return tuple(p for p in self._pushes if p.seq > seq)

    def _accept(
        self, apply: Callable[[], None], *, what: str, who: str, via: str, old: object, new: object, **extra: object
    ) -> RequestResult:
        """Audit an accepted request (durably, through the sink), then apply it. Called under `_serial`."""
        rec = self._events.append("audit", who=who, via=via, what=what, old=old, new=new, result="accepted", **extra)
        sink = self._sink
        try:
            if sink is not None:
                sink(rec)
        except AuditNotDurable as exc:
            msg = f"not applied: its audit could not be committed ({exc})"[:300]
            ev = self.audit_refused(what, who=who, via=via, old=old, new=new, message=msg, withdraws=rec.seq, **extra)
            return RequestResult(False, old, new, msg, ev, not_durable=True)
        with self._lock:
            apply()
        return RequestResult(True, old, new, "accepted", rec.seq)

    def request_mode(self, mode: Mode, *, who: str, via: str) -> RequestResult:
        def apply() -> None:
            self._mode = mode
            if mode is not Mode.EXTERNAL:
                self._setpoint = None

        with self._serial:
            with self._lock:
                old = self._mode
            return self._accept(apply, who=who, via=via, what="mode", old=old.value, new=mode.value)

    def set_external_setpoint(
        self, *, power_w: float, ttl_s: float, reason: str, who: str, via: str, seq: int | None = None
    ) -> RequestResult:
        """Set an external set-point (and mode EXTERNAL). Refused (and audited) when not finite or the TTL is out of range."""
        with self._serial:
            with self._lock:
                old = None if self._setpoint is None else self._setpoint.power_w
            ok = math.isfinite(power_w) and math.isfinite(ttl_s) and 0 < ttl_s <= self._max_ttl_s
            if not ok:
                msg = f"ttl_s must be in (0, {self._max_ttl_s:g}] and power_w finite"
                ev = self.audit_refused("setpoint", who=who, via=via, old=old, new=power_w, message=msg, ttl_s=ttl_s, reason=reason)
                return RequestResult(False, old, power_w, msg, ev)

            def apply() -> None:  # the TTL runs from when it is applied, after the audit commit
                self._setpoint = ExternalSetpoint(float(power_w), self._clock.monotonic() + ttl_s, reason, who, seq)
                self._mode = Mode.EXTERNAL

            return self._accept(apply, who=who, via=via, what="setpoint", old=old, new=power_w, ttl_s=ttl_s, reason=reason)

    def release_setpoint(self, *, who: str, via: str, mode: Mode) -> RequestResult:
        """Drop the external set-point and request `mode` instead."""

        def apply() -> None:
            self._setpoint = None
            self._mode = mode

        with self._serial:
            with self._lock:
                old = None if self._setpoint is None else self._setpoint.power_w
                old_mode = self._mode
            return self._accept(apply, who=who, via=via, what="release", old=old, new=None, old_mode=old_mode.value, new_mode=mode.value)

    def audit_refused(self, what: str, *, who: str, via: str, old: object, new: object, message: str, **extra: object) -> int:
        """Audit a refused request (also one refused before it reached this part: bad token, bad body): returns
        the event seq. The sink is told, but a refusal is not held up by (or refused for) its commit."""
        rec = self._events.append("audit", who=who, via=via, what=what, old=old, new=new, result="refused", message=message[:300], **extra)
        with contextlib.suppress(AuditNotDurable):  # it is refused either way; the row comes with the next flush
            if self._sink is not None:
                self._sink(rec)
        return rec.seq
