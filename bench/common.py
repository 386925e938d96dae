"""Small helpers shared by the benchmark scripts (no test imports: a bench runs on a fresh clone)."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from simulators.kpi import percentile  # one nearest-rank percentile for replay KPIs and benchmarks

__all__ = ["REPO_ROOT", "emit", "free_port", "lateness", "percentile", "stats_ms", "wait_until"]

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def stats_ms(seconds: Iterable[float]) -> dict[str, float | int]:
    """p50/p99/max/mean of durations given in seconds, in milliseconds."""
    xs = [s * 1000.0 for s in seconds]
    if not xs:
        return {"n": 0}
    return {
        "n": len(xs),
        "p50_ms": round(percentile(xs, 50), 3),
        "p99_ms": round(percentile(xs, 99), 3),
        "max_ms": round(max(xs), 3),
        "mean_ms": round(sum(xs) / len(xs), 3),
    }


def emit(result: Mapping[str, object]) -> None:
    """Print the one JSON object a bench script produces (the runner reads the last JSON line)."""
    sys.stdout.write(json.dumps(result, default=str) + "\n")
    sys.stdout.flush()


def wait_until(pred: Callable[[], Any], timeout_s: float, pause_s: float = 0.05) -> Any:
    """Poll `pred` until it returns something truthy (returned) or `timeout_s` passes (None); the
    predicate is tried once more at the deadline. OSError (URLError included), ValueError and KeyError
    from the predicate (a server not up yet, a half-written file, a field not there yet) count as not yet."""
    ev = threading.Event()
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            v = pred()
            if v:
                return v
        except (OSError, ValueError, KeyError):
            pass
        if time.monotonic() >= deadline:
            return None
        ev.wait(pause_s)


def lateness(starts: list[float], period_s: float = 1.0) -> list[float]:
    """Lateness of each cycle start against the best-fitting `period_s` grid (earliest offset = 0)."""
    if not starts:
        return []
    s0 = starts[0]
    offsets = [s - round((s - s0) / period_s) * period_s for s in starts]
    base = min(offsets)
    return [o - base for o in offsets]
