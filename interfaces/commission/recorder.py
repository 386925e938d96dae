"""What a commissioning run records: every new reading of the quantities it fits (with its receive
time) and every command the controller publishes (with its time), sampled by a thread of its own so
that a run waiting on an audit commit never leaves a gap in the samples."""

from __future__ import annotations

import math
import statistics
import threading
from collections.abc import Sequence

from ems.context import CommandChannel, Readings
from ems.model import Command, Quantity

__all__ = ["RECORDED", "Recorder", "command_changes", "slope"]

Q = Quantity
RECORDED = (Q.ESS_POWER_W, Q.GRID_POWER_W, Q.BMS_CURRENT_A, Q.SOC_PCT)
_RECORD_S = 0.02  # the recorder's pace: faster than the fastest poll (a reading is kept once, by its receive time)
SAME_W = 0.5  # commands closer than this are the same command


class Recorder(threading.Thread):
    """Records every new reading of `RECORDED` (by receive time) and every published command."""

    def __init__(self, readings: Readings, commands: CommandChannel, *, name: str = "commission-rec") -> None:
        super().__init__(name=name, daemon=True)
        self._readings = readings
        self._commands = commands
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._series: dict[Quantity, list[tuple[float, float]]] = {q: [] for q in RECORDED}
        self._last_at: dict[Quantity, float] = {}
        self._cmds: list[Command] = []

    def run(self) -> None:
        while not self._stop_event.wait(_RECORD_S):
            self.sample()

    def sample(self) -> None:
        measurements, _flags = self._readings.snapshot()
        status, _written = self._commands.snapshot()
        with self._lock:
            for q in RECORDED:
                r = measurements.get(q)
                if r is not None and r.at_s != self._last_at.get(q) and math.isfinite(r.value):
                    self._last_at[q] = r.at_s
                    self._series[q].append((r.at_s, r.value))
            if status is not None and (not self._cmds or status.command.seq != self._cmds[-1].seq):
                self._cmds.append(status.command)

    def stop(self, timeout_s: float = 1.0) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout_s)
        self.sample()

    def series(self, q: Quantity, *, since_s: float = -math.inf, until_s: float = math.inf) -> list[tuple[float, float]]:
        with self._lock:
            return [p for p in self._series[q] if since_s <= p[0] < until_s]

    def commands(self) -> list[Command]:
        with self._lock:
            return list(self._cmds)


def command_changes(
    cmds: Sequence[Command], *, since_s: float = -math.inf, until_s: float = math.inf, rest_w: float = 0.0
) -> list[tuple[float, float]]:
    """The written command as (time, W): at rest (`rest_w`, settled since `since_s`), then each change before `until_s`."""
    out: list[tuple[float, float]] = [(since_s if math.isfinite(since_s) else (cmds[0].at_s if cmds else 0.0), rest_w)]
    for c in cmds:
        if c.at_s >= until_s:
            break
        if c.at_s > since_s and abs(c.written_w - out[-1][1]) > SAME_W:
            out.append((c.at_s, c.written_w))
    return out


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (t, v) points, per second."""
    mean_t = statistics.fmean(t for t, _v in points)
    mean_v = statistics.fmean(v for _t, v in points)
    stt = sum((t - mean_t) ** 2 for t, _v in points)
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / stt if stt > 0 else 0.0
