"""Fast-poll requests (commissioning): a bounded, expiring request that a device be read faster than
its configured `poll_period_s` for a while. The link that polls the device asks `period_s(device)`
at every wake-up and goes back to its configured period by itself once the request expires or is
withdrawn, so a requester that dies leaves nothing behind.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

__all__ = ["MAX_FAST_POLL_S", "MIN_POLL_PERIOD_S", "FastPoll", "PollRequests"]

MIN_POLL_PERIOD_S = 0.05  # never faster (the same bound as modbus.*.poll_period_s)
MAX_FAST_POLL_S = 600.0  # a request lasts at most this long; renew it to go on


@dataclass(frozen=True, slots=True)
class FastPoll:
    period_s: float
    until_s: float  # monotonic
    who: str


class PollRequests:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[str, FastPoll] = {}  # device -> request

    def request(self, devices: tuple[str, ...], *, period_s: float, duration_s: float, now_s: float, who: str) -> FastPoll:
        """Ask that `devices` be polled every `period_s` (bounded) until `now_s + duration_s` (bounded)."""
        if not (math.isfinite(period_s) and math.isfinite(duration_s)) or duration_s <= 0:
            raise ValueError("period_s and duration_s must be finite, duration_s > 0")
        req = FastPoll(max(period_s, MIN_POLL_PERIOD_S), now_s + min(duration_s, MAX_FAST_POLL_S), who)
        with self._lock:
            for d in devices:
                self._requests[d] = req
        return req

    def withdraw(self, who: str) -> None:
        """End every request of `who` (the links go back to their configured periods at their next wake-up)."""
        with self._lock:
            for d in [d for d, r in self._requests.items() if r.who == who]:
                del self._requests[d]

    def period_s(self, device: str, *, now_s: float) -> float | None:
        """The requested period of `device` now, or None (poll at the configured period)."""
        with self._lock:
            r = self._requests.get(device)
            if r is None:
                return None
            if now_s >= r.until_s:
                del self._requests[device]
                return None
            return r.period_s
