"""Scheduling benchmark (issue: price- and forecast-aware scheduling): yearly cost per planner and re-plan time.

    python -m bench.bench_schedule            (full-year figures for none/self/perfect + 8 representative weeks
                                               for all planners, hourly re-plans; about 25 s)
    BENCH_QUICK=1 python -m bench.bench_schedule     (4 weeks)
    python -m bench.bench_schedule --full     (the whole year for every planner, re-plans every 15 minutes; minutes)

Runs `simulators.schedule` (the same code as `python -m simulators.schedule`) on the shipped year
data: the three reference figures of the issue first (no battery 220.6, greedy self-consumption
-30.2, perfect-foresight LP -169.4 EUR/year), then every planner on the sample, and the wall time
of a 48 h (192-slot) re-plan. Prints one JSON line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import structlog

from bench.common import emit
from simulators.schedule.run import Options, run
from simulators.schedule.year import HOUSEHOLD, PRICES

ISSUE_FIGURES_EUR = {"none": 220.6, "self": -30.2, "perfect": -169.4}


def _import_cost(module: str) -> dict[str, float]:
    """Wall time and resident memory of a fresh interpreter importing `module`, less a bare interpreter's
    (VmRSS: the peak counter would carry the parent's high-water mark over the fork)."""
    code = (
        "import time; t = time.perf_counter(); {imp}; d = time.perf_counter() - t; "
        "rss = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmRSS:')][0]; print(d, rss)"
    )
    out = {}
    for key, imp in (("bare", "pass"), ("module", f"import {module}")):
        proc = subprocess.run([sys.executable, "-c", code.format(imp=imp)], capture_output=True, text=True, timeout=60, check=True)
        wall_s, rss_kb = proc.stdout.split()[-2:]
        out[key] = (float(wall_s), float(rss_kb))
    return {"import_ms": round(out["module"][0] * 1000.0, 1), "rss_mb_added": round((out["module"][1] - out["bare"][1]) / 1024.0, 1)}


def main(argv: list[str] | None = None) -> int:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    argv = sys.argv[1:] if argv is None else argv
    full = "--full" in argv
    quick = os.environ.get("BENCH_QUICK") == "1"
    t0 = time.perf_counter()
    ref = run(HOUSEHOLD, PRICES, ("none", "self", "perfect"), Options(solve_samples=0))
    figures = {p: ref["planners"][p]["cost_eur"] for p in ISSUE_FIGURES_EUR}
    reproduced = all(abs(figures[p] - v) < 0.05 for p, v in ISSUE_FIGURES_EUR.items())
    weeks = 0 if full else (4 if quick else 8)
    opts = Options(weeks=weeks, replan_slots=1 if full else 4, solve_samples=60)
    doc = run(HOUSEHOLD, PRICES, ("none", "self", "heuristic", "ems", "perfect"), opts)
    planners: dict[str, Any] = doc["planners"]
    ems = planners["ems"]
    s192 = doc["solve_192"]
    emit(
        {
            "bench": "schedule",
            "quick": quick,
            "full_year": full,
            "scope": doc["scope"],
            "reference_full_year_eur": figures,
            "reproduces_issue_figures": reproduced,
            "ems_share_of_perfect_gain_pct": ems["share_of_perfect_gain_pct"],
            "ems_share_perfect_forecast_pct": ems["share_perfect_forecast_pct"],
            "heuristic_share_of_perfect_gain_pct": planners["heuristic"]["share_of_perfect_gain_pct"],
            "replan_192_wall_ms_p99": s192["wall_ms_p99"],
            "replan_192_wall_ms_max": s192["wall_ms_max"],
            "replan_192_solver_ms_p50": s192["solver_ms_p50"],
            "planners": planners,
            "forecast": doc["forecast"],
            "solve": doc["solve"],
            "solve_192": s192,
            "ems": doc["ems"],
            "highspy_import": _import_cost("highspy"),
            "ems_planner_module_import": _import_cost("ems.planner"),
            "run_s": round(time.perf_counter() - t0, 1),
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
