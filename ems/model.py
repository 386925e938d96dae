"""Runtime data of the core: plain frozen dataclasses and enums (STYLE S1).

Signs follow DESIGN.md §2: grid + import, ESS/set-points + discharge, BMS current + charge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

__all__ = [
    "LOCAL_MODES",
    "BmsFlags",
    "Command",
    "EventRecord",
    "ExternalSetpoint",
    "Mode",
    "Quantity",
    "Reading",
    "Snapshot",
    "State",
    "WorkerHealth",
]


class State(StrEnum):
    STOP = "STOP"
    STANDBY = "STANDBY"
    SELF_CONSUMPTION = "SELF_CONSUMPTION"
    EXTERNAL = "EXTERNAL"
    FAULT = "FAULT"


class Mode(StrEnum):
    """Run mode requested by an operator or aggregator (REST/MQTT)."""

    IDLE = "IDLE"
    SELF_CONSUMPTION = "SELF_CONSUMPTION"
    CHARGE_ONLY = "CHARGE_ONLY"
    DISCHARGE_ONLY = "DISCHARGE_ONLY"
    EXTERNAL = "EXTERNAL"


LOCAL_MODES = frozenset({Mode.SELF_CONSUMPTION, Mode.CHARGE_ONLY, Mode.DISCHARGE_ONLY})


class Quantity(StrEnum):
    """Every measured field the context knows, in SI units named by suffix."""

    GRID_POWER_W = "grid_power_w"
    PV_POWER_W = "pv_power_w"
    ESS_POWER_W = "ess_power_w"
    SOC_PCT = "soc_pct"
    SOH_PCT = "soh_pct"
    BMS_VOLTAGE_V = "bms_voltage_v"
    BMS_CURRENT_A = "bms_current_a"
    BMS_TEMPERATURE_DEGC = "bms_temperature_degc"
    BMS_CCL_A = "bms_ccl_a"
    BMS_DCL_A = "bms_dcl_a"
    BMS_CVL_V = "bms_cvl_v"
    BMS_DVL_V = "bms_dvl_v"
    BMS_CHARGE_ENABLE = "bms_charge_enable"  # 1.0 allowed, 0.0 refused
    BMS_DISCHARGE_ENABLE = "bms_discharge_enable"
    BMS_FORCE_CHARGE = "bms_force_charge"  # 1.0 when the BMS requests a charge
    ESS_MAX_CHARGE_W = "ess_max_charge_w"  # as the inverter reports it
    ESS_MAX_DISCHARGE_W = "ess_max_discharge_w"
    GRID_VOLTAGE_V = "grid_voltage_v"
    GRID_FREQUENCY_HZ = "grid_frequency_hz"
    GRID_IMPORT_WH = "grid_import_wh"
    GRID_EXPORT_WH = "grid_export_wh"
    ESS_STATUS = "ess_status"  # SunSpec operating state code


@dataclass(frozen=True, slots=True)
class Reading:
    value: float
    at_s: float  # monotonic seconds when received


@dataclass(frozen=True, slots=True)
class BmsFlags:
    """Named BMS protection (hard) and warning (soft) flags currently raised."""

    protections: frozenset[str]
    warnings: frozenset[str]
    at_s: float


@dataclass(frozen=True, slots=True)
class ExternalSetpoint:
    power_w: float
    expires_at_s: float  # monotonic
    reason: str
    source: str  # who: token name, "mqtt", ...
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class Command:
    """What the controller publishes each cycle; the Modbus worker writes `written_w`."""

    seq: int
    state: State
    computed_w: float  # after every limit, before the dry-run/enable gate
    written_w: float  # what goes to the inverter
    reasons: tuple[str, ...]  # limits that bound and state reasons
    at_s: float


@dataclass(frozen=True, slots=True)
class WorkerHealth:
    name: str
    last_ok_s: float | None
    last_beat_s: float | None
    error_streak: int
    errors_total: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A state change, fault, limit change or audited request, in the order it happened."""

    seq: int
    kind: str  # "state", "fault", "audit", "limit", "alarm", ...
    at_s: float  # monotonic
    wall_ts: float  # unix seconds, for storage and display
    data: Mapping[str, object]


def _empty() -> Mapping[str, object]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Immutable copy of the shared context, taken under the lock in a few attribute copies."""

    at_s: float
    started_at_s: float
    measurements: Mapping[Quantity, Reading]
    bms_flags: BmsFlags | None
    requested_mode: Mode
    external_setpoint: ExternalSetpoint | None
    state: State
    state_since_s: float
    command: Command | None
    command_written_seq: int | None  # last command seq the inverter acknowledged
    command_written_at_s: float | None
    fault_causes: tuple[str, ...]
    limits_bound: tuple[str, ...]
    workers: tuple[WorkerHealth, ...]
    counters: Mapping[str, int]
    cycles: int
    overruns: int
    last_event_seq: int
    status: Mapping[str, object] = field(default_factory=_empty)

    def reading(self, q: Quantity) -> Reading | None:
        return self.measurements.get(q)
