"""Base of every daemon worker thread (STYLE S6): wait, do one unit, survive it."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import structlog

from ems.clock import Clock
from ems.context import Health

__all__ = ["Worker"]


class Worker(threading.Thread):
    """A named daemon thread that calls `iterate()` once per `period_s` until stopped.

    Subclasses implement `iterate()` (one unit of I/O) and may override `wait_next()` to wake on
    an event instead of the period. The thread beats its heartbeat after every unit; outcomes are
    recorded per device (`succeeded` / `failed`), so a thread serving several devices (an RS-485
    line) keeps their health apart. Expected failures (`expected_errors`: I/O and the protocol's
    own decode errors, never a bare ValueError, which is a programming error) are recorded; anything
    unexpected is logged with its traceback and recorded, and the thread goes on. Failure is
    logged on the ok -> failed edge and on recovery, not on every poll.
    """

    expected_errors: tuple[type[BaseException], ...] = (OSError, TimeoutError)
    critical: bool = True  # only for a thread with no device: dead/stalled -> FAULT

    def __init__(self, *, name: str, health: Health, clock: Clock, period_s: float, devices: Sequence[str] = ()) -> None:
        super().__init__(name=name, daemon=True)
        self._health = health
        self._clock = clock
        self.period_s = period_s
        self.devices = tuple(devices)
        self._stop_event = threading.Event()
        self.log = structlog.get_logger(f"interfaces.{name}").bind(worker=name)
        health.register_thread(name, self.devices)

    def iterate(self) -> None:
        raise NotImplementedError

    def wait_next(self) -> bool:
        """Wait for the next unit of work; True when the worker must stop."""
        return self._stop_event.wait(self.period_s)

    def on_stop(self) -> None:
        """Release resources (close sockets, buses) after the loop ends."""

    def run(self) -> None:
        self.log.info("worker_started", period_s=self.period_s, devices=",".join(self.devices) or None)
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
        self.beat()

    def beat(self) -> None:
        """The thread is alive (the controller's stall supervision reads this)."""
        self._health.beat(self.name, at_s=self._clock.monotonic())

    def _device(self, device: str | None) -> str:
        return device if device is not None else (self.devices[0] if self.devices else self.name)

    def succeeded(self, device: str | None = None) -> None:
        """Mark a good unit of work of `device` (default: the thread's only device); logs recovery once."""
        dev = self._device(device)
        ended = self._health.ok(dev, at_s=self._clock.monotonic())
        if ended:
            self.log.info("worker_recovered", device=dev, failed_iterations=ended)

    def failed(self, reason: str, *, detail: str = "", device: str | None = None) -> None:
        """Mark a failed unit of work of `device`; logs the first failure of a streak only."""
        devices = (device,) if device is not None else (self.devices or (self.name,))
        for dev in devices:
            streak = self._health.error(dev, reason=reason, at_s=self._clock.monotonic())
            if streak == 1:
                self.log.warning("worker_failed", device=dev, reason=reason, detail=detail[:300])

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout_s)
