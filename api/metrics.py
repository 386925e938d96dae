"""Prometheus metrics (`/metrics`): one CollectorRegistry per app, read from a context snapshot
at scrape time (no background updates, no global registry). Names: docs/api.md "Metrics".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from api.sources import OutboxFigures, SourceUnavailable
from config.control import ControlConfig
from ems.clock import Clock
from ems.context import Counters
from ems.model import Mode, Snapshot, State

__all__ = ["ApiMetrics"]


def _finite(v: float) -> bool:
    return math.isfinite(v)


class _SnapshotCollector(Collector):
    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        counters: Counters,
        control: ControlConfig,
        clock: Clock,
        outbox: Callable[[], OutboxFigures] | None,
    ) -> None:
        self._snapshot = snapshot
        self._counters = counters
        self._control = control
        self._clock = clock
        self._outbox = outbox

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
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
        value = GaugeMetricFamily(
            "ems_measurement",
            "latest value per quantity, SI unit in the quantity name (grid + import, ess + discharge)",
            labels=["quantity"],
        )
        age = GaugeMetricFamily("ems_measurement_age_seconds", "seconds since the latest value was received", labels=["quantity"])
        for q, r in sorted(snap.measurements.items()):
            if _finite(r.value):
                value.add_metric([q.value], r.value)
            age.add_metric([q.value], now_s - r.at_s)
        yield value
        yield age
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
        bound = GaugeMetricFamily("ems_limit_bound", "1 for each limit that bound the last command", labels=["limit"])
        for name in snap.limits:
            bound.add_metric([name], 1.0)
        yield bound
        held = GaugeMetricFamily(
            "ems_command_held", "1 for the reason the law holds 0 W, or the gate that keeps 0 W written", labels=["reason"]
        )
        if snap.control is not None:
            for reason in (snap.control.hold, snap.control.gate):
                if reason:
                    held.add_metric([reason], 1.0)
        yield held
        faults = GaugeMetricFamily("ems_fault_active", "1 for each active FAULT cause", labels=["cause"])
        for cause in snap.fault_causes:
            faults.add_metric([cause], 1.0)
        yield faults
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
    """The app's registry: snapshot metrics plus request counters and latencies."""

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        counters: Counters,
        control: ControlConfig,
        clock: Clock,
        outbox: Callable[[], OutboxFigures] | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_SnapshotCollector(snapshot, counters, control, clock, outbox))
        self.requests = Counter("ems_api_requests", "HTTP requests served", ["method", "endpoint", "status"], registry=self.registry)
        self.latency = Histogram(
            "ems_api_request_duration_seconds",
            "time to serve a request",
            ["endpoint"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=self.registry,
        )
