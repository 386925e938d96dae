"""The fault campaign's goals (issue 18) and its table, for bench/goals.py (bench_faults' result)."""

from __future__ import annotations

from typing import Any

__all__ = ["fault_goals", "fault_lines"]

_KINDS = ("stop", "silent", "hung", "killed")


def _g(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _s(v: Any) -> str:
    return "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)


def fault_goals(res: dict[str, Any], goal: Any) -> list[dict[str, Any]]:
    """`goal(name, value, limit, at_most=True, note="")` is bench.goals._goal."""
    if not res:
        return []
    ft = res.get("fault_timeout_s", 3.0)
    limit = ft + 1.0
    summ = res.get("summary") or {}
    k9, gb, ed, api = res.get("kill9_loop") or {}, res.get("garbage") or {}, res.get("ems_death") or {}, res.get("api_abuse") or {}
    note_missing = f"{summ.get('faults_without_reaction')} faults without a reaction" if summ.get("faults_without_reaction") else ""
    return [
        goal("faults: every source fault -> FAULT within fault_timeout_s + 1 s, max s", summ.get("fault_s_max"), limit, note=note_missing),
        goal("faults: every source fault -> 0 W at the inverter within fault_timeout_s + 1 s, max s", summ.get("zero_w_s_max"), limit),
        goal("faults: EMS SIGKILL -> inverter safe (its revert timer), s", ed.get("sigkill_to_safe_s"), limit, note=str(ed.get("process_death") or "")),
        goal("faults: EMS hung (SIGSTOP) -> inverter safe, s", ed.get("sigstop_to_safe_s"), limit),
        goal(
            "faults: kill -9 loop, audit rows lost",
            k9.get("audit_rows_lost"),
            0,
            note=f"{k9.get('restarts')} restarts, integrity ok {k9.get('integrity_ok')}, batches {k9.get('batches_created')} created / "
            f"{k9.get('batches_delivered')} delivered, stored twice {k9.get('stored_twice')}",
        ),
        goal("faults: garbage CAN/MQTT/REST, thread deaths", gb.get("thread_deaths"), 0),
        goal(
            "faults: /api/v1/health p99 ms with 500 idle + 200 slow-header connections",
            _g(api, "health", "p99_ms"),
            200.0,
            note=f"max {_g(api, 'health', 'max_ms')} ms, errors {api.get('errors')}",
        ),
    ]  # fmt: skip


def fault_lines(res: dict[str, Any]) -> list[str]:
    if "sources" not in res:
        return [f"FAULTS  error: {res['error']}"] if "error" in res else []
    lines = [
        f"FAULTS  (fault_timeout_s {res.get('fault_timeout_s')} s, recover_s {res.get('recover_s')} s{', quick' if res.get('quick') else ''}) "
        "time to FAULT / to 0 W at the inverter / to recovery, s (pv: to degraded / - / to ok)"
    ]
    lines.append(f"  {'source':8}" + "".join(f"{k:>22}" for k in _KINDS))
    for src, faults in res["sources"].items():
        cells = []
        for k in _KINDS:
            r = faults.get(k)
            if r is None:
                cells.append("n/a")
            elif "error" in r:
                cells.append("error")
            elif src == "pv":
                cells.append(f"{_s(r.get('to_degraded_s'))} / - / {_s(r.get('to_recovery_s'))}")
            else:
                cells.append(f"{_s(r.get('to_fault_s'))} / {_s(r.get('to_zero_w_s'))} / {_s(r.get('to_recovery_s'))}")
        lines.append(f"  {src:8}" + "".join(f"{c:>22}" for c in cells))
    ed = res.get("ems_death") or {}
    lines.append(
        f"  EMS SIGKILL -> inverter safe {_s(ed.get('sigkill_to_safe_s'))} s, SIGSTOP {_s(ed.get('sigstop_to_safe_s'))} s ({ed.get('process_death')})"
    )
    k9 = res.get("kill9_loop") or {}
    lines.append(
        f"  kill -9 x{k9.get('restarts')}: integrity ok {k9.get('integrity_ok')}, batches {k9.get('batches_created')} created / "
        f"{k9.get('batches_delivered')} delivered ({k9.get('batches_pending_at_stop')} pending at the final stop), re-sends dropped {k9.get('receiver_duplicates_dropped')}, stored twice "
        f"{k9.get('stored_twice')}, audit rows lost {k9.get('audit_rows_lost')} of {k9.get('requests_accepted')}, samples lost per kill "
        f"{_g(k9, 'samples_lost_per_kill_s', 'min')}-{_g(k9, 'samples_lost_per_kill_s', 'max')} s after a request, "
        f"{k9.get('samples_lost_random_kill_s')} s at random moments (flush window 5 s)"
    )
    imp = res.get("implausible") or {}
    lines.append(
        "  implausible -> refused: "
        + (
            str(imp["pending"])
            if "pending" in imp
            else ", ".join(f"{s} {_g(v, 'rejected')}" + (" (FAULT)" if _g(v, "fault") else "") for s, v in imp.items())
        )
    )
    api = res.get("api_abuse") or {}
    lines.append(
        f"  API with {api.get('idle')} idle + {api.get('slow')} slow-header connections: health p50/p99/max "
        f"{_g(api, 'health', 'p50_ms')}/{_g(api, 'health', 'p99_ms')}/{_g(api, 'health', 'max_ms')} ms, errors {api.get('errors')}"
    )
    gb = res.get("garbage") or {}
    rest = {k: v for k, v in (_g(gb, "rest") or {}).items() if k != "server_errors"}
    mqtt = _g(gb, "mqtt") or {}
    mq = mqtt.get("skipped") or f"{mqtt.get('published')} commands ({mqtt.get('invalid')} invalid)"
    lines.append(
        f"  garbage: CAN {_g(gb, 'can', 'frames')} frames ({_g(gb, 'can', 'malformed')} malformed), MQTT {mq}, REST {rest}"
        f"; thread deaths {gb.get('thread_deaths')}"
    )  # fmt: skip
    return lines
