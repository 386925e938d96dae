"""`plausibility:` section: the site facts readings are checked against (ems/plausibility.py)."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field, model_validator

from config.common import Section
from ems.model import Quantity
from ems.plausibility import CrossChecks, SiteFacts, Window, site_windows

__all__ = ["PlausibilityConfig"]

_CHECKS = frozenset({"load", "bms_power", "bms_voltage"})


class PlausibilityConfig(Section):
    grid_connection_w: float = Field(
        43_470.0,
        gt=0,
        le=1e7,
        description="what the main fuse lets through, all phases (default 3 x 63 A x 230 V); grid power beyond it is implausible, W",
    )
    pv_peak_w: float | None = Field(
        None, gt=0, le=1e7, description="installed PV peak power (null: unknown, the grid connection bounds PV), W"
    )
    battery_nominal_voltage_v: float = Field(
        51.2, gt=0, le=1500, description="pack nominal voltage; pack voltages outside 0.6..1.4 x this are implausible, V"
    )
    battery_max_current_a: float | None = Field(
        None, gt=0, le=10000, description="the BMS's current rating (null: 1.5 x the inverter rating / nominal voltage), A"
    )
    margin_pct: float = Field(20.0, ge=0, le=500, description="headroom on every bound derived from the site, %")
    windows: dict[Quantity, tuple[float, float]] = Field(
        default_factory=dict, description="explicit windows per quantity, [lo, hi] in SI units, overriding the derived ones"
    )
    cross_checks: tuple[str, ...] = Field(
        ("load", "bms_voltage"),
        description="cross-checks between sources (load: grid + pv + ess >= -tolerance; bms_voltage: pack within DVL..CVL; bms_power: BMS V x I ~ inverter AC power, only where no DC-coupled PV sits between them)",
    )
    persist_s: float = Field(5.0, gt=0, le=600, description="a cross-check violated this long is a FAULT cause implausible:<check>, s")

    @model_validator(mode="after")
    def _valid(self) -> PlausibilityConfig:
        unknown = sorted(set(self.cross_checks) - _CHECKS)
        if unknown:
            raise ValueError(f"cross_checks: unknown {unknown} (known: {sorted(_CHECKS)})")
        for q, (lo, hi) in self.windows.items():
            if lo > hi:
                raise ValueError(f"windows.{q.value}: lo must be <= hi (got {lo:g} > {hi:g})")
        return self

    def site_windows(self, *, max_charge_w: float, max_discharge_w: float) -> Mapping[Quantity, Window]:
        rating = max(max_charge_w, max_discharge_w)
        facts = SiteFacts(
            grid_connection_w=self.grid_connection_w,
            max_charge_w=max_charge_w,
            max_discharge_w=max_discharge_w,
            pv_peak_w=self.pv_peak_w,
            battery_nominal_v=self.battery_nominal_voltage_v,
            battery_max_current_a=self.battery_max_current_a or max(1.5 * rating / self.battery_nominal_voltage_v, 10.0),
            margin=self.margin_pct / 100.0,
        )
        return site_windows(facts, {q: Window(lo, hi) for q, (lo, hi) in self.windows.items()})

    def checks(self) -> CrossChecks:
        return CrossChecks(persist_s=self.persist_s, enabled=frozenset(self.cross_checks))
