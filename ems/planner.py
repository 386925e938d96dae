"""The scheduling LP (docs/scheduling.md): prices + forecasts + battery -> a `Plan` of slots.

Minimise over the horizon, per slot t of dt hours (powers in kW, energy in kWh):

    sum_t dt * (p_imp[t] * import[t] - p_exp[t] * export[t])          energy
  + cycle_cost * dt * sum_t (charge[t] + discharge[t])                  battery wear
  + peak_charge * max(0, max_t import[t] - peak_so_far)                 demand charge (optional)
  - end_value * soc[n-1]                                                energy left at the end
  + penalties on soft limits (SOC window / reserve, external import cap, forced curtailment)

subject to, every slot:
    import - export + discharge - charge - curtail = load - pv        (power balance)
    soc[t] = soc[t-1] + eta_c * dt * charge - dt / eta_d * discharge  (energy, soc[-1] = now)
    max(soc_min, reserve) <= soc <= soc_max                           (soft: a start outside recovers)
    0 <= charge <= max_charge (<= PV surplus when grid charging is off)
    0 <= discharge <= max_discharge (<= the load when battery export is off)
    export <= feed-in cap; import <= import cap (soft; the external cap per slot, e.g. §14a EnWG)
    export <= pv - curtail + discharge                                (no buying to sell when export pays more)

HiGHS (highspy) and numpy are imported inside `make_plan` only: the running EMS imports this
module cheaply, the planner thread pays for the solver. Pure: no clock, no logging, no I/O; the
solver's own run time is reported in the plan.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from dataclasses import asdict, dataclass
from typing import Any

from config.planner import EndValue, PlannerConfig
from ems.plan import Plan, PlanSlot, PlanStatus, SlotMode, slot_rule

__all__ = ["PlanInputs", "end_value_eur_per_kwh", "inputs_digest", "make_plan", "no_price_plan", "self_consumption_cost_eur"]

SOC_PENALTY_EUR_PER_KWH = 50.0  # leaving the SOC window / reserve costs more than any price spread
IMPORT_CAP_PENALTY_EUR_PER_KWH = 20.0  # the external import cap yields only when the load alone exceeds it
CURTAIL_PENALTY_EUR_PER_KWH = 1.0  # curtail PV only when the feed-in cap forces it (not to dodge a negative price)


@dataclass(frozen=True, slots=True)
class PlanInputs:
    """Everything one solve depends on (with the config): equal-length per-slot series from `start_unix_s`."""

    start_unix_s: int
    slot_s: int
    load_w: tuple[float, ...]
    pv_w: tuple[float, ...]
    import_eur_per_kwh: tuple[float, ...]
    export_eur_per_kwh: tuple[float, ...]
    soc_pct: float
    import_cap_w: tuple[float | None, ...] | None = None  # external cap per slot (e.g. §14a dimming), on top of grid.import_max_w
    peak_import_so_far_w: float = 0.0  # the demand charge counts only an increase over this
    end_value_eur_per_kwh: float | None = None  # overrides the configured end_value rule

    def __post_init__(self) -> None:
        n = len(self.load_w)
        lengths = {len(self.pv_w), len(self.import_eur_per_kwh), len(self.export_eur_per_kwh)}
        if self.import_cap_w is not None:
            lengths.add(len(self.import_cap_w))
        if lengths != {n}:
            raise ValueError(f"PlanInputs: per-slot series differ in length ({n} loads, others {sorted(lengths)})")
        if self.slot_s <= 0:
            raise ValueError(f"PlanInputs: slot_s must be > 0 (got {self.slot_s})")


def inputs_digest(inputs: PlanInputs, cfg: PlannerConfig) -> str:
    """Stable short hash of the inputs and the config (the same digest = the same plan)."""
    doc: dict[str, Any] = {"inputs": asdict(inputs), "cfg": cfg.model_dump(mode="json", exclude={"forecast"})}
    raw = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def end_value_eur_per_kwh(inputs: PlanInputs, cfg: PlannerConfig) -> float:
    """Value of one stored kWh at the end of the horizon (what it will displace later, after losses)."""
    if inputs.end_value_eur_per_kwh is not None:
        return inputs.end_value_eur_per_kwh
    if not inputs.import_eur_per_kwh or cfg.end_value is EndValue.ZERO:
        return 0.0
    eta_d = cfg.battery.discharge_efficiency_pct / 100.0
    ref = min(inputs.import_eur_per_kwh) if cfg.end_value is EndValue.MIN_IMPORT else statistics.median(inputs.import_eur_per_kwh)
    return max(0.0, eta_d * ref - cfg.battery.cycle_cost_eur_per_kwh)


def _export_cap_w(cfg: PlannerConfig) -> float | None:
    return cfg.grid.export_cap_w


def self_consumption_cost_eur(inputs: PlanInputs, cfg: PlannerConfig) -> float:
    """Energy cost of plain self-consumption on the same forecast, less the value of the energy left."""
    b = cfg.battery
    cap_kwh = b.capacity_wh / 1000.0
    eta_c, eta_d = b.charge_efficiency_pct / 100.0, b.discharge_efficiency_pct / 100.0
    lo_kwh, hi_kwh = max(b.soc_min_pct, b.reserve_soc_pct) / 100.0 * cap_kwh, b.soc_max_pct / 100.0 * cap_kwh
    dt_h = inputs.slot_s / 3600.0
    soc_kwh = min(max(inputs.soc_pct, 0.0), 100.0) / 100.0 * cap_kwh
    cost = 0.0
    for load_w, pv_w, p_imp, p_exp in zip(inputs.load_w, inputs.pv_w, inputs.import_eur_per_kwh, inputs.export_eur_per_kwh, strict=True):
        net_kw = (load_w - pv_w) / 1000.0
        if net_kw < 0:
            ch_kw = min(-net_kw, b.max_charge_w / 1000.0, max(0.0, hi_kwh - soc_kwh) / eta_c / dt_h)
            soc_kwh += ch_kw * eta_c * dt_h
            grid_kw = net_kw + ch_kw
        else:
            dis_kw = min(net_kw, b.max_discharge_w / 1000.0, max(0.0, soc_kwh - lo_kwh) * eta_d / dt_h)
            soc_kwh -= dis_kw / eta_d * dt_h
            grid_kw = net_kw - dis_kw
        cost += grid_kw * dt_h * (p_imp if grid_kw > 0 else p_exp)
    return cost - end_value_eur_per_kwh(inputs, cfg) * soc_kwh


def no_price_plan(*, created_at_unix_s: float, soc_pct: float, reason: str, cfg: PlannerConfig) -> Plan:
    """A plan that says 'nothing to follow' (the loop stays in plain self-consumption): no prices, no forecast."""
    return Plan(
        slots=(),
        created_at_unix_s=created_at_unix_s,
        inputs_digest="",
        status=PlanStatus.NO_PRICES,
        reason=reason,
        expected_cost_eur=0.0,
        self_consumption_cost_eur=0.0,
        reserve_soc_pct=cfg.battery.reserve_soc_pct,
        soc_start_pct=soc_pct,
        solver_s=0.0,
    )


def _failed(inputs: PlanInputs, cfg: PlannerConfig, created_at_unix_s: float, reason: str, digest: str, solver_s: float) -> Plan:
    return Plan(
        slots=(),
        created_at_unix_s=created_at_unix_s,
        inputs_digest=digest,
        status=PlanStatus.FAILED,
        reason=reason,
        expected_cost_eur=0.0,
        self_consumption_cost_eur=self_consumption_cost_eur(inputs, cfg),
        reserve_soc_pct=cfg.battery.reserve_soc_pct,
        soc_start_pct=inputs.soc_pct,
        solver_s=solver_s,
    )


def make_plan(inputs: PlanInputs, cfg: PlannerConfig, *, created_at_unix_s: float) -> Plan:
    """Solve the LP for `inputs` and turn the solution into slots. Never raises for a bad solve: status says."""
    digest = inputs_digest(inputs, cfg)
    n = len(inputs.load_w)
    if n == 0:
        return no_price_plan(created_at_unix_s=created_at_unix_s, soc_pct=inputs.soc_pct, reason="empty_horizon", cfg=cfg)
    sol, status, solver_s = _solve(inputs, cfg)
    if sol is None:
        return _failed(inputs, cfg, created_at_unix_s, status, digest, solver_s)
    return _to_plan(inputs, cfg, sol, created_at_unix_s=created_at_unix_s, digest=digest, status=status, solver_s=solver_s)


@dataclass(frozen=True, slots=True)
class _Solution:
    charge_kw: tuple[float, ...]
    discharge_kw: tuple[float, ...]
    import_kw: tuple[float, ...]
    export_kw: tuple[float, ...]
    soc_kwh: tuple[float, ...]
    curtail_kw: tuple[float, ...]
    objective_eur: float


def _solve(inputs: PlanInputs, cfg: PlannerConfig) -> tuple[_Solution | None, str, float]:
    import highspy  # lazily: only the planner thread pays for the solver
    import numpy as np

    b, g = cfg.battery, cfg.grid
    n = len(inputs.load_w)
    dt = inputs.slot_s / 3600.0
    cap = b.capacity_wh / 1000.0
    eta_c, eta_d = b.charge_efficiency_pct / 100.0, b.discharge_efficiency_pct / 100.0
    load = np.asarray(inputs.load_w, dtype=float) / 1000.0
    pv = np.maximum(np.asarray(inputs.pv_w, dtype=float), 0.0) / 1000.0
    net = load - pv
    p_imp = np.asarray(inputs.import_eur_per_kwh, dtype=float)
    p_exp = np.asarray(inputs.export_eur_per_kwh, dtype=float)
    soc0 = min(max(inputs.soc_pct, 0.0), 100.0) / 100.0 * cap
    inf = highspy.kHighsInf

    # column blocks of n: charge, discharge, import, export, soc, curtail, under (SOC floor), over (SOC ceiling), import-cap excess
    C, D, Im, X, S, U, LO, HI, IX = (k * n for k in range(9))
    peak = g.peak_charge_eur_per_kw > 0
    ncol = 9 * n + (1 if peak else 0)
    P = 9 * n
    cost = np.zeros(ncol)
    lower = np.zeros(ncol)
    upper = np.full(ncol, inf)
    cost[Im : Im + n] = p_imp * dt
    cost[X : X + n] = -p_exp * dt
    cost[C : C + n] = b.cycle_cost_eur_per_kwh * dt
    cost[D : D + n] = b.cycle_cost_eur_per_kwh * dt
    cost[U : U + n] = CURTAIL_PENALTY_EUR_PER_KWH * dt
    cost[LO : LO + n] = SOC_PENALTY_EUR_PER_KWH
    cost[HI : HI + n] = SOC_PENALTY_EUR_PER_KWH
    cost[IX : IX + n] = IMPORT_CAP_PENALTY_EUR_PER_KWH * dt
    cost[S + n - 1] -= end_value_eur_per_kwh(inputs, cfg)
    max_c = np.full(n, b.max_charge_w / 1000.0)
    if not g.allow_grid_charging:
        max_c = np.minimum(max_c, np.maximum(-net, 0.0))
    max_d = np.full(n, b.max_discharge_w / 1000.0)
    if not g.allow_battery_export:
        max_d = np.minimum(max_d, np.maximum(net, 0.0))
    upper[C : C + n] = max_c
    upper[D : D + n] = max_d
    upper[S : S + n] = cap
    upper[U : U + n] = pv
    export_cap = _export_cap_w(cfg)
    if export_cap is not None:
        upper[X : X + n] = export_cap / 1000.0
    if peak:
        cost[P] = g.peak_charge_eur_per_kw
        lower[P] = max(0.0, inputs.peak_import_so_far_w) / 1000.0

    rows: list[Any] = []
    cols: list[Any] = []
    vals: list[Any] = []
    r = np.arange(n)

    def add(row0: int, col0: int, v: float, idx: Any = r) -> None:
        rows.append(row0 + idx)
        cols.append(col0 + idx)
        vals.append(np.full(len(idx), v))

    # rows: balance [0, n), soc [n, 2n), floor [2n, 3n), ceiling [3n, 4n), import cap [4n, 5n),
    # export source [5n, 6n) (only what PV and the battery produce: no import-for-export when export pays more), peak [6n, 7n)
    for col0, v in ((Im, 1.0), (X, -1.0), (D, 1.0), (C, -1.0), (U, -1.0)):
        add(0, col0, v)
    add(n, S, 1.0)
    add(n, C, -eta_c * dt)
    add(n, D, dt / eta_d)
    rows.append(n + r[1:])
    cols.append(S + r[:-1])
    vals.append(np.full(n - 1, -1.0))
    add(2 * n, S, 1.0)
    add(2 * n, LO, 1.0)
    add(3 * n, S, 1.0)
    add(3 * n, HI, -1.0)
    add(4 * n, Im, 1.0)
    add(4 * n, IX, -1.0)
    add(5 * n, X, 1.0)
    add(5 * n, D, -1.0)
    add(5 * n, U, 1.0)
    nrow = 6 * n
    if peak:
        add(6 * n, Im, 1.0)
        rows.append(6 * n + r)
        cols.append(np.full(n, P))
        vals.append(np.full(n, -1.0))
        nrow = 7 * n
    row_lo = np.full(nrow, -inf)
    row_hi = np.full(nrow, inf)
    row_lo[:n] = row_hi[:n] = net
    row_lo[n : 2 * n] = row_hi[n : 2 * n] = 0.0
    row_lo[n] = row_hi[n] = soc0
    row_lo[2 * n : 3 * n] = max(b.soc_min_pct, b.reserve_soc_pct) / 100.0 * cap
    row_hi[3 * n : 4 * n] = b.soc_max_pct / 100.0 * cap
    caps = np.full(n, inf)
    if g.import_max_w is not None:
        caps[:] = g.import_max_w / 1000.0
    if inputs.import_cap_w is not None:
        ext = np.array([inf if c is None else c / 1000.0 for c in inputs.import_cap_w])
        caps = np.minimum(caps, ext)
    row_hi[4 * n : 5 * n] = caps
    row_hi[5 * n : 6 * n] = pv
    if peak:
        row_hi[6 * n : 7 * n] = 0.0

    ri = np.concatenate(rows)
    ci = np.concatenate(cols)
    vv = np.concatenate(vals)
    order = np.lexsort((ri, ci))
    ri, ci, vv = ri[order], ci[order], vv[order]
    lp = highspy.HighsLp()
    lp.num_col_ = ncol
    lp.num_row_ = nrow
    lp.col_cost_ = cost
    lp.col_lower_ = lower
    lp.col_upper_ = upper
    lp.row_lower_ = row_lo
    lp.row_upper_ = row_hi
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.searchsorted(ci, np.arange(ncol + 1)).astype(np.int32)
    lp.a_matrix_.index_ = ri.astype(np.int32)
    lp.a_matrix_.value_ = vv
    h = highspy.Highs()  # type: ignore[no-untyped-call]
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(cfg.solver_time_limit_s))
    h.setOptionValue("threads", 1)
    h.passModel(lp)
    h.run()
    solver_s = float(h.getRunTime())
    model_status = h.getModelStatus()
    if model_status != highspy.HighsModelStatus.kOptimal:
        return None, h.modelStatusToString(model_status), solver_s
    x = np.asarray(h.getSolution().col_value)

    def block(k0: int) -> tuple[float, ...]:
        return tuple(float(v) for v in x[k0 : k0 + n])

    sol = _Solution(
        charge_kw=block(C),
        discharge_kw=block(D),
        import_kw=block(Im),
        export_kw=block(X),
        soc_kwh=block(S),
        curtail_kw=block(U),
        objective_eur=float(h.getInfo().objective_function_value),
    )
    return sol, "optimal", solver_s


def _to_plan(
    inputs: PlanInputs, cfg: PlannerConfig, sol: _Solution, *, created_at_unix_s: float, digest: str, status: str, solver_s: float
) -> Plan:
    b = cfg.battery
    cap = b.capacity_wh / 1000.0
    dt = inputs.slot_s / 3600.0
    export_cap = _export_cap_w(cfg)
    slots: list[PlanSlot] = []
    energy_eur = 0.0
    for t in range(len(inputs.load_w)):
        battery_w = (sol.discharge_kw[t] - sol.charge_kw[t]) * 1000.0
        grid_w = (sol.import_kw[t] - sol.export_kw[t]) * 1000.0
        pv_w = max(inputs.pv_w[t], 0.0) - sol.curtail_kw[t] * 1000.0
        p_imp, p_exp = inputs.import_eur_per_kwh[t], inputs.export_eur_per_kwh[t]
        slot_eur = dt * (p_imp * sol.import_kw[t] - p_exp * sol.export_kw[t])
        energy_eur += slot_eur
        rule = slot_rule(
            planned_battery_w=battery_w,
            load_w=inputs.load_w[t],
            pv_w=pv_w,
            max_charge_w=b.max_charge_w,
            max_discharge_w=b.max_discharge_w,
            export_cap_w=export_cap,
            tolerance_w=cfg.tolerance_w,
        )
        soc_pct = sol.soc_kwh[t] / cap * 100.0
        start = inputs.start_unix_s + t * inputs.slot_s
        slots.append(
            PlanSlot(
                start_unix_s=start,
                end_unix_s=start + inputs.slot_s,
                mode=rule.mode,
                grid_target_w=round(rule.grid_target_w, 1),
                battery_lo_w=round(rule.battery_lo_w, 1),
                battery_hi_w=round(rule.battery_hi_w, 1),
                charge_from_grid=rule.mode is SlotMode.CHARGE_FROM_GRID,
                hold=rule.battery_hi_w == 0.0,
                soc_target_pct=round(soc_pct, 2) if rule.mode is SlotMode.CHARGE_FROM_GRID else None,
                price_import_eur_per_kwh=p_imp,
                price_export_eur_per_kwh=p_exp,
                planned_battery_w=round(battery_w, 1),
                planned_grid_w=round(grid_w, 1),
                planned_soc_pct=round(soc_pct, 2),
                load_forecast_w=inputs.load_w[t],
                pv_forecast_w=inputs.pv_w[t],
                expected_cost_eur=slot_eur,
            )
        )
    end_value = end_value_eur_per_kwh(inputs, cfg) * sol.soc_kwh[-1]
    return Plan(
        slots=tuple(slots),
        created_at_unix_s=created_at_unix_s,
        inputs_digest=digest,
        status=PlanStatus.OK,
        reason=status,
        expected_cost_eur=energy_eur - end_value,
        self_consumption_cost_eur=self_consumption_cost_eur(inputs, cfg),
        reserve_soc_pct=b.reserve_soc_pct,
        soc_start_pct=inputs.soc_pct,
        solver_s=solver_s,
        max_charge_w=b.max_charge_w,
        max_discharge_w=b.max_discharge_w,
    )
