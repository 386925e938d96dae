"""Pure builders: a context snapshot (+ config) -> the API's response models. No I/O, no clock."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, TypeAdapter

from api.models import (
    CommandInfo,
    ControlFlags,
    DeviceHealthInfo,
    DeviceInfo,
    HealthResponse,
    LimitInfo,
    ModeInfo,
    ProcessDeathInfo,
    ReadingInfo,
    SetpointInfo,
    StatusResponse,
    WorkerInfo,
)
from api.plan_view import planner_info
from config import EMSConfig
from config.common import SecretRef
from ems.jsonable import jsonable
from ems.model import LOCAL_MODES, DeviceHealth, Mode, Snapshot, State, age_s

__all__ = [
    "LIMIT_WHY",
    "control_flags",
    "device_health",
    "devices",
    "effective_mode",
    "health",
    "mode_info",
    "process_death",
    "redacted_config",
    "status",
    "workers",
]

LIMIT_WHY: Mapping[str, str] = {
    "inverter_rating": "limit 1: inverter charge/discharge rating (control.max_charge_w / max_discharge_w)",
    "bms_ccl": "limit 2: BMS charge current limit x battery voltage",
    "bms_dcl": "limit 2: BMS discharge current limit x battery voltage",
    "bms_charge_disabled": "limit 2: the BMS refuses charge",
    "bms_discharge_disabled": "limit 2: the BMS refuses discharge",
    "soc_unknown": "limit 3: no fresh SOC reading: 0 W",
    "soc_min": "limit 3: SOC at or below control.soc_min_pct: no discharge",
    "soc_max": "limit 3: SOC at or above control.soc_max_pct: no charge",
    "bms_force_charge": "limit 3: the BMS requests a force charge",
    "max_import": "limit 4: grid import cap (control.max_import_w)",
    "max_export": "limit 4: grid export cap (control.max_export_w)",
    "ramp": "limit 5: ramp rate (control.ramp_w_per_s)",
    "import_cap": "limit 4: an external import cap (dimming, e.g. Germany's §14a EnWG) in force",
}
_PLAN_WHY = "the planner's slot: its battery range (hold = no discharge, charge_from_grid = charge only, ...)"


def limit_why(name: str) -> str:
    return LIMIT_WHY.get(name) or (_PLAN_WHY if name.startswith("plan:") else "")


_SECRET_WORDS = ("token", "password", "secret", "hmac", "api_key", "apikey", "passphrase", "private_key")


def control_flags(cfg: EMSConfig) -> ControlFlags:
    c = cfg.control
    return ControlFlags(enabled=c.enabled, dry_run=c.dry_run, live=c.live, soc_min_pct=c.soc_min_pct, soc_max_pct=c.soc_max_pct)


def effective_mode(state: State, requested: Mode) -> Mode:
    if state is State.SELF_CONSUMPTION:
        return requested if requested in LOCAL_MODES else Mode.SELF_CONSUMPTION
    if state is State.EXTERNAL:
        return Mode.EXTERNAL
    return Mode.IDLE


def _device_status(d: DeviceHealth, cfg: EMSConfig) -> str:
    if d.error_streak >= cfg.api.health_max_error_streak:
        return "failing" if d.required else "degraded"
    return "ok" if d.last_ok_s is not None else "starting"


def device_health(snap: Snapshot, cfg: EMSConfig) -> list[DeviceHealthInfo]:
    return [
        DeviceHealthInfo(
            name=d.name,
            kind=d.kind,
            address=d.where,
            required=d.required,
            status=_device_status(d, cfg),
            owns=[q.value for q in d.owns],
            last_ok_age_s=age_s(d.last_ok_s, now_s=snap.at_s),
            error_streak=d.error_streak,
            errors_total=d.errors_total,
            last_error=d.last_error,
            last_error_age_s=age_s(d.last_error_s, now_s=snap.at_s),
        )
        for d in snap.devices
    ]


def _required_threads(snap: Snapshot) -> set[str]:
    required = {d.name for d in snap.devices if d.required}
    return {t.name for t in snap.threads if any(dev in required for dev in t.devices)}


def workers(snap: Snapshot, cfg: EMSConfig) -> list[WorkerInfo]:
    required = _required_threads(snap)
    out = []
    for t in snap.threads:
        beat_age = age_s(t.last_beat_s, now_s=snap.at_s)
        stale = (beat_age if beat_age is not None else snap.at_s - snap.started_at_s) > cfg.control.worker_stall_s
        out.append(
            WorkerInfo(
                name=t.name, ok=not stale, stale=stale, required=t.name in required, devices=list(t.devices), last_beat_age_s=beat_age
            )
        )
    return out


def health(snap: Snapshot, cfg: EMSConfig) -> HealthResponse:
    """Unhealthy (503): FAULT, a required device failing, a required device's thread stale, no or a stale
    controller. Degraded (still 200): a device nobody needs for control failing, its thread stale."""
    ws = workers(snap, cfg)
    ds = device_health(snap, cfg)
    problems = [f"fault:{c}" for c in snap.fault_causes]
    if snap.state is State.FAULT and not problems:
        problems.append("fault")
    problems += [f"device_failing:{d.name}" for d in ds if d.status == "failing"]
    problems += [f"worker_stale:{w.name}" for w in ws if w.stale and w.required]
    degraded = [f"device_failing:{d.name}" for d in ds if d.status == "degraded"]
    degraded += [f"worker_stale:{w.name}" for w in ws if w.stale and not w.required]
    cmd = snap.command
    controller_age = None if cmd is None else age_s(cmd.at_s, now_s=snap.at_s)
    if cmd is None:
        problems.append("starting")
    elif controller_age is not None and controller_age > cfg.api.controller_stale_s:
        problems.append("controller_stale")
    ages = [snap.at_s - r.at_s for r in snap.measurements.values()]
    return HealthResponse(
        healthy=not problems,
        state=snap.state,
        problems=problems,
        degraded=degraded,
        devices=ds,
        workers=ws,
        last_reading_age_s=max(0.0, min(ages)) if ages else None,
        controller_age_s=controller_age,
        cycles=snap.cycles,
        overruns=snap.overruns,
        uptime_s=snap.at_s - snap.started_at_s,
    )


def _setpoint(snap: Snapshot) -> SetpointInfo | None:
    sp = snap.external_setpoint
    if sp is None:
        return None
    return SetpointInfo(power_w=sp.power_w, remaining_s=sp.expires_at_s - snap.at_s, reason=sp.reason, source=sp.source)


def mode_info(snap: Snapshot, cfg: EMSConfig) -> ModeInfo:
    return ModeInfo(
        requested_mode=snap.requested_mode,
        effective_mode=effective_mode(snap.state, snap.requested_mode),
        state=snap.state,
        external_setpoint=_setpoint(snap),
        control=control_flags(cfg),
    )


def status(snap: Snapshot, cfg: EMSConfig, *, wall_now_ts: float) -> StatusResponse:
    fresh_s = cfg.control.fault_timeout_s
    measurements = {
        q.value: ReadingInfo(
            value=r.value,
            age_s=max(0.0, snap.at_s - r.at_s),
            ts=wall_now_ts - (snap.at_s - r.at_s),
            stale=not r.fresh(now_s=snap.at_s, max_age_s=fresh_s),
        )
        for q, r in sorted(snap.measurements.items())
    }
    ctl = snap.control
    command = None
    if ctl is not None:
        cmd = ctl.command
        command = CommandInfo(
            seq=cmd.seq,
            setpoint_w=cmd.setpoint_w,
            written_w=cmd.written_w,
            reasons=list(ctl.reasons),
            hold=ctl.hold,
            gate=ctl.gate,
            age_s=max(0.0, snap.at_s - cmd.at_s),
            acknowledged=snap.written_seq is not None and snap.written_seq >= cmd.seq,
            written_seq=snap.written_seq,
        )
    flags = snap.bms_flags
    return StatusResponse(
        site_id=cfg.site.id,
        state=snap.state,
        state_age_s=max(0.0, snap.at_s - snap.state_since_s),
        requested_mode=snap.requested_mode,
        effective_mode=effective_mode(snap.state, snap.requested_mode),
        control=control_flags(cfg),
        measurements=measurements,
        command=command,
        limits=[LimitInfo(name=n, why=limit_why(n)) for n in snap.limits],
        fault_causes=list(snap.fault_causes),
        bms_protections=sorted(flags.protections) if flags else [],
        bms_warnings=sorted(flags.warnings) if flags else [],
        external_setpoint=_setpoint(snap),
        devices=device_health(snap, cfg),
        workers=workers(snap, cfg),
        cycles=snap.cycles,
        overruns=snap.overruns,
        uptime_s=snap.at_s - snap.started_at_s,
        process_death=process_death(snap),
        law={} if snap.control is None else {k: v for k, v in snap.control.law.items() if isinstance(v, float | int | str)},
        planner=planner_info(snap, cfg) if cfg.planner.enabled else None,
        plan_followed=None if ctl is None else ctl.plan,
    )


def process_death(snap: Snapshot) -> ProcessDeathInfo | None:
    """What the inverter does when the EMS stops writing (crash, SIGKILL, hang), from what the ESS link
    set and read back at connect (interfaces/modbus/actuator.py); None without an ESS."""
    ess = snap.device("ess")
    if ess is None:
        return None
    info = ess.info
    text = info.get("process_death")
    if not isinstance(text, str):
        return ProcessDeathInfo(
            device=ess.name,
            leads_to="unknown until the inverter link is up (the revert time is written and read back at connect)",
            after_s=None,
            verified=False,
        )
    after = info.get("revert_s")
    return ProcessDeathInfo(
        device=ess.name,
        leads_to=text,
        after_s=float(after) if isinstance(after, int | float) else None,
        verified=info.get("revert_verified") is True,
    )


def devices(snap: Snapshot, cfg: EMSConfig) -> list[DeviceInfo]:
    """Every device the workers registered, with what they report of it (identity, map, link)."""
    out = []
    for d in snap.devices:
        info = jsonable(d.info)
        out.append(
            DeviceInfo(
                name=d.name,
                protocol=d.kind,
                address=d.where,
                map=None if info.get("map") is None else str(info["map"]),
                details={k: v for k, v in info.items() if k != "map"},
                last_seen_age_s=age_s(d.last_ok_s, now_s=snap.at_s),
                ok=_device_status(d, cfg) in ("ok", "starting"),
                required=d.required,
                owns=[q.value for q in d.owns],
                error_streak=d.error_streak,
                last_error=d.last_error,
            )
        )
    return out


def redacted_config(cfg: EMSConfig) -> tuple[dict[str, Any], list[str]]:
    """The effective config as JSON data; every secret (and secret-looking string) becomes '***'."""
    redacted: list[str] = []
    return _redact(cfg, "", redacted), redacted


def _redact(value: object, path: str, redacted: list[str]) -> Any:
    if isinstance(value, SecretRef):
        redacted.append(path)
        return "***"
    if isinstance(value, BaseModel):
        return {name: _redact(getattr(value, name), f"{path}.{name}" if path else name, redacted) for name in type(value).model_fields}
    if isinstance(value, list | tuple):
        return [_redact(v, f"{path}.{i}", redacted) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        return {str(k): _redact(v, f"{path}.{k}", redacted) for k, v in value.items()}
    if isinstance(value, str) and value and any(w in path.rsplit(".", 1)[-1].lower() for w in _SECRET_WORDS):
        redacted.append(path)
        return "***"
    if isinstance(value, BaseModel | str | int | float | bool) or value is None:
        return value
    return _plain(value)


def _plain(value: object) -> Any:
    """Enums, paths and other scalars: their JSON form."""
    return TypeAdapter(type(value)).dump_python(value, mode="json")
