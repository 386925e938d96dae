"""The dynamics matrix: every control law against many inverter and meter dynamics, side by side.

    python -m simulators.matrix [--full] [--profiles P,...] [--controllers LIST] [--cells N,...] [--jobs N] [--json]

A cell is one plant: inverter time constant x dead time, a ramp-limited inverter, 50 W set-point
steps, a 2 s meter, a late meter. Each cell runs on every profile (by default a representative
window of each day, `WINDOW`; `--full`: the whole day) with the controllers ideal (the reference
for "excess"), bound_1hz, naive and the ems laws, plus the step response (+/-half the rating).
Per cell and profile: the excess mean |grid error| over the ideal (W) of each controller, the ems
laws' ratios to bound_1hz and naive, command reversals per day; per cell the step response.
`goals()` checks the issue's goals per cell; `table()` prints the matrix. Definitions:
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Any

from simulators.profile import Profile
from simulators.replay import ReplayOptions, compare, live_config, step_response
from simulators.synth import load_named

__all__ = ["CELLS", "PROFILES", "WINDOW", "Cell", "goals", "main", "run_matrix", "table"]

PROFILES = ("spring-mixed", "summer-sunny", "winter")
HELD_OUT = ("heldout-7",)  # generated (simulators/synth.py); never tuned on
WINDOW = (8 * 3600.0, 3 * 3600.0)  # 08:00-11:00: morning load, PV rising through cloud edges
WARMUP_S = 1800  # the step test follows 30 min of the first profile from the window start
BASELINES = ("bound_1hz", "naive")
DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class Cell:
    name: str
    inverter_tau_s: float = 1.0
    dead_time_s: float = 0.0
    ramp_w_per_s: float = 0.0
    quantisation_w: float = 10.0
    meter_period_s: float = 1.0
    meter_phase_s: float = 0.5
    meter_delay_s: float = 0.25

    def options(self, base: ReplayOptions) -> ReplayOptions:
        return replace(
            base,
            inverter_tau_s=self.inverter_tau_s,
            dead_time_s=self.dead_time_s,
            ramp_w_per_s=self.ramp_w_per_s,
            quantisation_w=self.quantisation_w,
            meter_period_s=self.meter_period_s,
            meter_phase_s=self.meter_phase_s,
            meter_delay_s=self.meter_delay_s,
        )


CELLS: tuple[Cell, ...] = (
    *(Cell(f"tau {t:g} s, dead {d:g} s", inverter_tau_s=t, dead_time_s=d) for d in (0.0, 1.0) for t in (0.1, 0.5, 1.0, 3.0)),
    Cell("ramp 1 kW/s, tau 0.1 s", inverter_tau_s=0.1, ramp_w_per_s=1000.0),
    Cell("50 W steps, tau 1 s", quantisation_w=50.0),
    Cell("2 s meter, tau 1 s", meter_period_s=2.0),
    # the meter value is 1.0 s old when a cycle uses it (base: 0.5 s), the poll 0.5 s old
    Cell("late meter 0.5 s, tau 1 s", meter_delay_s=0.5, meter_phase_s=0.0),
)


def _profile_job(cell: Cell, profile: str, controllers: tuple[str, ...], window: tuple[float, float] | None) -> dict[str, Any]:
    cfg = live_config()
    base = ReplayOptions() if window is None else ReplayOptions(start_s=window[0], duration_s=window[1])
    t0 = time.perf_counter()
    res = compare(load_named(profile), cfg, cell.options(base), controllers)
    ctls: Mapping[str, Any] = res["controllers"]  # type: ignore[assignment]
    ideal_w = ctls["ideal"]["grid_error_mean_w"]
    out: dict[str, Any] = {"excess_w": {}, "reversals_per_day": {}, "wall_s": round(time.perf_counter() - t0, 2)}
    for name, k in ctls.items():
        if name == "ideal":
            continue
        out["excess_w"][name] = round(k["grid_error_mean_w"] - ideal_w, 2)
        out["reversals_per_day"][name] = round(k["command_reversals"] * DAY_S / max(k["duration_s"], 1.0))
        if name.startswith("ems"):
            out.setdefault("x_real_time", {})[name] = k["x_real_time"]
    out["ratios"] = {name: _ratios(out, name) for name in ctls if name.startswith("ems")}
    return out


def _ratios(p: Mapping[str, Any], ems: str) -> dict[str, float | None]:
    ex, rev = p["excess_w"], p["reversals_per_day"]
    return {
        "excess_over_bound_1hz": _div(ex[ems], ex.get("bound_1hz")),
        "excess_over_naive": _div(ex[ems], ex.get("naive")),
        "reversals_over_naive": _div(rev[ems], rev.get("naive")),
    }


def _div(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not math.isfinite(a) or not math.isfinite(b) or b <= 0.0:
        return None
    return round(a / b, 3)


def warmup_profile(profile: str) -> Profile:
    """WARMUP_S of `profile` from the window start: what a law has seen before the step test."""
    load, pv = load_named(profile).series()
    a = int(WINDOW[0])
    return Profile(load[a : a + WARMUP_S], pv[a : a + WARMUP_S], name=f"{profile}-warmup")


def _step_job(cell: Cell, controllers: tuple[str, ...], warm: str) -> dict[str, Any]:
    keys = ("overshoot_pct_max", "settle_cycles_max", "command_reversals_max", "reversals_after_settle_max")
    names = [c for c in controllers if c != "ideal"]
    cold = step_response(live_config(), cell.options(ReplayOptions()), controllers=names)
    warmed = step_response(live_config(), cell.options(ReplayOptions()), controllers=names, warmup=warmup_profile(warm))
    out = {}
    for name, m in warmed["controllers"].items():  # type: ignore[attr-defined]
        out[name] = {k: m[k] for k in keys}
        c = cold["controllers"][name]  # type: ignore[index]
        out[name]["cold"] = {k: c[k] for k in keys}
    return out


def _job(args: tuple[str, Cell, str | None, tuple[str, ...], tuple[float, float] | None]) -> tuple[str, str | None, dict[str, Any]]:
    kind, cell, profile, controllers, window = args
    if kind == "step":
        assert profile is not None
        return cell.name, None, _step_job(cell, controllers, profile)
    assert profile is not None
    return cell.name, profile, _profile_job(cell, profile, controllers, window)


def run_matrix(
    *,
    controllers: Sequence[str],
    profiles: Sequence[str] = PROFILES,
    cells: Sequence[Cell] = CELLS,
    window: tuple[float, float] | None = WINDOW,
    jobs: int | None = None,
) -> dict[str, Any]:
    """Every cell x profile (+ the step response per cell), in `jobs` processes (default: the CPU count)."""
    ctls = ("ideal", *BASELINES, *[c for c in controllers if c not in ("ideal", *BASELINES)])
    work = [("step", c, profiles[0], ctls, window) for c in cells] + [("profile", c, p, ctls, window) for c in cells for p in profiles]
    t0 = time.perf_counter()
    n = max(1, jobs if jobs is not None else (os.cpu_count() or 1))
    if n == 1:
        done = [_job(w) for w in work]
    else:
        with ProcessPoolExecutor(max_workers=n) as pool:
            done = list(pool.map(_job, work))
    out: dict[str, Any] = {}
    for c in cells:
        out[c.name] = {"plant": {k: v for k, v in asdict(c).items() if k != "name"}, "profiles": {}, "step": {}}
    for cell_name, profile, res in done:
        if profile is None:
            out[cell_name]["step"] = res
        else:
            out[cell_name]["profiles"][profile] = res
    return {
        "controllers": list(ctls),
        "profiles": list(profiles),
        "window_s": None if window is None else list(window),
        "cells": out,
        "wall_s": round(time.perf_counter() - t0, 1),
        "jobs": n,
    }


def _dead_cycles(plant: Mapping[str, Any]) -> int:
    return math.ceil(float(plant.get("dead_time_s", 0.0)) - 1e-9)


def goals(matrix: Mapping[str, Any], ems: str) -> list[dict[str, Any]]:
    """The issue's goals per cell for the controller `ems`: met True/False/None (no data)."""
    out = []
    for cell, c in matrix["cells"].items():
        misses: list[str] = []
        checked = 0
        for profile, p in c["profiles"].items():
            r = p["ratios"].get(ems) or {}
            for key, limit in (("excess_over_bound_1hz", 1.05), ("excess_over_naive", 0.95), ("reversals_over_naive", 0.5)):
                v = r.get(key)
                checked += v is not None
                if v is not None and v > limit:
                    misses.append(f"{profile} {key} {v:g} > {limit:g}")
        s = c["step"].get(ems) or {}
        settle = s.get("settle_cycles_max")
        dead = _dead_cycles(c["plant"])
        if s:
            checked += 1
            if s["overshoot_pct_max"] > 5.0:
                misses.append(f"step overshoot {s['overshoot_pct_max']:g} % > 5 %")
            if settle is None or settle - dead > 3:
                misses.append(f"step settle {settle} cycles (dead time {dead}) > 3 after the dead time")
            if s.get("reversals_after_settle_max") not in (0, None) or settle is None:
                misses.append(f"step reversals after settling {s.get('reversals_after_settle_max')}")
        out.append({"cell": cell, "controller": ems, "met": None if not checked else not misses, "misses": misses})
    return out


def _f(v: Any, nd: int = 2) -> str:
    if v is None:
        return "-"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def table(matrix: Mapping[str, Any], ems: Sequence[str], *, goals_for: Sequence[str] | None = None) -> str:
    """One row per cell x profile: excess W of ems laws / bound_1hz / naive, ratios, reversals/day; step per cell."""
    lines = []
    win = matrix.get("window_s")
    span = "24 h" if win is None else f"{win[0] / 3600:g}:00 + {win[1] / 3600:g} h"
    lines.append(
        f"DYNAMICS MATRIX  [{span}]  excess mean |grid error| over ideal, W; ratio = ems / bound_1hz, ems / naive; reversals per day"
    )
    head = f"{'cell':28}{'profile':14}{'bound':>7}{'naive':>7}"
    for e in ems:
        head += f" | {e:>16}{'/bnd':>6}{'/nv':>6}{'rev/nv':>7}"
    head += f" | {'rev/day naive':>13}"
    lines.append(head)
    for cell, c in matrix["cells"].items():
        for profile, p in c["profiles"].items():
            ex = p["excess_w"]
            row = f"{cell:28}{profile:14}{_f(ex.get('bound_1hz'), 1):>7}{_f(ex.get('naive'), 1):>7}"
            for e in ems:
                r = p["ratios"].get(e) or {}
                row += (
                    f" | {_f(ex.get(e), 1):>10} {p['reversals_per_day'].get(e, '-'):>5}"
                    f"{_f(r.get('excess_over_bound_1hz')):>6}{_f(r.get('excess_over_naive')):>6}{_f(r.get('reversals_over_naive')):>7}"
                )
            row += f" | {p['reversals_per_day'].get('naive', '-'):>13}"
            lines.append(row)
    lines.append(
        "STEP RESPONSE per cell (after a 30 min warm-up; cold start in brackets)  overshoot % / cycles to +/-1 % / reversals (after settling)"
    )
    for cell, c in matrix["cells"].items():
        parts = []
        for name, s in c["step"].items():
            c = s.get("cold") or {}
            parts.append(
                f"{name} {_f(s['overshoot_pct_max'], 1)}/{_f(s['settle_cycles_max'])}/{s['command_reversals_max']}"
                f"({_f(s['reversals_after_settle_max'])})"
                + (f" [{_f(c.get('overshoot_pct_max'), 1)}/{_f(c.get('settle_cycles_max'))}]" if c and name.startswith("ems") else "")
            )
        lines.append(f"  {cell:28}" + ", ".join(parts))
    for e in ems if goals_for is None else goals_for:
        lines.append(f"GOALS {e}")
        for g in goals(matrix, e):
            mark = {True: "met    ", False: "NOT MET", None: "n/a    "}[g["met"]]
            lines.append(f"  {mark} {g['cell']}" + (f": {'; '.join(g['misses'])}" if g["misses"] else ""))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m simulators.matrix", description=__doc__.split("\n\n")[0])
    p.add_argument("--full", action="store_true", help="whole days instead of the representative window")
    p.add_argument(
        "--profiles", default=",".join(PROFILES), help=f"comma list (default {','.join(PROFILES)}; held out: {','.join(HELD_OUT)})"
    )
    p.add_argument("--controllers", default="ems", help="comma list of ems laws to compare (ems, ems:<law>; default ems)")
    p.add_argument("--cells", help="comma list of cell numbers (0-based) to run (default all)")
    p.add_argument("--jobs", type=int, help="processes (default: the CPU count)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    cells = CELLS if not a.cells else tuple(CELLS[int(i)] for i in a.cells.split(","))
    ems = tuple(c.strip() for c in a.controllers.split(",") if c.strip())
    res = run_matrix(controllers=ems, profiles=a.profiles.split(","), cells=cells, window=None if a.full else WINDOW, jobs=a.jobs)
    print(json.dumps(res, indent=2) if a.json else table(res, ems))
    print(f"matrix: {len(cells)} cells x {len(res['profiles'])} profiles in {res['wall_s']} s ({res['jobs']} processes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
