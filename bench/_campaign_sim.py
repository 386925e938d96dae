"""`python -m simulators` for the fault campaign (bench_faults), with one more rehearsal command.

    python -m bench._campaign_sim --config FILE [simulators options]

`override <device> <point> <value>` serves `value` (SI) for that point of ess, meter or pv from now
on, whatever the plant says; `override <device> off` ends it. The campaign uses it to feed the EMS
implausible readings per source. Everything else is `python -m simulators` unchanged.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from simulators import __main__ as sim_main
from simulators import site

_original_refresh = site.Simulator._refresh_images
_original_command = site.Simulator.command


def _overrides(sim: Any) -> dict[str, dict[str, float]]:
    if not hasattr(sim, "_bench_overrides"):
        sim._bench_overrides = {}
    ov: dict[str, dict[str, float]] = sim._bench_overrides
    return ov


def _refresh(self: site.Simulator) -> None:
    _original_refresh(self)
    for device, values in _overrides(self).items():
        self._set(device, dict(values))


async def _command(self: site.Simulator, line: str) -> str:
    words = line.strip().split()
    if words[:1] != ["override"]:
        return await _original_command(self, line)
    if len(words) == 3 and words[2] == "off" and words[1] in self.devices:
        _overrides(self).pop(words[1], None)
        return f"ok override {words[1]} off"
    if len(words) == 4 and words[1] in self.devices:
        value = float(words[3])
        if not math.isfinite(value):
            return "error: override value must be finite"
        _overrides(self).setdefault(words[1], {})[words[2]] = value
        self._refresh_images()
        return f"ok override {words[1]} {words[2]}={value:g}"
    return "error: override <ess|meter|pv> <point> <value> | override <device> off"


def run() -> int:
    site.Simulator._refresh_images = _refresh  # type: ignore[method-assign]
    site.Simulator.command = _command  # type: ignore[method-assign]
    return sim_main.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(run())
