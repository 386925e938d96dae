"""One reconnect/retry schedule for every worker: tenacity's wait strategies on the injected clock.

A worker thread must never sleep through a long backoff (it would miss its stop flag, its
heartbeat and, for the inverter, a new command), so a `Backoff` does not sleep: after a failure
it says when the next attempt is due, the worker checks `due(now_s)` in its loop, and a success
resets the schedule. The delays come from a tenacity wait strategy fed a real
`tenacity.RetryCallState` (attempt number and the failure), so a strategy that reads the
exception (the uplink honours Retry-After) works as tenacity documents it.
"""

from __future__ import annotations

import math

import tenacity
from tenacity.wait import wait_base

__all__ = ["Backoff"]


class Backoff:
    def __init__(self, wait: wait_base) -> None:
        self._wait = wait
        self._retrying = tenacity.Retrying(wait=wait, stop=tenacity.stop_never)
        self._state = tenacity.RetryCallState(self._retrying, None, (), {})
        self.failures = 0
        self.next_at_s = -math.inf  # the first attempt is due at once

    @classmethod
    def exponential(cls, *, min_s: float, max_s: float, jitter_s: float = 0.0) -> Backoff:
        """min_s, 2*min_s, 4*min_s, ... capped at max_s (plus up to jitter_s at random)."""
        if jitter_s > 0:
            return cls(tenacity.wait_exponential_jitter(initial=min_s, max=max_s, jitter=jitter_s))
        return cls(tenacity.wait_exponential(multiplier=min_s, min=min_s, max=max_s))

    @classmethod
    def fixed(cls, delay_s: float) -> Backoff:
        return cls(tenacity.wait_fixed(delay_s))

    def due(self, now_s: float) -> bool:
        return now_s >= self.next_at_s

    def failed(self, now_s: float, exc: BaseException | None = None) -> float:
        """Record a failed attempt at `now_s`; returns the delay until the next one is due."""
        st = self._state
        if exc is not None:
            st.set_exception((type(exc), exc, exc.__traceback__))
        else:
            st.set_result(None)
        delay_s = max(0.0, float(self._wait(st)))
        st.prepare_for_next_attempt()
        self.failures += 1
        self.next_at_s = now_s + delay_s
        return delay_s

    def reset(self) -> None:
        """A success: the next failure starts the schedule again from its first delay."""
        self._state = tenacity.RetryCallState(self._retrying, None, (), {})
        self.failures = 0
        self.next_at_s = -math.inf
