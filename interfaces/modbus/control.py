"""How a device profile takes a set-point (STYLE S4b): the control methods, declared in YAML.

A profile's `control:` section names one method and the points it uses; this module turns the
EMS's command (W, + discharge, DESIGN §2) into the SI values of those points, and the reverse for
the simulators. The point codec (pointmap.py) then applies each point's type, scale, sign, word
order and unit id, so a vendor is a YAML file, not a Python class. The methods seen in the field:

- `signed_w`: one register holds the signed power (SMA 40149, Kostal 1034, the reference 64901);
- `direction_and_magnitude`: a direction/mode register plus an unsigned power, one register or one
  per direction (Huawei 47100 + 47247/47249, Sungrow 13050 + 13051, GoodWe 47511 + 47512);
- `percent_of_rating`: charge/discharge rate limits in % of a rating (SunSpec 124 InWRte/OutWRte
  with StorCtl_Mod; a negative rate forces the opposite direction);
- `per_phase`: the power split over per-phase registers (Victron 37/40/41);
- `min_max_window`: charge and discharge windows whose min = max force a power, optionally with a
  mode point per direction (SMA Sunny Boy Storage 40236 + 40793..40799).

Everything here is pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import StrEnum
from typing import Literal

from pydantic import Field, model_validator

from config.common import Section

__all__ = [
    "ControlMethod",
    "ControlSpec",
    "DirectionSpec",
    "PointWrite",
    "RevertSpec",
    "WriteSpec",
    "command_point_names",
    "command_points",
    "decode_command",
    "referenced_points",
    "revert_value",
]

PointValues = tuple[tuple[str, float], ...]  # (point name, SI value) in write order


class ControlMethod(StrEnum):
    SIGNED_W = "signed_w"
    DIRECTION_AND_MAGNITUDE = "direction_and_magnitude"
    PERCENT_OF_RATING = "percent_of_rating"
    PER_PHASE = "per_phase"
    MIN_MAX_WINDOW = "min_max_window"


class PointWrite(Section):
    point: str = Field(..., description="point name")
    value: float = Field(..., description="SI value written to it")


class DirectionSpec(Section):
    point: str = Field(..., description="the direction/mode point")
    charge: float = Field(..., description="value that makes the device charge")
    discharge: float = Field(..., description="value that makes it discharge")
    stop: float = Field(..., description="value for 0 W (forced mode, no power)")
    stop_releases: bool = Field(
        False,
        description="the stop value ends the forced mode: the device runs its own mode, it does not hold 0 W (Huawei 47100 = 0)",
    )
    zero: Literal["stop", "charge", "discharge"] = Field(
        "stop",
        description="the direction a 0 W command writes: stop, or charge/discharge at 0 W where stop would end the forced mode (Huawei: forcible discharge at 0 W)",
    )

    def value_for(self, setpoint_w: float) -> float:
        """The direction value for a command (+ discharge)."""
        if setpoint_w > 0:
            return self.discharge
        if setpoint_w < 0:
            return self.charge
        return {"stop": self.stop, "charge": self.charge, "discharge": self.discharge}[self.zero]


class RevertSpec(Section):
    """The device's own timer: without a new command for this long it returns to a safe state."""

    point: str | None = Field(None, description="point holding the timeout (null: not settable over Modbus)")
    unit: Literal["ms", "s", "min"] = Field("s", description="unit of that point")
    min_s: float = Field(0.0, ge=0, description="shortest timeout the device accepts, s")
    max_s: float | None = Field(None, gt=0, description="longest timeout the device accepts, s")
    fixed_s: float | None = Field(None, gt=0, description="not settable: the device's own fixed/default timeout, s (for status)")
    reverts_to: str = Field("its own mode", description="what the device does when the timer fires (for status and docs)")
    rewrite: bool = Field(
        False,
        description="the timer runs from the last write of its own register (a countdown to reload: Sungrow 13079, Huawei 47083): the link writes it again before every command",
    )
    on_revert: tuple[PointWrite, ...] = Field(
        (),
        description="what the device's own registers read after the timer fired (e.g. its mode register back to self-consumption; the simulators serve it)",
    )
    power_after: Literal["own_mode", "zero"] = Field(
        "own_mode",
        description="what the device's power does once the timer fired, and while it is taken over (handover) without a live command: its own mode (self-consumption) or 0 W (Victron ESS Mode 3: passthru); the simulators follow it",
    )


class WriteSpec(Section):
    """When the link writes the command."""

    keepalive_s: float | None = Field(None, gt=0, description="re-write an unchanged command at least this often, s")
    min_interval_s: float = Field(0.0, ge=0, description="write an unchanged command at most this often (some devices dislike 1 Hz), s")
    single_writes: bool = Field(False, description="one FC6/FC16 request per point, never merged (devices that refuse multi-point writes)")
    function: Literal["fc16", "fc6_for_single"] = Field(
        "fc16",
        description="fc16: every write is FC16 (write multiple registers); fc6_for_single: a write of one register goes as FC6 (write single register), longer ones as FC16",
    )


class ControlSpec(Section):
    method: ControlMethod = Field(..., description="how the set-point is expressed (see interfaces/modbus/control.py)")
    # signed_w
    setpoint: str | None = Field(None, description="signed_w: the power point (its `sign` maps the device's convention to + discharge)")
    # direction_and_magnitude
    direction: DirectionSpec | None = Field(
        None,
        description="direction_and_magnitude: the direction/mode point and its values; min_max_window: an optional mode point per direction, written first",
    )
    magnitude: str | None = Field(None, description="direction_and_magnitude: one unsigned power point for both directions")
    charge_magnitude: str | None = Field(None, description="direction_and_magnitude: the charge power point")
    discharge_magnitude: str | None = Field(None, description="direction_and_magnitude: the discharge power point")
    # percent_of_rating
    mode: PointWrite | None = Field(None, description="percent_of_rating: the mode point and the value that activates both limits")
    charge_rate: str | None = Field(None, description="percent_of_rating: charge limit, % of the rating (negative forces discharge)")
    discharge_rate: str | None = Field(None, description="percent_of_rating: discharge limit, % of the rating (negative forces charge)")
    rating: str | None = Field(None, description="percent_of_rating: point holding the rating in W (read at connect)")
    rating_w: float | None = Field(None, gt=0, description="percent_of_rating: the rating in W when no point holds it")
    # per_phase
    phases: tuple[str, ...] = Field((), description="per_phase: one power point per phase; the command is split evenly")
    # min_max_window
    charge_min: str | None = Field(None, description="min_max_window: minimum charge power point")
    charge_max: str | None = Field(None, description="min_max_window: maximum charge power point")
    discharge_min: str | None = Field(None, description="min_max_window: minimum discharge power point")
    discharge_max: str | None = Field(None, description="min_max_window: maximum discharge power point")
    # every method
    enable: PointWrite | None = Field(None, description="written with every command (a mode or enable point)")
    also: tuple[PointWrite, ...] = Field(
        (),
        description="written with every command after the method's points: constants the device wants in the same set (SMA CmpBMS GridWSpt = 0)",
    )
    heartbeat: str | None = Field(None, description="point the EMS writes an incrementing counter to with every command")
    handover: tuple[PointWrite, ...] = Field((), description="written once after a (re)connect, before the first command: take control")
    release: tuple[PointWrite, ...] = Field((), description="written on stop: the device returns to its own self-consumption mode")
    revert: RevertSpec = Field(default_factory=RevertSpec, description="the device's own revert timer")
    write: WriteSpec = Field(default_factory=WriteSpec, description="when the command is written")

    @model_validator(mode="after")
    def _complete(self) -> ControlSpec:
        need: dict[ControlMethod, tuple[str, ...]] = {
            ControlMethod.SIGNED_W: ("setpoint",),
            ControlMethod.DIRECTION_AND_MAGNITUDE: ("direction",),
            ControlMethod.PERCENT_OF_RATING: ("charge_rate", "discharge_rate"),
            ControlMethod.PER_PHASE: ("phases",),
            ControlMethod.MIN_MAX_WINDOW: ("charge_max", "discharge_max"),
        }
        missing = [k for k in need[self.method] if not getattr(self, k)]
        if missing:
            raise ValueError(f"{', '.join(missing)}: required for method {self.method.value}")
        if self.method is ControlMethod.DIRECTION_AND_MAGNITUDE and not (
            self.magnitude or (self.charge_magnitude and self.discharge_magnitude)
        ):
            raise ValueError("magnitude: give one magnitude point, or charge_magnitude and discharge_magnitude")
        if self.method is ControlMethod.PERCENT_OF_RATING and not (self.rating or self.rating_w):
            raise ValueError("rating: give the rating point or rating_w")
        return self


def command_point_names(spec: ControlSpec) -> tuple[str, ...]:
    """The point names one set-point command may write: the set-point in whichever form the device takes
    (signed, magnitude + direction, charge/discharge limits, per phase), its mode/enable words, the
    heartbeat and the points written `also` with it. The simulated inverter treats a write to any of
    them as a command."""
    names = [
        spec.setpoint,
        spec.magnitude,
        spec.charge_magnitude,
        spec.discharge_magnitude,
        spec.charge_rate,
        spec.discharge_rate,
        spec.charge_min,
        spec.charge_max,
        spec.discharge_min,
        spec.discharge_max,
        spec.heartbeat,
        spec.direction.point if spec.direction else None,
        spec.mode.point if spec.mode else None,
        spec.enable.point if spec.enable else None,
        *spec.phases,
        *(w.point for w in spec.also),
    ]
    return tuple(dict.fromkeys(n for n in names if n))


def referenced_points(spec: ControlSpec) -> tuple[str, ...]:
    """Every point name the spec writes (for the map's consistency check): the command's, the revert
    timer and the handover / release / on-revert writes."""
    names = [
        *command_point_names(spec),
        spec.revert.point,
        *(w.point for w in (*spec.handover, *spec.release, *spec.revert.on_revert)),
    ]
    return tuple(dict.fromkeys(n for n in names if n))


def _pct(power_w: float, rating_w: float) -> float:
    return 100.0 * power_w / rating_w


def command_points(spec: ControlSpec, setpoint_w: float, *, rating_w: float | None = None) -> PointValues:
    """The (point, SI value) writes that make the device take `setpoint_w` (+ discharge), in order.

    The enable/mode point comes first; the heartbeat is added by the link (it counts).
    """
    p = setpoint_w + 0.0
    out: list[tuple[str, float]] = []
    if spec.enable is not None:
        out.append((spec.enable.point, spec.enable.value))
    m = spec.method
    if m is ControlMethod.SIGNED_W:
        assert spec.setpoint is not None  # validated
        out.append((spec.setpoint, p))
    elif m is ControlMethod.DIRECTION_AND_MAGNITUDE:
        d = spec.direction
        assert d is not None
        mag = abs(p)
        if spec.magnitude:
            out.append((spec.magnitude, mag))
        else:
            assert spec.charge_magnitude is not None and spec.discharge_magnitude is not None
            out += [(spec.charge_magnitude, mag if p < 0 else 0.0), (spec.discharge_magnitude, mag if p > 0 else 0.0)]
        out.append((d.point, d.value_for(p)))
    elif m is ControlMethod.PERCENT_OF_RATING:
        rating = rating_w if rating_w is not None else spec.rating_w
        if rating is None or not math.isfinite(rating) or rating <= 0:
            raise ValueError("percent_of_rating: no usable rating (read the rating point or set rating_w)")
        pct = min(100.0, _pct(abs(p), rating))
        assert spec.charge_rate is not None and spec.discharge_rate is not None
        if spec.mode is not None:
            out.append((spec.mode.point, spec.mode.value))
        if p > 0:  # discharge p: allow discharge up to p, force it with a negative charge limit
            out += [(spec.discharge_rate, pct), (spec.charge_rate, -pct)]
        elif p < 0:  # charge |p|: a negative discharge limit forces the charge
            out += [(spec.discharge_rate, -pct), (spec.charge_rate, pct)]
        else:
            out += [(spec.discharge_rate, 0.0), (spec.charge_rate, 0.0)]
    elif m is ControlMethod.PER_PHASE:
        share = p / len(spec.phases)
        out += [(ph, share) for ph in spec.phases]
    elif m is ControlMethod.MIN_MAX_WINDOW:
        assert spec.charge_max is not None and spec.discharge_max is not None
        chg, dis = (abs(p), 0.0) if p < 0 else (0.0, p)
        if spec.direction is not None:  # the mode first (SMA: OpMod, then the window)
            d = spec.direction
            out.append((d.point, d.discharge if p > 0 else d.charge if p < 0 else d.stop))
        for point, value in (
            (spec.charge_min, chg),
            (spec.charge_max, chg),
            (spec.discharge_min, dis),
            (spec.discharge_max, dis),
        ):
            if point:
                out.append((point, value))
    out += [(w.point, w.value) for w in spec.also]
    return tuple(out)


def decode_command(spec: ControlSpec, values: Mapping[str, float], *, rating_w: float | None = None) -> float | None:
    """For the simulators: the set-point (W, + discharge) the device's points now ask for; None when
    the points say the device is in its own mode (enable off, direction unknown, mode not active)."""
    if spec.enable is not None and values.get(spec.enable.point) != spec.enable.value:
        return None
    m = spec.method
    if m is ControlMethod.SIGNED_W:
        return values.get(spec.setpoint or "")
    if m is ControlMethod.DIRECTION_AND_MAGNITUDE:
        d = spec.direction
        assert d is not None
        direction = values.get(d.point)
        if direction == d.stop:
            return None if d.stop_releases else 0.0
        if direction not in (d.charge, d.discharge):
            return None
        if spec.magnitude:
            mag = values.get(spec.magnitude, 0.0)
        else:
            mag = values.get((spec.charge_magnitude if direction == d.charge else spec.discharge_magnitude) or "", 0.0)
        return -abs(mag) if direction == d.charge else abs(mag)
    if m is ControlMethod.PERCENT_OF_RATING:
        rating = rating_w if rating_w is not None else spec.rating_w
        if rating is None or (spec.mode is not None and values.get(spec.mode.point) != spec.mode.value):
            return None
        chg, dis = values.get(spec.charge_rate or "", 100.0), values.get(spec.discharge_rate or "", 100.0)
        if dis < 0:
            return -abs(dis) * rating / 100.0  # forced charge
        if chg < 0:
            return abs(chg) * rating / 100.0  # forced discharge
        return 0.0 if chg == 0 and dis == 0 else None  # only limits, no force: the device regulates itself
    if m is ControlMethod.PER_PHASE:
        return sum(values.get(ph, 0.0) for ph in spec.phases)
    if m is ControlMethod.MIN_MAX_WINDOW:
        d = spec.direction
        mode = None if d is None else values.get(d.point)
        if d is not None and mode not in (d.charge, d.discharge, d.stop):
            return None  # another mode (SMA 1438 automatic, 303 off): the device's own
        if d is not None and mode == d.charge:  # a forced direction drives up to its window's maximum
            return -values.get(spec.charge_max or "", 0.0)
        if d is not None and mode == d.discharge:
            return values.get(spec.discharge_max or "", 0.0)
        windows = ((spec.charge_min, spec.charge_max), (spec.discharge_min, spec.discharge_max))
        if any(lo and hi and values.get(lo, 0.0) != values.get(hi, 0.0) for lo, hi in windows):
            return None  # a window, not a forced power: the device regulates itself inside it
        chg = values.get(spec.charge_min or spec.charge_max or "", 0.0)
        dis = values.get(spec.discharge_min or spec.discharge_max or "", 0.0)
        return dis - chg
    return None


def revert_value(spec: ControlSpec, *, fault_timeout_s: float) -> tuple[str, float, float] | None:
    """(point, value in the point's unit, effective timeout s) that makes the device revert within
    `fault_timeout_s` where it lets us (clamped to what it accepts); None when not settable."""
    r = spec.revert
    if r.point is None:
        return None
    target_s = max(r.min_s, fault_timeout_s)
    if r.max_s is not None:
        target_s = min(target_s, r.max_s)
    factor = {"ms": 1000.0, "s": 1.0, "min": 1.0 / 60.0}[r.unit]
    value = math.ceil(target_s * factor - 1e-9)  # a device timer counts whole units: round up, never 0
    value = max(value, 1)
    return r.point, float(value), value / factor
