"""Pure builders: a context snapshot (+ config) -> the API's response models. No I/O, no clock."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, TypeAdapter

from api.models import (
    CommandInfo,
    ControlFlags,
    DeviceInfo,
    HealthResponse,
    LimitInfo,
    ModeInfo,
    ReadingInfo,
    SetpointInfo,
    StatusResponse,
    WorkerInfo,
)
from config import EMSConfig
from config.common import SecretRef
from ems.model import LOCAL_MODES, Mode, Snapshot, State, WorkerHealth

__all__ = [
    "DEVICE_STATUS_PREFIX",
    "LIMIT_WHY",
    "control_flags",
    "devices",
    "effective_mode",
    "health",
    "mode_info",
    "redacted_config",
    "status",
    "workers",
]

DEVICE_STATUS_PREFIX = "device:"  # ctx.set_status("device:<name>", {"protocol": ..., "address": ..., "map": ...})

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
    "non_finite_command": "the law produced a non-finite value: 0 W",
    "setpoint_missing": "mode EXTERNAL without an active set-point: 0 W",
    "control_disabled": "gate: control.enabled is false, the inverter gets 0 W",
    "dry_run": "gate: control.dry_run is true, the inverter gets 0 W",
}
_SOURCE_WORKERS: Mapping[str, str] = {"modbus": "modbus", "can": "can", "mqtt": "mqtt"}  # worker name -> protocol
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


def _age(now_s: float, at_s: float | None) -> float | None:
    return None if at_s is None else max(0.0, now_s - at_s)


def workers(snap: Snapshot, cfg: EMSConfig) -> list[WorkerInfo]:
    return [_worker(w, snap, cfg) for w in snap.workers]


def _worker(w: WorkerHealth, snap: Snapshot, cfg: EMSConfig) -> WorkerInfo:
    beat_age = _age(snap.at_s, w.last_beat_s)
    stale = (beat_age if beat_age is not None else snap.at_s - snap.started_at_s) > cfg.control.worker_stall_s
    failing = w.error_streak >= cfg.api.health_max_error_streak
    return WorkerInfo(
        name=w.name,
        ok=not (stale or failing),
        stale=stale,
        failing=failing,
        last_ok_age_s=_age(snap.at_s, w.last_ok_s),
        last_beat_age_s=beat_age,
        error_streak=w.error_streak,
        errors_total=w.errors_total,
        last_error=w.last_error,
    )


def health(snap: Snapshot, cfg: EMSConfig) -> HealthResponse:
    ws = workers(snap, cfg)
    problems = [f"fault:{c}" for c in snap.fault_causes]
    if snap.state is State.FAULT and not problems:
        problems.append("fault")
    problems += [f"worker_stale:{w.name}" for w in ws if w.stale]
    problems += [f"worker_failing:{w.name}" for w in ws if w.failing]
    controller_age = None if snap.command is None else _age(snap.at_s, snap.command.at_s)
    if snap.command is None:
        problems.append("starting")
    elif controller_age is not None and controller_age > cfg.api.controller_stale_s:
        problems.append("controller_stale")
    ages = [snap.at_s - r.at_s for r in snap.measurements.values()]
    return HealthResponse(
        healthy=not problems,
        state=snap.state,
        problems=problems,
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
            value=r.value, age_s=max(0.0, snap.at_s - r.at_s), ts=wall_now_ts - (snap.at_s - r.at_s), stale=snap.at_s - r.at_s > fresh_s
        )
        for q, r in sorted(snap.measurements.items())
    }
    cmd = snap.command
    command = None
    if cmd is not None:
        acked = snap.command_written_seq is not None and snap.command_written_seq >= cmd.seq
        command = CommandInfo(
            seq=cmd.seq,
            state=cmd.state,
            computed_w=cmd.computed_w,
            written_w=cmd.written_w,
            reasons=list(cmd.reasons),
            age_s=max(0.0, snap.at_s - cmd.at_s),
            acknowledged=acked,
            written_seq=snap.command_written_seq,
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
        limits=[LimitInfo(name=n, why=LIMIT_WHY.get(n, "")) for n in snap.limits_bound],
        fault_causes=list(snap.fault_causes),
        bms_protections=sorted(flags.protections) if flags else [],
        bms_warnings=sorted(flags.warnings) if flags else [],
        external_setpoint=_setpoint(snap),
        workers=workers(snap, cfg),
        cycles=snap.cycles,
        overruns=snap.overruns,
        uptime_s=snap.at_s - snap.started_at_s,
    )


def _text(v: object) -> str | None:
    return None if v is None else str(v)


def _status_devices(snap: Snapshot, cfg: EMSConfig) -> list[tuple[str, str, dict[str, Any]]]:
    """(device name, worker name, fields) from what the workers put in `ctx.set_status`."""
    found: list[tuple[str, str, dict[str, Any]]] = []
    for key, value in sorted(snap.status.items()):
        if key.startswith(DEVICE_STATUS_PREFIX) and isinstance(value, Mapping):  # generic convention
            name = key.removeprefix(DEVICE_STATUS_PREFIX)
            found.append((name, str(value.get("worker", name)), dict(value)))
        elif key.startswith("modbus.") and isinstance(value, Mapping):  # interfaces/modbus
            fields = {k: v for k, v in value.items() if k != "where"}
            found.append((key.removeprefix("modbus."), "modbus", {"protocol": "modbus", "address": value.get("where"), **fields}))
        elif key == "bms" and isinstance(value, Mapping):  # interfaces/can
            can = cfg.can
            where = f"{can.host}:{can.port}/{can.channel}" if str(can.interface) == "socketcand" else f"{can.interface}:{can.channel}"
            found.append(("bms", "can", {"protocol": "can", "address": where, **value}))
        elif key == "mqtt_link" and isinstance(value, str):  # interfaces/mqtt
            found.append(("mqtt", "mqtt", {"protocol": "mqtt", "address": f"{cfg.mqtt.host}:{cfg.mqtt.port}", "link": value}))
    return found


def devices(snap: Snapshot, cfg: EMSConfig, jsonable: Any) -> list[DeviceInfo]:
    """Every source the workers report (modbus.<dev>, bms, mqtt_link, device:<name>), then source workers without one."""
    health_by_name = {w.name: w for w in workers(snap, cfg)}
    out: list[DeviceInfo] = []
    covered: set[str] = set()
    for name, worker_name, fields in _status_devices(snap, cfg):
        covered.add(worker_name)
        details = {k: v for k, v in fields.items() if k not in ("protocol", "address", "map", "worker")}
        out.append(_device(name, fields, jsonable(details), health_by_name.get(worker_name)))
    for name, w in health_by_name.items():
        if name in _SOURCE_WORKERS and name not in covered:  # a source worker that has not reported a device yet
            out.append(_device(name, {"protocol": _SOURCE_WORKERS[name]}, {}, w))
    return out


def _device(name: str, value: Mapping[str, Any], details: dict[str, Any], w: WorkerInfo | None) -> DeviceInfo:
    return DeviceInfo(
        name=name,
        protocol=_text(value.get("protocol")),
        address=_text(value.get("address")),
        map=_text(value.get("map")),
        details=details,
        last_seen_age_s=None if w is None else w.last_ok_age_s,
        ok=False if w is None else w.ok,
        error_streak=0 if w is None else w.error_streak,
        last_error=None if w is None else w.last_error,
    )


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
