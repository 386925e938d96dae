"""Request and response models of the REST API (docs/api.md). The OpenAPI document is generated
from these, and the handlers validate requests and build responses with the very same classes.

Stable surface: the dashboard and the CLI are built on these shapes. Add optional fields freely;
rename or remove only with a version bump of the API and a note in docs/api.md.
Units follow DESIGN.md §2: W with + discharge / + import, s, %, unix seconds in `*_ts`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ems.model import Mode, Quantity, State
from interfaces.prices.push import PricesPush

__all__ = [
    "ApiError",
    "CommandInfo",
    "ConfigResponse",
    "ControlFlags",
    "DeviceHealthInfo",
    "DeviceInfo",
    "DevicesResponse",
    "EventInfo",
    "EventsQuery",
    "EventsResponse",
    "FieldError",
    "HealthResponse",
    "ImportCapInfo",
    "ImportCapRequest",
    "LimitInfo",
    "MeasurementField",
    "MeasurementRow",
    "MeasurementsQuery",
    "MeasurementsResponse",
    "ModeInfo",
    "ModeRequest",
    "PlanResponse",
    "PlanSlotInfo",
    "PlannerInfo",
    "PricesRequest",
    "ProcessDeathInfo",
    "ReadingInfo",
    "ReleaseQuery",
    "Resolution",
    "SetpointInfo",
    "SetpointRequest",
    "StatusResponse",
    "WorkerInfo",
    "WriteResponse",
]

_MAX_POWER_W = 1e7
_MAX_TS = 1e11  # unix seconds, year ~5000


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---- errors ---------------------------------------------------------------------------------
class FieldError(_Out):
    field: str = Field(description="dotted name of the offending field ('body' for the body as a whole)")
    reason: str = Field(description="why it was refused")


class ApiError(_Out):
    """Every 4xx/5xx answer: `message` names the field and the reason when there is one."""

    error: str = Field(description="machine-readable code: bad_json, validation_failed, unauthorized, forbidden, not_found, ...")
    message: str = Field(description="human-readable explanation, naming the field when there is one")
    fields: list[FieldError] = Field(default_factory=list, description="one entry per offending field")


# ---- shared pieces --------------------------------------------------------------------------
class ControlFlags(_Out):
    enabled: bool = Field(description="control.enabled: opt-in 1 of 2")
    dry_run: bool = Field(description="control.dry_run: opt-in 2 of 2 (must be false)")
    live: bool = Field(description="both opt-ins given: non-zero commands reach the inverter")
    soc_min_pct: float | None = Field(None, description="control.soc_min_pct: no discharge at or below, %")
    soc_max_pct: float | None = Field(None, description="control.soc_max_pct: no charge at or above, %")


class ReadingInfo(_Out):
    value: float = Field(description="SI value, unit in the field name")
    age_s: float = Field(description="seconds since it was received")
    ts: float = Field(description="when it was received, unix seconds")
    stale: bool = Field(description="older than control.fault_timeout_s")


class CommandInfo(_Out):
    seq: int = Field(description="command sequence number (= the control cycle)")
    setpoint_w: float = Field(description="computed: every limit applied, before the dry-run/enable gate (+ discharge), W")
    written_w: float = Field(description="what goes to the inverter (+ discharge), W")
    reasons: list[str] = Field(description="why the command is what it is: the limits that bound, then hold, then gate")
    hold: str | None = Field(None, description="why the law gives 0 W: setpoint_missing, grid_unknown, non_finite_command")
    gate: str | None = Field(None, description="control_disabled or dry_run: the set-point is computed but 0 W is written")
    age_s: float = Field(description="seconds since the controller published it")
    acknowledged: bool = Field(description="the inverter writer took this command (or a newer one)")
    written_seq: int | None = Field(description="last command seq the inverter writer acknowledged")


class LimitInfo(_Out):
    name: str = Field(description="limit name, e.g. soc_min, bms_dcl, ramp (DESIGN §4)")
    why: str = Field(description="what it means")


class SetpointInfo(_Out):
    power_w: float = Field(description="requested power (+ discharge), W")
    remaining_s: float = Field(description="seconds until the TTL lapses (<= 0: lapsed)")
    reason: str
    source: str = Field(description="who set it (token name, mqtt, ...)")


class WorkerInfo(_Out):
    """A thread: alive means it beats its heartbeat; what it does well or badly is in its devices' health."""

    name: str
    ok: bool = Field(description="not stale")
    stale: bool = Field(description="no heartbeat for control.worker_stall_s")
    required: bool = Field(description="it serves a required device: stale or dead means FAULT")
    devices: list[str] = Field(description="the devices this thread serves")
    last_beat_age_s: float | None = Field(description="seconds since the last heartbeat")


class DeviceHealthInfo(_Out):
    """Health of one device or service (ess, meter, pv, bms, broker, store, uplink, ...)."""

    name: str
    kind: str = Field(description="modbus, can, mqtt, sqlite, https, ...")
    address: str = Field(description="where it is: tcp://host:port, serial port, CAN channel, broker, path, URL")
    required: bool = Field(description="the actuator, or the owner of a control.required_sources reading: failing means FAULT")
    status: str = Field(
        description="ok, failing (error streak >= api.health_max_error_streak), degraded (a non-required device failing) or starting"
    )
    owns: list[str] = Field(description="readings this device owns (only it may write them)")
    last_ok_age_s: float | None = Field(description="seconds since the last good unit of work (poll, frame, flush, delivery)")
    error_streak: int
    errors_total: int
    last_error: str | None
    last_error_age_s: float | None = Field(None, description="seconds since the last error")


class ProcessDeathInfo(_Out):
    """What the inverter does when the EMS dies or hangs (no more writes), as set and read back at connect."""

    device: str = Field(description="the actuator (ess)")
    leads_to: str = Field(description="in words: what the inverter returns to and when, or why that is unknown")
    after_s: float | None = Field(description="the inverter reverts this long after the EMS's last write, s (null: unknown or never)")
    verified: bool = Field(description="the EMS wrote the revert time and read the same value back")


# ---- health / status ------------------------------------------------------------------------
class HealthResponse(_Out):
    healthy: bool = Field(description="true with HTTP 200; false with HTTP 503")
    state: State
    problems: list[str] = Field(
        description="why unhealthy: fault:<cause>, device_failing:<required device>, worker_stale:<thread of a required device>, controller_stale, starting"
    )
    degraded: list[str] = Field(
        default_factory=list, description="what is wrong but does not stop the battery: device_failing:<name>, worker_stale:<thread>"
    )
    devices: list[DeviceHealthInfo] = Field(default_factory=list, description="per-device health")
    workers: list[WorkerInfo]
    last_reading_age_s: float | None = Field(description="age of the freshest measurement, s")
    controller_age_s: float | None = Field(description="seconds since the last control cycle")
    cycles: int = Field(description="control cycles run")
    overruns: int = Field(description="control cycles missed (overrun) so far")
    uptime_s: float


class StatusResponse(_Out):
    site_id: str
    state: State
    state_age_s: float = Field(description="seconds in the current state")
    requested_mode: Mode = Field(description="what an operator or aggregator asked for")
    effective_mode: Mode = Field(description="what the controller is doing now (IDLE in STOP, STANDBY and FAULT)")
    control: ControlFlags
    measurements: dict[str, ReadingInfo] = Field(description="latest reading per quantity")
    command: CommandInfo | None = Field(description="last published command (null before the first cycle)")
    limits: list[LimitInfo] = Field(description="limits that bound the last command, and why (gate and hold: in command)")
    fault_causes: list[str]
    bms_protections: list[str]
    bms_warnings: list[str]
    external_setpoint: SetpointInfo | None
    devices: list[DeviceHealthInfo] = Field(default_factory=list, description="per-device health")
    workers: list[WorkerInfo]
    cycles: int
    overruns: int
    uptime_s: float
    process_death: ProcessDeathInfo | None = Field(None, description="what an EMS crash or hang leads to at the inverter (null: no ESS)")
    law: dict[str, float | str] = Field(
        default_factory=dict,
        description="the control law and what it believes about the plant: inverter_dead_time_s, inverter_tau_s, inverter_ramp_w_per_s, meter_lag_s, confidence (0..1)",
    )
    planner: PlannerInfo | None = Field(None, description="the planner's state (GET /api/v1/plan for the plan itself)")
    plan_followed: str | None = Field(None, description="the plan slot rule the loop followed in its last cycle (null: none)")


# ---- measurements / events ------------------------------------------------------------------
class Resolution(StrEnum):
    SECOND = "1s"
    MINUTE = "1m"


# Every measured quantity plus the command the controller computed and wrote (as stored per second).
MeasurementField = StrEnum(  # type: ignore[misc]
    "MeasurementField", [(q.name, q.value) for q in Quantity] + [("SETPOINT_W", "setpoint_w"), ("WRITTEN_W", "written_w")]
)


class MeasurementsQuery(_In):
    from_ts: float | None = Field(
        None, ge=0, le=_MAX_TS, allow_inf_nan=False, description="start (inclusive), unix seconds; default: to_ts - 1 h"
    )
    to_ts: float | None = Field(None, ge=0, le=_MAX_TS, allow_inf_nan=False, description="end (inclusive), unix seconds; default: now")
    fields: list[MeasurementField] | None = Field(
        None, max_length=len(Quantity) + 2, description="fields to return (repeat the parameter); default: all"
    )
    resolution: Resolution = Field(Resolution.SECOND, description="1s samples or 1m aggregates (mean, min, max)")
    limit: int = Field(500, ge=1, le=100_000, description="page size (capped at api.max_page_rows)")


class MeasurementRow(_Out):
    ts: float = Field(description="sample time (1s) or minute start (1m), unix seconds")
    state: str | None = Field(None, description="controller state at the sample (1s only)")
    mode: str | None = Field(None, description="requested mode at the sample (1s only)")
    values: dict[str, float | None] = Field(description="value (1s) or mean (1m) per field")
    min: dict[str, float | None] | None = Field(None, description="per-field minimum (1m only)")
    max: dict[str, float | None] | None = Field(None, description="per-field maximum (1m only)")


class MeasurementsResponse(_Out):
    source: str = Field(description="store (history) or context (latest values only, no store configured)")
    resolution: Resolution
    fields: list[str]
    from_ts: float
    to_ts: float
    rows: list[MeasurementRow] = Field(description="oldest first")
    next_from_ts: float | None = Field(description="set when the page is full: pass as from_ts for the next page")


# snake_case word; not a JSON literal, so `kind=true` is refused rather than read as a kind
EventKind = Annotated[str, StringConstraints(pattern=r"^(?!(true|false|null)$)[a-z][a-z0-9_]{0,31}$")]


class EventsQuery(_In):
    model_config = ConfigDict(extra="forbid", frozen=True, regex_engine="python-re")

    kind: list[EventKind] | None = Field(
        None, max_length=20, description="event kinds to return: state, fault, audit, limit, alarm, ... (repeat); default all"
    )
    from_ts: float | None = Field(None, ge=0, le=_MAX_TS, allow_inf_nan=False, description="start (inclusive), unix seconds")
    to_ts: float | None = Field(None, ge=0, le=_MAX_TS, allow_inf_nan=False, description="end (inclusive), unix seconds")
    after_seq: int = Field(0, ge=0, le=2**62, description="only events with seq greater than this (paging)")
    limit: int = Field(200, ge=1, le=100_000, description="page size (capped at api.max_page_rows)")


class EventInfo(_Out):
    seq: int = Field(description="cursor within the source: the store's row id, or the context's event seq")
    event_seq: int | None = Field(
        None, description="the EMS's own event number (a write's `event_seq`, the stream's `id`); it restarts at 1 with the EMS"
    )
    kind: str
    ts: float = Field(description="unix seconds")
    data: dict[str, Any] = Field(description="event fields, e.g. who/what/old/new/result for audit")


class EventsResponse(_Out):
    source: str = Field(description="store or context (recent events kept in memory)")
    events: list[EventInfo] = Field(description="oldest first")
    next_after_seq: int | None = Field(description="set when the page is full: pass as after_seq (same filters) for the next page")


# ---- writes ---------------------------------------------------------------------------------
class ModeRequest(_In):
    mode: Mode = Field(description="IDLE, SELF_CONSUMPTION, CHARGE_ONLY, DISCHARGE_ONLY or EXTERNAL")


class SetpointRequest(_In):
    """JSON types are strict here: `true` or `"100"` is not a power."""

    power_w: float = Field(
        strict=True,
        ge=-_MAX_POWER_W,
        le=_MAX_POWER_W,
        allow_inf_nan=False,
        description="requested power, + discharge / - charge, W (limits still apply)",
    )
    ttl_s: float = Field(
        strict=True,
        gt=0,
        le=86400,
        allow_inf_nan=False,
        description="validity (at most control.external_max_ttl_s); when it lapses the controller falls back (control.external_fallback), s",
    )
    reason: str = Field("", strict=True, max_length=200, description="free text for the audit trail")


class ReleaseQuery(_In):
    mode: Mode | None = Field(None, description="mode to request after the release; default: control.external_fallback (STANDBY -> IDLE)")


class ModeInfo(_Out):
    requested_mode: Mode
    effective_mode: Mode = Field(description="what the controller is doing now (IDLE in STOP, STANDBY and FAULT)")
    state: State
    external_setpoint: SetpointInfo | None
    control: ControlFlags


class WriteResponse(_Out):
    accepted: bool
    what: str = Field(description="mode, setpoint or release")
    old: Any = Field(description="value before the request")
    new: Any = Field(description="value after the request")
    event_seq: int = Field(description="seq of the audit event")
    requested_mode: Mode
    control: ControlFlags
    note: str = Field(description="how the request takes effect, e.g. that the inverter still gets 0 W while control is not live")


# ---- devices / config -----------------------------------------------------------------------
class DeviceInfo(_Out):
    name: str
    protocol: str | None = Field(description="modbus, can, mqtt, sqlite, https, ... (as the worker reports it)")
    address: str | None = Field(description="tcp://host:port, serial port, CAN channel, broker, ...")
    map: str | None = Field(description="point map / DBC / profile in use")
    details: dict[str, Any] = Field(description="further identity the worker reports (model, serial, firmware, link state, ...)")
    last_seen_age_s: float | None = Field(description="seconds since the last good unit of work")
    ok: bool
    required: bool = Field(False, description="its failure is a FAULT")
    owns: list[str] = Field(default_factory=list, description="readings this device owns")
    error_streak: int
    last_error: str | None


class DevicesResponse(_Out):
    devices: list[DeviceInfo]


class ConfigResponse(_Out):
    config: dict[str, Any] = Field(description="effective config (after environment overrides), secrets redacted")
    redacted: list[str] = Field(description="dotted keys whose values were replaced by '***'")


# ---- plan / prices / import cap ---------------------------------------------------------------
class PlanSlotInfo(_Out):
    """One 15-minute slot: the rule the loop follows in it and what the planner expected."""

    start_ts: float = Field(description="slot start, unix s")
    end_ts: float = Field(description="slot end (exclusive), unix s")
    active: bool = Field(description="the slot that covers now")
    mode: str = Field(description="self_consumption, hold, charge_from_grid, discharge_to_grid or limit_export")
    grid_target_w: float = Field(description="the law's grid target in this slot (+ import), W")
    battery_lo_w: float = Field(description="most charge allowed (<= 0), W")
    battery_hi_w: float = Field(description="most discharge allowed (>= 0), W")
    soc_target_pct: float | None = Field(description="charge_from_grid: importing for the battery stops at this SOC, %")
    price_import_eur_per_kwh: float = Field(description="import price (the tariff's currency per kWh)")
    price_export_eur_per_kwh: float = Field(description="export price (the tariff's currency per kWh)")
    planned_battery_w: float = Field(description="planned mean battery power (+ discharge), W")
    planned_grid_w: float = Field(description="planned mean grid power (+ import), W")
    planned_soc_pct: float = Field(description="planned SOC at the slot's end, %")
    load_forecast_w: float = Field(description="forecast mean load, W")
    pv_forecast_w: float = Field(description="forecast mean PV power, W")
    expected_cost_eur: float = Field(description="planned energy cost of the slot (tariff currency)")


class PlannerInfo(_Out):
    enabled: bool = Field(description="planner.enabled")
    state: str = Field(description="off, starting, ok, no_prices, stale or failed")
    reason: str = Field(description="why, in a few words")
    age_s: float | None = Field(description="seconds since this state was reported")
    prices_until_ts: float | None = Field(description="the known prices end here, unix s")
    replans: int = Field(description="plans made since the start")
    last_solve_s: float | None = Field(description="wall time of the last re-plan (model, HiGHS, slots), s")


class ImportCapInfo(_Out):
    power_w: float = Field(description="the site imports at most this, W")
    remaining_s: float | None = Field(description="seconds until it lapses (null: until cleared)")
    reason: str
    source: str = Field(description="who set it")


class PlanResponse(_Out):
    planner: PlannerInfo
    status: str | None = Field(description="the plan's status: ok, no_prices or failed (null: no plan yet)")
    reason: str | None = Field(description="solver status or why there is no plan")
    created_ts: float | None = Field(description="when the plan was made, unix s")
    age_s: float | None = Field(description="seconds since the plan was made")
    max_age_s: float = Field(description="planner.max_plan_age_s: an older plan is not followed")
    inputs_digest: str | None = Field(description="hash of what the plan was computed from (changes with any input)")
    currency: str = Field(description="currency of every price and cost")
    horizon_h: float = Field(description="hours covered by the slots")
    expected_cost_eur: float | None = Field(description="planned energy cost over the horizon less the value of the energy left")
    self_consumption_cost_eur: float | None = Field(description="the same for plain self-consumption on the same forecast")
    savings_eur: float | None = Field(description="expected saving over plain self-consumption")
    soc_start_pct: float | None = Field(description="SOC the plan started from, %")
    reserve_soc_pct: float | None = Field(description="backup reserve the loop does not discharge below while following, %")
    followed: str | None = Field(
        description="the slot rule the loop followed in its last cycle (plan:<mode>[:soc_target_reached|:reserve]); null: plain self-consumption or an operator's mode"
    )
    active_slot: int | None = Field(description="index of the slot that covers now")
    import_cap: ImportCapInfo | None = Field(description="an external import cap in force (dimming)")
    slots: list[PlanSlotInfo]


class PricesRequest(PricesPush):
    """Spot prices pushed to the planner (operator; audited as what=prices). Points, or a series."""


class ImportCapRequest(_In):
    """An external import limit (e.g. §14a EnWG dimming): grid import stays at or below it (limit 4 and the plan)."""

    power_w: float = Field(strict=True, ge=0, le=_MAX_POWER_W, allow_inf_nan=False, description="most import allowed, W")
    ttl_s: float | None = Field(
        None, strict=True, gt=0, le=7 * 86400, allow_inf_nan=False, description="lapses after this (null: until DELETE), s"
    )
    reason: str = Field("", strict=True, max_length=200, description="free text for the audit trail, e.g. the DSO's order")


StatusResponse.model_rebuild()  # PlannerInfo is defined after it
