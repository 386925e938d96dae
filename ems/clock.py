"""Time source (DESIGN.md §5, STYLE S5). The only module that reads the system clock."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "SimClock", "SystemClock"]


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def wall(self) -> datetime: ...

    def wait_until(self, deadline_s: float, stop: threading.Event) -> bool:
        """Block until monotonic `deadline_s` or until `stop` is set; True if stopped."""
        ...


class SystemClock:
    """Real time: `time.monotonic()` for durations, UTC wall time for records."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> datetime:
        return datetime.now(UTC)

    def wait_until(self, deadline_s: float, stop: threading.Event) -> bool:
        return stop.wait(max(0.0, deadline_s - time.monotonic()))


class SimClock:
    """Simulated time for tests and replay: moves only when told to, never sleeps."""

    def __init__(self, *, start_monotonic_s: float = 1000.0, start_wall: datetime | None = None) -> None:
        self._mono_s = start_monotonic_s
        self._start_mono_s = start_monotonic_s
        self._start_wall = start_wall or datetime(2026, 1, 1, tzinfo=UTC)

    def monotonic(self) -> float:
        return self._mono_s

    def wall(self) -> datetime:
        return self._start_wall + timedelta(seconds=self._mono_s - self._start_mono_s)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"cannot advance a clock backwards (got {seconds} s)")
        self._mono_s += seconds

    def wait_until(self, deadline_s: float, stop: threading.Event) -> bool:
        """Jump to the deadline at once: a simulated loop never waits for real."""
        if stop.is_set():
            return True
        self._mono_s = max(self._mono_s, deadline_s)
        return False
