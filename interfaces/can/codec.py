"""Pylontech / SMA-compatible BMS frames <-> project quantities, through cantools and the DBC.

The only place that knows frame layouts is `pylontech.dbc`; this module maps its signals to
`Quantity` values in SI units with the signs of DESIGN.md §2 (BMS current + charge) and back.
No bit twiddling here: cantools encodes and decodes every frame.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import cantools
from cantools.database.can import Database, Message

from ems.model import Quantity

__all__ = [
    "BMS_QUANTITIES",
    "DBC_PATH",
    "KEEPALIVE_ID",
    "PROTECTIONS",
    "WARNINGS",
    "BadLength",
    "BmsFrame",
    "Codec",
    "FrameError",
    "Undecodable",
    "UnknownId",
]

DBC_PATH = Path(__file__).with_name("pylontech.dbc")
KEEPALIVE_ID = 0x305
Q = Quantity
# Every reading the BMS frames carry: the CAN BMS owns them (ems.context.readings).
BMS_QUANTITIES = frozenset(
    {
        Q.SOC_PCT,
        Q.SOH_PCT,
        Q.BMS_VOLTAGE_V,
        Q.BMS_CURRENT_A,
        Q.BMS_TEMPERATURE_DEGC,
        Q.BMS_CCL_A,
        Q.BMS_DCL_A,
        Q.BMS_CVL_V,
        Q.BMS_DVL_V,
        Q.BMS_CHARGE_ENABLE,
        Q.BMS_DISCHARGE_ENABLE,
        Q.BMS_FORCE_CHARGE,
    }
)

# DBC signal -> flag name used in the context, FAULT causes (bms_protection:<name>) and logs.
PROTECTIONS: Mapping[str, str] = MappingProxyType(
    {
        "Protection_OverVoltage": "over_voltage",
        "Protection_UnderVoltage": "under_voltage",
        "Protection_OverTemperature": "over_temperature",
        "Protection_UnderTemperature": "under_temperature",
        "Protection_DischargeOverCurrent": "discharge_over_current",
        "Protection_ChargeOverCurrent": "charge_over_current",
        "Protection_SystemError": "system_error",
    }
)
WARNINGS: Mapping[str, str] = MappingProxyType(
    {
        "Warning_HighVoltage": "high_voltage",
        "Warning_LowVoltage": "low_voltage",
        "Warning_HighTemperature": "high_temperature",
        "Warning_LowTemperature": "low_temperature",
        "Warning_HighDischargeCurrent": "high_discharge_current",
        "Warning_HighChargeCurrent": "high_charge_current",
        "Warning_InternalCommunication": "internal_communication",
    }
)
_NAME_SIGNALS = tuple(f"Name{i}" for i in range(8))

# Shortest payload accepted per frame id (bytes); the DBC length otherwise. 0x351 comes with DLC 6
# from some emulators (no discharge voltage limit); clones send shorter names.
_MIN_DLC: Mapping[int, int] = MappingProxyType({0x351: 6, 0x35E: 1})


class FrameError(ValueError):
    """A frame we cannot use; `kind` names the counter (can_frames_<kind>)."""

    kind = "malformed"


class UnknownId(FrameError):
    kind = "unknown_id"


class BadLength(FrameError):
    kind = "bad_dlc"


class Undecodable(FrameError):
    kind = "undecodable"


@dataclass(frozen=True, slots=True)
class BmsFrame:
    """What one received frame says, in project units. Empty parts mean "this frame has no such field"."""

    frame_id: int
    name: str  # DBC message name
    measurements: Mapping[Quantity, float] = field(default_factory=lambda: MappingProxyType({}))
    protections: frozenset[str] | None = None  # set only by 0x359
    warnings: frozenset[str] | None = None
    info: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))  # name, modules, ...


class Codec:
    """The DBC, loaded once. `decode` for the EMS worker, `encode_*` for the BMS simulator."""

    def __init__(self, *, dbc_path: Path = DBC_PATH, current_sign: float = 1.0) -> None:
        db = cantools.database.load_file(str(dbc_path))
        if not isinstance(db, Database):
            raise TypeError(f"{dbc_path}: not a CAN database (cantools loaded {type(db).__name__})")
        self._db = db
        self._by_id: dict[int, Message] = {m.frame_id: m for m in db.messages}
        self._current_sign = current_sign  # +1: the BMS reports + charge, like the project; -1: flip

    def message(self, frame_id: int) -> Message:
        return self._by_id[frame_id]

    def period_s(self, frame_id: int) -> float:
        """Send period from the DBC's GenMsgCycleTime (ms)."""
        cycle_ms = self._by_id[frame_id].cycle_time
        return (cycle_ms or 1000) / 1000.0

    # ---- decode (EMS side) ---------------------------------------------------------------
    def decode(self, frame_id: int, data: bytes, *, is_extended_id: bool = False) -> BmsFrame:
        """Decode one frame into project units; raise a FrameError subclass when unusable."""
        msg = None if is_extended_id else self._by_id.get(frame_id)
        if msg is None:
            raise UnknownId(f"frame id 0x{frame_id:X} is not in the DBC")
        min_dlc = _MIN_DLC.get(frame_id, msg.length)
        if not min_dlc <= len(data) <= 8:
            raise BadLength(f"{msg.name}: DLC {len(data)} outside {min_dlc}..8")
        try:
            raw = msg.decode(bytes(data), decode_choices=False, allow_truncated=True, allow_excess=True)
        except (cantools.database.DecodeError, ValueError, KeyError) as exc:
            raise Undecodable(f"{msg.name}: {exc}") from exc
        assert isinstance(raw, dict)
        values = {name: round(float(v), 6) for name, v in raw.items() if isinstance(v, int | float)}  # drop 52.300000000000004
        self._check_ranges(msg, values)
        return self._to_frame(msg, values)

    @staticmethod
    def _check_ranges(msg: Message, values: Mapping[str, float]) -> None:
        for sig in msg.signals:
            v = values.get(sig.name)
            if v is None:
                continue
            lo, hi = sig.minimum, sig.maximum
            if not math.isfinite(v) or (lo is not None and v < lo - 1e-9) or (hi is not None and v > hi + 1e-9):
                raise Undecodable(f"{msg.name}.{sig.name}={v:g} outside [{lo}, {hi}]")

    def _to_frame(self, msg: Message, v: Mapping[str, float]) -> BmsFrame:
        fid, name = msg.frame_id, msg.name
        if fid == 0x351:
            m = {Q.BMS_CVL_V: v["ChargeVoltageLimit"], Q.BMS_CCL_A: v["ChargeCurrentLimit"], Q.BMS_DCL_A: v["DischargeCurrentLimit"]}
            if "DischargeVoltageLimit" in v:
                m[Q.BMS_DVL_V] = v["DischargeVoltageLimit"]
            return BmsFrame(fid, name, MappingProxyType(m))
        if fid == 0x355:
            return BmsFrame(fid, name, MappingProxyType({Q.SOC_PCT: v["StateOfCharge"], Q.SOH_PCT: v["StateOfHealth"]}))
        if fid == 0x356:
            current_a = self._current_sign * v["PackCurrent"] + 0.0
            m = {Q.BMS_VOLTAGE_V: v["PackVoltage"], Q.BMS_CURRENT_A: current_a, Q.BMS_TEMPERATURE_DEGC: v["PackTemperature"]}
            return BmsFrame(fid, name, MappingProxyType(m))
        if fid == 0x359:
            prot = frozenset(flag for sig, flag in PROTECTIONS.items() if v.get(sig, 0.0) >= 1)
            warn = frozenset(flag for sig, flag in WARNINGS.items() if v.get(sig, 0.0) >= 1)
            return BmsFrame(fid, name, protections=prot, warnings=warn, info=MappingProxyType({"modules": int(v["ModuleCount"])}))
        if fid == 0x35C:
            m = {
                Q.BMS_CHARGE_ENABLE: v["ChargeEnable"],
                Q.BMS_DISCHARGE_ENABLE: v["DischargeEnable"],
                Q.BMS_FORCE_CHARGE: 1.0 if v["ForceChargeI"] or v["ForceChargeII"] else 0.0,
            }
            return BmsFrame(fid, name, MappingProxyType(m), info=MappingProxyType({"full_charge_request": bool(v["FullChargeRequest"])}))
        if fid == 0x35E:
            raw = bytes(int(v[s]) for s in _NAME_SIGNALS if s in v)
            try:
                text = raw.decode("ascii").rstrip(" \x00")
            except UnicodeDecodeError as exc:
                raise Undecodable(f"{name}: manufacturer name is not ASCII") from exc
            if not text.isprintable():
                raise Undecodable(f"{name}: manufacturer name has control characters")
            return BmsFrame(fid, name, info=MappingProxyType({"name": text}))
        return BmsFrame(fid, name)  # e.g. 0x305 from another inverter on the bus: known, nothing to store

    # ---- encode (simulator side) ---------------------------------------------------------
    def encode_limits(self, *, cvl_v: float, ccl_a: float, dcl_a: float, dvl_v: float | None) -> bytes:
        msg = self._by_id[0x351]
        data = msg.encode(
            {
                "ChargeVoltageLimit": cvl_v,
                "ChargeCurrentLimit": ccl_a,
                "DischargeCurrentLimit": dcl_a,
                "DischargeVoltageLimit": dvl_v or 0.0,
            }
        )
        return data if dvl_v is not None else data[:6]

    def encode_soc(self, *, soc_pct: float, soh_pct: float) -> bytes:
        return self._by_id[0x355].encode({"StateOfCharge": round(soc_pct), "StateOfHealth": round(soh_pct)})

    def encode_measurements(self, *, voltage_v: float, current_a: float, temperature_degc: float) -> bytes:
        """`current_a` in project sign (+ charge); written in this codec's BMS convention."""
        return self._by_id[0x356].encode(
            {"PackVoltage": voltage_v, "PackCurrent": self._current_sign * current_a, "PackTemperature": temperature_degc}
        )

    def encode_alarms(self, *, protections: frozenset[str], warnings: frozenset[str], modules: int) -> bytes:
        unknown = (protections - set(PROTECTIONS.values())) | (warnings - set(WARNINGS.values()))
        if unknown:
            raise ValueError(f"unknown BMS flag(s): {sorted(unknown)}")
        sig: dict[str, float] = {s: float(flag in protections) for s, flag in PROTECTIONS.items()}
        sig |= {s: float(flag in warnings) for s, flag in WARNINGS.items()}
        sig |= {"ModuleCount": modules, "Marker_P": ord("P"), "Marker_N": ord("N")}
        return self._by_id[0x359].encode(sig)

    def encode_requests(self, *, charge_enable: bool, discharge_enable: bool, force_charge: bool, full_charge: bool = False) -> bytes:
        data = self._by_id[0x35C].encode(
            {
                "ChargeEnable": int(charge_enable),
                "DischargeEnable": int(discharge_enable),
                "ForceChargeI": int(force_charge),
                "ForceChargeII": 0,
                "FullChargeRequest": int(full_charge),
            }
        )
        return data

    def encode_name(self, name: str) -> bytes:
        raw = name.encode("ascii")[:8].ljust(8, b" ")
        return self._by_id[0x35E].encode({s: b for s, b in zip(_NAME_SIGNALS, raw, strict=True)})

    def encode_keepalive(self) -> bytes:
        return self._by_id[KEEPALIVE_ID].encode({"KeepAlive_Reserved": 0})
