"""`python -m simulators.schedule`: yearly cost per planner on the shipped (or given) year (docs/scheduling.md).

python -m simulators.schedule                                   # the shipped 2023 year, all planners, table
python -m simulators.schedule --planner self,ems --weeks 8 --json
python -m simulators.schedule --household H.csv --prices P.csv --battery-wh 10000 --battery-w 5000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import structlog

from simulators.schedule.run import PLANNERS, Options, run

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    from simulators.schedule.year import HOUSEHOLD, PRICES

    p = argparse.ArgumentParser(
        prog="python -m simulators.schedule", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--household", type=Path, default=HOUSEHOLD, help="CSV ts_utc,load_w,pv_w (15-minute means), plain or .gz")
    p.add_argument("--prices", type=Path, default=PRICES, help="CSV ts_utc,price_eur_per_kwh (spot), plain or .gz")
    p.add_argument("--battery-wh", type=float, default=10000.0, help="usable capacity, Wh")
    p.add_argument("--battery-w", type=float, default=5000.0, help="charge and discharge power, W")
    p.add_argument("--efficiency-pct", type=float, default=95.0, help="one-way efficiency (charge and discharge each), %%")
    p.add_argument("--soc-start-pct", type=float, default=50.0, help="SOC at the start (of the year or of each sampled week), %%")
    p.add_argument("--planner", default=",".join(PLANNERS), help="comma list of: " + ", ".join(PLANNERS))
    p.add_argument("--replan-min", type=int, default=15, help="ems: re-plan every this many minutes (and at each price publication)")
    p.add_argument("--weeks", type=int, default=0, help="simulate this many representative weeks spread over the year instead of all of it")
    p.add_argument("--end-value", default=None, help="ems: end-of-horizon value rule (zero, median_import, min_import)")
    p.add_argument("--cycle-cost", type=float, default=0.0, help="ems: battery wear cost, EUR/kWh throughput")
    p.add_argument("--solve-samples", type=int, default=40, help="time this many 48 h (192-slot) re-plans")
    p.add_argument(
        "--variant", default="shared", help="held-out data: shared (as given), shift7, scaled or months (simulators/schedule/variants.py)"
    )
    p.add_argument("--no-perfect-forecast", action="store_true", help="ems: skip the run with perfect load and PV forecasts")
    p.add_argument(
        "--pv-factor", type=float, default=None, help="ems: planner.forecast.pv.planning_factor (default 0.85; 1 = plan on the forecast)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return p


def _table(doc: dict[str, Any]) -> str:
    lines = [f"{'planner':<22}{'cost EUR':>10}{'share %':>9}{'thru kWh':>10}{'soc end %':>10}"]
    for name, r in doc["planners"].items():
        share = r.get("share_of_perfect_gain_pct")
        lines.append(
            f"{name:<22}{r['cost_eur']:>10.1f}{'' if share is None else f'{share:.1f}':>9}{r['throughput_kwh']:>10.0f}{r['soc_end_pct']:>10.1f}"
        )
        if "cost_perfect_forecast_eur" in r:
            pf_share = r.get("share_perfect_forecast_pct")
            lines.append(
                f"{'  with perfect forecast':<22}{r['cost_perfect_forecast_eur']:>10.1f}{'' if pf_share is None else f'{pf_share:.1f}':>9}"
            )
    fc = doc.get("forecast")
    if fc:
        for k, v in fc.items():
            lines.append(f"forecast {k}: MAE {v['mae_w']:.0f} W, bias {v['bias_w']:+.0f} W (mean actual {v['mean_actual_w']:.0f} W)")
    sv = doc.get("solve")
    if sv:
        lines.append(
            f"re-plans: {sv['replans']} (mean horizon {sv['horizon_slots_mean']:.0f} slots), wall p50/p99/max "
            f"{sv['wall_ms_p50']:.1f}/{sv['wall_ms_p99']:.1f}/{sv['wall_ms_max']:.1f} ms, failed {sv['failed']}"
        )
    s192 = doc.get("solve_192")
    if s192:
        lines.append(
            f"48 h re-plan (192 slots): wall p50/max {s192['wall_ms_p50']:.1f}/{s192['wall_ms_max']:.1f} ms, "
            f"HiGHS p50 {s192['solver_ms_p50']:.1f} ms"
        )
    lines.append(f"({doc['scope']}; run {doc['run_s']:.1f} s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    args = _parser().parse_args(argv)
    planners = tuple(p.strip() for p in args.planner.split(",") if p.strip())
    unknown = [p for p in planners if p not in PLANNERS]
    if unknown:
        print(f"unknown planner(s): {', '.join(unknown)} (choose from {', '.join(PLANNERS)})", file=sys.stderr)
        return 2
    opts = Options(
        battery_wh=args.battery_wh,
        battery_w=args.battery_w,
        efficiency_pct=args.efficiency_pct,
        soc_start_pct=args.soc_start_pct,
        replan_slots=max(1, args.replan_min // 15),
        weeks=args.weeks,
        end_value=args.end_value,
        cycle_cost_eur_per_kwh=args.cycle_cost,
        solve_samples=args.solve_samples,
        variant=args.variant,
        perfect_forecast_run=not args.no_perfect_forecast,
        planner_over=() if args.pv_factor is None else (("forecast", {"pv": {"planning_factor": args.pv_factor}}),),
    )
    from interfaces.planner.solver import warm_up

    warm_up()  # HiGHS prints a banner on its first use: keep stdout for the result
    t0 = time.perf_counter()
    try:
        doc = run(args.household, args.prices, planners, opts)
    except (OSError, ValueError) as exc:
        print(f"schedule: {exc}", file=sys.stderr)
        return 2
    doc["run_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(doc) if args.json else _table(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
