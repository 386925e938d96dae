"""Register point maps (`interfaces/modbus/maps/*.yaml`) and the codec between registers and SI values.

This is the only place where device units, scale factors, word order and sign flips are applied
(DESIGN §2). The EMS worker decodes with it; the simulators encode with the same maps, so both
sides agree by construction (and unit tests pin the raw layouts).

A map is either
- `kind: sunspec`: points are grouped by SunSpec model; `offset` counts from the model's ID register
  (ID = 0, L = 1); the model's base address is found at run time by discovery; a point may name a
  scale-factor point of the same model (`sf: <offset>`), read together with the value; or
- `kind: plain`: `offset` is the 0-based PDU address (e.g. SDM630 30053 -> 52 = 0x34).

Conversion device -> SI: `si = raw * 10**sf * scale * sign`; the reverse for writes.
A point whose `name` is a context Quantity (`grid_power_w`, `soc_pct`, ...) is a reading; other
names are identity/control points (`setpoint_w`, `enable`, `heartbeat`, `manufacturer`, ...).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from config.common import Section
from interfaces.modbus.control import ControlSpec, referenced_points

__all__ = [
    "MAPS_DIR",
    "NOT_IMPLEMENTED",
    "DecodeError",
    "DeviceSpec",
    "Dynamics",
    "EncodeError",
    "Identify",
    "MapError",
    "ModelSpec",
    "Point",
    "PointMap",
    "PointType",
    "available_maps",
    "decode_raw",
    "encode_raw",
    "from_si",
    "load_map",
    "to_si",
]

MAPS_DIR = Path(__file__).resolve().parent / "maps"


class MapError(ValueError):
    """A point map file is missing or invalid (the message names the file and key)."""


class DecodeError(ValueError):
    """A register value is malformed, not implemented or outside its range."""


class EncodeError(ValueError):
    """A value cannot be represented in its register type."""


class PointType(StrEnum):
    INT16 = "int16"
    UINT16 = "uint16"
    ENUM16 = "enum16"
    BITFIELD16 = "bitfield16"
    SUNSSF = "sunssf"
    INT32 = "int32"
    UINT32 = "uint32"
    ACC32 = "acc32"
    FLOAT32 = "float32"
    STRING = "string"


_SIZE = {
    PointType.INT16: 1,
    PointType.UINT16: 1,
    PointType.ENUM16: 1,
    PointType.BITFIELD16: 1,
    PointType.SUNSSF: 1,
    PointType.INT32: 2,
    PointType.UINT32: 2,
    PointType.ACC32: 2,
    PointType.FLOAT32: 2,
}
# SunSpec "not implemented" markers, as raw register words (high word first for 32-bit).
NOT_IMPLEMENTED: Mapping[PointType, tuple[int, ...]] = {
    PointType.INT16: (0x8000,),
    PointType.SUNSSF: (0x8000,),
    PointType.UINT16: (0xFFFF,),
    PointType.ENUM16: (0xFFFF,),
    PointType.BITFIELD16: (0xFFFF,),
    PointType.INT32: (0x8000, 0x0000),
    PointType.UINT32: (0xFFFF, 0xFFFF),
}
_INT_RANGE = {
    PointType.INT16: (-0x8000, 0x7FFF),
    PointType.SUNSSF: (-10, 10),
    PointType.UINT16: (0, 0xFFFF),
    PointType.ENUM16: (0, 0xFFFF),
    PointType.BITFIELD16: (0, 0xFFFF),
    PointType.INT32: (-0x8000_0000, 0x7FFF_FFFF),
    PointType.UINT32: (0, 0xFFFF_FFFF),
    PointType.ACC32: (0, 0xFFFF_FFFF),
}


class Point(Section):
    name: str = Field(
        ..., min_length=1, pattern=r"^[a-z][a-z0-9_]*$", description="SI field (a context Quantity) or an identity/control name"
    )
    offset: int = Field(..., ge=0, le=65535, description="plain: 0-based PDU address; SunSpec: offset from the model ID register")
    type: PointType = Field(..., description="register type")
    size: int | None = Field(None, ge=1, le=64, description="registers (strings only; fixed for other types)")
    scale: float = Field(1.0, description="fixed multiplier device -> SI (e.g. 1000 for kWh -> Wh)")
    sf: int | None = Field(None, ge=0, le=65535, description="SunSpec: offset of the sunssf point that scales this one (10**sf)")
    sign: Literal[1, -1] = Field(1, description="-1 flips the sign device -> SI (e.g. a current reported + discharge)")
    unit: str = Field("", description="device unit, for documentation")
    min: float | None = Field(None, description="lowest plausible SI value; below = rejected")
    max: float | None = Field(None, description="highest plausible SI value; above = rejected")
    writable: bool = Field(False, description="the EMS may write this point (the simulator accepts writes to it)")
    server_value: float | str | None = Field(
        None, description="simulators: constant served for this point (identity strings, scale factors)"
    )
    device_id: str | None = Field(
        None, description="key into the map's device_ids when this point lives at another unit id (Victron vebus)"
    )
    function: Literal["holding", "input"] | None = Field(
        None, description="read this point with FC3 (holding) or FC4 (input); default: the map's"
    )
    part_of: str | None = Field(
        None, pattern=r"^[a-z][a-z0-9_]*$", description="a reading that is the sum of several points (per-phase grid power): its name"
    )

    @model_validator(mode="after")
    def _sized(self) -> Point:
        if self.type is PointType.STRING and self.size is None:
            raise ValueError("size: required for a string point")
        if self.type is not PointType.STRING and self.size not in (None, _SIZE[self.type]):
            raise ValueError(f"size: {self.type} is {_SIZE[self.type]} register(s)")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min: must be <= max")
        return self

    @property
    def count(self) -> int:
        return self.size if self.type is PointType.STRING and self.size is not None else _SIZE[self.type]


class ModelSpec(Section):
    id: int = Field(..., ge=1, le=65534, description="SunSpec model ID")
    length: int = Field(..., ge=0, le=65535, description="L: registers after the 2-register header")
    points: tuple[Point, ...] = Field((), description="points of this model")

    @model_validator(mode="after")
    def _inside(self) -> ModelSpec:
        for p in self.points:
            if p.offset < 2 or p.offset + p.count > self.length + 2:
                raise ValueError(f"points: {p.name} (offset {p.offset}) lies outside model {self.id} (L = {self.length})")
            if p.sf is not None and not any(q.offset == p.sf and q.type is PointType.SUNSSF for q in self.points):
                raise ValueError(f"points: {p.name} names sf offset {p.sf}, which is not a sunssf point of model {self.id}")
        return self


class Identify(Section):
    """One identification register `emsctl modbus scan` reads (read-only); a profile fits a device when
    every entry of its `device.identify` matches. Name a point of the profile (`point`: its address,
    function, type and, for SunSpec, its discovered model) or give the register (`address`, ...).
    `equals` compares the raw register number (before scale) or the string; `contains` is a
    case-insensitive substring of a string; neither: the register answers and decodes."""

    point: str | None = Field(None, pattern=r"^[a-z][a-z0-9_]*$", description="a point of this profile that holds the identification")
    address: int | None = Field(None, ge=0, le=65535, description="0-based PDU address (when no point names the register)")
    function: Literal["holding", "input"] = Field("holding", description="with address: FC3 (holding) or FC4 (input)")
    type: PointType = Field(PointType.UINT16, description="with address: register type")
    size: int | None = Field(None, ge=1, le=64, description="with address: registers of a string")
    equals: tuple[float | str, ...] = Field((), description="fits when the value is one of these")
    contains: str | None = Field(None, min_length=1, description="fits when the string contains this (case-insensitive)")

    @model_validator(mode="after")
    def _one_register(self) -> Identify:
        if (self.point is None) == (self.address is None):
            raise ValueError("give either point or address")
        if self.point is not None and ("function" in self.model_fields_set or "type" in self.model_fields_set or self.size is not None):
            raise ValueError("function, type and size come from the point")
        if self.type is PointType.STRING and self.address is not None and self.size is None:
            raise ValueError("size: required for a string register")
        if self.equals and self.contains is not None:
            raise ValueError("give equals or contains, not both")
        return self


class DeviceSpec(Section):
    """What the profile is for, and where its facts come from (docs/devices.md is built from these)."""

    kind: Literal["inverter", "meter", "pv_meter", "reference"] = Field("inverter", description="what it is")
    vendor: str = Field("", description="manufacturer")
    model: str = Field("", description="products the profile fits")
    port: int | None = Field(None, ge=1, le=65535, description="the device's usual Modbus TCP port")
    device_id: int | None = Field(None, ge=0, le=255, description="the device's usual unit id")
    single_client: bool = Field(False, description="the device serves only one Modbus TCP client at a time")
    source: str = Field("", description="the public documents and peer definitions each address, type, scale and sign comes from")
    installer: str = Field("", description="settings an installer must make on the device before the EMS can control it")
    identify: tuple[Identify, ...] = Field((), description="identification registers `emsctl modbus scan` matches (all must fit)")


class Dynamics(Section):
    """The device's typical response (simulators and replay): first order with dead time, ramp and resolution."""

    tau_s: float = Field(1.0, ge=0, le=60, description="time constant of the power response, s")
    dead_time_s: float = Field(0.0, ge=0, le=30, description="command to first response, s")
    ramp_w_per_s: float | None = Field(None, gt=0, description="slew limit of the power, W/s (null: none)")
    quantisation_w: float = Field(1.0, ge=0, le=1000, description="set-point resolution, W")


class PointMap(Section):
    name: str = Field(..., description="map name (file stem)")
    description: str = Field("", description="what device this map fits")
    kind: Literal["sunspec", "plain"] = Field(..., description="sunspec: discovered model chain; plain: fixed addresses")
    function: Literal["holding", "input"] = Field("holding", description="register table read: holding (FC3) or input (FC4)")
    word_order: Literal["big", "little"] = Field("big", description="32-bit values: big = high word first")
    max_read_registers: int = Field(125, ge=1, le=125, description="largest read the device accepts")
    requires_models: tuple[int, ...] = Field((), description="SunSpec: discovery selects this map only if all these models are present")
    models: tuple[ModelSpec, ...] = Field((), description="SunSpec models (kind sunspec)")
    points: tuple[Point, ...] = Field((), description="points (kind plain)")
    read_gap_max: int = Field(
        125, ge=0, le=125, description="largest run of unmapped registers one read may span (0: the device refuses gaps)"
    )
    device_ids: dict[str, int] = Field(
        default_factory=dict, description="named unit ids for points that live elsewhere (config may override)"
    )
    device: DeviceSpec = Field(default_factory=DeviceSpec, description="what the profile is for and the sources of its facts")
    control: ControlSpec | None = Field(None, description="how the device takes a set-point (inverters; see interfaces/modbus/control.py)")
    dynamics: Dynamics = Field(default_factory=Dynamics, description="typical response, for the simulators and replay")

    @model_validator(mode="after")
    def _consistent(self) -> PointMap:
        if self.kind == "sunspec" and self.points:
            raise ValueError("points: a sunspec map lists its points under models")
        if self.kind == "plain" and self.models:
            raise ValueError("models: only a sunspec map has models")
        names = [p.name for p in self.all_points()]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"points: duplicate names {dup}")
        points = {p.name: p for p in self.all_points()}
        if self.control is not None:
            for ref in referenced_points(self.control):
                if ref not in points:
                    raise ValueError(f"control: names unknown point {ref!r}")
                if not points[ref].writable and ref != self.control.rating:
                    raise ValueError(f"control: point {ref!r} is written but not marked writable")
            if self.control.rating is not None and self.control.rating not in points:
                raise ValueError(f"control: rating names unknown point {self.control.rating!r}")
        for p in points.values():
            if p.device_id is not None and p.device_id not in self.device_ids:
                raise ValueError(f"points: {p.name} names device_id {p.device_id!r}, not in device_ids")
        for ident in self.device.identify:
            if ident.point is not None and ident.point not in points:
                raise ValueError(f"device.identify: names unknown point {ident.point!r}")
        return self

    def all_points(self) -> tuple[Point, ...]:
        if self.kind == "plain":
            return self.points
        return tuple(p for m in self.models for p in m.points)

    def model(self, model_id: int) -> ModelSpec | None:
        return next((m for m in self.models if m.id == model_id), None)


# ---- codec --------------------------------------------------------------------------------------
def _words(regs: Sequence[int], word_order: str) -> Sequence[int]:
    return regs if word_order == "big" or len(regs) < 2 else tuple(reversed(regs))


def decode_raw(regs: Sequence[int], p: Point, *, word_order: str = "big") -> float | str:
    """The raw device number (or string) in `regs` (exactly `p.count` registers).

    Raises DecodeError for a SunSpec not-implemented marker, a NaN/inf float, a register out of
    0..65535 or an invalid string.
    """
    if len(regs) != p.count or any(not 0 <= r <= 0xFFFF for r in regs):
        raise DecodeError(f"{p.name}: malformed registers {list(regs)!r}")
    t = p.type
    if t is PointType.STRING:
        raw = b"".join(r.to_bytes(2, "big") for r in regs)
        if raw[:1] == b"\x00":
            raise DecodeError(f"{p.name}: not implemented (empty string)")
        try:
            return raw.rstrip(b"\x00").decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise DecodeError(f"{p.name}: not a string {raw!r}") from exc
    words = _words(regs, word_order)
    if NOT_IMPLEMENTED.get(t) == tuple(words):
        raise DecodeError(f"{p.name}: not implemented ({' '.join(f'0x{w:04X}' for w in words)})")
    if t is PointType.FLOAT32:
        value = struct.unpack(">f", struct.pack(">HH", *words))[0]
        if not math.isfinite(value):
            raise DecodeError(f"{p.name}: not a finite float ({value})")
        return float(value)
    n = (words[0] << 16) | words[1] if len(words) == 2 else words[0]
    if t in (PointType.INT16, PointType.SUNSSF) and n >= 0x8000:
        n -= 0x1_0000
    elif t is PointType.INT32 and n >= 0x8000_0000:
        n -= 0x1_0000_0000
    if t is PointType.SUNSSF and not -10 <= n <= 10:
        raise DecodeError(f"{p.name}: scale factor {n} out of -10..10")
    return float(n)


def encode_raw(value: float | str, p: Point, *, word_order: str = "big") -> list[int]:
    """Registers holding the raw device number (or string) `value`. Raises EncodeError."""
    t = p.type
    if t is PointType.STRING:
        data = str(value).encode("utf-8")[: 2 * p.count].ljust(2 * p.count, b"\x00")
        return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    if isinstance(value, str):
        raise EncodeError(f"{p.name}: a {t} needs a number, got {value!r}")
    if t is PointType.FLOAT32:
        if not math.isfinite(value):
            raise EncodeError(f"{p.name}: not finite ({value})")
        hi, lo = struct.unpack(">HH", struct.pack(">f", value))
        return list(_words((hi, lo), word_order))
    if not math.isfinite(value):
        raise EncodeError(f"{p.name}: not finite ({value})")
    n = round(value)
    lo_lim, hi_lim = _INT_RANGE[t]
    if not lo_lim <= n <= hi_lim:
        raise EncodeError(f"{p.name}: {n} does not fit {t} ({lo_lim}..{hi_lim})")
    if _SIZE[t] == 1:
        return [n & 0xFFFF]
    n &= 0xFFFF_FFFF
    return list(_words((n >> 16, n & 0xFFFF), word_order))


def to_si(raw: float, p: Point, *, sf: float = 0.0) -> float:
    """Device number -> SI value, range-checked (DecodeError when outside min..max)."""
    value = float(raw * (10.0**sf) * p.scale * p.sign)
    if (p.min is not None and value < p.min) or (p.max is not None and value > p.max):
        raise DecodeError(f"{p.name}: {value:g} outside {p.min}..{p.max}")
    return value


def from_si(value: float, p: Point, *, sf: float = 0.0) -> float:
    """SI value -> device number (before rounding to the register type)."""
    return float(value * p.sign / p.scale / (10.0**sf))


# ---- loading ------------------------------------------------------------------------------------
def available_maps() -> list[str]:
    return sorted(p.stem for p in MAPS_DIR.glob("*.yaml"))


@cache
def _load_cached(path: str) -> PointMap:
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise MapError(f"{p}: cannot read point map: {exc}") from exc
    try:
        return PointMap.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise MapError(f"{p}: invalid point map: {problems}") from exc


def load_map(name_or_path: str | Path) -> PointMap:
    """A map by name (`sdm630` -> interfaces/modbus/maps/sdm630.yaml) or by file path."""
    p = Path(name_or_path)
    if not p.is_file():
        p = MAPS_DIR / f"{name_or_path}.yaml"
    if not p.is_file():
        raise MapError(f"point map not found: {name_or_path} (available: {', '.join(available_maps())})")
    return _load_cached(str(p.resolve()))
