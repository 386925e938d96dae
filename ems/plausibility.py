"""Plausible readings only (DESIGN.md §1): windows derived from the site, and cross-checks.

A reading outside its quantity's window is no reading (ems/context/readings.py refuses it, counts
it and logs the episode), so a required source that only sends nonsense goes stale and FAULTs. A
window comes from the site's facts (grid connection, inverter rating, pack voltage, BMS current
rating, PV peak), not from the register's type range: a meter that reads 150 kW on a 43 kW
connection is broken, whatever its float32 can hold.

Cross-checks relate readings of different sources where the physics allows; one that stays
violated for `persist_s` is a FAULT cause `implausible:<check>`:
- `load`: load = grid + pv + ess can not be negative beyond the tolerance (needs a PV reading);
- `bms_power`: the BMS's V x I and the inverter's AC power must agree (within efficiency and
  tolerance) once both are steady;
- `bms_voltage`: the pack voltage lies within the BMS's own DVL .. CVL, plus a margin.
Everything here is pure (STYLE S2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ems.model import Quantity

__all__ = ["CrossChecks", "SiteFacts", "Window", "cross_check", "site_windows"]

Q = Quantity


@dataclass(frozen=True, slots=True)
class Window:
    lo: float
    hi: float

    def holds(self, value: float) -> bool:
        return self.lo <= value <= self.hi

    def describe(self) -> str:
        return f"{self.lo:g}..{self.hi:g}"


@dataclass(frozen=True, slots=True)
class SiteFacts:
    """What the config says about the site (config/plausibility.py builds it)."""

    grid_connection_w: float  # what the main fuse lets through (all phases)
    max_charge_w: float  # inverter rating
    max_discharge_w: float
    pv_peak_w: float | None  # installed PV; None: unknown
    battery_nominal_v: float
    battery_max_current_a: float  # the BMS's current rating
    margin: float = 0.2  # headroom on every site-derived bound (0.2 = 20 %)


def site_windows(f: SiteFacts, overrides: Mapping[Quantity, Window] | None = None) -> Mapping[Quantity, Window]:
    m = 1.0 + f.margin
    grid = f.grid_connection_w * m
    rating = max(f.max_charge_w, f.max_discharge_w)
    pv_hi = (f.pv_peak_w if f.pv_peak_w is not None else grid + rating) * m
    i_max = f.battery_max_current_a * 2.0 * m  # peaks above the continuous rating are real
    v = f.battery_nominal_v
    w: dict[Quantity, Window] = {
        Q.GRID_POWER_W: Window(-grid, grid),
        Q.PV_POWER_W: Window(-0.02 * pv_hi - 50.0, pv_hi),  # a PV meter reads a little below 0 at night, never -5 kW
        Q.ESS_POWER_W: Window(-f.max_charge_w * 1.5 * m - 500.0, f.max_discharge_w * 1.5 * m + 500.0),
        Q.SOC_PCT: Window(0.0, 100.0),
        Q.SOH_PCT: Window(0.0, 100.0),
        Q.BMS_VOLTAGE_V: Window(0.6 * v, 1.4 * v),
        Q.BMS_CVL_V: Window(0.6 * v, 1.4 * v),
        Q.BMS_DVL_V: Window(0.6 * v, 1.4 * v),
        Q.BMS_CURRENT_A: Window(-i_max, i_max),
        Q.BMS_CCL_A: Window(0.0, i_max),
        Q.BMS_DCL_A: Window(0.0, i_max),
        Q.BMS_TEMPERATURE_DEGC: Window(-40.0, 100.0),
        Q.BMS_CHARGE_ENABLE: Window(0.0, 1.0),
        Q.BMS_DISCHARGE_ENABLE: Window(0.0, 1.0),
        Q.BMS_FORCE_CHARGE: Window(0.0, 1.0),
        Q.ESS_MAX_CHARGE_W: Window(0.0, rating * 3.0),
        Q.ESS_MAX_DISCHARGE_W: Window(0.0, rating * 3.0),
        Q.GRID_VOLTAGE_V: Window(0.0, 300.0),  # phase to neutral; 0 when the grid is down
        Q.GRID_FREQUENCY_HZ: Window(40.0, 70.0),
        Q.GRID_IMPORT_WH: Window(0.0, math.inf),
        Q.GRID_EXPORT_WH: Window(0.0, math.inf),
        Q.ESS_STATUS: Window(0.0, 65535.0),
    }
    w.update(overrides or {})
    return MappingProxyType(w)


@dataclass(frozen=True, slots=True)
class CrossChecks:
    persist_s: float = 5.0  # a violation counts once it lasts this long (the inverter moves, readings differ in time)
    load_tolerance_w: float = 300.0  # load may read this far below 0 (timing, meter classes)
    bms_power_tolerance_w: float = 500.0  # |V x I + ess| allowed beyond bms_power_tolerance_share of |ess|
    bms_power_tolerance_share: float = 0.25
    voltage_margin_share: float = 0.05  # of the pack's CVL: how far outside DVL..CVL it may read
    # bms_power is off by default: on a hybrid inverter with DC-coupled PV the battery's DC power and
    # the inverter's AC power differ by the PV power, so the check needs a site where they match
    enabled: frozenset[str] = field(default_factory=lambda: frozenset({"load", "bms_voltage"}))


def cross_check(v: Mapping[Quantity, float], c: CrossChecks) -> tuple[str, ...]:
    """The checks violated by these fresh values (a missing value skips the checks that need it)."""
    out: list[str] = []
    grid, pv, ess = v.get(Q.GRID_POWER_W), v.get(Q.PV_POWER_W), v.get(Q.ESS_POWER_W)
    # only with a PV reading: without one, an export is PV the EMS does not see, not a negative load
    if "load" in c.enabled and grid is not None and ess is not None and pv is not None and grid + pv + ess < -c.load_tolerance_w:
        out.append("load")
    volt, amp = v.get(Q.BMS_VOLTAGE_V), v.get(Q.BMS_CURRENT_A)
    if "bms_power" in c.enabled and volt is not None and amp is not None and ess is not None:
        dc_w = volt * amp  # + charge; the inverter's AC power is + discharge: steady, dc ~ -ac
        if abs(dc_w + ess) > c.bms_power_tolerance_w + c.bms_power_tolerance_share * abs(ess):
            out.append("bms_power")
    cvl, dvl = v.get(Q.BMS_CVL_V), v.get(Q.BMS_DVL_V)
    if "bms_voltage" in c.enabled and volt is not None and cvl is not None:
        margin = c.voltage_margin_share * cvl
        low = (dvl if dvl is not None else 0.0) - margin
        if not low <= volt <= cvl + margin:
            out.append("bms_voltage")
    return tuple(out)
