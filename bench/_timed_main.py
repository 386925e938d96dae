"""The real `main.py`, with one observer: every `Controller.cycle()` call is timed (bench 4).

    EMS_BENCH_TIMING_FILE=/tmp/t.json python -m bench._timed_main --config FILE [main.py options]

Records the monotonic start and the duration of each cycle, and each cyclic-GC collection (start,
duration, generation: a collection holds the GIL, so a long one delays the loop), and writes them as
JSON when main() returns (after SIGTERM). Nothing else changes: same config, same services, same loop.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from typing import Any

import main as ems_main
from ems import controller as ems_controller


def _instrument(starts: list[float], durations: list[float]) -> None:
    original = ems_controller.Controller.cycle

    def timed_cycle(self: ems_controller.Controller, *args: Any, **kwargs: Any) -> Any:
        t0 = time.monotonic()
        try:
            return original(self, *args, **kwargs)
        finally:
            starts.append(t0)
            durations.append(time.monotonic() - t0)

    ems_controller.Controller.cycle = timed_cycle  # type: ignore[method-assign]


def _observe_gc(collections: list[tuple[float, float, int]]) -> None:
    started: list[float] = []

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[:] = [time.monotonic()]
        elif started:
            collections.append((started[0], time.monotonic() - started[0], info["generation"]))

    gc.callbacks.append(callback)


def run() -> int:
    switch_s = os.environ.get("EMS_BENCH_SWITCH_INTERVAL_S")  # experiments only: GIL switch interval
    if switch_s:
        sys.setswitchinterval(float(switch_s))
    starts: list[float] = []
    durations: list[float] = []
    if os.environ.get("EMS_BENCH_GC_FREEZE") == "0":  # experiments only: main.py without its gc.freeze()
        gc.freeze = lambda: None
    collections: list[tuple[float, float, int]] = []
    _instrument(starts, durations)
    _observe_gc(collections)
    rc = ems_main.main(sys.argv[1:])
    path = os.environ.get("EMS_BENCH_TIMING_FILE")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"starts_s": starts, "durations_s": durations, "gc": collections, "exit": rc}, f)
    return rc


if __name__ == "__main__":
    sys.exit(run())
