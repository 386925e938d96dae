"""Plant model of the whole site: household load + PV (from a profile), battery inverter, battery, grid meter.

Signs follow DESIGN §2: grid + import; ESS power and set-points + discharge; battery current + charge.
`grid = load - pv - ess`.

The model is stepped by its owner: in real time by `python -m simulators`, in simulated time by tests
and replay. `step()` does only float arithmetic (no allocation beyond floats), so replay can run
thousands of times faster than real time.

Physics, per step of `dt_s`:
- inverter: a written set-point takes effect `dead_time_s` later (a FIFO of set-points; the plant
  splits its step at the instant one takes effect); the target is the active set-point clamped to
  the inverter rating, the BMS-like current limits x battery voltage, and the SOC ends (no
  discharge when empty, no charge when full); optional quantisation (`quantisation_w`); an optional
  ramp (`ramp_w_per_s`) moves the inverter's internal reference toward the target at most that
  fast; the AC power follows the reference with a first-order lag `inverter_tau_s`;
- watchdog: if `watchdog_s` > 0 and nobody calls `feed_watchdog()` for longer than that, the inverter
  trips: it forgets its set-point and ramps to 0 W by itself; the next feed clears the trip;
- battery: SOC integrates DC energy (charge: AC x charge_efficiency; discharge: AC / discharge_efficiency),
  clamped to [0, 100] %; voltage = OCV(SOC) + current x internal resistance; temperature is a slow
  first-order towards ambient plus a heating term proportional to |power|;
- meter: reports `load - pv - ess` (+ Gaussian noise) refreshed every `meter_period_s`; between
  refreshes it holds the last reading, as a real meter polled faster than it updates does.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import deque
from dataclasses import dataclass, field

from simulators.profile import Profile

__all__ = ["DEFAULT_OCV_CURVE", "Plant", "PlantParams"]

# Open-circuit voltage of a 16S LFP pack (51.2 V nominal): (SOC %, pack V), SOC increasing.
DEFAULT_OCV_CURVE: tuple[tuple[float, float], ...] = (
    (0.0, 44.8),
    (5.0, 49.6),
    (10.0, 50.9),
    (20.0, 51.6),
    (40.0, 52.1),
    (60.0, 52.4),
    (80.0, 52.8),
    (90.0, 53.2),
    (95.0, 53.6),
    (100.0, 55.2),
)


@dataclass(frozen=True, slots=True)
class PlantParams:
    """Physical parameters of the simulated site. Every field has a sensible default."""

    capacity_wh: float = 10_000.0  # usable battery energy, DC side
    soc_start_pct: float = 50.0
    charge_efficiency: float = 0.95  # AC -> DC, 0..1
    discharge_efficiency: float = 0.95  # DC -> AC, 0..1
    ocv_curve: tuple[tuple[float, float], ...] = DEFAULT_OCV_CURVE  # (soc_pct, pack_v), soc increasing
    nominal_voltage_v: float = 51.2
    internal_resistance_ohm: float = 0.01
    max_charge_current_a: float = 100.0  # BMS-like charge current limit (CCL) away from full
    max_discharge_current_a: float = 100.0  # BMS-like discharge current limit (DCL) away from empty
    charge_taper_start_pct: float = 90.0  # CCL falls linearly to 0 A between here and 100 %
    discharge_taper_end_pct: float = 5.0  # DCL falls linearly to 0 A between here and 0 %
    inverter_max_charge_w: float = 5_000.0
    inverter_max_discharge_w: float = 5_000.0
    inverter_tau_s: float = 1.0  # first-order response time constant; 0 = instant
    quantisation_w: float = 0.0  # inverter set-point resolution; 0 = none
    dead_time_s: float = 0.0  # from a written set-point to the inverter's first response; 0 = none
    ramp_w_per_s: float = 0.0  # fastest change of the inverter's reference, W/s; 0 = no ramp limit
    meter_period_s: float = 1.0  # meter refresh period
    meter_noise_w: float = 0.0  # standard deviation of the meter's Gaussian noise
    watchdog_s: float = 0.0  # heartbeat timeout; 0 = no watchdog
    ambient_temperature_degc: float = 25.0
    thermal_tau_s: float = 1800.0
    heating_degc_per_kw: float = 2.0  # steady-state rise above ambient per kW of |ess power|
    seed: int = 0
    _ocv_table: tuple[float, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        checks = (
            (self.capacity_wh > 0, "capacity_wh must be > 0"),
            (0.0 <= self.soc_start_pct <= 100.0, "soc_start_pct must be within 0..100"),
            (0.0 < self.charge_efficiency <= 1.0, "charge_efficiency must be within (0, 1]"),
            (0.0 < self.discharge_efficiency <= 1.0, "discharge_efficiency must be within (0, 1]"),
            (len(self.ocv_curve) >= 2, "ocv_curve needs at least two points"),
            (all(a[0] < b[0] for a, b in itertools.pairwise(self.ocv_curve)), "ocv_curve SOC must increase"),
            (self.inverter_max_charge_w >= 0 and self.inverter_max_discharge_w >= 0, "inverter ratings must be >= 0"),
            (self.max_charge_current_a >= 0 and self.max_discharge_current_a >= 0, "current limits must be >= 0"),
            (self.inverter_tau_s >= 0, "inverter_tau_s must be >= 0"),
            (self.quantisation_w >= 0, "quantisation_w must be >= 0"),
            (self.dead_time_s >= 0, "dead_time_s must be >= 0"),
            (self.ramp_w_per_s >= 0, "ramp_w_per_s must be >= 0"),
            (self.meter_period_s > 0, "meter_period_s must be > 0"),
            (self.meter_noise_w >= 0, "meter_noise_w must be >= 0"),
            (self.watchdog_s >= 0, "watchdog_s must be >= 0"),
            (0.0 <= self.discharge_taper_end_pct < self.charge_taper_start_pct <= 100.0, "tapers must satisfy 0 <= end < start <= 100"),
            (self.thermal_tau_s > 0, "thermal_tau_s must be > 0"),
        )
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        # OCV sampled at every whole percent: step() interpolates between two table entries.
        object.__setattr__(self, "_ocv_table", (*(_interp(self.ocv_curve, float(s)) for s in range(101)), _interp(self.ocv_curve, 100.0)))

    def ocv_v(self, soc_pct: float) -> float:
        """Open-circuit pack voltage at `soc_pct`."""
        s = min(max(soc_pct, 0.0), 100.0)
        i = int(s)
        lo = self._ocv_table[i]
        return lo + (self._ocv_table[i + 1] - lo) * (s - i)


def _interp(curve: tuple[tuple[float, float], ...], x: float) -> float:
    if x <= curve[0][0]:
        return curve[0][1]
    for (x0, y0), (x1, y1) in itertools.pairwise(curve):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return curve[-1][1]


class Plant:
    """The simulated site. Not thread-safe: one owner steps it (the simulator guards it with a lock)."""

    def __init__(self, params: PlantParams, profile: Profile, *, start_t_s: float = 0.0) -> None:
        self.params = params
        self.profile = profile
        self._prof_load, self._prof_pv = profile.series()
        self._prof_n = len(self._prof_load)
        self._start_t_s = float(start_t_s)
        self._rng = random.Random(params.seed)
        self.load_offset_w = 0.0  # added to the profile's load (a load step for tests/rehearsals), W
        self._t_s = 0.0
        self._soc_pct = params.soc_start_pct
        self._setpoint_w = 0.0  # as last written
        self._active_w = 0.0  # the set-point the inverter acts on (written dead_time_s ago)
        self._pending: deque[tuple[float, float]] = deque()  # (takes effect at t_s, set-point W), oldest first
        self._ref_w = 0.0  # the inverter's ramped internal reference
        self._ess_w = 0.0
        self._last_feed_t_s = 0.0
        self._tripped = False
        self._load_w, self._pv_w = profile.at(self._start_t_s)
        self._voltage_v = params.ocv_v(self._soc_pct)
        self._current_a = 0.0
        self._temperature_degc = params.ambient_temperature_degc
        self._ccl_a, self._dcl_a = self._current_limits(self._soc_pct)
        self._lag_dt_s = -1.0
        self._lag_k = 1.0
        self._thermal_dt_s = -1.0
        self._thermal_k = 0.0
        self._grid_import_wh = 0.0
        self._grid_export_wh = 0.0
        self._ess_discharged_wh = 0.0
        self._meter_w = self._meter_sample()
        self._next_meter_t_s = params.meter_period_s

    # ---- inputs -------------------------------------------------------------------------------
    def set_setpoint(self, w: float) -> None:
        """New inverter set-point (W, + discharge). Clamped by the physics, stored as written;
        the inverter acts on it `dead_time_s` from now."""
        w = float(w)
        self._setpoint_w = w
        if self.params.dead_time_s > 0.0:
            self._pending.append((self._t_s + self.params.dead_time_s, w))
        else:
            self._active_w = w

    def feed_watchdog(self) -> None:
        """Heartbeat from the EMS: restarts the watchdog timer and clears a trip."""
        self._last_feed_t_s = self._t_s
        self._tripped = False

    # ---- physics ------------------------------------------------------------------------------
    def step(self, dt_s: float) -> None:
        """Advance the plant by `dt_s` seconds (> 0)."""
        p = self.params
        t0 = self._t_s
        t = t0 + dt_s
        self._t_s = t
        pt = self._start_t_s + t
        i = int(pt) % self._prof_n
        load = self._prof_load[i] + self.load_offset_w
        self._load_w = load if load > 0.0 else 0.0
        self._pv_w = self._prof_pv[i]

        if p.watchdog_s > 0.0 and not self._tripped and t - self._last_feed_t_s > p.watchdog_s:
            self._tripped = True
            self._setpoint_w = 0.0
            self._active_w = 0.0
            self._pending.clear()

        pending = self._pending
        if pending:  # dead time: set-points that take effect inside this step split it
            while pending and pending[0][0] <= t0 + 1e-9:
                self._active_w = pending.popleft()[1]
            while pending and pending[0][0] < t - 1e-9:
                at_s, w = pending.popleft()
                self._inverter(at_s - t0)
                t0 = at_s
                self._active_w = w
            ess = self._inverter(t - t0)
        else:
            ess = self._inverter(dt_s)
        soc = self._soc_pct

        # Battery: DC energy this step, SOC ends stop the flow.
        if ess > 0.0:
            dc_wh = ess * dt_s / 3600.0 / p.discharge_efficiency
            soc -= dc_wh * 100.0 / p.capacity_wh
            if soc <= 0.0:
                soc = 0.0
                ess = 0.0
            dc_w = ess / p.discharge_efficiency
            self._ess_discharged_wh += ess * dt_s / 3600.0
        elif ess < 0.0:
            dc_wh = -ess * dt_s / 3600.0 * p.charge_efficiency
            soc += dc_wh * 100.0 / p.capacity_wh
            if soc >= 100.0:
                soc = 100.0
                ess = 0.0
            dc_w = ess * p.charge_efficiency
        else:
            dc_w = 0.0
        self._ess_w = ess
        self._soc_pct = soc
        table = p._ocv_table
        k = int(soc)
        ocv = table[k] + (table[k + 1] - table[k]) * (soc - k)
        current = -dc_w / ocv  # + charge
        self._current_a = current
        self._voltage_v = ocv + current * p.internal_resistance_ohm
        if p.discharge_taper_end_pct <= soc <= p.charge_taper_start_pct:
            self._ccl_a = p.max_charge_current_a
            self._dcl_a = p.max_discharge_current_a
        else:
            self._ccl_a, self._dcl_a = self._current_limits(soc)

        if dt_s != self._thermal_dt_s:
            self._thermal_dt_s = dt_s
            self._thermal_k = 1.0 - math.exp(-dt_s / p.thermal_tau_s)
        goal_degc = p.ambient_temperature_degc + p.heating_degc_per_kw * abs(ess) / 1000.0
        self._temperature_degc += (goal_degc - self._temperature_degc) * self._thermal_k

        grid = self._load_w - self._pv_w - ess
        if grid > 0.0:
            self._grid_import_wh += grid * dt_s / 3600.0
        else:
            self._grid_export_wh -= grid * dt_s / 3600.0
        if t >= self._next_meter_t_s - 1e-9:
            self._meter_w = self._meter_sample()
            nxt = self._next_meter_t_s + p.meter_period_s
            self._next_meter_t_s = nxt if nxt > t else t + p.meter_period_s

    def _inverter(self, dt_s: float) -> float:
        """Move the inverter's AC power on by `dt_s` toward its active set-point; returns (and keeps) it."""
        p = self.params
        target = 0.0 if self._tripped else self._active_w
        soc = self._soc_pct
        v = self._voltage_v
        if target > 0.0:
            limit = min(p.inverter_max_discharge_w, self._dcl_a * v * p.discharge_efficiency)
            if soc <= 0.0:
                limit = 0.0
            if target > limit:
                target = limit
        elif target < 0.0:
            limit = min(p.inverter_max_charge_w, self._ccl_a * v / p.charge_efficiency)
            if soc >= 100.0:
                limit = 0.0
            if target < -limit:
                target = -limit
        q = p.quantisation_w
        if q > 0.0:
            target = round(target / q) * q
        r = p.ramp_w_per_s
        if r > 0.0:
            move = r * dt_s
            ref = self._ref_w
            target = target if abs(target - ref) <= move else (ref + move if target > ref else ref - move)
            self._ref_w = target
        if p.inverter_tau_s > 0.0:
            if dt_s != self._lag_dt_s:
                self._lag_dt_s = dt_s
                self._lag_k = 1.0 - math.exp(-dt_s / p.inverter_tau_s)
            ess = self._ess_w + (target - self._ess_w) * self._lag_k
        else:
            ess = target
        self._ess_w = ess
        return ess

    def _meter_sample(self) -> float:
        true_w = self._load_w - self._pv_w - self._ess_w
        if self.params.meter_noise_w > 0.0:
            return true_w + self._rng.gauss(0.0, self.params.meter_noise_w)
        return true_w

    def _current_limits(self, soc: float) -> tuple[float, float]:
        p = self.params
        ccl = p.max_charge_current_a
        if soc > p.charge_taper_start_pct:
            ccl *= max(0.0, (100.0 - soc) / (100.0 - p.charge_taper_start_pct))
        dcl = p.max_discharge_current_a
        if soc < p.discharge_taper_end_pct:
            dcl *= max(0.0, soc / p.discharge_taper_end_pct) if p.discharge_taper_end_pct > 0 else 1.0
        return ccl, dcl

    # ---- read-only state ------------------------------------------------------------------------
    @property
    def t_s(self) -> float:
        """Seconds since the plant started (simulated time)."""
        return self._t_s

    @property
    def profile_t_s(self) -> float:
        """Time of day in the profile (start_t_s + t_s)."""
        return self._start_t_s + self._t_s

    @property
    def load_w(self) -> float:
        return self._load_w

    @property
    def pv_w(self) -> float:
        return self._pv_w

    @property
    def ess_power_w(self) -> float:
        """Actual AC power of the battery inverter, + discharge."""
        return self._ess_w

    @property
    def grid_power_w(self) -> float:
        """What the meter currently reports (refreshed every meter_period_s, with noise), + import."""
        return self._meter_w

    @property
    def grid_true_w(self) -> float:
        """The exact grid power right now (load - pv - ess), + import: for KPIs, not what the EMS sees."""
        return self._load_w - self._pv_w - self._ess_w

    @property
    def soc_pct(self) -> float:
        return self._soc_pct

    @property
    def battery_voltage_v(self) -> float:
        return self._voltage_v

    @property
    def battery_current_a(self) -> float:
        """DC battery current, + charge."""
        return self._current_a

    @property
    def battery_temperature_degc(self) -> float:
        return self._temperature_degc

    @property
    def charge_current_limit_a(self) -> float:
        return self._ccl_a

    @property
    def discharge_current_limit_a(self) -> float:
        return self._dcl_a

    @property
    def setpoint_w(self) -> float:
        """The set-point as last written (0 after a watchdog trip)."""
        return self._setpoint_w

    @property
    def watchdog_tripped(self) -> bool:
        return self._tripped

    @property
    def grid_import_wh(self) -> float:
        return self._grid_import_wh

    @property
    def grid_export_wh(self) -> float:
        return self._grid_export_wh

    @property
    def ess_discharged_wh(self) -> float:
        """AC energy out of the inverter (discharging)."""
        return self._ess_discharged_wh
