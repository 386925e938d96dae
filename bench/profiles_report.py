"""Per inverter profile goals and table (issue 15), for bench/goals.py (bench_profiles' result)."""

from __future__ import annotations

from typing import Any

__all__ = ["profile_goals", "profile_lines"]

LATENCY_P99_MS = 50.0


def _s(v: Any, nd: int = 1) -> str:
    return "-" if v is None else f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def profile_goals(res: dict[str, Any], goal: Any) -> list[dict[str, Any]]:
    """`goal(name, value, limit, at_most=True, note="")` is bench.goals._goal."""
    out: list[dict[str, Any]] = []
    ft = res.get("fault_timeout_s", 3.0)
    for name, p in (res.get("profiles") or {}).items():
        lat = (p.get("latency_meter_hung") or {}).get("latency") or {}
        missed = (p.get("latency_meter_hung") or {}).get("missed")
        out.append(
            goal(
                f"{name}: command -> register write p99 ms, meter hung",
                lat.get("p99_ms"),
                LATENCY_P99_MS,
                note=f"p50 {lat.get('p50_ms')} ms, {lat.get('n')} commands, {missed} missed",
            )
        )
        rv = p.get("revert") or {}
        if rv.get("settable"):
            why = f"timer written {rv.get('revert_s'):g} s" if rv.get("revert_s") is not None else ""
            if (rv.get("min_s") or 0.0) > ft and not rv.get("note"):
                why += f"; the device accepts no less than {rv['min_s']:g} s"
            note = rv.get("error") or (f"{why}; {rv['note']}" if rv.get("note") else why)
            out.append(goal(f"{name}: EMS SIGKILL -> inverter safe s", rv.get("kill_to_safe_s"), ft + 1.0, note=note))
    return out


def profile_lines(res: dict[str, Any]) -> list[str]:
    profiles = res.get("profiles") or {}
    if not profiles:
        return []
    lines = [
        f"PROFILES  command latency with the meter hung, ms; EMS SIGKILL -> inverter safe, s (fault_timeout_s {res.get('fault_timeout_s')})",
        f"  {'profile':22} {'method':24} {'p50':>6} {'p99':>6}  {'kill->safe':>10}  revert",
    ]
    for name, p in profiles.items():
        lat = (p.get("latency_meter_hung") or {}).get("latency") or {}
        rv = p.get("revert") or {}
        if rv.get("settable"):
            extra = rv.get("error") or rv.get("note")
            revert = f"set to {_s(rv.get('revert_s'), 0)} s -> {rv.get('reverts_to')}" + (f"; {extra}" if extra else "")
        else:
            revert = str(rv.get("note") or "-")
        lines.append(
            f"  {name:22} {p.get('method', ''):24} {_s(lat.get('p50_ms')):>6} {_s(lat.get('p99_ms')):>6}  "
            f"{_s(rv.get('kill_to_safe_s'), 2):>10}  {revert}"
        )
    return lines
