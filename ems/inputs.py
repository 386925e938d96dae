"""What the pure core sees each cycle: one frozen bundle built from a context snapshot."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from ems.model import BmsFlags, ExternalSetpoint, Mode, Quantity, Reading

__all__ = ["Inputs"]


@dataclass(frozen=True, slots=True)
class Inputs:
    now_s: float  # monotonic
    started_at_s: float  # monotonic start of the process; a source never read is aged from here
    measurements: Mapping[Quantity, Reading]
    bms_flags: BmsFlags | None
    requested_mode: Mode
    external_setpoint: ExternalSetpoint | None
    worker_faults: tuple[str, ...] = ()  # e.g. "worker_dead:modbus", found by the supervisor
    shutdown: bool = False

    def value(self, q: Quantity, *, max_age_s: float | None = None) -> float | None:
        """The finite value of `q`, or None when missing, non-finite or older than `max_age_s`."""
        r = self.measurements.get(q)
        if r is None or not math.isfinite(r.value):
            return None
        if max_age_s is not None and self.now_s - r.at_s > max_age_s:
            return None
        return r.value

    def flag(self, q: Quantity, *, max_age_s: float | None = None) -> bool | None:
        v = self.value(q, max_age_s=max_age_s)
        return None if v is None else v >= 0.5

    def setpoint_active(self) -> bool:
        sp = self.external_setpoint
        return sp is not None and math.isfinite(sp.power_w) and self.now_s < sp.expires_at_s
