"""The real `main.py` for the fault campaign (bench_faults), with its wall clock running fast.

    EMS_BENCH_WALL_EPOCH=<unix s> EMS_BENCH_WALL_FACTOR=60 python -m bench._campaign_main --config FILE [main.py options]

Only `Clock.wall()` changes: wall = epoch + factor x (now - epoch), the same function of real time
in every (re)started process, so the kill -9 loop's 5-minute uplink windows close every few
seconds and the wall clock never steps back across a restart. Monotonic time (the loop, every
timeout, fault detection, the device timers) is untouched. Same config, services and loop.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime

import main as ems_main
from ems.clock import SystemClock


class FastWallClock(SystemClock):
    def __init__(self) -> None:
        self._epoch = float(os.environ.get("EMS_BENCH_WALL_EPOCH", time.time()))
        self._factor = float(os.environ.get("EMS_BENCH_WALL_FACTOR", "1"))

    def wall(self) -> datetime:
        return datetime.fromtimestamp(self._epoch + self._factor * (time.time() - self._epoch), UTC)


def run() -> int:
    ems_main.SystemClock = FastWallClock  # type: ignore[misc]  # main.run() builds its clock from this name
    return ems_main.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(run())
