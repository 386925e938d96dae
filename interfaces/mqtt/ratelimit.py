"""At most one log line per kind of bad input per interval; the lines in between are counted."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["LogGate"]


@dataclass(slots=True)
class LogGate:
    interval_s: float
    _last_s: dict[str, float] = field(default_factory=dict)
    _held: dict[str, int] = field(default_factory=dict)

    def allow(self, key: str, now_s: float) -> int | None:
        """None when this line must be held back; else how many were held back since the last one."""
        last = self._last_s.get(key)
        if last is not None and now_s - last < self.interval_s:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._last_s[key] = now_s
        return self._held.pop(key, 0)
