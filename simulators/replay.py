"""Replay: the real control core against the plant model on a day profile, faster than real time.

    python -m simulators.replay --profile CSV|NAME [--config FILE] [--controller LIST|all] [--law LAW] [--step [W]]
        [--device NAME] [--inverter-tau S] [--dead-time S] [--ramp-w-per-s W] [--quantisation W]
        [--meter-period S] [--meter-phase S] [--meter-delay S] [--ess-delay S] [--meter-noise W]
        [--load-phase S] [--soc-start PCT] [--start S] [--hours H] [--json]

`--controller` takes a comma list of ideal, bound_1hz, naive, pid, ems, ems:<law> (or `all`).

No threads, no sleeps: simulated time advances one control period per cycle, the plant in
`--substeps` slices of it so the KPIs see the inverter's transient inside a cycle. Every run of a
controller other than the ideal also runs the ideal on the same profile, for the avoidable
import/export. `--step W` replaces the profile by load steps of +/-W (default: half the inverter
rating) and reports overshoot, cycles to settle within +/-1 % of the step and command reversals.
Definitions and the benchmark built on this: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

from config import ConfigError, load_config, parse_config
from config.control import ControlConfig, LawName
from simulators.baselines import CONTROLLERS, Controller, Observation, make_controller
from simulators.dynamics import DYNAMICS, dynamics
from simulators.kpi import KpiAccumulator, Kpis
from simulators.plant import Plant, PlantParams
from simulators.profile import Profile
from simulators.synth import load_named

__all__ = ["ReplayOptions", "RunResult", "compare", "live_config", "main", "run", "step_profile", "step_response"]

START_MONOTONIC_S = 1000.0
IDEAL_FLOOR_W = 0.5  # mean |grid error| of an ideal run below this counts as zero


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """Realism knobs. The defaults are the honest setting the benchmark uses."""

    inverter_tau_s: float = 1.0  # first-order inverter response
    dead_time_s: float = 0.0  # from a written set-point to the inverter's first response
    ramp_w_per_s: float = 0.0  # the inverter's ramp limit (0 = none)
    meter_period_s: float = 1.0  # meter refresh
    meter_phase_s: float = 0.5  # control cycles run this long after a meter refresh
    meter_delay_s: float = 0.25  # age of the meter poll the EMS uses (Modbus poll phase)
    ess_delay_s: float = 0.25  # age of the inverter power poll the EMS uses
    meter_noise_w: float = 10.0  # std of the meter's Gaussian noise
    quantisation_w: float = 10.0  # inverter set-point resolution
    load_phase_s: float = 0.5  # load/PV change this far into a cycle (steps inside a second)
    soc_start_pct: float = 50.0
    capacity_wh: float = 10_000.0
    substeps: int = 4  # plant slices per control cycle
    start_s: float = 0.0  # time of day the replay starts at
    duration_s: float | None = None  # None: the whole profile
    seed: int = 1


@dataclass(frozen=True, slots=True)
class RunResult:
    controller: str
    kpis: Kpis
    wall_s: float
    cycles_per_s: float
    x_real_time: float


def live_config(cfg: ControlConfig | None = None) -> ControlConfig:
    """The control config with both opt-ins given: a replay drives its simulated inverter."""
    base = cfg if cfg is not None else parse_config({}, {}).control
    return base.model_copy(update={"enabled": True, "dry_run": False})


def _plant_params(cfg: ControlConfig, opts: ReplayOptions, *, oracle: bool) -> PlantParams:
    return PlantParams(
        capacity_wh=opts.capacity_wh,
        soc_start_pct=opts.soc_start_pct,
        inverter_max_charge_w=cfg.max_charge_w,
        inverter_max_discharge_w=cfg.max_discharge_w,
        inverter_tau_s=0.0 if oracle else opts.inverter_tau_s,
        dead_time_s=0.0 if oracle else opts.dead_time_s,
        ramp_w_per_s=0.0 if oracle else opts.ramp_w_per_s,
        quantisation_w=0.0 if oracle else opts.quantisation_w,
        meter_period_s=opts.meter_period_s,
        meter_noise_w=0.0 if oracle else opts.meter_noise_w,
        seed=opts.seed,
    )


def run(
    profile: Profile, controller: str, cfg: ControlConfig, opts: ReplayOptions, *, trace: list[tuple[float, float, float]] | None = None
) -> RunResult:
    """One controller over the profile. `trace` (if given) gets (t_s, cmd_w, grid_true_w) per cycle."""
    ctl: Controller = make_controller(controller, cfg, started_at_s=START_MONOTONIC_S)
    plant = Plant(_plant_params(cfg, opts, oracle=ctl.truth), profile, start_t_s=opts.start_s + opts.load_phase_s)
    acc = KpiAccumulator(capacity_wh=opts.capacity_wh)
    period_s = cfg.period_s
    h = period_s / opts.substeps
    duration_s = profile.duration_s if opts.duration_s is None else opts.duration_s
    n_cycles = int(duration_s / period_s)
    target_w = cfg.target_grid_w
    if opts.meter_phase_s > 0:
        plant.step(opts.meter_phase_s)  # cycles fall this long after a meter refresh (not counted)
    # what a poll at each sub-step instant would have read: (t, meter, inverter power)
    polls: deque[tuple[float, float, float]] = deque(maxlen=int(max(opts.meter_delay_s, opts.ess_delay_s) / h) + 2)
    polls.append((plant.t_s, plant.grid_power_w, plant.ess_power_w))
    add_sample, add_cycle, step = acc.add_sample, acc.add_cycle, plant.step
    t0 = time.perf_counter()
    for _ in range(n_cycles):
        t = plant.t_s
        grid_at, grid_w, _e = _polled(polls, t - opts.meter_delay_s)
        ess_at, _g, ess_w = _polled(polls, t - opts.ess_delay_s)
        obs = Observation(
            START_MONOTONIC_S + t,
            grid_w,
            START_MONOTONIC_S + grid_at,
            ess_w,
            START_MONOTONIC_S + ess_at,
            plant.soc_pct,
            plant.battery_voltage_v,
            plant.charge_current_limit_a,
            plant.discharge_current_limit_a,
        )
        if ctl.truth and not ctl.oracle:  # perfect tracking: the true net power when the meter it reads measured
            refresh_t = math.floor((t - opts.meter_delay_s) / opts.meter_period_s + 1e-9) * opts.meter_period_s
            load_w, pv_w = profile.at(opts.start_s + opts.load_phase_s + max(0.0, refresh_t))
            now = START_MONOTONIC_S + t
            obs = replace(obs, grid_w=load_w - pv_w - plant.ess_power_w, grid_at_s=now, ess_w=plant.ess_power_w, ess_at_s=now)
        action = ctl.decide(obs)
        plant.set_setpoint(action.cmd_w)
        plant.feed_watchdog()
        for _sub in range(opts.substeps):
            if ctl.oracle:
                load_w, pv_w = profile.at(plant.profile_t_s + h)
                oracle_obs = replace(obs, grid_w=load_w - pv_w - plant.ess_power_w, ess_w=plant.ess_power_w, soc_pct=plant.soc_pct)
                action = ctl.decide(oracle_obs)
                plant.set_setpoint(action.cmd_w)
            step(h)
            add_sample(
                dt_s=h,
                grid_w=plant.grid_true_w,
                target_w=target_w,
                load_w=plant.load_w,
                pv_w=plant.pv_w,
                ess_w=plant.ess_power_w,
                soc_pct=plant.soc_pct,
            )
            polls.append((plant.t_s, plant.grid_power_w, plant.ess_power_w))
        add_cycle(cmd_w=action.cmd_w, state=action.state, limits=action.reasons)
        if trace is not None:
            trace.append((plant.t_s, action.cmd_w, plant.grid_true_w))
    wall_s = max(time.perf_counter() - t0, 1e-9)
    sim_s = n_cycles * period_s
    return RunResult(controller, acc.result(), wall_s, n_cycles / wall_s, sim_s / wall_s)


def _polled(polls: deque[tuple[float, float, float]], t_s: float) -> tuple[float, float, float]:
    """The latest poll taken at or before `t_s` (the oldest one kept if none)."""
    for entry in reversed(polls):
        if entry[0] <= t_s + 1e-9:
            return entry
    return polls[0]


def compare(profile: Profile, cfg: ControlConfig, opts: ReplayOptions, controllers: Sequence[str] = CONTROLLERS) -> dict[str, object]:
    """Run each controller (and the ideal as the reference); KPIs plus ems/baseline ratios per ems variant."""
    names = ["ideal", *[c for c in controllers if c != "ideal"]]
    results = {name: run(profile, name, cfg, opts) for name in names}
    kpis = {n: r.kpis for n, r in results.items()}
    out: dict[str, object] = {"profile": profile.name, "controllers": {n: _result_dict(r, kpis["ideal"]) for n, r in results.items()}}
    ratios = {n: _ratios(n, kpis) for n in names if n.startswith("ems") or n == "bound_1hz"}
    if ratios:
        out["ratios"] = ratios
    return out


def _result_dict(r: RunResult, ideal: Kpis) -> dict[str, object]:
    d = r.kpis.with_reference(ideal).as_dict()
    d.update(wall_s=round(r.wall_s, 3), cycles_per_s=round(r.cycles_per_s), x_real_time=round(r.x_real_time))
    return d


def _ratios(ems_name: str, kpis: dict[str, Kpis]) -> dict[str, float | None]:
    """Mean |grid error| of `ems_name` over each baseline, raw and in excess of the ideal's; energies over the ideal's."""
    ems, ideal = kpis[ems_name], kpis["ideal"]
    out: dict[str, float | None] = {}
    for name, k in kpis.items():
        if name == ems_name or name.startswith("ems"):
            continue
        if name == "ideal":
            out["excess_grid_error_w"] = round(ems.grid_error_mean_w - k.grid_error_mean_w, 2)
        # below IDEAL_FLOOR_W the ideal is exact: a ratio to it would only measure float rounding
        floor_w = IDEAL_FLOOR_W if name == "ideal" else 0.0
        out[f"grid_error_over_{name}"] = _div(ems.grid_error_mean_w, k.grid_error_mean_w) if k.grid_error_mean_w > floor_w else None
        if name != "ideal":
            out[f"excess_grid_error_over_{name}"] = _div(
                ems.grid_error_mean_w - ideal.grid_error_mean_w, k.grid_error_mean_w - ideal.grid_error_mean_w
            )
    ideal_wh = ideal.import_wh + ideal.export_wh
    out["import_export_over_ideal"] = _div(ems.import_wh + ems.export_wh, ideal_wh) if ideal_wh > IDEAL_FLOOR_W else None
    out["import_export_excess_wh"] = round(ems.import_wh + ems.export_wh - ideal_wh, 1)
    return out


def _div(a: float, b: float) -> float | None:
    return round(a / b, 4) if b and math.isfinite(a) and math.isfinite(b) else None


# ---- step response ---------------------------------------------------------------------------------
STEP_HOLD_S = 60


def step_profile(step_w: float, *, base_load_w: float = 500.0, warmup: Profile | None = None) -> tuple[Profile, list[tuple[int, float]]]:
    """Net power 500 W, then +step, back, -step (PV), back; each held STEP_HOLD_S. Returns (profile, steps).

    `warmup` (a piece of a day) is played first, so a law that learns its plant has seen a normal
    day before the steps; the steps' times count from the start of the whole profile."""
    levels = [(base_load_w, 0.0), (base_load_w + step_w, 0.0), (base_load_w, 0.0), (base_load_w, step_w), (base_load_w, 0.0)]
    wl, wp = warmup.series() if warmup is not None else ([], [])
    load = [*wl, *(lv for lv, _ in levels for _ in range(STEP_HOLD_S))]
    pv = [*wp, *(p for _, p in levels for _ in range(STEP_HOLD_S))]
    steps = [
        (len(wl) + STEP_HOLD_S * (i + 1), (levels[i + 1][0] - levels[i + 1][1]) - (levels[i][0] - levels[i][1]))
        for i in range(len(levels) - 1)
    ]
    return Profile(load, pv, name=f"step-{step_w:g}W"), steps


def step_response(
    cfg: ControlConfig,
    opts: ReplayOptions,
    *,
    step_w: float | None = None,
    controllers: Sequence[str] = CONTROLLERS,
    warmup: Profile | None = None,
) -> dict[str, object]:
    """Overshoot (% of the step), cycles to settle within +/-1 % and command reversals, per controller.

    A reversal is a change of direction of the command by at least the +/-1 % band; reversals
    once the grid has settled mean a sustained oscillation.

    Noise-free (meter noise and quantisation 0) so the +/-1 % band measures the law, not the noise;
    the steps land at the start of a cycle period (load phase 0) so cycles are counted from the
    first cycle that can see the step. `warmup`: see `step_profile` (None: the steps from a cold start).
    """
    size_w = step_w if step_w is not None else 0.5 * min(cfg.max_charge_w, cfg.max_discharge_w)
    profile, steps = step_profile(size_w, warmup=warmup)
    clean = replace(opts, meter_noise_w=0.0, quantisation_w=0.0, load_phase_s=0.0, start_s=0.0, duration_s=float(profile.duration_s))
    out: dict[str, object] = {
        "step_w": size_w,
        "inverter_tau_s": opts.inverter_tau_s,
        "dead_time_s": opts.dead_time_s,
        "ramp_w_per_s": opts.ramp_w_per_s,
        "warmup_s": 0 if warmup is None else warmup.duration_s,
        "controllers": {},
    }
    for name in controllers:
        trace: list[tuple[float, float, float]] = []
        run(profile, name, cfg, clean, trace=trace)
        out["controllers"][name] = _step_metrics(trace, steps, cfg)  # type: ignore[index]
    return out


def _step_metrics(trace: list[tuple[float, float, float]], steps: list[tuple[int, float]], cfg: ControlConfig) -> dict[str, object]:
    per_step: list[dict[str, object]] = []
    overshoots: list[float] = []
    settles: list[int | None] = []
    reversals: list[int] = []
    after: list[int] = []
    for at_s, size_w in steps:
        window = [(t, c, g) for t, c, g in trace if at_s < t < at_s + STEP_HOLD_S]
        sgn = 1.0 if size_w > 0 else -1.0
        errors = [(g - cfg.target_grid_w) * sgn for _, _, g in window]
        overshoot_pct = round(max(0.0, -min(errors)) / abs(size_w) * 100.0, 2)
        band_w = 0.01 * abs(size_w)
        settle = next((i for i in range(len(errors)) if all(abs(e) <= band_w for e in errors[i:])), None)
        cmds = [c for _, c, _ in window]
        settle_cycles = None if settle is None else settle + 1
        # sustained oscillation: the command still changes direction once the grid is settled
        after_settle = None if settle is None else _reversals(cmds[settle:], band_w)
        overshoots.append(overshoot_pct)
        settles.append(settle_cycles)
        reversals.append(_reversals(cmds, band_w))
        if after_settle is not None:
            after.append(after_settle)
        per_step.append(
            {
                "at_s": at_s,
                "step_w": size_w,
                "overshoot_pct": overshoot_pct,
                "settle_cycles": settle_cycles,
                "command_reversals": reversals[-1],
                "reversals_after_settle": after_settle,
            }
        )
    done = [s for s in settles if s is not None]
    return {
        "overshoot_pct_max": max(overshoots),
        "settle_cycles_max": max(done) if len(done) == len(settles) else None,
        "command_reversals_max": max(reversals),
        "reversals_after_settle_max": max(after) if len(done) == len(settles) else None,
        "steps": per_step,
    }


def _reversals(cmds: Sequence[float], min_move_w: float) -> int:
    acc = KpiAccumulator(capacity_wh=1.0, reversal_min_w=min_move_w)
    for c in cmds:
        acc.add_cycle(cmd_w=c)
    return acc.result().command_reversals


# ---- command line ------------------------------------------------------------------------------------
def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    d = ReplayOptions()
    p = argparse.ArgumentParser(prog="python -m simulators.replay", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--profile",
        default="summer-sunny",
        help="profile CSV path, shipped name or heldout-<seed> (generated, simulators/synth.py; default summer-sunny)",
    )
    p.add_argument("--config", help="EMS YAML config (its control: section is used, made live)")
    p.add_argument("--controller", default="all", help="comma list of ideal, bound_1hz, naive, pid, ems, ems:<law>; or all (default all)")
    p.add_argument("--law", choices=[lw.value for lw in LawName], help="override control.law for the ems controller")
    p.add_argument(
        "--step",
        type=float,
        nargs="?",
        const=-1.0,
        default=None,
        metavar="W",
        help="step response instead of the profile (default W: half the rating)",
    )
    p.add_argument("--device", metavar="NAME", help=f"inverter dynamics preset ({', '.join(sorted(DYNAMICS))}); explicit options override")
    p.add_argument("--inverter-tau", type=float, metavar="S", help=f"first-order inverter response (default {d.inverter_tau_s:g})")
    p.add_argument("--dead-time", type=float, metavar="S", help="from a written set-point to the first response (default 0)")
    p.add_argument("--ramp-w-per-s", type=float, metavar="W", help="inverter ramp limit, W/s (default 0 = none)")
    p.add_argument("--meter-period", type=float, default=d.meter_period_s, metavar="S")
    p.add_argument("--meter-phase", type=float, default=d.meter_phase_s, metavar="S", help="cycles run this long after a meter refresh")
    p.add_argument("--meter-delay", type=float, default=d.meter_delay_s, metavar="S", help="age of the meter poll the EMS uses")
    p.add_argument("--ess-delay", type=float, default=d.ess_delay_s, metavar="S", help="age of the inverter power poll the EMS uses")
    p.add_argument("--meter-noise", type=float, default=d.meter_noise_w, metavar="W")
    p.add_argument("--quantisation", type=float, metavar="W", help=f"set-point resolution (default {d.quantisation_w:g})")
    p.add_argument("--load-phase", type=float, default=d.load_phase_s, metavar="S", help="load changes this far into a cycle")
    p.add_argument("--soc-start", type=float, default=d.soc_start_pct, metavar="PCT")
    p.add_argument("--capacity", type=float, default=d.capacity_wh, metavar="WH")
    p.add_argument("--substeps", type=int, default=d.substeps)
    p.add_argument("--start", type=float, default=d.start_s, metavar="S", help="time of day to start at, s")
    p.add_argument("--hours", type=float, help="replay this long (default: the whole profile)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    a = _parse(argv)
    try:
        cfg = live_config(load_config(a.config).control if a.config else None)
        if a.law:
            cfg = cfg.model_copy(update={"law": LawName(a.law)})
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return 2
    try:
        dyn = dynamics(a.device) if a.device else None
        controllers = _controllers(a.controller)
    except ValueError as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    d = ReplayOptions()

    def knob(given: float | None, preset: float | None, default: float) -> float:
        return given if given is not None else preset if preset is not None else default

    opts = ReplayOptions(
        inverter_tau_s=knob(a.inverter_tau, dyn and dyn.inverter_tau_s, d.inverter_tau_s),
        dead_time_s=knob(a.dead_time, dyn and dyn.dead_time_s, d.dead_time_s),
        ramp_w_per_s=knob(a.ramp_w_per_s, dyn and dyn.ramp_w_per_s, d.ramp_w_per_s),
        quantisation_w=knob(a.quantisation, dyn and dyn.quantisation_w, d.quantisation_w),
        meter_period_s=a.meter_period,
        meter_phase_s=a.meter_phase,
        meter_delay_s=a.meter_delay,
        ess_delay_s=a.ess_delay,
        meter_noise_w=a.meter_noise,
        load_phase_s=a.load_phase,
        soc_start_pct=a.soc_start,
        capacity_wh=a.capacity,
        substeps=max(1, a.substeps),
        start_s=a.start,
        duration_s=None if a.hours is None else a.hours * 3600.0,
    )
    if a.step is not None:
        res = step_response(cfg, opts, step_w=None if a.step < 0 else a.step, controllers=controllers)
        print(json.dumps(res, indent=2) if a.json else _step_table(res))
        return 0
    try:
        profile = load_named(a.profile)
    except (OSError, ValueError) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    res = compare(profile, cfg, opts, controllers)
    res["options"] = asdict(opts)
    print(json.dumps(res, indent=2) if a.json else _kpi_table(res))
    return 0


def _controllers(spec: str) -> tuple[str, ...]:
    """`all` or a comma list; each name is checked (ValueError names the bad one)."""
    if spec.strip() == "all":
        return ("ideal", "bound_1hz", "naive", "pid", "ems")
    names = tuple(n.strip() for n in spec.split(",") if n.strip())
    if not names:
        raise ValueError("--controller: give at least one controller")
    probe = live_config()
    for n in names:
        make_controller(n, probe, started_at_s=START_MONOTONIC_S)
    return names


_ROWS = (
    ("grid_error_mean_w", "mean |grid error|, W", 1),
    ("grid_error_p95_w", "p95 |grid error|, W", 1),
    ("import_wh", "import, Wh", 0),
    ("export_wh", "export, Wh", 0),
    ("avoidable_import_wh", "avoidable import, Wh", 0),
    ("avoidable_export_wh", "avoidable export, Wh", 0),
    ("self_consumption", "self-consumption", 3),
    ("self_sufficiency", "self-sufficiency", 3),
    ("throughput_wh", "battery throughput, Wh", 0),
    ("equivalent_cycles", "equivalent cycles", 2),
    ("soc_min_pct", "SOC min, %", 1),
    ("soc_max_pct", "SOC max, %", 1),
    ("command_reversals", "command reversals", 0),
    ("cycles_per_s", "replay cycles/s", 0),
    ("x_real_time", "x real time", 0),
)


def _fmt(v: object, nd: int) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _kpi_table(res: dict[str, object]) -> str:
    ctls: dict[str, dict[str, object]] = res["controllers"]  # type: ignore[assignment]
    names = list(ctls)
    width = max(12, *(len(n) + 2 for n in names))
    lines = [f"profile {res['profile']}", f"{'':28}" + "".join(f"{n:>{width}}" for n in names)]
    for key, label, nd in _ROWS:
        lines.append(f"{label:28}" + "".join(f"{_fmt(ctls[n].get(key), nd):>{width}}" for n in names))
    for n in names:
        share = ", ".join(f"{s} {v:.1%}" for s, v in ctls[n]["state_share"].items())  # type: ignore[attr-defined]
        limits = ", ".join(f"{k} {v}" for k, v in ctls[n]["limit_cycles"].items()) or "none"  # type: ignore[attr-defined]
        lines.append(f"{n}: states {share}; limit cycles {limits}")
    for n, ratios in (res.get("ratios") or {}).items():  # type: ignore[attr-defined]
        lines.append(f"{n}: " + ", ".join(f"{k} {v}" for k, v in ratios.items()))
    return "\n".join(lines)


def _step_table(res: dict[str, object]) -> str:
    lines = [
        f"step response, step {res['step_w']:g} W, inverter tau {res['inverter_tau_s']:g} s, dead time {res['dead_time_s']:g} s,"
        f" ramp {res['ramp_w_per_s']:g} W/s",
        f"{'controller':12}{'overshoot %':>14}{'settle cycles':>15}{'reversals':>11}",
    ]
    for n, m in res["controllers"].items():  # type: ignore[attr-defined]
        lines.append(f"{n:12}{m['overshoot_pct_max']:>14.1f}{_fmt(m['settle_cycles_max'], 0):>15}{m['command_reversals_max']:>11}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
