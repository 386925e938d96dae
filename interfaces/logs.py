"""structlog set-up (STYLE S7): readable console on a TTY, one JSON object per line otherwise."""

from __future__ import annotations

import logging
import sys
import threading
from typing import TextIO

import structlog

__all__ = ["LogGate", "configure_logging"]


def configure_logging(*, fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> str:
    """Configure structlog once per process; returns the format chosen ("json" or "console")."""
    out = stream if stream is not None else sys.stderr
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty(), sort_keys=False)
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if fmt == "json":
        processors.append(structlog.processors.format_exc_info)
    processors.append(renderer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    return fmt


class LogGate:
    """The one rate limit for log lines about bad input: at most one line per key per `interval_s`.

    `allow(key, now_s)` answers None when the line must be held back, else how many lines of that
    key were held back since the last one (put it in the line). `max_lines` (optional) caps the
    lines of all keys together per interval, so a flood of distinct keys (random CAN ids) cannot
    flood the log; the table of keys is bounded by `max_keys`. Thread-safe: the API calls it from
    several waitress threads.
    """

    def __init__(self, interval_s: float, *, max_lines: int | None = None, max_keys: int = 4096) -> None:
        self.interval_s = interval_s
        self._max_lines = max_lines
        self._max_keys = max_keys
        self._lock = threading.Lock()
        self._last_s: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._window_s = -float("inf")
        self._window_lines = 0

    def allow(self, key: str, now_s: float) -> int | None:
        with self._lock:
            last = self._last_s.get(key)
            if last is not None and now_s - last < self.interval_s:
                self._hold(key)
                return None
            if now_s - self._window_s >= self.interval_s:
                self._window_s, self._window_lines = now_s, 0
            if self._max_lines is not None and self._window_lines >= self._max_lines:
                self._hold(key)
                return None
            if len(self._last_s) >= self._max_keys and key not in self._last_s:
                self._last_s = {k: t for k, t in self._last_s.items() if now_s - t < self.interval_s}
                self._held = {k: n for k, n in self._held.items() if k in self._last_s}
            self._window_lines += 1
            self._last_s[key] = now_s
            return self._held.pop(key, 0)

    def _hold(self, key: str) -> None:
        if key in self._held or len(self._held) < self._max_keys:
            self._held[key] = self._held.get(key, 0) + 1
