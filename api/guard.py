"""Keep the API answering under connection abuse (issue 18): waitress plus three guards.

Left to its defaults, waitress stops accepting at 100 open connections (`connection_limit`), closes
an idle one only after 120 s (`channel_timeout`, checked every 30 s), never closes a client that
trickles its headers (each byte counts as activity), and serves /health in the same few worker
threads as every other request. Here:

- `GuardedChannel` remembers when the current request's first byte arrived and when the client
  last sent anything (monotonic);
- `enforce()` (the API's I/O thread calls it between polls) closes a connection with no request
  in service that has been silent for `api.idle_timeout_s`, one whose request has not arrived
  completely within `api.request_timeout_s` however slowly it trickles, and, above
  `api.connection_limit`, the longest-idle ones, so a new client always gets in (waitress's own
  limit is set above ours and only catches bursts between two passes);
- `LaneDispatcher` serves the fast paths (/api/v1/health) on a thread of their own: health answers
  while every worker thread is busy with slow requests.

A request being served is never cut. Closing is waitress's own (`will_close`, done by the I/O loop).
Connections live in real time whatever clock the control loop runs on, so these timers use a
`SystemClock` of their own (`NET_CLOCK`), never the injected one (a test's frozen SimClock).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from waitress.channel import HTTPChannel  # type: ignore[import-untyped]
from waitress.task import ThreadedTaskDispatcher  # type: ignore[import-untyped]

from ems.clock import Clock, SystemClock

__all__ = ["FAST_PATHS", "NET_CLOCK", "Closed", "GuardedChannel", "LaneDispatcher", "enforce"]

FAST_PATHS = frozenset({"/api/v1/health"})
NET_CLOCK: Clock = SystemClock()


class GuardedChannel(HTTPChannel):  # type: ignore[misc]
    """waitress's channel, timing the request being received and the client's last bytes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen_s = NET_CLOCK.monotonic()  # last bytes from the client (or the accept)
        self.began_s: float | None = None  # first byte of the request still being received

    def received(self, data: bytes) -> bool:
        if data:
            now = NET_CLOCK.monotonic()
            self.seen_s = now
            if self.request is None:
                self.began_s = now
        done = bool(super().received(data))
        if self.request is None:  # complete (handed to a task) or nothing pending
            self.began_s = None
        return done


class _Lane(ThreadedTaskDispatcher):  # type: ignore[misc]
    def start_new_thread(self, target: Any, thread_no: int) -> None:
        threading.Thread(target=target, name=f"api-health-{thread_no}", args=(thread_no,), daemon=True).start()


class LaneDispatcher(ThreadedTaskDispatcher):  # type: ignore[misc]
    """waitress's task dispatcher with a lane (its own thread) for `fast_paths`."""

    def __init__(self, fast_paths: Iterable[str] = FAST_PATHS, *, lane_threads: int = 1) -> None:
        super().__init__()
        self._fast = frozenset(fast_paths)
        self._lane = _Lane()
        self._lane.set_thread_count(lane_threads)

    def add_task(self, task: Any) -> None:  # task: the channel whose first queued request is due
        requests = getattr(task, "requests", None)
        req = requests[0] if requests else None
        if req is not None and not req.error and req.path in self._fast:
            self._lane.add_task(task)
        else:
            super().add_task(task)

    def shutdown(self, cancel_pending: bool = True, timeout: float = 5) -> bool:
        done = super().shutdown(cancel_pending, timeout)
        return bool(self._lane.shutdown(cancel_pending, timeout) and done)


@dataclass(frozen=True, slots=True)
class Closed:
    idle: int = 0  # silent for idle_timeout_s with no request in service
    slow: int = 0  # a request not received completely within request_timeout_s
    evicted: int = 0  # longest-idle, to stay at connection_limit
    open: int = 0  # connections left open

    def __bool__(self) -> bool:
        return bool(self.idle or self.slow or self.evicted)


def enforce(socket_map: Mapping[int, Any], *, now_s: float, limit: int, idle_s: float, request_s: float) -> Closed:
    """Mark the connections to close (the I/O loop closes them at its next pass); returns the counts."""
    channels = [d for d in list(socket_map.values()) if isinstance(d, GuardedChannel) and not (d.will_close or d.close_when_flushed)]
    idle = slow = 0
    candidates: list[tuple[float, GuardedChannel]] = []
    live = len(channels)
    for ch in channels:
        if ch.requests:  # being served or queued: never cut
            continue
        if ch.began_s is not None:
            if now_s - ch.began_s > request_s:
                ch.will_close, slow, live = True, slow + 1, live - 1
                continue
            candidates.append((ch.began_s, ch))
        elif now_s - ch.seen_s > idle_s and not ch.total_outbufs_len:
            ch.will_close, idle, live = True, idle + 1, live - 1
        else:
            candidates.append((ch.seen_s, ch))
    evicted = 0
    if live > limit:
        candidates.sort(key=lambda c: c[0])
        for _, ch in candidates[: live - limit]:
            ch.will_close = True
            evicted += 1
        live -= evicted
    return Closed(idle, slow, evicted, live)
