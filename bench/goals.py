"""The goals of issue 11 (and of the scheduling issue), checked against the benchmark results, and the short table `make bench` prints.

Goals are reported, never asserted: a benchmark is not a test (the numbers depend on the machine).
"""

from __future__ import annotations

from typing import Any

from bench.faults_report import fault_goals, fault_lines
from bench.profiles_report import profile_goals, profile_lines
from simulators import matrix as dyn

__all__ = ["EMS_VARIANTS", "evaluate", "table"]

EMS_VARIANTS = ("ems:adaptive", "ems:integrating", "ems:predictive")
DEFAULT_LAW = "ems:adaptive"


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _goal(name: str, value: Any, limit: float, *, at_most: bool = True, note: str = "") -> dict[str, Any]:
    met = None if value is None else bool(value <= limit) if at_most else bool(value >= limit)
    return {"goal": name, "value": value, "limit": ("<= " if at_most else ">= ") + f"{limit:g}", "met": met, "note": note}


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    goals: list[dict[str, Any]] = []
    reg = results.get("bench_regulation", {})
    for profile, res in (_get(reg, "profiles") or {}).items():
        for ems in (v for v in EMS_VARIANTS if v in (_get(res, "ratios") or {})):  # the laws this run replayed
            r = _get(res, "ratios", ems) or {}
            excess = r.get("excess_grid_error_w")
            goals.append(
                _goal(
                    f"{profile} {ems}/ideal mean |grid error|",
                    r.get("grid_error_over_ideal"),
                    1.3,
                    note=f"excess over ideal {excess} W"
                    + ("; ideal ~0 W so the ratio is undefined" if r.get("grid_error_over_ideal") is None else ""),
                )
            )
            goals.append(
                _goal(
                    f"{profile} {ems}/naive mean |grid error|",
                    r.get("grid_error_over_naive"),
                    0.5,
                    note=f"excess-over-ideal ratio {r.get('excess_grid_error_over_naive')}",
                )
            )
            goals.append(
                _goal(
                    f"{profile} {ems}/pid mean |grid error|",
                    r.get("grid_error_over_pid"),
                    0.7,
                    note=f"excess-over-ideal ratio {r.get('excess_grid_error_over_pid')}",
                )
            )
            goals.append(
                _goal(
                    f"{profile} {ems} import+export / ideal's",
                    r.get("import_export_over_ideal"),
                    1.02,
                    note=f"excess {r.get('import_export_excess_wh')} Wh",
                )
            )
    for law, res in (_get(reg, "step_response") or {}).items():
        m = _get(res, "controllers", "ems") or {}
        goals.append(_goal(f"step ems:{law} overshoot %", m.get("overshoot_pct_max"), 5.0))
        goals.append(_goal(f"step ems:{law} cycles to +/-1 %", m.get("settle_cycles_max"), 4.0))
        goals.append(
            _goal(
                f"step ems:{law} command reversals once settled (sustained oscillation)",
                m.get("reversals_after_settle_max"),
                0,
                note=f"reversals per step in all {m.get('command_reversals_max')}",
            )
        )
    for ems in EMS_VARIANTS:
        goals.append(
            _goal(
                f"replay speed {ems} (x real time, slowest profile)", _get(reg, "replay_speed", ems, "x_real_time_min"), 5000, at_most=False
            )
        )
    for key, label in (("matrix", ""), ("matrix_held_out", " [held-out day]")):
        m = reg.get(key)
        if not m:
            continue
        for law in [c for c in m.get("controllers", ()) if c.startswith("ems")]:
            for g in dyn.goals(m, law):
                goals.append(
                    {
                        "goal": f"matrix {law} {g['cell']}{label}: excess <= 1.05 x bound_1hz, <= 0.95 x naive, reversals <= 0.5 x naive, step",
                        "value": None,
                        "limit": "all",
                        "met": g["met"],
                        "note": "; ".join(g["misses"]),
                    }
                )
    lat = results.get("bench_latency", {})
    goals.append(
        _goal(
            "command latency p99 ms",
            _get(lat, "latency", "p99_ms"),
            50.0,
            note="" if lat.get("available", True) else str(lat.get("reason")),
        )
    )
    loop = results.get("bench_loop", {})
    goals.append(_goal("loop jitter p99 ms (no API load)", _get(loop, "loop_no_load", "lateness", "p99_ms"), 10.0))
    goals.append(
        _goal(
            "loop jitter p99 ms (API load)",
            _get(loop, "loop_api_load", "lateness", "p99_ms"),
            10.0,
            note=str(_get(loop, "loop_api_load", "reason") or ""),
        )
    )
    goals.append(_goal("loop overruns (API load)", _get(loop, "loop_api_load", "overruns"), 0))
    ft = _get(loop, "fault_reaction", "fault_timeout_s")
    goals.append(
        _goal(
            "fault reaction s (meter silenced -> 0 W at inverter)",
            _get(loop, "fault_reaction", "reaction_s"),
            (ft if ft is not None else 3.0) + 1.0,
        )
    )
    goals.append(_goal("RSS MB", _get(loop, "resources", "rss_mb_max"), 80.0))
    goals.append(_goal("CPU % of one core", _get(loop, "resources", "cpu_pct_one_core"), 5.0))
    sched = results.get("bench_schedule", {})
    if sched:
        scope = sched.get("scope", "")
        goals.append(
            _goal(
                "schedule: ems captures % of the perfect-foresight gain over self-consumption (own forecasts)",
                sched.get("ems_share_of_perfect_gain_pct"),
                85.0,
                at_most=False,
                note=f"{scope}; with perfect forecasts {sched.get('ems_share_perfect_forecast_pct')} %",
            )
        )
        goals.append(
            _goal(
                "schedule: 48 h re-plan (192 slots) wall time s, max",
                None if sched.get("replan_192_wall_ms_max") is None else sched["replan_192_wall_ms_max"] / 1000.0,
                1.0,
                note=f"p99 {sched.get('replan_192_wall_ms_p99')} ms",
            )
        )
        goals.append(
            _goal(
                "schedule: reproduces the issue's 220.6 / -30.2 / -169.4 EUR",
                None if "reproduces_issue_figures" not in sched else int(bool(sched["reproduces_issue_figures"])),
                1,
                at_most=False,
                note=str(sched.get("reference_full_year_eur", "")),
            )
        )
    plan = results.get("bench_planner", {})
    if plan:
        rp = plan.get("real_process", {})
        goals.append(
            _goal(
                "planner: 1 Hz loop overruns during re-plans (real process, API load)",
                _get(rp, "loop", "overruns_during_replans"),
                0,
                note=f"{_get(rp, 'replans', 'n')} re-plans; overruns in the phase {_get(rp, 'loop', 'overruns')}; "
                f"lateness near re-plans max {_get(rp, 'loop', 'lateness_near_replans', 'max_ms')} ms",
            )
        )
        goals.append(
            _goal(
                "planner: re-plan wall time in the real process, max s",
                None if _get(rp, "replans", "solve_s", "max_ms") is None else rp["replans"]["solve_s"]["max_ms"] / 1000.0,
                1.0,
                note=f"p50 {_get(rp, 'replans', 'solve_s', 'p50_ms')} ms over {_get(rp, 'replans', 'slots_mean')} slots",
            )
        )
        rep = plan.get("replay", {})
        goals.append(
            _goal(
                "planner: 1 s replay, share of free slots with battery energy within 5 % of planned",
                rep.get("within_5pct_pct"),
                95.0,
                at_most=False,
                note=f"{rep.get('free_slots')} of {rep.get('slots')} slots free (no limit bound), {rep.get('days')} days, "
                f"{rep.get('forecast')} forecasts; all slots {rep.get('within_5pct_all_slots_pct')} %",
            )
        )
    goals += fault_goals(results.get("bench_faults", {}), _goal)
    goals += profile_goals(results.get("bench_profiles", {}), _goal)
    return goals


def _f(v: Any, nd: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def table(doc: dict[str, Any]) -> str:
    res = doc.get("benchmarks", {})
    lines: list[str] = []
    reg = res.get("bench_regulation", {})
    if "profiles" in reg:
        replayed = set().union(*(_get(p, "controllers") or {} for p in reg["profiles"].values()))
        ctls = [c for c in ("ideal", "bound_1hz", "naive", "pid", *EMS_VARIANTS) if c in replayed]
        lines.append("REGULATION  mean |grid error| W (import+export kWh)" + ("  [quick: 2 h]" if reg.get("quick") else "  [24 h]"))
        lines.append(f"{'profile':14}" + "".join(f"{c:>22}" for c in ctls))
        for profile, p in reg["profiles"].items():
            cells = []
            for c in ctls:
                k = _get(p, "controllers", c) or {}
                ie = (k.get("import_wh") or 0) + (k.get("export_wh") or 0)
                cells.append(f"{_f(k.get('grid_error_mean_w'))} ({ie / 1000:.2f})")
            lines.append(f"{profile:14}" + "".join(f"{c:>22}" for c in cells))
        lines.append("STEP RESPONSE  overshoot % / cycles to +/-1 % / reversals")
        for law, s in (reg.get("step_response") or {}).items():
            row = ", ".join(
                f"{n} {_f(m.get('overshoot_pct_max'))}/{_f(m.get('settle_cycles_max'))}/{_f(m.get('command_reversals_max'))}"
                for n, m in s["controllers"].items()
            )
            lines.append(f"  law {law}: {row}")
    for key in ("matrix", "matrix_held_out"):
        if reg.get(key):
            laws = [c for c in reg[key].get("controllers", ()) if c.startswith("ems")]
            lines.append(("" if key == "matrix" else "HELD-OUT DAY ") + dyn.table(reg[key], laws, goals_for=(DEFAULT_LAW,)))
    rt = _get(res, "bench_loop", "realtime_regulation") or {}
    if rt:
        rt_cells = ", ".join(f"{law} {_f(_get(v, 'mean_abs_grid_w'))} W over {_f(_get(v, 'window_s'), 0)} s" for law, v in rt.items())
        lines.append(f"REAL TIME  main.py + simulators, mean |grid| (plant truth): {rt_cells}")
    for law, v in (_get(res, "bench_loop", "realtime_load_steps") or {}).items():
        steps = "; ".join(
            f"{s.get('step_w'):+g} W: overshoot {s.get('overshoot_pct')} %, settle {s.get('settle_s_4pct')} s"
            for s in (_get(v, "load_steps") or [])
        )
        lines.append(f"  load steps at 03:00, law {law} (+/-4 % band): {steps or _get(v, 'error')}")
    loop = res.get("bench_loop", {})
    for phase in ("loop_no_load", "loop_api_load"):
        lat = _get(loop, phase, "lateness")
        if lat:
            lines.append(
                f"LOOP {phase[5:]:8} lateness p50/p99/max {_f(lat.get('p50_ms'), 2)}/{_f(lat.get('p99_ms'), 2)}/"
                f"{_f(lat.get('max_ms'), 2)} ms over {lat.get('n')} cycles, overruns {_get(loop, phase, 'overruns')}"
                + "".join(
                    f", gc {gen} n={g.get('n')} max {_f(g.get('max_ms'), 2)} ms"
                    for gen, g in (_get(loop, phase, "gc") or {}).items()
                    if g.get("n")
                )
            )
    if "error" in reg and "profiles" not in reg:
        lines.append(f"REGULATION  error: {reg['error']}")
    for name, r in res.items():
        if name == "bench_regulation":
            continue
        if "error" in r:
            lines.append(f"{name}: error: {r['error']}")
    sched = res.get("bench_schedule", {})
    if "planners" in sched:
        lines.append(f"SCHEDULE  cost EUR (share of the perfect-foresight gain %), {sched.get('scope')}")
        lines.append(
            "  "
            + ", ".join(
                f"{name} {_f(p.get('cost_eur'))}"
                + ("" if p.get("share_of_perfect_gain_pct") is None else f" ({_f(p['share_of_perfect_gain_pct'])})")
                for name, p in sched["planners"].items()
            )
            + f"; ems with perfect forecasts {_f(_get(sched, 'planners', 'ems', 'cost_perfect_forecast_eur'))}"
        )
    plan = res.get("bench_planner", {})
    if "real_process" in plan:
        rp, rep = plan["real_process"], plan.get("replay", {})
        lines.append(
            f"PLANNER  real process: {_get(rp, 'replans', 'n')} re-plans, p50/max {_f(_get(rp, 'replans', 'solve_s', 'p50_ms'))}/"
            f"{_f(_get(rp, 'replans', 'solve_s', 'max_ms'))} ms, overruns {_get(rp, 'loop', 'overruns')} "
            f"(during re-plans {_get(rp, 'loop', 'overruns_during_replans')}); 1 s replay {rep.get('days')} days: "
            f"{_f(rep.get('within_5pct_pct'))} % of {rep.get('free_slots')} free slots within 5 % of the planned energy"
        )
    lines += fault_lines(res.get("bench_faults", {}))
    lines += profile_lines(res.get("bench_profiles", {}))
    lines.append("")
    lines.append("GOALS")
    for g in doc.get("goals", []):
        mark = {True: "met    ", False: "NOT MET", None: "n/a    "}[g["met"]]
        note = f"  ({g['note']})" if g.get("note") else ""
        lines.append(f"  {mark} {g['goal']}: {_f(g['value'], 3)} {g['limit']}{note}")
    extra = {
        n: r
        for n, r in res.items()
        if n not in ("bench_regulation", "bench_latency", "bench_loop", "bench_schedule", "bench_planner", "bench_faults", "bench_profiles")
        and "error" not in r
    }
    for name, r in extra.items():
        flat = ", ".join(f"{k}={v}" for k, v in r.items() if isinstance(v, int | float) and not isinstance(v, bool))[:300]
        lines.append(f"{name}: {flat}")
    return "\n".join(lines)
