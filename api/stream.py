"""Live push (docs/api.md "Stream"): GET /api/v1/stream, Server-Sent Events of status changes and events.

    retry: 3000
    : connected

    event: status
    data: {"state": "SELF_CONSUMPTION", "grid_power_w": 12, ...}

    id: 42
    event: event
    data: {"seq": 42, "kind": "audit", "ts": 1767225600.5, "data": {...}}

    : heartbeat

Events come straight from the context's event log (`wait_after`), so they show the moment they are
recorded, not after the store's next flush; `id` is the event's seq (the `event_seq` a write
answers), so a client that reconnects with `Last-Event-ID` (browsers do) gets what it missed that
the log still holds. A `status` event goes out when the compact status changes (checked once a
second). Auth as for reads. Each stream holds one waitress worker thread while open, so the
streams are capped (`api.stream_max_clients`, at most `api.threads` - 1; more get 503 with
Retry-After), each ends after `api.stream_max_s` (the client reconnects), a heartbeat comment goes
out every `api.stream_heartbeat_s` (below waitress's channel timeout), and a client that went
away is noticed at the next write or heartbeat.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import structlog
from flask import Response, current_app, g, request

from api.deps import ApiDeps, deps
from api.routes import error_response
from api.sources import event_info
from config import EMSConfig
from ems.clock import Clock, SystemClock
from ems.context import EventLog
from ems.model import Quantity, Snapshot

__all__ = ["EXTENSION", "StreamHub", "get_stream", "status_doc"]

EXTENSION = "ems_stream"
_STATUS_CHECK_S = 1.0
_RETRY_MS = 3000
_BACKLOG = 500  # events sent at most on a reconnect

log = structlog.get_logger("api.stream")
Q = Quantity


class StreamHub:
    """Counts the open streams against the cap (thread-safe: each stream runs in a waitress thread)."""

    def __init__(self, cfg: EMSConfig, events: EventLog, clock: Clock | None = None) -> None:
        self.max_clients = max(0, min(cfg.api.stream_max_clients, cfg.api.threads - 1))
        self.max_s = cfg.api.stream_max_s
        self.heartbeat_s = cfg.api.stream_heartbeat_s
        self.events = events
        self.clock = clock or SystemClock()  # real time: an HTTP connection lasts real seconds whatever the EMS's clock
        self._lock = threading.Lock()
        self.open = 0

    def acquire(self) -> bool:
        with self._lock:
            if self.open >= self.max_clients:
                return False
            self.open += 1
            return True

    def release(self) -> None:
        with self._lock:
            self.open -= 1


def _r(v: float | None, digits: int = 0) -> float | None:
    return None if v is None else round(v, digits)


def status_doc(snap: Snapshot, *, fresh_s: float, live: bool) -> dict[str, Any]:
    """What the dashboard shows at a glance; a stale reading is null (a derived load needs all its inputs)."""

    def fresh(q: Quantity) -> float | None:
        r = snap.reading(q)
        return r.value if r is not None and r.fresh(now_s=snap.at_s, max_age_s=fresh_s) else None

    grid, pv, ess = fresh(Q.GRID_POWER_W), fresh(Q.PV_POWER_W), fresh(Q.ESS_POWER_W)
    pv_known = snap.reading(Q.PV_POWER_W) is not None
    load = None if grid is None or ess is None or (pv_known and pv is None) else grid + (pv or 0.0) + ess
    cmd = snap.command
    return {
        "state": snap.state.value,
        "requested_mode": snap.requested_mode.value,
        "live": live,
        "grid_power_w": _r(grid),
        "pv_power_w": _r(pv),
        "ess_power_w": _r(ess),
        "load_power_w": _r(load),
        "soc_pct": _r(fresh(Q.SOC_PCT), 1),
        "setpoint_w": None if cmd is None else _r(cmd.setpoint_w),
        "written_w": None if cmd is None else _r(cmd.written_w),
        "fault_causes": list(snap.fault_causes),
        "limits": list(snap.limits),
    }


def _sse(event: str | None, data: object, *, id_: int | None = None) -> bytes:
    head = (f"id: {id_}\n" if id_ is not None else "") + (f"event: {event}\n" if event else "")
    return (head + "data: " + json.dumps(data, separators=(",", ":"), default=str) + "\n\n").encode()


def _after_seq(events: EventLog) -> int:
    """Where to start: Last-Event-ID (a reconnect) or ?after_seq=, else only what comes next."""
    raw = request.headers.get("Last-Event-ID") or request.args.get("after_seq")
    if raw is not None and raw.strip().isdigit():
        return min(int(raw.strip()), events.last_seq)
    return events.last_seq


def get_stream() -> Response:
    d = deps()
    hub: StreamHub = current_app.extensions[EXTENSION]
    if not hub.acquire():
        resp = error_response(
            503, "too_many_streams", f"stream: {hub.max_clients} live stream(s) open already (api.stream_max_clients); poll or retry"
        )
        resp.headers["Retry-After"] = "5"
        return resp
    after = _after_seq(hub.events)
    gone: Callable[[], bool] = request.environ.get("waitress.client_disconnected") or (lambda: False)
    log.info("api_stream_opened", who=g.get("who"), open=hub.open, after_seq=after)
    resp = Response(_frames(d, hub, after, gone), mimetype="text/event-stream")
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Accel-Buffering"] = "no"  # a reverse proxy must not buffer it
    return resp


def _frames(d: ApiDeps, hub: StreamHub, after: int, gone: Callable[[], bool]) -> Iterator[bytes]:
    clock = hub.clock
    start = clock.monotonic()
    end = start + hub.max_s
    fresh_s, live = d.cfg.control.fault_timeout_s, d.cfg.control.live
    last_write = start
    last_doc: dict[str, Any] | None = None
    next_status = start
    sent = 0
    try:
        yield f"retry: {_RETRY_MS}\n: connected; this stream ends after {hub.max_s:g} s, reconnect to go on\n\n".encode()
        while True:
            now = clock.monotonic()
            if now >= end or gone():
                return
            chunk = b""
            for e in hub.events.since(after, limit=_BACKLOG):
                chunk += _sse("event", event_info(e).model_dump(mode="json"), id_=e.seq)
                after = e.seq
            if now >= next_status:
                doc = status_doc(d.snapshot(), fresh_s=fresh_s, live=live)
                if doc != last_doc:
                    chunk += _sse("status", doc)
                    last_doc = doc
                next_status = now + _STATUS_CHECK_S
            if not chunk and now - last_write >= hub.heartbeat_s:
                chunk = b": heartbeat\n\n"
            if chunk:
                yield chunk
                sent += 1
                last_write = now
            wait_s = max(0.01, min(next_status, end, last_write + hub.heartbeat_s) - clock.monotonic())
            hub.events.wait_after(after, timeout_s=wait_s)
    finally:
        hub.release()
        log.info("api_stream_closed", seconds=round(clock.monotonic() - start, 1), writes=sent, open=hub.open)
