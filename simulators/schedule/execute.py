"""Execution of a year: each 15-minute slot with the actual load and PV, the battery doing what the
1 Hz loop does in SELF_CONSUMPTION with the slot's guidance (grid target, battery range, SOC rules).

Energy is accounted per slot (15-minute netting: one slot's import and export offset each other), at
the slot's import or export price. A slot is simulated in `substeps` equal parts so a rule that
changes with the SOC (reserve, grid charging up to the target, a full or empty battery) acts
inside the slot as the loop would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ems.plan import PlanBounds, steady_battery_w

__all__ = ["Battery", "Policy", "RunResult", "SelfConsumption", "execute", "no_battery_cost"]


@dataclass(frozen=True, slots=True)
class Battery:
    capacity_wh: float = 10000.0
    max_charge_w: float = 5000.0
    max_discharge_w: float = 5000.0
    charge_efficiency: float = 0.95
    discharge_efficiency: float = 0.95
    soc_min_pct: float = 0.0
    soc_max_pct: float = 100.0
    soc_start_pct: float = 50.0


class Policy(Protocol):
    def bounds(self, i: int, soc_pct: float) -> PlanBounds | None:
        """The rule for slot `i` at this SOC (None: plain self-consumption)."""
        ...


class SelfConsumption:
    """Greedy self-consumption: no plan."""

    def bounds(self, i: int, soc_pct: float) -> PlanBounds | None:
        return None


@dataclass(frozen=True, slots=True)
class RunResult:
    cost_eur: float
    import_kwh: float
    export_kwh: float
    throughput_kwh: float  # charge + discharge, AC side
    soc_end_pct: float
    slots: int


def no_battery_cost(
    load_w: Sequence[float], pv_w: Sequence[float], imp: Sequence[float], exp: Sequence[float], *, slot_s: int
) -> RunResult:
    dt_h = slot_s / 3600.0
    cost = imp_kwh = exp_kwh = 0.0
    for ld, pv, pi, pe in zip(load_w, pv_w, imp, exp, strict=True):
        e = (ld - pv) / 1000.0 * dt_h
        if e > 0:
            cost += e * pi
            imp_kwh += e
        else:
            cost += e * pe
            exp_kwh -= e
    return RunResult(cost, imp_kwh, exp_kwh, 0.0, 0.0, len(load_w))


def execute(
    load_w: Sequence[float],
    pv_w: Sequence[float],
    imp: Sequence[float],
    exp: Sequence[float],
    battery: Battery,
    policy: Policy,
    *,
    slot_s: int,
    first: int = 0,
    last: int | None = None,
    substeps: int = 3,
) -> RunResult:
    last = len(load_w) if last is None else last
    cap_kwh = battery.capacity_wh / 1000.0
    lo_kwh, hi_kwh = battery.soc_min_pct / 100.0 * cap_kwh, battery.soc_max_pct / 100.0 * cap_kwh
    eta_c, eta_d = battery.charge_efficiency, battery.discharge_efficiency
    dt_h = slot_s / 3600.0 / substeps
    soc_kwh = battery.soc_start_pct / 100.0 * cap_kwh
    sc = PlanBounds(0.0, -battery.max_charge_w, battery.max_discharge_w, "self_consumption")
    cost = imp_kwh = exp_kwh = thr_kwh = 0.0
    for i in range(first, last):
        ld, pv = load_w[i], pv_w[i]
        grid_kwh = 0.0
        for _ in range(substeps):
            b = policy.bounds(i, soc_kwh / cap_kwh * 100.0) or sc
            p_w = steady_battery_w(b, load_w=ld, pv_w=pv)
            p_w = min(max(p_w, -battery.max_charge_w), battery.max_discharge_w)
            if p_w < 0:
                p_w = max(p_w, -max(0.0, hi_kwh - soc_kwh) / eta_c / dt_h * 1000.0)
                soc_kwh -= p_w / 1000.0 * dt_h * eta_c
            elif p_w > 0:
                p_w = min(p_w, max(0.0, soc_kwh - lo_kwh) * eta_d / dt_h * 1000.0)
                soc_kwh -= p_w / 1000.0 * dt_h / eta_d
            thr_kwh += abs(p_w) / 1000.0 * dt_h
            grid_kwh += (ld - pv - p_w) / 1000.0 * dt_h
        if grid_kwh > 0:
            cost += grid_kwh * imp[i]
            imp_kwh += grid_kwh
        else:
            cost += grid_kwh * exp[i]
            exp_kwh -= grid_kwh
    return RunResult(cost, imp_kwh, exp_kwh, thr_kwh, soc_kwh / cap_kwh * 100.0, last - first)
