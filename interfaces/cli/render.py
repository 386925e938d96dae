"""Text renderings of API answers for a terminal: one screen of status, health, events, write results."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

__all__ = ["duration", "event_line", "health_text", "plan_text", "status_text", "write_text"]

_POWER_ROW = ("grid_power_w", "pv_power_w", "ess_power_w")
_BATTERY_ROW = ("soc_pct", "soh_pct", "bms_voltage_v", "bms_current_a", "bms_temperature_degc", "bms_ccl_a", "bms_dcl_a")
_LABEL = 10  # width of the label column ("battery   ")
_UNITS = (("_degc", "°C"), ("_pct", "%"), ("_wh", "Wh"), ("_hz", "Hz"), ("_w", "W"), ("_v", "V"), ("_a", "A"))


def plain(v: Any) -> str:
    """A value for a person: none, not Python's None; lists comma-joined."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, list | tuple):
        return ",".join(plain(x) for x in v) or "none"
    return str(v)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    s = max(0.0, float(seconds))
    if s < 10:
        return f"{s:.1f} s"
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 172800:
        return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"
    return f"{s / 86400:.1f} d"


def _unit(name: str) -> tuple[str, str]:
    for suffix, unit in _UNITS:
        if name.endswith(suffix):
            return name[: -len(suffix)], unit
    return name, ""


def _value(name: str, r: Mapping[str, Any]) -> str:
    label, unit = _unit(name)
    v = float(r["value"]) + 0.0  # no "-0.0"
    if name in ("grid_power_w", "ess_power_w"):
        text = f"{v:+.0f} {unit}"
    elif not unit and v.is_integer():  # flags and codes: 1, 0, 4
        text = f"{v:.0f}"
    else:
        text = f"{v:.1f} {unit}".rstrip()
    if name == "grid_power_w" and v:
        text += " (import)" if v > 0 else " (export)"
    if name == "ess_power_w" and v:
        text += " (discharge)" if v > 0 else " (charge)"
    if r.get("stale"):
        text += f" STALE {duration(r.get('age_s'))}"
    return f"{label.replace('_', ' ')} {text}"


def _row(names: Sequence[str], m: Mapping[str, Mapping[str, Any]], width: int = 118) -> str:
    """Readings side by side, wrapped under the label column."""
    lines: list[str] = []
    for item in (_value(n, m[n]) for n in names if n in m):
        if lines and len(lines[-1]) + 3 + len(item) <= width - _LABEL:
            lines[-1] += "   " + item
        else:
            lines.append(item)
    return ("\n" + " " * _LABEL).join(lines) or "no readings"


def _flags(control: Mapping[str, Any]) -> str:
    if control.get("live"):
        return "LIVE: commands reach the inverter"
    why = "control.enabled is false" if not control.get("enabled") else "control.dry_run is true"
    return f"NOT LIVE ({why}): commands are computed, the inverter gets 0 W"


def _devices(ds: Sequence[Mapping[str, Any]]) -> str:
    """Per-device health: `meter ok (0.4 s)`, `pv DEGRADED x12: ConnectionError ... (last ok 31 s ago)`."""
    parts = []
    for d in ds:
        status = str(d.get("status", "ok"))
        if status in ("ok", "starting"):
            parts.append(f"{d['name']} {status}" + (f" ({duration(d.get('last_ok_age_s'))})" if d.get("last_ok_age_s") is not None else ""))
        else:
            last = f": {d['last_error']}" if d.get("last_error") else ""
            parts.append(f"{d['name']} {status.upper()} x{d.get('error_streak')}{last} (last ok {duration(d.get('last_ok_age_s'))} ago)")
    return " · ".join(parts) or "none"


def _stale_threads(ws: Sequence[Mapping[str, Any]]) -> str:
    stale = [f"{w['name']} (no heartbeat for {duration(w.get('last_beat_age_s'))})" for w in ws if w.get("stale")]
    return ", ".join(stale)


def status_text(s: Mapping[str, Any]) -> str:
    m = s.get("measurements") or {}
    lines = [
        f"EMS {s.get('site_id')} · state {s.get('state')} for {duration(s.get('state_age_s'))} · up {duration(s.get('uptime_s'))}"
        f" · {s.get('cycles')} cycles, {s.get('overruns')} overruns",
        f"mode      requested {s.get('requested_mode')}, effective {s.get('effective_mode')}",
        f"control   {_flags(s.get('control') or {})}",
        f"power     {_row(_POWER_ROW, m)}",
    ]
    if "grid_power_w" in m and "ess_power_w" in m:  # load = grid + pv + ess (no PV reading: 0 W of PV)
        inputs = [m[n] for n in _POWER_ROW if n in m]
        load_w = sum(float(r["value"]) for r in inputs)
        stale = [r for r in inputs if r.get("stale")]
        lines[-1] += f"   load {load_w:.0f} W" + (f" STALE {duration(max(float(r.get('age_s') or 0) for r in stale))}" if stale else "")
    lines.append(f"battery   {_row(_BATTERY_ROW, m)}")
    others = [n for n in sorted(m) if n not in _POWER_ROW and n not in _BATTERY_ROW]
    if others:
        lines.append(f"other     {_row(others, m)}")
    cmd = s.get("command")
    if cmd:
        ack = "acknowledged by the inverter" if cmd.get("acknowledged") else "NOT acknowledged by the inverter"
        lines.append(
            f"command   #{cmd['seq']} set-point {cmd['setpoint_w']:+.0f} W, written {cmd['written_w']:+.0f} W, {ack}"
            f" ({duration(cmd.get('age_s'))} ago)"
        )
    else:
        lines.append("command   none yet (the controller has not run a cycle)")
    shown = [f"{x['name']} ({x['why']})" if x.get("why") else x["name"] for x in s.get("limits") or []]
    if cmd and cmd.get("hold"):  # not limits any more (API `command.hold` / `command.gate`), but still why 0 W
        shown.append(f"hold {cmd['hold']} (the law gives 0 W)")
    if cmd and cmd.get("gate"):
        shown.append(f"gate {cmd['gate']} (the set-point is computed, 0 W is written)")
    lines.append("limits    " + ("; ".join(shown) or "none bound"))
    sp = s.get("external_setpoint")
    lines.append(
        f"setpoint  {sp['power_w']:+.0f} W for {duration(sp['remaining_s'])} more, by {sp['source']}: {sp['reason'] or '-'}"
        if sp
        else "setpoint  none"
    )
    lines.append("faults    " + (", ".join(s.get("fault_causes") or []) or "none"))
    prot, warn = s.get("bms_protections") or [], s.get("bms_warnings") or []
    lines.append(f"BMS       protections {', '.join(prot) or 'none'}; warnings {', '.join(warn) or 'none'}")
    law = s.get("law") or {}
    if len(law) > 1:
        tau, dead, ramp = law.get("inverter_tau_s"), law.get("inverter_dead_time_s"), law.get("inverter_ramp_w_per_s")
        lines.append(
            f"law       {law.get('law')}: inverter dead time {dead} s, tau {tau} s, ramp {ramp} W/s,"
            f" meter lag {law.get('meter_lag_s', '-')} s, confidence {law.get('confidence', '-')}"
        )
    elif law:
        lines.append(f"law       {law.get('law')}")
    lines.append(f"devices   {_devices(s.get('devices') or [])}")
    pd = s.get("process_death")
    if pd:
        lines.append(f"death     if the EMS dies or hangs: {pd.get('leads_to')}")
    planner = s.get("planner")
    if planner:
        lines.append(f"planner   {_planner(planner, s.get('plan_followed'))}")
    stale = _stale_threads(s.get("workers") or [])
    if stale:
        lines.append(f"threads   STALE: {stale}")
    return "\n".join(lines)


def _planner(p: Mapping[str, Any], followed: str | None) -> str:
    state = str(p.get("state"))
    head = state if state in ("ok", "starting", "off") else state.upper()
    follow = f" · following {followed.removeprefix('plan:')}" if followed else " · not followed (plain self-consumption)"
    return f"{head}: {p.get('reason')}{follow}"


def _local(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().strftime("%a %H:%M")


def plan_text(p: Mapping[str, Any], *, limit: int | None = None) -> str:
    """The plan as a table: one slot a line from now (the active one marked), costs against self-consumption on top."""
    planner = p.get("planner") or {}
    lines = [f"planner   {_planner(planner, p.get('followed'))}"]
    slots = list(p.get("slots") or [])
    if not slots:
        lines.append(f"plan      none ({p.get('reason') or 'no plan published yet'})")
        return "\n".join(lines)
    cur = p.get("currency", "EUR")
    lines.append(
        f"plan      {len(slots)} slots, {p.get('horizon_h')} h from {_local(slots[0]['start_ts'])}, made {duration(p.get('age_s'))} ago"
        f" · expected {p.get('expected_cost_eur'):+.2f} {cur} vs {p.get('self_consumption_cost_eur'):+.2f} {cur} self-consumption"
        f" (saves {p.get('savings_eur'):.2f} {cur})"
    )
    cap = p.get("import_cap")
    if cap:
        left = "until cleared" if cap.get("remaining_s") is None else f"for {duration(cap['remaining_s'])}"
        lines.append(f"import    capped at {cap['power_w']:.0f} W {left} ({cap.get('reason') or cap.get('source')})")
    lines.append(f"  {'slot':<10}{'mode':<18}{'import':>8}{'export':>8}{'battery W':>11}{'grid W':>9}{'target W':>10}{'SOC %':>7}")
    active = next((i for i, s in enumerate(slots) if s.get("active")), 0)
    shown = slots[active:] if limit is None else slots[active : active + limit]
    for s in shown:
        mark = "*" if s.get("active") else " "
        target = s.get("soc_target_pct")
        lines.append(
            f"{mark} {_local(s['start_ts']):<10}{s['mode']:<18}{s['price_import_eur_per_kwh']:>8.3f}{s['price_export_eur_per_kwh']:>8.3f}"
            f"{s['planned_battery_w']:>+11.0f}{s['planned_grid_w']:>+9.0f}{s['grid_target_w']:>+10.0f}{s['planned_soc_pct']:>7.1f}"
            + (f"  (charge to {target:.0f} %)" if target is not None else "")
        )
    if len(shown) < len(slots) - active:
        lines.append(f"  ... {len(slots) - active - len(shown)} more slots (--all)")
    lines.append(f"  prices per kWh in {cur}; battery + discharge, grid + import; * = now")
    return "\n".join(lines)


def health_text(h: Mapping[str, Any]) -> str:
    head = "healthy" if h.get("healthy") else "UNHEALTHY: " + ", ".join(h.get("problems") or [])
    lines = [
        f"{head}",
        f"state {h.get('state')} · last reading {duration(h.get('last_reading_age_s'))} ago"
        f" · last cycle {duration(h.get('controller_age_s'))} ago · {h.get('cycles')} cycles, {h.get('overruns')} overruns",
        f"devices   {_devices(h.get('devices') or [])}",
    ]
    if h.get("degraded"):
        lines.append("degraded  " + ", ".join(h["degraded"]))
    stale = _stale_threads(h.get("workers") or [])
    if stale:
        lines.append(f"threads   STALE: {stale}")
    return "\n".join(lines)


def _ts(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def event_line(e: Mapping[str, Any]) -> str:
    data = e.get("data") or {}
    fields = " ".join(f"{k}={plain(v)}" for k, v in data.items())
    number = e.get("event_seq") if e.get("event_seq") is not None else e["seq"]
    return f"{_ts(float(e['ts']))}  #{number:<6} {e['kind']:<6} {fields}"


def write_text(r: Mapping[str, Any]) -> str:
    verdict = "accepted" if r.get("accepted") else "REFUSED"
    return f"{r.get('what')} {verdict}: {plain(r.get('old'))} -> {plain(r.get('new'))} (audit #{r.get('event_seq')})\n{r.get('note', '')}".rstrip()
