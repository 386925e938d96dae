"""Named counters the parts keep (queue drops, rejected values, refused writes): thread-safe."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["Counters"]


class Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def count(self, name: str, n: int = 1) -> int:
        """Add `n` to counter `name`; returns the new total."""
        with self._lock:
            total = self._counts[name] = self._counts.get(name, 0) + n
            return total

    def snapshot(self) -> Mapping[str, int]:
        with self._lock:
            return MappingProxyType(dict(self._counts))
