"""Base of every daemon worker thread (STYLE S6): wait, do one unit, survive it."""

from __future__ import annotations

import threading

import structlog

from ems.clock import Clock
from ems.context import EMSContext

__all__ = ["Worker"]


class Worker(threading.Thread):
    """A named daemon thread that calls `iterate()` once per `period_s` until stopped.

    Subclasses implement `iterate()` (one unit of I/O) and may override `wait_next()` to wake on
    an event instead of the period. Expected failures are counted through `mark_error`; anything
    unexpected is logged with its traceback and counted, and the thread goes on. Failure is
    logged on the ok -> failed edge and on recovery, not on every poll.
    """

    expected_errors: tuple[type[BaseException], ...] = (OSError, TimeoutError, ValueError)
    critical: bool = True  # dead/stalled -> FAULT; False for services control does not depend on

    def __init__(self, *, name: str, ctx: EMSContext, clock: Clock, period_s: float) -> None:
        super().__init__(name=name, daemon=True)
        self._ctx = ctx
        self._clock = clock
        self.period_s = period_s
        self._stop_event = threading.Event()
        self.log = structlog.get_logger(f"interfaces.{name}").bind(worker=name)
        ctx.register_worker(name)

    def iterate(self) -> None:
        raise NotImplementedError

    def wait_next(self) -> bool:
        """Wait for the next unit of work; True when the worker must stop."""
        return self._stop_event.wait(self.period_s)

    def on_stop(self) -> None:
        """Release resources (close sockets, buses) after the loop ends."""

    def run(self) -> None:
        self.log.info("worker_started", period_s=self.period_s)
        try:
            while not self._stop_event.is_set():
                self._one_unit()
                if self.wait_next():
                    break
        finally:
            try:
                self.on_stop()
            except Exception:
                self.log.exception("worker_stop_failed")
            self.log.info("worker_stopped")

    def _one_unit(self) -> None:
        try:
            self.iterate()
        except self.expected_errors as exc:
            self.failed(type(exc).__name__, detail=str(exc))
        except Exception as exc:
            self.failed("unexpected", detail=repr(exc))
            self.log.exception("worker_iteration_failed")
        else:
            self._ctx.heartbeat(self.name, at_s=self._clock.monotonic())

    def succeeded(self) -> None:
        """Mark a good unit of work; logs recovery once after a failure streak."""
        ended = self._ctx.mark_ok(self.name, at_s=self._clock.monotonic())
        if ended:
            self.log.info("worker_recovered", failed_iterations=ended)

    def failed(self, reason: str, *, detail: str = "") -> None:
        """Mark a failed unit of work; logs the first failure of a streak only."""
        streak = self._ctx.mark_error(self.name, reason=reason, at_s=self._clock.monotonic())
        if streak == 1:
            self.log.warning("worker_failed", reason=reason, detail=detail[:300])

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout_s)
