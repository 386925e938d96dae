"""The year benchmark: every planner on the same year (or on representative weeks), side by side."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from config.planner import PlannerConfig
from config.tariff import TariffConfig
from ems.forecast import forecast_errors
from ems.planner import PlanInputs, make_plan
from ems.tariff import slot_prices
from simulators.kpi import percentile
from simulators.schedule.execute import Battery, RunResult, SelfConsumption, execute, no_battery_cost
from simulators.schedule.planners import EmsPolicy, ForecastLog, HeuristicPolicy, PlanFollower
from simulators.schedule.year import Year, load_year

__all__ = ["ISSUE_TARIFF", "PLANNERS", "Options", "planner_config", "run", "run_year", "sample_ranges"]

PLANNERS = ("none", "self", "heuristic", "ems", "perfect")
TZ = "Europe/Brussels"
# The issue's tariff: import = 1.06 x (spot + 0.14), export = spot - 0.01 EUR/kWh
ISSUE_TARIFF = TariffConfig.model_validate(
    {
        "timezone": TZ,
        "import_price": {"kind": "dynamic", "formula": {"adder_eur_per_kwh": 0.14, "vat_pct": 6.0}},
        "export_price": {"kind": "dynamic", "formula": {"adder_eur_per_kwh": -0.01}},
        "source": {"kind": "csv", "path": "simulators/year/be-dayahead-2023.csv.gz"},
    }
)


@dataclass(frozen=True, slots=True)
class Options:
    battery_wh: float = 10000.0
    battery_w: float = 5000.0
    efficiency_pct: float = 95.0
    soc_start_pct: float = 50.0
    replan_slots: int = 1
    weeks: int = 0
    end_value: str | None = None
    cycle_cost_eur_per_kwh: float = 0.0
    solve_samples: int = 40
    variant: str = "shared"  # simulators.schedule.variants: shared | shift7 | scaled | months
    perfect_forecast_run: bool = True  # also run the EMS with perfect load and PV forecasts
    planner_over: tuple[tuple[str, Any], ...] = ()  # extra planner config keys (experiments)


def planner_config(opts: Options, **over: Any) -> PlannerConfig:
    doc: dict[str, Any] = {
        "horizon_h": 48,
        "max_plan_age_s": 48 * 3600,
        "battery": {
            "capacity_wh": opts.battery_wh,
            "max_charge_w": opts.battery_w,
            "max_discharge_w": opts.battery_w,
            "charge_efficiency_pct": opts.efficiency_pct,
            "discharge_efficiency_pct": opts.efficiency_pct,
            "soc_min_pct": 0.0,
            "soc_max_pct": 100.0,
            "cycle_cost_eur_per_kwh": opts.cycle_cost_eur_per_kwh,
        },
    }
    if opts.end_value is not None:
        doc["end_value"] = opts.end_value
    doc.update(over)
    return PlannerConfig.model_validate(doc)


def sample_ranges(year: Year, weeks: int) -> list[tuple[int, int]]:
    """The whole year, or `weeks` 7-day windows spread evenly over it (each starting at 00:00 UTC)."""
    per_day = 86400 // year.slot_s
    days = year.n // per_day
    if weeks <= 0 or weeks * 7 >= days:
        return [(0, year.n)]
    out = []
    for k in range(weeks):
        d = round((k + 0.5) * days / weeks - 3.5)
        d = min(max(d, 7), days - 7)  # at least a week of history for the forecasts
        out.append((d * per_day, (d + 7) * per_day))
    return out


def _add(a: RunResult | None, b: RunResult) -> RunResult:
    if a is None:
        return b
    return RunResult(
        a.cost_eur + b.cost_eur,
        a.import_kwh + b.import_kwh,
        a.export_kwh + b.export_kwh,
        a.throughput_kwh + b.throughput_kwh,
        b.soc_end_pct,
        a.slots + b.slots,
    )


def _errors(pairs: Sequence[tuple[float, float]]) -> dict[str, float]:
    f = [p[0] for p in pairs]
    a = [p[1] for p in pairs]
    mae, bias = forecast_errors(f, a)
    return {"mae_w": round(mae, 1), "bias_w": round(bias, 1), "mean_actual_w": round(sum(a) / max(1, len(a)), 1), "n": len(a)}


def _ms(xs: Sequence[float], q: float) -> float:
    return round(percentile([x * 1000.0 for x in xs], q), 2) if xs else 0.0


def _solve_192(year: Year, imp: tuple[float, ...], exp: tuple[float, ...], cfg: PlannerConfig, samples: int) -> dict[str, float]:
    """Wall time of a full 48 h re-plan (192 slots: model build + HiGHS + slots), on the actual data (timing only)."""
    n = 192
    wall: list[float] = []
    solver: list[float] = []
    step = max(1, (year.n - n) // max(1, samples))
    for i in range(0, year.n - n, step)[:samples]:
        inputs = PlanInputs(year.t(i), year.slot_s, year.load_w[i : i + n], year.pv_w[i : i + n], imp[i : i + n], exp[i : i + n], 50.0)
        t1 = time.perf_counter()
        plan = make_plan(inputs, cfg, created_at_unix_s=year.t(i))
        wall.append(time.perf_counter() - t1)
        solver.append(plan.solver_s)
    return {
        "samples": len(wall),
        "wall_ms_p50": _ms(wall, 50),
        "wall_ms_p99": _ms(wall, 99),
        "wall_ms_max": round(max(wall) * 1000.0, 2) if wall else 0.0,
        "solver_ms_p50": _ms(solver, 50),
    }


def run(household: Path, prices: Path, planners: Sequence[str], opts: Options) -> dict[str, Any]:
    year = load_year(household, prices)
    if opts.variant != "shared":
        from simulators.schedule.variants import variant

        year = variant(year, opts.variant)
    return run_year(year, planners, opts)


def run_year(year: Year, planners: Sequence[str], opts: Options) -> dict[str, Any]:
    tz = ZoneInfo(TZ)
    sp = slot_prices(ISSUE_TARIFF, year.prices, start_unix_s=year.start_unix_s, n_slots=year.n, slot_s=year.slot_s)
    if sp.known_slots < year.n:
        raise ValueError(f"the prices end at slot {sp.known_slots} of {year.n}")
    imp = tuple(float(p) for p in sp.import_eur_per_kwh if p is not None)
    exp = tuple(float(p) for p in sp.export_eur_per_kwh if p is not None)
    eta = opts.efficiency_pct / 100.0
    battery = Battery(opts.battery_wh, opts.battery_w, opts.battery_w, eta, eta, 0.0, 100.0, opts.soc_start_pct)
    cfg = planner_config(opts, **dict(opts.planner_over))
    perfect_cfg = planner_config(opts, end_value="zero", solver_time_limit_s=300.0)  # one LP over the whole year
    ranges = sample_ranges(year, opts.weeks)
    totals: dict[str, RunResult | None] = {p: None for p in planners}
    extra: dict[str, Any] = {}
    pf_total: RunResult | None = None
    perfect_exec: RunResult | None = None
    flog = ForecastLog()
    solves_wall: list[float] = []
    solves_slots: list[int] = []
    failed = 0
    args = (year.load_w, year.pv_w, imp, exp, battery)
    for first, last in ranges:
        for p in planners:
            if p == "none":
                r = no_battery_cost(year.load_w[first:last], year.pv_w[first:last], imp[first:last], exp[first:last], slot_s=year.slot_s)
            elif p == "self":
                r = execute(*args, SelfConsumption(), slot_s=year.slot_s, first=first, last=last)
            elif p == "heuristic":
                r = execute(*args, HeuristicPolicy(year, imp, exp, battery, cfg, tz=tz), slot_s=year.slot_s, first=first, last=last)
            elif p == "ems":
                pol = EmsPolicy(year, imp, exp, cfg, tz=tz, replan_slots=opts.replan_slots, forecast_log=flog)
                r = execute(*args, pol, slot_s=year.slot_s, first=first, last=last)
                solves_wall += pol.solves.wall_s
                solves_slots += pol.solves.slots
                failed += pol.solves.failed
                if opts.perfect_forecast_run:
                    pf = EmsPolicy(year, imp, exp, cfg, tz=tz, replan_slots=opts.replan_slots, perfect_forecast=True)
                    pf_total = _add(pf_total, execute(*args, pf, slot_s=year.slot_s, first=first, last=last))
            else:  # perfect: the LP over the whole range with the actual load, PV and prices
                inputs = PlanInputs(
                    year.t(first),
                    year.slot_s,
                    year.load_w[first:last],
                    year.pv_w[first:last],
                    imp[first:last],
                    exp[first:last],
                    opts.soc_start_pct,
                )
                plan = make_plan(inputs, perfect_cfg, created_at_unix_s=year.t(first))
                r = RunResult(
                    plan.expected_cost_eur,
                    sum(max(0.0, s.planned_grid_w) for s in plan.slots) * year.slot_s / 3.6e6,
                    sum(max(0.0, -s.planned_grid_w) for s in plan.slots) * year.slot_s / 3.6e6,
                    sum(abs(s.planned_battery_w) for s in plan.slots) * year.slot_s / 3.6e6,
                    plan.slots[-1].planned_soc_pct if plan.slots else 0.0,
                    last - first,
                )
                follow = execute(*args, PlanFollower(year, plan, 1e9), slot_s=year.slot_s, first=first, last=last)
                perfect_exec = _add(perfect_exec, follow)
            totals[p] = _add(totals[p], r)
    self_cost = totals["self"].cost_eur if totals.get("self") else None
    perfect_cost = totals["perfect"].cost_eur if totals.get("perfect") else None

    def share(cost: float) -> float | None:
        if self_cost is None or perfect_cost is None or abs(self_cost - perfect_cost) < 1e-9:
            return None
        return round((self_cost - cost) / (self_cost - perfect_cost) * 100.0, 1)

    out: dict[str, Any] = {}
    for p, r in totals.items():
        assert r is not None
        row: dict[str, Any] = {
            "cost_eur": round(r.cost_eur, 2),
            "share_of_perfect_gain_pct": share(r.cost_eur) if p not in ("none",) else None,
            "throughput_kwh": round(r.throughput_kwh, 1),
            "import_kwh": round(r.import_kwh, 1),
            "export_kwh": round(r.export_kwh, 1),
            "soc_end_pct": round(r.soc_end_pct, 1),
        }
        if p == "ems" and pf_total is not None:
            row["cost_perfect_forecast_eur"] = round(pf_total.cost_eur, 2)
            row["share_perfect_forecast_pct"] = share(pf_total.cost_eur)
            row["forecast_error_cost_eur"] = round(r.cost_eur - pf_total.cost_eur, 2)
        if p == "perfect" and perfect_exec is not None:
            row["executed_cost_eur"] = round(perfect_exec.cost_eur, 2)
        out[p] = row
    doc: dict[str, Any] = {
        "scope": "full year"
        if len(ranges) == 1
        else f"{len(ranges)} representative weeks ({sum(b - a for a, b in ranges) // 96} days, each from SOC 50 %, energy left unvalued)",
        "slots": sum(b - a for a, b in ranges),
        "battery": {
            "capacity_wh": opts.battery_wh,
            "power_w": opts.battery_w,
            "efficiency_pct": opts.efficiency_pct,
            "soc_start_pct": opts.soc_start_pct,
        },
        "variant": opts.variant,
        "ems": {
            "replan_min": opts.replan_slots * 15,
            "end_value": cfg.end_value.value,
            "cycle_cost_eur_per_kwh": opts.cycle_cost_eur_per_kwh,
            "horizon_h": cfg.horizon_h,
        },
        "planners": out,
        **extra,
    }
    if "ems" in planners:
        doc["forecast"] = {
            "load_next_slot": _errors(flog.next_load),
            "pv_next_slot": _errors(flog.next_pv),
            "load_day_ahead": _errors(flog.day_load),
            "pv_day_ahead": _errors(flog.day_pv),
        }
        doc["solve"] = {
            "replans": len(solves_wall),
            "failed": failed,
            "horizon_slots_mean": round(statistics.fmean(solves_slots), 1) if solves_slots else 0.0,
            "wall_ms_p50": _ms(solves_wall, 50),
            "wall_ms_p99": _ms(solves_wall, 99),
            "wall_ms_max": round(max(solves_wall) * 1000.0, 2) if solves_wall else 0.0,
        }
        if opts.solve_samples > 0:
            doc["solve_192"] = _solve_192(year, imp, exp, cfg, opts.solve_samples)
    return doc
