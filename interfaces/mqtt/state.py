"""Retained state: one JSON document built from a context snapshot, published on change, rate-limited.

Fields (SI units, signs as DESIGN §2; a measurement older than `stale_s` is null):
`state`, `mode`, `grid_power_w`, `pv_power_w`, `ess_power_w`, `load_power_w` (grid + pv + ess),
`soc_pct`, `setpoint_w` (computed, every limit applied), `written_w` (sent to the inverter), `external_setpoint_w`,
`fault_causes`, `limits`, the energy totals for Home Assistant's Energy dashboard in kWh
(`grid_import_kwh`, `grid_export_kwh`, `battery_charge_kwh`, `battery_discharge_kwh`: the meter's
registers where it has them, else integrated since start; ems/energy.py), `plan_slot` (the plan rule the loop followed in its last cycle, e.g.
`charge_from_grid`, null: plain self-consumption), `plan_savings_eur` (the plan's expected saving
over plain self-consumption, null without a plan), `planner_state`. The publish time is not part of the comparison, so an unchanged
EMS publishes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from ems.energy import site_energy_wh
from ems.model import Quantity, Snapshot

__all__ = ["StateGate", "state_payload"]

Q = Quantity


def _fresh(snap: Snapshot, q: Quantity, stale_s: float, digits: int) -> float | None:
    r = snap.reading(q)
    if r is None or not r.fresh(now_s=snap.at_s, max_age_s=stale_s):
        return None
    return round(r.value, digits)


def state_payload(snap: Snapshot, *, stale_s: float) -> dict[str, object]:
    grid = _fresh(snap, Q.GRID_POWER_W, stale_s, 0)
    pv = _fresh(snap, Q.PV_POWER_W, stale_s, 0)
    ess = _fresh(snap, Q.ESS_POWER_W, stale_s, 0)
    pv_known = snap.reading(Q.PV_POWER_W) is not None  # a site without a PV meter counts 0 W
    load = None if grid is None or ess is None or (pv_known and pv is None) else round(grid + (pv or 0.0) + ess, 0)
    cmd = snap.command
    sp = snap.external_setpoint
    return {
        "state": snap.state.value,
        "mode": snap.requested_mode.value,
        "grid_power_w": grid,
        "pv_power_w": pv,
        "ess_power_w": ess,
        "load_power_w": load,
        "soc_pct": _fresh(snap, Q.SOC_PCT, stale_s, 1),
        "setpoint_w": None if cmd is None else round(cmd.setpoint_w, 0),
        "written_w": None if cmd is None else round(cmd.written_w, 0),
        "external_setpoint_w": None if sp is None or not sp.active(snap.at_s) else round(sp.power_w, 0),
        "fault_causes": list(snap.fault_causes),
        "limits": list(snap.limits),
        "plan_slot": _plan_slot(snap),
        "plan_savings_eur": round(snap.plan.savings_eur, 2) if snap.plan is not None and snap.plan.slots else None,
        "planner_state": None if snap.planner is None else snap.planner.state,
    } | {key.removesuffix("_wh") + "_kwh": round(wh / 1000.0, 3) for key, wh in sorted(site_energy_wh(snap).items())}


def _plan_slot(snap: Snapshot) -> str | None:
    """ "plan:charge_from_grid:soc_target_reached" -> "charge_from_grid" (the slot's mode; the SOC rules are in the API)."""
    followed = snap.control.plan if snap.control is not None else None
    return None if followed is None else followed.removeprefix("plan:").split(":", 1)[0]


@dataclass(slots=True)
class StateGate:
    """Publish when the document changed and `min_interval_s` has passed (or when forced)."""

    min_interval_s: float
    last: dict[str, object] | None = None
    last_at_s: float | None = None

    def due(self, doc: dict[str, object], now_s: float) -> bool:
        if doc == self.last:
            return False
        return self.last_at_s is None or now_s - self.last_at_s >= self.min_interval_s

    def sent(self, doc: dict[str, object], now_s: float) -> None:
        self.last, self.last_at_s = doc, now_s

    def force(self) -> None:
        """After a reconnect: the next document goes out whatever it holds."""
        self.last, self.last_at_s = None, None
