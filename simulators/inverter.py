"""A simulated inverter's control semantics, from its device profile (the vendor-faithful part of `python -m simulators`).

The profile's `control:` section says how the device takes a set-point (interfaces/modbus/control.py);
this model applies the writes the EMS makes the way the device does:
- each write of a control point updates what the device is asked to do (`decode_command`); points
  that say "own mode" (enable off, no forced direction, release values) put it back in its own mode;
- the device's revert timer: without a new command write for that long it returns to its own mode
  (the timeout written by the EMS to the profile's revert point, or the device's fixed one);
- in its own mode a real inverter does self-consumption (it covers the load from the battery);
  the reference device holds 0 W; a device whose profile says `revert.power_after: zero` holds 0 W
  after its timer fired and while it is taken over (handover) without a live command (Victron ESS
  Mode 3 falls back to passthru, not to self-consumption).
Pure bookkeeping on simulated time; the site (simulators/site.py) feeds it writes and steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import structlog

from interfaces.modbus.control import ControlSpec, command_point_names, decode_command
from interfaces.modbus.pointmap import PointMap

__all__ = ["InverterModel", "InverterState"]

log = structlog.get_logger("simulators.inverter")
_TO_S = {"ms": 0.001, "s": 1.0, "min": 60.0}


@dataclass(frozen=True, slots=True)
class InverterState:
    external: bool  # under the EMS's control
    setpoint_w: float  # what it was asked for (+ discharge), meaningful when external
    reverted: bool  # its revert timer fired since the last command
    revert_s: float | None


class InverterModel:
    def __init__(self, pmap: PointMap, *, rating_w: float, default_revert_s: float | None) -> None:
        if pmap.control is None:
            raise ValueError(f"{pmap.name}: no control section: not an inverter profile")
        self.spec: ControlSpec = pmap.control
        self.own_mode = "zero" if pmap.device.kind == "reference" else "self_consumption"
        self._rating_w = rating_w
        self._values: dict[str, float] = {}
        self._command_points = set(command_point_names(self.spec))
        self._handover = {(w.point, w.value) for w in self.spec.handover}  # all must be seen before commands count
        self._release = {(w.point, w.value) for w in self.spec.release}
        fixed = self.spec.revert.fixed_s
        self.revert_s: float | None = fixed if fixed is not None else default_revert_s
        self._last_command_s = -math.inf
        self.external = False
        self.setpoint_w = 0.0
        self.reverted = False
        self.reverts = 0

    def rating_w(self) -> float:
        return self._rating_w

    def write(self, name: str, value: float, *, now_s: float) -> None:
        """A write from the EMS (SI value of a writable point)."""
        self._values[name] = value
        r = self.spec.revert
        if name == r.point:
            self.revert_s = value * _TO_S[r.unit] if value > 0 else None
            return
        if (name, value) in self._release and name not in self._command_points:
            self._own_mode(f"release {name}={value:g}")
            return
        if name not in self._command_points or not self._handed_over():
            return
        self._last_command_s = now_s
        sp = decode_command(self.spec, self._values, rating_w=self._rating_w)
        if sp is None:
            self._own_mode(f"{name}={value:g}")
        else:
            self.external, self.setpoint_w, self.reverted = True, sp, False

    def _handed_over(self) -> bool:
        return all(self._values.get(p) == v for p, v in self._handover)

    def _own_mode(self, why: str) -> None:
        if self.external:
            log.info("sim_inverter_own_mode", why=why)
        self.external = False

    def step(self, now_s: float) -> None:
        """The revert timer: no command for `revert_s` -> back to its own mode."""
        if self.external and self.revert_s is not None and now_s - self._last_command_s > self.revert_s:
            self.external, self.reverted = False, True
            self.reverts += 1
            log.warning("sim_inverter_reverted", revert_s=self.revert_s, to=self.spec.revert.reverts_to, own_mode=self.own_mode)

    def value(self, name: str) -> float | None:
        """The last value the EMS wrote to a point (the device's register holds it)."""
        return self._values.get(name)

    def target_w(self, *, net_load_w: float) -> float:
        """The AC power it drives toward: the command, or its own mode's (self-consumption covers
        `net_load_w` = load - pv; the reference device holds 0 W)."""
        if self.external:
            return self.setpoint_w
        if self._holds_zero():
            return 0.0
        return net_load_w if self.own_mode == "self_consumption" else 0.0

    def _holds_zero(self) -> bool:
        """Taken over but without a live command, on a device that then holds 0 W (revert.power_after)."""
        if self.spec.revert.power_after != "zero":
            return False
        return self._handed_over() if self._handover else self.reverted

    def state(self) -> InverterState:
        return InverterState(self.external, self.setpoint_w, self.reverted, self.revert_s)
