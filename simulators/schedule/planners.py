"""The planners of the year benchmark, as execution policies (simulators/schedule/execute.py).

- `EmsPolicy`: the product's planner (ems.planner) with only what it would have known: day D's
  prices from 12:45 Brussels time on D-1, load and PV forecasts fitted on the past only (ems.forecast,
  re-fitted at each local midnight, corrected by the last measured slots), re-planning every
  `replan_slots` and whenever new prices are published. `perfect_forecast=True` gives it the actual
  future load and PV instead (same prices, same cadence): the cost of forecast error.
- `HeuristicPolicy`: a threshold rule in the manner of batcontrol and evcc: hold the battery when
  the energy in it is needed at higher prices later (before PV refills it), charge from the grid
  at full power in the cheapest slots ahead of expensive ones (enough to cover them).
- `PlanFollower`: follows one given plan (the perfect-foresight LP's).
"""

from __future__ import annotations

import math
import time as _time
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from config.planner import PlannerConfig
from ems.forecast import LoadModel, PvModel, Series, fit_load_model, fit_pv_model, forecast_load, forecast_pv
from ems.plan import Plan, PlanBounds, SlotGuidance, active_bounds, slot_guidance
from ems.planner import PlanInputs, make_plan
from simulators.schedule.execute import Battery
from simulators.schedule.year import Year

__all__ = ["EmsPolicy", "Forecaster", "HeuristicPolicy", "PlanFollower", "PriceVisibility"]

DAY_S = 86400


class PriceVisibility:
    """Day D's prices are visible from `publish` local time on D-1 (and today's always)."""

    def __init__(self, tz: ZoneInfo, publish: time = time(12, 45)) -> None:
        self._tz = tz
        self._publish = publish

    def visible_until(self, t_unix_s: int) -> int:
        local = datetime.fromtimestamp(t_unix_s, self._tz)
        days = 2 if local.time() >= self._publish else 1
        end = datetime.combine(local.date() + timedelta(days=days), time(0), tzinfo=self._tz)
        return int(end.astimezone(UTC).timestamp())


@dataclass
class ForecastLog:
    """Forecast vs actual: next slot (at every re-plan) and day-ahead (the whole day, made at its local midnight)."""

    next_load: list[tuple[float, float]] = field(default_factory=list)
    next_pv: list[tuple[float, float]] = field(default_factory=list)
    day_load: list[tuple[float, float]] = field(default_factory=list)
    day_pv: list[tuple[float, float]] = field(default_factory=list)


class Forecaster:
    """The site's own forecasts, fitted on the past only (ems.forecast)."""

    def __init__(self, year: Year, cfg: PlannerConfig, tz: ZoneInfo, log: ForecastLog | None = None) -> None:
        self._y = year
        self._cfg = cfg
        self._tz = tz
        self._day: object = None
        self._load: LoadModel | None = None
        self._pv: PvModel | None = None
        self.log = log

    def _history(self, values: tuple[float, ...], i: int, days: int) -> Series:
        k0 = max(0, i - days * DAY_S // self._y.slot_s)
        return Series(self._y.t(k0), self._y.slot_s, tuple(values[k0:i]))

    def _refit(self, i: int) -> None:
        f = self._cfg.forecast
        self._load = fit_load_model(self._history(self._y.load_w, i, f.load.history_days), cfg=f.load, timezone=str(self._tz))
        self._pv = fit_pv_model(self._history(self._y.pv_w, i, f.pv.history_days), cfg=f.pv)
        if self.log is not None and self._load is not None and self._pv is not None:
            n = min(DAY_S // self._y.slot_s, self._y.n - i)
            ld = forecast_load(self._load, start_unix_s=self._y.t(i), n_slots=n, cfg=f.load)
            pv = forecast_pv(self._pv, start_unix_s=self._y.t(i), n_slots=n, cfg=f.pv)
            self.log.day_load += list(zip(ld, self._y.load_w[i : i + n], strict=True))
            self.log.day_pv += list(zip(pv, self._y.pv_w[i : i + n], strict=True))

    def forecast(self, i: int, n: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        day = datetime.fromtimestamp(self._y.t(i), self._tz).date()
        if day != self._day:
            self._day = day
            self._refit(i)
        f = self._cfg.forecast
        if self._load is None or self._pv is None:  # no history yet: flat guesses
            return (500.0,) * n, (0.0,) * n
        recent_load = self._history(self._y.load_w, i, 1).tail(8)
        recent_pv = self._history(self._y.pv_w, i, 1).tail(8)
        ld = forecast_load(self._load, start_unix_s=self._y.t(i), n_slots=n, cfg=f.load, recent=recent_load)
        pv = forecast_pv(self._pv, start_unix_s=self._y.t(i), n_slots=n, cfg=f.pv, recent=recent_pv)
        if self.log is not None:
            self.log.next_load.append((ld[0], self._y.load_w[i]))
            self.log.next_pv.append((pv[0], self._y.pv_w[i]))
        return ld, pv


@dataclass
class SolveLog:
    wall_s: list[float] = field(default_factory=list)
    solver_s: list[float] = field(default_factory=list)
    slots: list[int] = field(default_factory=list)
    failed: int = 0


class EmsPolicy:
    def __init__(
        self,
        year: Year,
        imp: tuple[float, ...],
        exp: tuple[float, ...],
        cfg: PlannerConfig,
        *,
        tz: ZoneInfo,
        replan_slots: int = 1,
        perfect_forecast: bool = False,
        forecast_log: ForecastLog | None = None,
    ) -> None:
        self._y, self._imp, self._exp, self._cfg = year, imp, exp, cfg
        self._vis = PriceVisibility(tz)
        self._replan_slots = replan_slots
        self._perfect = perfect_forecast
        self._fc = Forecaster(year, cfg, tz, forecast_log)
        self._slot = -1
        self._last_plan_slot = -(10**9)
        self._last_visible = -1
        self._plan: Plan | None = None
        self._guidance: SlotGuidance | None = None
        self.solves = SolveLog()

    def _replan(self, i: int, soc_pct: float) -> None:
        t = self._y.t(i)
        n = min(self._cfg.horizon_slots, (self._last_visible - t) // self._y.slot_s, self._y.n - i)
        if n <= 0:
            self._plan = None
            return
        if self._perfect:
            load, pv = self._y.load_w[i : i + n], self._y.pv_w[i : i + n]
        else:
            load, pv = self._fc.forecast(i, n)
            factor = self._cfg.forecast.pv.planning_factor  # as the planner thread plans (interfaces/planner/worker.py)
            pv = tuple(v * factor for v in pv)
        inputs = PlanInputs(
            t,
            self._y.slot_s,
            load,
            pv,
            self._imp[i : i + n],
            self._exp[i : i + n],
            soc_pct,
        )
        t0 = _time.perf_counter()
        plan = make_plan(inputs, self._cfg, created_at_unix_s=t)
        self.solves.wall_s.append(_time.perf_counter() - t0)
        self.solves.solver_s.append(plan.solver_s)
        self.solves.slots.append(n)
        if not plan.slots:
            self.solves.failed += 1
        self._plan = plan
        self._last_plan_slot = i

    @property
    def plan(self) -> Plan | None:
        """The plan in force (made at the start of the current slot or earlier)."""
        return self._plan

    def bounds(self, i: int, soc_pct: float) -> PlanBounds | None:
        if i != self._slot:
            self._slot = i
            t = self._y.t(i)
            visible = self._vis.visible_until(t)
            if visible != self._last_visible or i - self._last_plan_slot >= self._replan_slots:
                self._last_visible = visible
                self._replan(i, soc_pct)
            self._guidance = slot_guidance(self._plan, datetime.fromtimestamp(t, UTC), max_age_s=self._cfg.max_plan_age_s)
        return None if self._guidance is None else active_bounds(self._guidance, soc_pct)


class PlanFollower:
    def __init__(self, year: Year, plan: Plan, max_age_s: float) -> None:
        self._y, self._plan, self._max_age_s = year, plan, max_age_s
        self._slot = -1
        self._g: SlotGuidance | None = None

    def bounds(self, i: int, soc_pct: float) -> PlanBounds | None:
        if i != self._slot:
            self._slot = i
            self._g = slot_guidance(self._plan, datetime.fromtimestamp(self._y.t(i), UTC), max_age_s=self._max_age_s)
        return None if self._g is None else active_bounds(self._g, soc_pct)


class HeuristicPolicy:
    """Threshold rule (batcontrol/evcc style) on the same prices and forecasts the EMS sees."""

    def __init__(
        self,
        year: Year,
        imp: tuple[float, ...],
        exp: tuple[float, ...],
        battery: Battery,
        cfg: PlannerConfig,
        *,
        tz: ZoneInfo,
        min_spread_eur_per_kwh: float = 0.01,
        surplus_w: float = 300.0,
    ) -> None:
        self._y, self._imp, self._exp, self._b = year, imp, exp, battery
        self._vis = PriceVisibility(tz)
        self._fc = Forecaster(year, cfg, tz)
        self._spread = min_spread_eur_per_kwh
        self._surplus_w = surplus_w
        self._slot = -1
        self._rule: tuple[str, float] = ("self", 0.0)
        self._horizon = cfg.horizon_slots

    def _decide(self, i: int, soc_pct: float) -> tuple[str, float]:
        b, y = self._b, self._y
        dt = y.slot_s / 3600.0
        n = min(self._horizon, (self._vis.visible_until(y.t(i)) - y.t(i)) // y.slot_s, y.n - i)
        if n <= 1:
            return ("self", 0.0)
        load, pv = self._fc.forecast(i, n)
        cap = b.capacity_wh / 1000.0
        stored_kwh = max(0.0, (soc_pct - b.soc_min_pct) / 100.0 * cap)
        p_now = self._imp[i]
        rt = b.charge_efficiency * b.discharge_efficiency
        need_higher = 0.0  # stored kWh the load needs at higher prices before PV refills the battery
        need_worth_charging = 0.0  # ... at prices worth buying for now (after losses)
        horizon_end = n
        for j in range(1, n):
            if pv[j] - load[j] > self._surplus_w:
                horizon_end = j
                break
            deficit_kwh = max(0.0, load[j] - pv[j]) / 1000.0 * dt / b.discharge_efficiency
            if self._imp[i + j] > p_now + 1e-9:
                need_higher += deficit_kwh
            if self._imp[i + j] * rt > p_now + self._spread:
                need_worth_charging += deficit_kwh
        missing_kwh = need_worth_charging - stored_kwh
        if missing_kwh > 1e-3:
            # charge now if this slot is among the cheapest slots that could supply the missing energy in time
            per_slot_kwh = b.max_charge_w / 1000.0 * dt * b.charge_efficiency
            k = math.ceil(missing_kwh / per_slot_kwh)
            cheaper = sorted(self._imp[i : i + horizon_end])[:k]
            if cheaper and p_now <= cheaper[-1] + 1e-9:
                target = min(b.soc_max_pct, soc_pct + missing_kwh / cap * 100.0)
                return ("charge", target)
        if load[0] - pv[0] > 0 and stored_kwh <= need_higher + 1e-3 and need_higher > 0:
            return ("hold", 0.0)
        return ("self", 0.0)

    def bounds(self, i: int, soc_pct: float) -> PlanBounds | None:
        if i != self._slot:
            self._slot = i
            self._rule = self._decide(i, soc_pct)
        kind, target = self._rule
        b = self._b
        if kind == "charge" and soc_pct < target:  # forced charge at full power (a set-point, as evcc/batcontrol do)
            return PlanBounds(0.0, -b.max_charge_w, -b.max_charge_w, "heuristic:charge")
        if kind in ("hold", "charge"):
            return PlanBounds(0.0, -b.max_charge_w, 0.0, "heuristic:hold")
        return None
