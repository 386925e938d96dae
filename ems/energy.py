"""Energy totals integrated from power readings (for Prometheus counters and Home Assistant's Energy dashboard).

Pure bookkeeping, no clock: the readings part feeds it every accepted grid and ESS power reading
with its monotonic receive time. Each reading's power holds until the next one (a meter reports
the mean since its last poll as the latest value): energy += previous power x dt, split by sign
(DESIGN §2: grid + import, ESS + discharge). A gap longer than `max_gap_s` (a dead link) adds
nothing rather than guessing. The totals start at 0 with the process: Prometheus and Home
Assistant (`total_increasing`) both treat a lower value as a counter reset.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ems.model import Quantity, Snapshot

__all__ = ["ENERGY_FIELDS", "EnergyTotals", "site_energy_wh"]

_WH_PER_WS = 1.0 / 3600.0

# quantity -> (total for + power, total for - power), Wh
_SPLIT: Mapping[Quantity, tuple[str, str]] = MappingProxyType(
    {
        Quantity.GRID_POWER_W: ("grid_import_wh", "grid_export_wh"),
        Quantity.ESS_POWER_W: ("battery_discharge_wh", "battery_charge_wh"),
    }
)
ENERGY_FIELDS: tuple[str, ...] = ("grid_import_wh", "grid_export_wh", "battery_charge_wh", "battery_discharge_wh")


@dataclass(slots=True)
class EnergyTotals:
    """Not thread-safe on its own: the owner (ems.context.readings) calls it under its lock."""

    max_gap_s: float = 10.0
    _last: dict[Quantity, tuple[float, float]] = field(default_factory=dict)  # quantity -> (power W, at_s)
    _wh: dict[str, float] = field(default_factory=lambda: dict.fromkeys(ENERGY_FIELDS, 0.0))

    def add(self, q: Quantity, power_w: float, at_s: float) -> None:
        split = _SPLIT.get(q)
        if split is None:
            return
        prev = self._last.get(q)
        self._last[q] = (power_w, at_s)
        if prev is None:
            return
        p_w, t_s = prev
        dt_s = at_s - t_s
        if not 0.0 < dt_s <= self.max_gap_s:
            return
        key = split[0] if p_w >= 0 else split[1]
        self._wh[key] += abs(p_w) * dt_s * _WH_PER_WS

    def totals(self) -> Mapping[str, float]:
        """Wh per field of ENERGY_FIELDS, each only ever growing."""
        return MappingProxyType(dict(self._wh))


_METER_ENERGY = {"grid_import_wh": Quantity.GRID_IMPORT_WH, "grid_export_wh": Quantity.GRID_EXPORT_WH}


def site_energy_wh(snap: Snapshot) -> dict[str, float]:
    """The totals a consumer shows, Wh: the meter's own import/export registers when it has them
    (they survive restarts), else what the EMS integrated since start."""
    out = {k: float(v) for k, v in snap.energy.items()}
    for key, q in _METER_ENERGY.items():
        r = snap.reading(q)
        if r is not None and math.isfinite(r.value):
            out[key] = r.value
    return out
