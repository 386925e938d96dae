"""A generated day profile the project's benchmarks do not tune on (a held-out household and sky).

    synth_day(seed) -> Profile

Deterministic for a seed. Unlike the shared profiles it is made from parts: a clear-sky PV bell
times a cloud transmissivity with sharp cloud edges (5-40 s ramps, a short cloud-enhancement
overshoot after each), and a household of a base load, a cycling fridge, a heat pump that ramps,
kettle/oven/washing-machine heater events, and white flicker of a different size (std 20 W).
Names `heldout-<seed>` are understood by `load_named()`.
"""

from __future__ import annotations

import math
import random

from simulators.profile import Profile, load_profile

__all__ = ["load_named", "synth_day"]

DAY_S = 86_400


def _pv(rng: random.Random) -> list[float]:
    peak_w, rise_s, set_s = 4600.0, 6.5 * 3600, 19.8 * 3600
    clear = [peak_w * math.sin(math.pi * (t - rise_s) / (set_s - rise_s)) ** 1.3 if rise_s < t < set_s else 0.0 for t in range(DAY_S)]
    trans = [1.0] * DAY_S
    t = int(rise_s)
    while t < set_s:
        t += int(rng.expovariate(1.0 / 420.0)) + 20  # gap between clouds, mean ~7 min
        length = int(rng.uniform(20, 480))
        depth = rng.uniform(0.2, 0.7)
        edge = int(rng.uniform(5, 40))
        for k in range(length + 2 * edge):
            i = t + k
            if i >= DAY_S:
                break
            if k < edge:
                f = 1.0 - (1.0 - depth) * k / edge
            elif k < edge + length:
                f = depth
            else:
                f = depth + (1.0 - depth) * (k - edge - length) / edge
            trans[i] = min(trans[i], f)
        after = t + length + 2 * edge
        for k in range(int(rng.uniform(10, 60))):  # enhancement by the cloud's bright edge
            if after + k < DAY_S and trans[after + k] >= 1.0:
                trans[after + k] = 1.12
        t = after
    return [max(0.0, c * f + rng.gauss(0.0, 8.0) * (c > 0)) for c, f in zip(clear, trans, strict=True)]


def _load(rng: random.Random) -> list[float]:
    load = [320.0 + 60.0 * math.sin(2 * math.pi * (t / DAY_S - 0.3)) for t in range(DAY_S)]

    def add(start: int, length: int, w: float, *, ramp_s: int = 0) -> None:
        for k in range(length):
            i = start + k
            if 0 <= i < DAY_S:
                scale = min(1.0, (k + 1) / ramp_s, (length - k) / ramp_s) if ramp_s else 1.0
                load[i] += w * scale

    t = 0
    while t < DAY_S:  # fridge: 110 W, ~12 min on, ~25 min off
        on = int(rng.uniform(600, 840))
        add(t, on, 110.0)
        t += on + int(rng.uniform(1300, 1700))
    for start_h in (6.2, 12.5, 17.8, 21.0):  # heat pump runs with soft start
        add(int(start_h * 3600 + rng.uniform(-900, 900)), int(rng.uniform(1800, 3600)), rng.uniform(1200, 1900), ramp_s=90)
    for _ in range(9):  # kettle
        add(int(rng.uniform(6.0, 22.5) * 3600), int(rng.uniform(120, 240)), 2100.0)
    oven = int(rng.uniform(17.5, 18.5) * 3600)
    for k in range(0, 2700, 90):  # oven thermostat cycling
        add(oven + k, int(rng.uniform(40, 70)), 2400.0)
    wash = int(rng.uniform(9.5, 11.0) * 3600)
    add(wash, 900, 2000.0)  # washing-machine heater
    for k in range(0, 3000, 60):  # then the motor
        add(wash + 900 + k, 40, 350.0)
    return [max(0.0, w + rng.gauss(0.0, 20.0)) for w in load]


def synth_day(seed: int = 7) -> Profile:
    rng = random.Random(seed)
    pv = _pv(rng)
    load = _load(rng)
    return Profile([round(w, 1) for w in load], [round(w, 1) for w in pv], name=f"heldout-{seed}")


def load_named(name: str) -> Profile:
    """A shipped profile or a path (`load_profile`), or `heldout-<seed>` (generated)."""
    if name.startswith("heldout-") and name.removeprefix("heldout-").isdigit():
        return synth_day(int(name.removeprefix("heldout-")))
    return load_profile(name)
