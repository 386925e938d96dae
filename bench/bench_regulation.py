"""Benchmarks 1-2: regulation KPIs per day profile and controller, step response, replay speed, dynamics matrix.

Runs `simulators.replay` (the real `ems.core.step` against the plant model) for the three shipped
day profiles and the controllers ideal, naive, pid, ems:integrating (DESIGN §4 law) and
ems:predictive, side by side with the same realism knobs, plus `bound_1hz` (perfect tracking with the
EMS's information: exact net power as of the meter reading, instant inverter, once per cycle). `BENCH_QUICK=1` replays 2 h instead
of 24 h per profile.

The dynamics matrix (`simulators/matrix.py`): every law against inverter time constants x dead
times, a ramp, 50 W steps, a 2 s meter and a late meter, on the representative window of each
shared profile (`BENCH_MATRIX_FULL=1`: whole days), plus the default law alone on the generated
held-out day (`simulators/synth.py`), which nothing is tuned on. The days and the matrix run the
default law (adaptive) beside the baselines; `BENCH_ALL_LAWS=1` adds integrating and predictive to
both (the comparison behind the default; it roughly doubles this benchmark's time).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace

from bench.common import emit
from config.control import LawName
from simulators.matrix import HELD_OUT, PROFILES, WINDOW, run_matrix
from simulators.profile import available_profiles, load_profile
from simulators.replay import ReplayOptions, compare, live_config, step_response

LAWS = ("ems:adaptive", "ems:integrating", "ems:predictive")
BASELINES = ("ideal", "bound_1hz", "naive", "pid")


def _laws() -> tuple[str, ...]:
    return LAWS if os.environ.get("BENCH_ALL_LAWS") == "1" else LAWS[:1]


def _day(name: str) -> dict[str, object]:
    quick = os.environ.get("BENCH_QUICK") == "1"
    opts = ReplayOptions(start_s=36_000.0 if quick else 0.0, duration_s=7_200.0 if quick else None)
    return compare(load_profile(name), live_config(), opts, (*BASELINES, *_laws()))


def main() -> None:
    quick = os.environ.get("BENCH_QUICK") == "1"
    cfg = live_config()
    opts = ReplayOptions(start_s=36_000.0 if quick else 0.0, duration_s=7_200.0 if quick else None)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:  # one day per process
        profiles = dict(zip(available_profiles(), pool.map(_day, available_profiles()), strict=True))
    steps = {
        law.value: step_response(cfg.model_copy(update={"law": law}), opts, controllers=("ideal", "naive", "pid", "ems")) for law in LawName
    }
    delayed = replace(opts, meter_delay_s=0.5)
    steps_meter_delay = {
        law.value: step_response(cfg.model_copy(update={"law": law}), delayed, controllers=("naive", "pid", "ems")) for law in LawName
    }
    speed = {}
    for ctl in _laws():
        per_profile = [p["controllers"][ctl] for p in profiles.values()]  # type: ignore[index]
        speed[ctl] = {
            "cycles_per_s_min": min(int(r["cycles_per_s"]) for r in per_profile),
            "x_real_time_min": min(int(r["x_real_time"]) for r in per_profile),
            "day_wall_s_max": max(float(r["wall_s"]) for r in per_profile),
        }
    window = None if os.environ.get("BENCH_MATRIX_FULL") == "1" else WINDOW
    matrix = run_matrix(controllers=_laws(), profiles=PROFILES, window=window)
    held_out = run_matrix(controllers=LAWS[:1], profiles=HELD_OUT, window=window)
    emit(
        {
            "options": asdict(opts),
            "matrix": matrix,
            "matrix_held_out": held_out,
            "quick": quick,
            "profiles": profiles,
            "step_response": steps,
            "step_response_meter_delay_0_5_s": steps_meter_delay,
            "replay_speed": speed,
            "wall_s": round(time.perf_counter() - t0, 1),
        }
    )


if __name__ == "__main__":
    main()
