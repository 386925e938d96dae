"""What the pure core sees each cycle: one frozen bundle built from the context's parts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ems.model import BmsFlags, ExternalSetpoint, ImportCap, Mode, Quantity, Reading
from ems.plan import PlanBounds

__all__ = ["Inputs"]


@dataclass(frozen=True, slots=True)
class Inputs:
    now_s: float  # monotonic
    started_at_s: float  # monotonic start of the process; a source never read is aged from here
    measurements: Mapping[Quantity, Reading]
    bms_flags: BmsFlags | None
    requested_mode: Mode
    external_setpoint: ExternalSetpoint | None
    worker_faults: tuple[str, ...] = ()  # e.g. "worker_dead:modbus-ess", found by the supervisor
    shutdown: bool = False
    plan: PlanBounds | None = None  # the active plan slot (target and battery range), None: plain self-consumption
    import_cap: ImportCap | None = None  # an external import limit (dimming), applied with limit 4

    def fresh(self, q: Quantity, *, max_age_s: float) -> Reading | None:
        """The reading of `q` when it is finite and at most `max_age_s` old, else None."""
        r = self.measurements.get(q)
        return r if r is not None and r.fresh(now_s=self.now_s, max_age_s=max_age_s) else None

    def value(self, q: Quantity, *, max_age_s: float) -> float | None:
        r = self.fresh(q, max_age_s=max_age_s)
        return None if r is None else r.value

    def flag(self, q: Quantity, *, max_age_s: float) -> bool | None:
        v = self.value(q, max_age_s=max_age_s)
        return None if v is None else v >= 0.5

    def setpoint_active(self) -> bool:
        sp = self.external_setpoint
        return sp is not None and sp.active(self.now_s)
