"""Runtime data of the core: plain frozen dataclasses and enums (STYLE S1).

Signs follow DESIGN.md §2: grid + import, ESS/set-points + discharge, BMS current + charge.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from ems.plan import Plan, PlannerStatus

__all__ = [
    "LOCAL_MODES",
    "BmsFlags",
    "Command",
    "ControlStatus",
    "DeviceHealth",
    "EventRecord",
    "ExternalSetpoint",
    "ImportCap",
    "Mode",
    "Quantity",
    "Reading",
    "Snapshot",
    "State",
    "ThreadHealth",
    "age_s",
    "is_fresh",
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


def _empty() -> Mapping[str, object]:
    return MappingProxyType({})


def is_fresh(at_s: float, *, now_s: float, max_age_s: float) -> bool:
    """The one freshness rule: a value received at `at_s` is fresh while at most `max_age_s` old."""
    return now_s - at_s <= max_age_s


def age_s(at_s: float | None, *, now_s: float) -> float | None:
    """Seconds since `at_s` (never negative), or None when there is no time."""
    return None if at_s is None else max(0.0, now_s - at_s)


@dataclass(frozen=True, slots=True)
class Reading:
    value: float
    at_s: float  # monotonic seconds when received
    source: str = ""  # who wrote it: the owning device or topic (ems.context.readings)

    def fresh(self, *, now_s: float, max_age_s: float) -> bool:
        return math.isfinite(self.value) and is_fresh(self.at_s, now_s=now_s, max_age_s=max_age_s)


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

    def active(self, now_s: float) -> bool:
        """The one TTL check: a finite set-point before its expiry."""
        return math.isfinite(self.power_w) and now_s < self.expires_at_s


@dataclass(frozen=True, slots=True)
class ImportCap:
    """A grid operator's import limit (Germany's §14a EnWG dimming, an aggregator's cap), with a TTL."""

    power_w: float  # the site must not import more than this
    expires_at_s: float  # monotonic; math.inf = until cleared
    reason: str
    source: str

    def active(self, now_s: float) -> bool:
        return math.isfinite(self.power_w) and now_s < self.expires_at_s


@dataclass(frozen=True, slots=True)
class Command:
    """What the controller publishes each cycle on the command channel; the ESS link writes `written_w`."""

    seq: int  # the control cycle number
    setpoint_w: float  # computed: every limit applied, before the dry-run/enable gate
    written_w: float  # what goes to the inverter
    at_s: float


@dataclass(frozen=True, slots=True)
class ControlStatus:
    """The controller's published view of one cycle (the only copy of the state outside the core)."""

    command: Command
    state: State
    state_since_s: float  # monotonic
    limits: tuple[str, ...]  # limits that bound, DESIGN §4 order
    hold: str | None  # why the law gives 0 W (setpoint_missing, grid_unknown, non_finite_command)
    gate: str | None  # control_disabled / dry_run: a non-zero set-point that is not written
    fault_causes: tuple[str, ...]
    overruns: int  # cycles missed so far
    law: Mapping[str, object] = field(default_factory=_empty)  # what the law reports of itself (name, identified plant)
    plan: str | None = None  # the plan slot followed this cycle (e.g. "plan:hold"), None: plain self-consumption

    @property
    def reasons(self) -> tuple[str, ...]:
        """Why the command is what it is: limits, then the hold reason, then the gate."""
        return self.limits + ((self.hold,) if self.hold else ()) + ((self.gate,) if self.gate else ())


@dataclass(frozen=True, slots=True)
class DeviceHealth:
    """One device or service as the EMS sees it (ems.context.health). Health is per device, not per thread."""

    name: str  # ess, meter, pv, bms, broker, store, uplink, ...
    kind: str  # modbus, can, mqtt, sqlite, https, ...
    where: str  # address, port or path
    thread: str  # the thread that serves it
    required: bool  # its failure is a FAULT (the actuator, or the owner of a required source)
    owns: tuple[Quantity, ...]  # readings it owns
    last_ok_s: float | None
    error_streak: int
    errors_total: int
    last_error: str | None
    last_error_s: float | None  # monotonic time of the last error
    info: Mapping[str, object]  # identity, map, link state (frozen)


@dataclass(frozen=True, slots=True)
class ThreadHealth:
    name: str
    devices: tuple[str, ...]  # what it serves
    last_beat_s: float | None


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A state change, fault, limit change or audited request, in the order it happened."""

    seq: int
    kind: str  # "state", "fault", "audit", "limit", "alarm", ...
    at_s: float  # monotonic
    wall_ts: float  # unix seconds, for storage and display
    data: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Immutable copy of the shared context: each part copied under its own lock, `at_s` read after."""

    at_s: float
    started_at_s: float
    measurements: Mapping[Quantity, Reading]
    bms_flags: BmsFlags | None
    requested_mode: Mode
    external_setpoint: ExternalSetpoint | None
    control: ControlStatus | None  # None before the first cycle
    written_seq: int | None  # last command seq the inverter acknowledged
    devices: tuple[DeviceHealth, ...]
    threads: tuple[ThreadHealth, ...]
    counters: Mapping[str, int]
    plan: Plan | None = None  # the planner's latest plan (ems.context.plan)
    planner: PlannerStatus | None = None
    import_cap: ImportCap | None = None  # an external import limit in force (dimming)
    energy: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))  # Wh integrated since start (ems/energy.py)

    def reading(self, q: Quantity) -> Reading | None:
        return self.measurements.get(q)

    @property
    def state(self) -> State:
        return State.STOP if self.control is None else self.control.state

    @property
    def state_since_s(self) -> float:
        return self.started_at_s if self.control is None else self.control.state_since_s

    @property
    def command(self) -> Command | None:
        return None if self.control is None else self.control.command

    @property
    def fault_causes(self) -> tuple[str, ...]:
        return () if self.control is None else self.control.fault_causes

    @property
    def limits(self) -> tuple[str, ...]:
        return () if self.control is None else self.control.limits

    @property
    def cycles(self) -> int:
        return 0 if self.control is None else self.control.command.seq

    @property
    def overruns(self) -> int:
        return 0 if self.control is None else self.control.overruns

    def device(self, name: str) -> DeviceHealth | None:
        return next((d for d in self.devices if d.name == name), None)
