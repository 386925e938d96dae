"""Prometheus metrics (`/metrics`): one CollectorRegistry per app, read from a context snapshot
at scrape time (no background updates, no global registry). Names: docs/api.md "Metrics".

Conventions (https://prometheus.io/docs/practices/naming/): one metric per quantity with its base
unit in the name (`ems_grid_power_watts`, `ems_battery_soc_percent`); energy totals are counters
in joules (`ems_grid_import_joules_total`); alert-friendly 0/1 families exist with 0 when nothing
is active (`ems_fault_active`, `ems_limit_bound`); no `_created` series (the request counter and
histogram are kept here rather than by prometheus_client, which would add them).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from api.sources import OutboxFigures, SourceUnavailable
from api.views import LIMIT_WHY
from config.control import ControlConfig
from ems.clock import Clock
from ems.context import Counters
from ems.energy import site_energy_wh
from ems.model import Mode, Quantity, Snapshot, State

__all__ = ["ENERGY_METRICS", "QUANTITY_METRICS", "ApiMetrics", "RequestStats", "energy_wh"]

Q = Quantity
# quantity -> (metric name, help); a gauge of the latest fresh-or-not value, unit in the name
QUANTITY_METRICS: Mapping[Quantity, tuple[str, str]] = MappingProxyType(
    {
        Q.GRID_POWER_W: ("ems_grid_power_watts", "grid power, + import / - export"),
        Q.PV_POWER_W: ("ems_pv_power_watts", "PV production"),
        Q.ESS_POWER_W: ("ems_battery_power_watts", "battery inverter AC power, + discharge / - charge"),
        Q.SOC_PCT: ("ems_battery_soc_percent", "battery state of charge"),
        Q.SOH_PCT: ("ems_battery_soh_percent", "battery state of health"),
        Q.BMS_VOLTAGE_V: ("ems_battery_voltage_volts", "battery pack voltage (BMS)"),
        Q.BMS_CURRENT_A: ("ems_battery_current_amperes", "battery current (BMS), + charge / - discharge"),
        Q.BMS_TEMPERATURE_DEGC: ("ems_battery_temperature_celsius", "battery temperature (BMS)"),
        Q.BMS_CCL_A: ("ems_battery_charge_current_limit_amperes", "BMS charge current limit (CCL)"),
        Q.BMS_DCL_A: ("ems_battery_discharge_current_limit_amperes", "BMS discharge current limit (DCL)"),
        Q.BMS_CVL_V: ("ems_battery_charge_voltage_limit_volts", "BMS charge voltage limit (CVL)"),
        Q.BMS_DVL_V: ("ems_battery_discharge_voltage_limit_volts", "BMS discharge voltage limit (DVL)"),
        Q.BMS_CHARGE_ENABLE: ("ems_battery_charge_enabled", "1 when the BMS allows charge"),
        Q.BMS_DISCHARGE_ENABLE: ("ems_battery_discharge_enabled", "1 when the BMS allows discharge"),
        Q.BMS_FORCE_CHARGE: ("ems_battery_force_charge_requested", "1 when the BMS requests a force charge"),
        Q.ESS_MAX_CHARGE_W: ("ems_battery_max_charge_watts", "largest charge power the inverter reports"),
        Q.ESS_MAX_DISCHARGE_W: ("ems_battery_max_discharge_watts", "largest discharge power the inverter reports"),
        Q.GRID_VOLTAGE_V: ("ems_grid_voltage_volts", "grid voltage"),
        Q.GRID_FREQUENCY_HZ: ("ems_grid_frequency_hertz", "grid frequency"),
        Q.ESS_STATUS: ("ems_battery_inverter_status_code", "inverter operating state code (SunSpec St)"),
    }
)
_J_PER_WH = 3600.0
# energy total -> (counter name without _total, help); from the meter's own registers when it has them
ENERGY_METRICS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "grid_import_wh": ("ems_grid_import_joules", "energy imported from the grid (meter register, else integrated from grid power)"),
        "grid_export_wh": ("ems_grid_export_joules", "energy exported to the grid (meter register, else integrated from grid power)"),
        "battery_charge_wh": ("ems_battery_charge_joules", "energy into the battery (AC side), integrated from battery power since start"),
        "battery_discharge_wh": (
            "ems_battery_discharge_joules",
            "energy out of the battery (AC side), integrated from battery power since start",
        ),
    }
)
_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


def _finite(v: float) -> bool:
    return math.isfinite(v)


def energy_wh(snap: Snapshot) -> dict[str, float]:
    return site_energy_wh(snap)


class RequestStats:
    """Requests served and their latencies, by label; thread-safe (waitress's worker threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str], int] = {}
        self._hist: dict[str, list[float]] = {}  # endpoint -> per-bucket counts, then +Inf count, then sum

    def observe(self, method: str, endpoint: str, status: str, duration_s: float | None) -> None:
        with self._lock:
            key = (method, endpoint, status)
            self._counts[key] = self._counts.get(key, 0) + 1
            if duration_s is None:
                return
            h = self._hist.setdefault(endpoint, [0.0] * (len(_BUCKETS_S) + 2))
            for i, b in enumerate(_BUCKETS_S):
                if duration_s <= b:
                    h[i] += 1
            h[-2] += 1
            h[-1] += duration_s

    def families(self) -> Iterator[Metric]:
        with self._lock:
            counts = dict(self._counts)
            hist = {k: list(v) for k, v in self._hist.items()}
        c = CounterMetricFamily("ems_api_requests", "HTTP requests served", labels=["method", "endpoint", "status"])
        for (m, e, st), n in sorted(counts.items()):
            c.add_metric([m, e, st], n)
        yield c
        lat = HistogramMetricFamily("ems_api_request_duration_seconds", "time to serve a request", labels=["endpoint"])
        for endpoint, h in sorted(hist.items()):
            buckets = [(f"{b:g}", h[i]) for i, b in enumerate(_BUCKETS_S)] + [("+Inf", h[-2])]
            lat.add_metric([endpoint], buckets, sum_value=h[-1])
        yield lat


class _SnapshotCollector(Collector):
    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        counters: Counters,
        control: ControlConfig,
        clock: Clock,
        outbox: Callable[[], OutboxFigures] | None,
        requests: RequestStats,
    ) -> None:
        self._requests = requests
        self._snapshot = snapshot
        self._counters = counters
        self._control = control
        self._clock = clock
        self._outbox = outbox
        self._lock = threading.Lock()
        # series that exist with 0 before they ever bind / fire: every limit, every required source's staleness
        self._limits_seen: set[str] = set(LIMIT_WHY)
        self._causes_seen: set[str] = {f"stale:{q.value}" for q in control.required_sources}

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        now_s = snap.at_s
        state = GaugeMetricFamily("ems_state", "1 for the current controller state", labels=["state"])
        for s in State:
            state.add_metric([s.value], 1.0 if snap.state is s else 0.0)
        yield state
        mode = GaugeMetricFamily("ems_requested_mode", "1 for the requested run mode", labels=["mode"])
        for m in Mode:
            mode.add_metric([m.value], 1.0 if snap.requested_mode is m else 0.0)
        yield mode
        yield GaugeMetricFamily("ems_state_age_seconds", "seconds in the current state", value=now_s - snap.state_since_s)
        age = GaugeMetricFamily(
            "ems_measurement_age_seconds", "seconds since the latest value of a quantity was received", labels=["quantity"]
        )
        for q, r in sorted(snap.measurements.items()):
            named = QUANTITY_METRICS.get(q)
            if named is not None and _finite(r.value):
                yield GaugeMetricFamily(named[0], named[1], value=r.value)
            age.add_metric([q.value], now_s - r.at_s)
        yield age
        for key, wh in sorted(energy_wh(snap).items()):
            name, doc = ENERGY_METRICS[key]
            yield CounterMetricFamily(name, doc, value=wh * _J_PER_WH)
        flags = (
            ("ems_control_enabled", self._control.enabled),
            ("ems_control_dry_run", self._control.dry_run),
            ("ems_control_live", self._control.live),
        )
        for name, flag in flags:
            yield GaugeMetricFamily(name, f"control flag {name.removeprefix('ems_control_')} (1 = true)", value=1.0 if flag else 0.0)
        if snap.command is not None:
            yield GaugeMetricFamily(
                "ems_setpoint_watts",
                "set-point: every limit applied, before the dry-run/enable gate (+ discharge)",
                value=snap.command.setpoint_w,
            )
            yield GaugeMetricFamily("ems_written_watts", "what goes to the inverter (+ discharge)", value=snap.command.written_w)
            yield GaugeMetricFamily("ems_command_age_seconds", "seconds since the last control cycle", value=now_s - snap.command.at_s)
        bound = GaugeMetricFamily("ems_limit_bound", "1 for each limit that bound the last command, 0 for the others", labels=["limit"])
        with self._lock:
            self._limits_seen.update(snap.limits)
            self._causes_seen.update(snap.fault_causes)
            limits, causes = sorted(self._limits_seen), sorted(self._causes_seen)
        for name in limits:
            bound.add_metric([name], 1.0 if name in snap.limits else 0.0)
        yield bound
        held = GaugeMetricFamily(
            "ems_command_held", "1 for the reason the law holds 0 W, or the gate that keeps 0 W written", labels=["reason"]
        )
        if snap.control is not None:
            for reason in (snap.control.hold, snap.control.gate):
                if reason:
                    held.add_metric([reason], 1.0)
        yield held
        yield from _law_metrics(snap)
        faults = GaugeMetricFamily(
            "ems_fault_active", "1 for each active FAULT cause; 0 for the ones seen since start or always possible", labels=["cause"]
        )
        for cause in causes:
            faults.add_metric([cause], 1.0 if cause in snap.fault_causes else 0.0)
        yield faults
        yield GaugeMetricFamily("ems_faults_active", "number of active FAULT causes (0: none)", value=len(snap.fault_causes))
        yield CounterMetricFamily("ems_control_cycles", "control cycles run", value=snap.cycles)
        yield CounterMetricFamily("ems_control_overruns", "control cycles missed because a cycle overran", value=snap.overruns)
        errors = CounterMetricFamily("ems_device_errors", "failed units of work per device", labels=["device"])
        streak = GaugeMetricFamily("ems_device_error_streak", "consecutive failed units of work per device", labels=["device"])
        ok_age = GaugeMetricFamily("ems_device_last_ok_age_seconds", "seconds since the device's last good unit of work", labels=["device"])
        required = GaugeMetricFamily("ems_device_required", "1 when the device's failure is a FAULT", labels=["device"])
        for d in snap.devices:
            errors.add_metric([d.name], d.errors_total)
            streak.add_metric([d.name], d.error_streak)
            required.add_metric([d.name], 1.0 if d.required else 0.0)
            if d.last_ok_s is not None:
                ok_age.add_metric([d.name], now_s - d.last_ok_s)
        yield errors
        yield streak
        yield ok_age
        yield required
        beat = GaugeMetricFamily("ems_worker_heartbeat_age_seconds", "seconds since the thread's last heartbeat", labels=["worker"])
        for t in snap.threads:
            if t.last_beat_s is not None:
                beat.add_metric([t.name], now_s - t.last_beat_s)
        yield beat
        counters = CounterMetricFamily("ems_events", "named counters the parts keep (queue drops, rejected values, ...)", labels=["name"])
        for name, n in sorted(snap.counters.items()):
            counters.add_metric([name], n)
        yield counters
        yield from self._outbox_metrics()
        yield from self._requests.families()

    def _outbox_metrics(self) -> Iterator[GaugeMetricFamily]:
        if self._outbox is None:
            return
        try:
            ob = self._outbox()
        except SourceUnavailable:
            self._counters.count("api_store_unavailable")
            return
        yield GaugeMetricFamily("ems_outbox_depth", "uplink batches waiting in the outbox", value=ob.depth)
        if ob.oldest_pending_age_s is not None:
            yield GaugeMetricFamily(
                "ems_outbox_oldest_pending_age_seconds", "age of the oldest undelivered batch", value=ob.oldest_pending_age_s
            )
        if ob.last_delivered_ts is not None:
            yield GaugeMetricFamily(
                "ems_uplink_age_seconds",
                "seconds since the last delivered uplink batch",
                value=self._clock.wall().timestamp() - ob.last_delivered_ts,
            )


class ApiMetrics:
    """The app's registry: snapshot metrics plus request counts and latencies."""

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        counters: Counters,
        control: ControlConfig,
        clock: Clock,
        outbox: Callable[[], OutboxFigures] | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = RequestStats()
        self.registry.register(_SnapshotCollector(snapshot, counters, control, clock, outbox, self.requests))


_LAW_GAUGES = (
    ("inverter_dead_time_s", "ems_law_inverter_dead_time_seconds", "the inverter's dead time the control law identified"),
    ("inverter_tau_s", "ems_law_inverter_time_constant_seconds", "the inverter's time constant the control law identified"),
    (
        "inverter_ramp_w_per_s",
        "ems_law_inverter_ramp_watts_per_second",
        "the inverter's ramp limit the control law identified (absent: none)",
    ),
    ("meter_lag_s", "ems_law_meter_lag_seconds", "the meter's lag the control law identified"),
    ("confidence", "ems_law_confidence_ratio", "how far the law trusts its identified plant (0: plain feed-forward, 1: full)"),
)


def _law_metrics(snap: Snapshot) -> Iterator[GaugeMetricFamily]:
    """What the control law believes about the plant (adaptive law: ems/law.py describe)."""
    law = {} if snap.control is None else snap.control.law
    for key, name, doc in _LAW_GAUGES:
        value = law.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            yield GaugeMetricFamily(name, doc, value=float(value))
