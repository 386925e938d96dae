"""The inverter side of the ESS link: take control, write commands, set the device's own revert
timer, and hand control back on stop, as the device profile's `control:` section declares.

Owned by the ESS link thread (no locking). Every write goes through `DeviceLink.write_named`, so
each point's type, scale, sign, word order and unit id come from the profile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import structlog

from ems.clock import Clock
from interfaces.modbus.control import ControlSpec, command_points, revert_value
from interfaces.modbus.link import DeviceLink, LinkError

__all__ = ["Actuator", "RevertState"]

log = structlog.get_logger("interfaces.modbus.actuator")
_SAME_W = 0.5  # an unchanged command: within this of the last one written


@dataclass(frozen=True, slots=True)
class RevertState:
    """What a process death leads to, as the EMS set and read back at connect (for /status)."""

    settable: bool
    timeout_s: float | None  # when the device reverts without a new command (None: unknown / never)
    verified: bool  # read back equal to what was written
    reverts_to: str

    def describe(self) -> str:
        if self.settable and not self.verified:
            return f"unknown: the revert timer was written but the read-back differs; the inverter may keep the last command until {self.reverts_to}"
        if self.timeout_s is None:
            return f"unknown: the profile declares no revert timer; the inverter keeps the last command until {self.reverts_to}"
        how = "set and read back" if self.verified else "fixed by the device"
        return f"the inverter returns to {self.reverts_to} {self.timeout_s:g} s after the last command ({how})"


class Actuator:
    def __init__(
        self, name: str, spec: ControlSpec, *, clock: Clock, fault_timeout_s: float, rating_w: float | None, release: bool
    ) -> None:
        self.name = name
        self.spec = spec
        self._clock = clock
        self._fault_timeout_s = fault_timeout_s
        self._rating_cfg_w = rating_w
        self._release = release
        self.rating_w: float | None = rating_w
        self.revert: RevertState | None = None
        self._heartbeat = 0
        self._revert_write: tuple[str, float] | None = None  # (point, value) to reload with every command (revert.rewrite)
        self._last_w: float | None = None
        self._last_at_s = -math.inf
        self._clamp_logged = False

    # ---- (re)connect ----------------------------------------------------------------------------
    def take_control(self, link: DeviceLink) -> None:
        """After a (re)connect, before the first command: handover writes, the revert timer, the rating."""
        spec = self.spec
        if spec.handover:
            link.write_named([(w.point, w.value) for w in spec.handover], merge=not spec.write.single_writes)
        if spec.rating is not None and self._rating_cfg_w is None:
            rating = link.read_named(spec.rating)
            if not (math.isfinite(rating) and rating > 0):
                raise LinkError(f"{self.name}: rating {spec.rating} reads {rating:g}: cannot express a power in % of it")
            self.rating_w = rating
        self.revert = self._set_revert(link)
        self._last_w, self._last_at_s = None, -math.inf

    def _set_revert(self, link: DeviceLink) -> RevertState:
        r = self.spec.revert
        target = revert_value(self.spec, fault_timeout_s=self._fault_timeout_s)
        if target is None:
            return RevertState(False, r.fixed_s, False, r.reverts_to)
        point, value, timeout_s = target
        self._revert_write = (point, value) if r.rewrite else None
        link.write_named([(point, value)])
        back = link.read_named(point)
        verified = abs(back - value) < 1e-6
        (log.info if verified else log.warning)(
            "inverter_revert_set", device=self.name, point=point, written=value, read_back=back, timeout_s=timeout_s, verified=verified
        )
        return RevertState(True, timeout_s if verified else None, verified, r.reverts_to)

    # ---- commands -------------------------------------------------------------------------------
    def due(self, setpoint_w: float) -> bool:
        """Write now? A changed command always; an unchanged one at most every min_interval_s, and
        at least every keepalive_s (the device drops external control without a write that often)."""
        now = self._clock.monotonic()
        if self._last_w is None or abs(setpoint_w - self._last_w) > _SAME_W:
            return True
        since_s = now - self._last_at_s
        w = self.spec.write
        return since_s >= w.min_interval_s or (w.keepalive_s is not None and since_s >= w.keepalive_s)

    def write(self, link: DeviceLink, setpoint_w: float) -> None:
        spec = self.spec
        points = list(command_points(spec, setpoint_w, rating_w=self.rating_w))
        if self._revert_write is not None:  # a countdown the device restarts only when its register is written: reload it first
            points.insert(0, self._revert_write)
        if spec.heartbeat is not None:
            self._heartbeat = (self._heartbeat + 1) % 0x10000
            points.append((spec.heartbeat, float(self._heartbeat)))
        wanted = dict(points)
        written = link.write_named(points, merge=not spec.write.single_writes)
        clamped = {n: v for n, v in written.items() if n != spec.heartbeat and abs(v - wanted[n]) > 1e-6}
        if clamped and not self._clamp_logged:
            log.warning("modbus_setpoint_clamped", device=self.name, requested_w=round(setpoint_w, 1), points=clamped)
        self._clamp_logged = bool(clamped)
        self._last_w, self._last_at_s = setpoint_w, self._clock.monotonic()

    # ---- stop -----------------------------------------------------------------------------------
    def release(self, link: DeviceLink) -> bool:
        """On stop: the profile's release writes (native mode). False when there is nothing to write."""
        if not self._release or not self.spec.release:
            return False
        link.write_named([(w.point, w.value) for w in self.spec.release], merge=not self.spec.write.single_writes)
        log.info("inverter_released", device=self.name, points=",".join(w.point for w in self.spec.release))
        return True
