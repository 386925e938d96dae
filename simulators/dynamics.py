"""Named inverter dynamics for the replay (`python -m simulators.replay --device NAME`).

One table, name -> how the inverter answers a set-point: first-order time constant, dead time
(command to first response), ramp limit and set-point resolution. The device-profile work fills
it in from measurements of real devices (`source` says where a row comes from); until then it
holds generic presets that span what the benchmark matrix covers. Explicit plant options on the
command line (`--inverter-tau`, `--dead-time`, `--ramp-w-per-s`, `--quantisation`) override a row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["DYNAMICS", "Dynamics", "dynamics"]


@dataclass(frozen=True, slots=True)
class Dynamics:
    inverter_tau_s: float  # first-order response time constant
    dead_time_s: float = 0.0  # from the written set-point to the first response
    ramp_w_per_s: float = 0.0  # fastest change of the power reference (0 = none)
    quantisation_w: float = 10.0  # set-point resolution
    source: str = "generic preset"


DYNAMICS: Mapping[str, Dynamics] = MappingProxyType(
    {
        "generic-fast": Dynamics(inverter_tau_s=0.1, source="generic: answers within ~100 ms"),
        "generic-typical": Dynamics(inverter_tau_s=1.0, source="generic: the replay's default inverter"),
        "generic-slow": Dynamics(inverter_tau_s=3.0, source="generic: takes seconds"),
        "generic-dead-time": Dynamics(inverter_tau_s=0.5, dead_time_s=1.0, source="generic: 1 s from write to first response"),
        "generic-ramped": Dynamics(inverter_tau_s=0.1, ramp_w_per_s=1000.0, source="generic: ramps at 1 kW/s"),
        "generic-coarse": Dynamics(inverter_tau_s=1.0, quantisation_w=50.0, source="generic: 50 W set-point steps"),
    }
)


def dynamics(name: str) -> Dynamics:
    """The named row; ValueError naming the known rows if there is none."""
    try:
        return DYNAMICS[name]
    except KeyError:
        raise ValueError(f"unknown device dynamics {name!r} (known: {', '.join(sorted(DYNAMICS))})") from None
