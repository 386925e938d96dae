"""Days of the shipped year at 1 s: the real control core following the planner's plan against the plant model.

    python -m simulators.schedule.replay_plan [--start-day 120] [--days 3] [--forecast perfect|own] [--json]

The planner is the product's (ems.planner through simulators.schedule.planners.EmsPolicy: prices
visible from 12:45 the day before, re-planning at every slot start and at each publication); its
guidance reaches the core exactly as in the controller (`slot_guidance` + `active_bounds` -> Inputs.plan).
The core (`ems.core.step`: state machine, the default control law, limits) runs once a second
against `simulators.plant.Plant` (inverter lag, meter period and noise, quantisation, BMS current
tapers) on the year's 15-minute load and PV held over each quarter.

Reported per slot: the battery energy the plan planned against what the loop delivered. A slot
counts as free when no limit bound in it (the plan's own range aside: that is the rule being
followed) and the SOC rules did not act (`soc_target_reached`, reserve, the SOC band); "within 5 %" means
|delivered - planned| <= 5 % of the planned energy (or <= FLOOR_WH for a near-idle slot).
With perfect forecasts (the plan knows each quarter's mean load and PV) this measures execution;
with the site's own forecasts the battery also absorbs the forecast error, as it should.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from config import parse_config
from config.control import ControlConfig
from ems.core import CoreState, step
from ems.inputs import Inputs
from ems.model import Mode, Quantity, Reading
from ems.tariff import slot_prices
from simulators.plant import Plant, PlantParams
from simulators.profile import Profile
from simulators.schedule.planners import EmsPolicy
from simulators.schedule.run import ISSUE_TARIFF, TZ
from simulators.schedule.year import Year, load_year

__all__ = ["ReplayPlanResult", "SlotRecord", "main", "replay_plan"]

Q = Quantity
START_MONO_S = 1000.0
TOLERANCE = 0.05
FLOOR_WH = 25.0  # a slot planned near idle is "within" when it stays within this many Wh
_SOC_RULES = (":soc_target_reached", ":reserve", ":above_plan", ":below_plan")  # the loop follows the SOC, not the power


@dataclass(frozen=True, slots=True)
class SlotRecord:
    start_unix_s: int
    mode: str
    planned_battery_wh: float  # + discharge
    battery_wh: float  # delivered (inverter AC), + discharge
    planned_grid_wh: float  # + import
    grid_wh: float
    limits: tuple[str, ...]  # limits that bound in the slot (the plan's own range excluded)
    soc_rule: bool  # the SOC target or the reserve acted in the slot

    @property
    def free(self) -> bool:
        return not self.limits and not self.soc_rule

    @property
    def within(self) -> bool:
        err = abs(self.battery_wh - self.planned_battery_wh)
        return err <= max(TOLERANCE * abs(self.planned_battery_wh), FLOOR_WH)


@dataclass
class ReplayPlanResult:
    slots: list[SlotRecord] = field(default_factory=list)
    cost_eur: float = 0.0
    cycles: int = 0
    wall_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        free = [s for s in self.slots if s.free]
        active = [s for s in free if abs(s.planned_battery_wh) > FLOOR_WH]
        grid_charge = [s for s in free if s.mode == "charge_from_grid"]
        bound: dict[str, int] = {}
        for s in self.slots:
            for lim in s.limits:
                bound[lim] = bound.get(lim, 0) + 1

        def share(xs: list[SlotRecord]) -> float | None:
            return round(100.0 * sum(x.within for x in xs) / len(xs), 1) if xs else None

        modes: dict[str, int] = {}
        for s in self.slots:
            modes[s.mode] = modes.get(s.mode, 0) + 1
        planned = sum(s.planned_battery_wh for s in free)
        delivered = sum(s.battery_wh for s in free)
        return {
            "slots": len(self.slots),
            "free_slots": len(free),
            "within_5pct_pct": share(free),
            "within_5pct_all_slots_pct": share(self.slots),
            "within_5pct_battery_active_pct": share(active),
            "within_5pct_charge_from_grid_pct": share(grid_charge),
            "charge_from_grid_slots": len(grid_charge),
            "battery_abs_error_wh_mean": round(sum(abs(s.battery_wh - s.planned_battery_wh) for s in free) / max(1, len(free)), 1),
            "battery_planned_kwh_free": round(planned / 1000.0, 2),
            "battery_delivered_kwh_free": round(delivered / 1000.0, 2),
            "grid_abs_error_wh_mean": round(sum(abs(s.grid_wh - s.planned_grid_wh) for s in free) / max(1, len(free)), 1),
            "slots_by_mode": modes,
            "slots_with_limit": bound,
            "slots_with_soc_rule": sum(s.soc_rule for s in self.slots),
            "cost_eur": round(self.cost_eur, 3),
            "cycles": self.cycles,
            "wall_s": round(self.wall_s, 1),
            "x_real_time": round(self.cycles / self.wall_s) if self.wall_s > 0 else None,
        }


def _profile(year: Year, first: int, last: int) -> Profile:
    load: list[float] = []
    pv: list[float] = []
    for i in range(first, last):
        load += [year.load_w[i]] * year.slot_s
        pv += [year.pv_w[i]] * year.slot_s
    return Profile(load, pv, name=f"year slots {first}-{last}")


def replay_plan(
    year: Year, *, first: int, last: int, control: ControlConfig, perfect_forecast: bool, soc_start_pct: float = 50.0, seed: int = 1
) -> ReplayPlanResult:
    """The 1 s loop over slots [first, last) of `year` with the planner's plan in Inputs.plan."""
    cfg = parse_config({"planner": {"enabled": False, "max_plan_age_s": 48 * 3600}, "control": control.model_dump()}, {}).planner
    sp = slot_prices(ISSUE_TARIFF, year.prices, start_unix_s=year.start_unix_s, n_slots=year.n, slot_s=year.slot_s)
    imp = tuple(float(p) for p in sp.import_eur_per_kwh if p is not None)
    exp = tuple(float(p) for p in sp.export_eur_per_kwh if p is not None)
    policy = EmsPolicy(year, imp, exp, cfg, tz=ZoneInfo(TZ), replan_slots=1, perfect_forecast=perfect_forecast)
    core_cfg = control.core()
    params = PlantParams(
        capacity_wh=cfg.battery.capacity_wh,
        soc_start_pct=soc_start_pct,
        inverter_max_charge_w=control.max_charge_w,
        inverter_max_discharge_w=control.max_discharge_w,
        inverter_tau_s=1.0,
        quantisation_w=10.0,
        meter_period_s=1.0,
        meter_noise_w=10.0,
        seed=seed,
    )
    plant = Plant(params, _profile(year, first, last))
    core = CoreState()
    out = ReplayPlanResult()
    slot_s, period_s, substeps = year.slot_s, 1.0, 4
    h = period_s / substeps
    t0 = time.perf_counter()
    for k in range(last - first):
        i = first + k
        batt_wh = grid_wh = 0.0
        limits: set[str] = set()
        soc_rule = False
        planned = None
        for _c in range(int(slot_s / period_s)):
            now = START_MONO_S + plant.t_s
            soc = plant.soc_pct
            bounds = policy.bounds(i, soc)
            if planned is None:
                plan = policy.plan
                planned = next((s for s in plan.slots if s.start_unix_s == year.t(i)), None) if plan is not None else None
            m = {
                Q.GRID_POWER_W: Reading(plant.grid_power_w, now),
                Q.ESS_POWER_W: Reading(plant.ess_power_w, now),
                Q.SOC_PCT: Reading(soc, now),
                Q.BMS_VOLTAGE_V: Reading(plant.battery_voltage_v, now),
                Q.BMS_CCL_A: Reading(plant.charge_current_limit_a, now),
                Q.BMS_DCL_A: Reading(plant.discharge_current_limit_a, now),
            }
            inputs = Inputs(
                now_s=now,
                started_at_s=START_MONO_S,
                measurements=m,
                bms_flags=None,
                requested_mode=Mode.SELF_CONSUMPTION,
                external_setpoint=None,
                plan=bounds,
            )
            d = step(core, inputs, core_cfg)
            core = d.core
            limits.update(x for x in d.limits if not x.startswith("plan:"))
            soc_rule = soc_rule or (d.plan is not None and any(r in d.plan for r in _SOC_RULES))
            plant.set_setpoint(d.written_w)
            plant.feed_watchdog()
            for _s in range(substeps):
                plant.step(h)
                batt_wh += plant.ess_power_w * h / 3600.0
                grid_wh += plant.grid_true_w * h / 3600.0
            out.cycles += 1
        price = imp[i] if grid_wh > 0 else exp[i]
        out.cost_eur += grid_wh / 1000.0 * price
        if planned is not None:
            out.slots.append(
                SlotRecord(
                    start_unix_s=year.t(i),
                    mode=planned.mode.value,
                    planned_battery_wh=planned.planned_battery_w * slot_s / 3600.0,
                    battery_wh=batt_wh,
                    planned_grid_wh=planned.planned_grid_w * slot_s / 3600.0,
                    grid_wh=grid_wh,
                    limits=tuple(sorted(limits)),
                    soc_rule=soc_rule,
                )
            )
    out.wall_s = time.perf_counter() - t0
    return out


def _live_control() -> ControlConfig:
    return parse_config({"control": {"enabled": True, "dry_run": False}}, {}).control


def main(argv: list[str] | None = None) -> int:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    p = argparse.ArgumentParser(prog="python -m simulators.schedule.replay_plan", description=__doc__.split("\n\n")[0])
    p.add_argument("--start-day", type=int, default=28, help="first day of the year (0 = 1 January; needs 7 days of history before)")
    p.add_argument("--days", type=float, default=3.0, help="days to replay at 1 s")
    p.add_argument("--forecast", choices=("perfect", "own"), default="perfect", help="the planner's load and PV forecast")
    p.add_argument("--law", default=None, help="control.law (default: the config default)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    from interfaces.planner.solver import warm_up

    warm_up()  # HiGHS prints a banner on its first use: keep stdout for the result
    year = load_year()
    per_day = 86400 // year.slot_s
    first = a.start_day * per_day
    last = min(year.n, first + int(a.days * per_day))
    control = _live_control()
    if a.law:
        control = control.model_copy(update={"law": a.law})
    res = replay_plan(year, first=first, last=last, control=control, perfect_forecast=a.forecast == "perfect")
    doc = {"start_day": a.start_day, "days": a.days, "forecast": a.forecast, "law": control.law.value, **res.summary()}
    if a.json:
        print(json.dumps(doc))
    else:
        for k, v in doc.items():
            print(f"{k:36} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
