"""Regulation KPIs of a replay (issue 11): pure arithmetic on per-cycle samples, no plant, no clock.

`add_sample()` takes the *true* site powers over a slice of time (a cycle or a sub-step of one;
DESIGN.md §2 signs: grid + import, ess + discharge); `add_cycle()` takes what the controller
decided once per cycle. `result()` folds them into a frozen `Kpis`. Definitions:

- grid error: |grid_w - target_w| per sample; mean (time-weighted) and p95 (nearest rank, per sample).
- import / export: energy of the positive / negative part of grid_w, Wh.
- avoidable import / export: this run's import / export minus a reference run's (the ideal
  controller, same profile and battery), Wh; None without a reference.
- self-consumption: share of PV energy used on site, 1 - export / pv (None without PV).
- self-sufficiency: share of load energy not imported, 1 - import / load (None without load).
- battery throughput: charge + discharge energy at the AC side, Wh; equivalent full cycles =
  throughput / (2 x capacity).
- state share: part of the cycles spent in each state; limit cycles: cycles each limit bound.
- command reversals: direction changes of the command, ignoring moves below `reversal_min_w`
  (sustained oscillation shows up as many reversals).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

__all__ = ["KpiAccumulator", "Kpis", "percentile"]


def percentile(values: Iterable[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100) of `values`; NaN when empty."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True, slots=True)
class Kpis:
    cycles: int
    duration_s: float
    grid_error_mean_w: float
    grid_error_p95_w: float
    import_wh: float
    export_wh: float
    load_wh: float
    pv_wh: float
    charge_wh: float
    discharge_wh: float
    throughput_wh: float
    equivalent_cycles: float
    self_consumption: float | None
    self_sufficiency: float | None
    soc_min_pct: float
    soc_max_pct: float
    command_reversals: int
    state_share: dict[str, float] = field(default_factory=dict)
    limit_cycles: dict[str, int] = field(default_factory=dict)
    avoidable_import_wh: float | None = None
    avoidable_export_wh: float | None = None

    def with_reference(self, ref: Kpis) -> Kpis:
        """The same KPIs with the avoidable energies taken against `ref` (the ideal run)."""
        d = asdict(self)
        d["avoidable_import_wh"] = self.import_wh - ref.import_wh
        d["avoidable_export_wh"] = self.export_wh - ref.export_wh
        return Kpis(**d)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class KpiAccumulator:
    """Collects one sample per cycle; `result()` may be called any time (it does not reset)."""

    def __init__(self, *, capacity_wh: float, reversal_min_w: float = 1.0) -> None:
        self._capacity_wh = capacity_wh
        self._reversal_min_w = reversal_min_w
        self._errors_w: list[float] = []
        self._err_ws = 0.0
        self._t_s = 0.0
        self._import_ws = self._export_ws = self._load_ws = self._pv_ws = 0.0
        self._charge_ws = self._discharge_ws = 0.0
        self._soc_min = math.inf
        self._soc_max = -math.inf
        self._states: Counter[str] = Counter()
        self._limits: Counter[str] = Counter()
        self._last_cmd_w: float | None = None
        self._last_dir = 0
        self._reversals = 0
        self._cycles = 0

    def add_sample(
        self,
        *,
        dt_s: float,
        grid_w: float,
        target_w: float,
        load_w: float,
        pv_w: float,
        ess_w: float,
        soc_pct: float,
    ) -> None:
        """The true site powers over `dt_s` (a cycle or a part of one)."""
        err_w = abs(grid_w - target_w)
        self._errors_w.append(err_w)
        self._err_ws += err_w * dt_s
        self._t_s += dt_s
        if grid_w > 0:
            self._import_ws += grid_w * dt_s
        else:
            self._export_ws -= grid_w * dt_s
        self._load_ws += load_w * dt_s
        self._pv_ws += pv_w * dt_s
        if ess_w > 0:
            self._discharge_ws += ess_w * dt_s
        else:
            self._charge_ws -= ess_w * dt_s
        if soc_pct < self._soc_min:
            self._soc_min = soc_pct
        if soc_pct > self._soc_max:
            self._soc_max = soc_pct

    def add_cycle(self, *, cmd_w: float, state: str = "SELF_CONSUMPTION", limits: Iterable[str] = ()) -> None:
        """What the controller decided this cycle."""
        self._cycles += 1
        self._states[state] += 1
        if limits:
            self._limits.update(set(limits))
        self._track_reversals(cmd_w)

    def _track_reversals(self, cmd_w: float) -> None:
        if self._last_cmd_w is None:
            self._last_cmd_w = cmd_w
            return
        delta_w = cmd_w - self._last_cmd_w
        if abs(delta_w) < self._reversal_min_w:
            return  # too small a move to call a direction; keep the reference point
        direction = 1 if delta_w > 0 else -1
        if self._last_dir and direction != self._last_dir:
            self._reversals += 1
        self._last_dir = direction
        self._last_cmd_w = cmd_w

    def result(self) -> Kpis:
        n = self._cycles
        t_s = self._t_s
        wh = 1.0 / 3600.0
        throughput_wh = (self._charge_ws + self._discharge_ws) * wh
        return Kpis(
            cycles=n,
            duration_s=t_s,
            grid_error_mean_w=self._err_ws / t_s if t_s > 0 else math.nan,
            grid_error_p95_w=percentile(self._errors_w, 95.0),
            import_wh=self._import_ws * wh,
            export_wh=self._export_ws * wh,
            load_wh=self._load_ws * wh,
            pv_wh=self._pv_ws * wh,
            charge_wh=self._charge_ws * wh,
            discharge_wh=self._discharge_ws * wh,
            throughput_wh=throughput_wh,
            equivalent_cycles=throughput_wh / (2.0 * self._capacity_wh) if self._capacity_wh > 0 else math.nan,
            self_consumption=1.0 - self._export_ws / self._pv_ws if self._pv_ws > 0 else None,
            self_sufficiency=1.0 - self._import_ws / self._load_ws if self._load_ws > 0 else None,
            soc_min_pct=self._soc_min if self._errors_w else math.nan,
            soc_max_pct=self._soc_max if self._errors_w else math.nan,
            command_reversals=self._reversals,
            state_share={s: c / n for s, c in sorted(self._states.items())} if n else {},
            limit_cycles=dict(sorted(self._limits.items())),
        )
