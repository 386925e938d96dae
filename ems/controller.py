"""The main control thread (DESIGN.md §1, §3, §5): snapshot -> core.step -> publish, at 1 Hz.

Schedules on absolute monotonic deadlines: no drift; an overrun is counted and logged and the
missed cycles are skipped, never burst. Logs only edges: state changes, fault causes, limit
bindings, overruns, plus a summary line every `summary_interval_s`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from config.control import ControlConfig
from ems.clock import Clock
from ems.context import EMSContext
from ems.core import CoreState, Decision, step
from ems.inputs import Inputs
from ems.model import Command, Quantity, Snapshot, State

__all__ = ["Controller", "CycleReport", "Supervised", "supervise"]

log = structlog.get_logger("ems.controller")


class Supervised(Protocol):
    """A worker thread the controller watches.

    A dead or stalled *critical* worker (one that feeds or drives control: Modbus, CAN) is a FAULT
    cause. A non-critical service (store, uplink, API, MQTT; attribute `critical = False`) is
    reported as degraded — logged on the edge and exposed — but never stops the battery: the
    sources it may feed go stale and fault on their own.
    """

    @property
    def name(self) -> str: ...

    def is_alive(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class CycleReport:
    decision: Decision
    on_time: bool  # the cycle finished before its deadline
    overruns: int  # total so far


def supervise(workers: Sequence[Supervised], snap: Snapshot, stall_s: float) -> tuple[str, ...]:
    """Dead or stalled workers as named causes: `worker_dead:<name>`, `worker_stalled:<name>`."""
    beats = {w.name: w.last_beat_s for w in snap.workers}
    causes = []
    for w in workers:
        if not w.is_alive():
            causes.append(f"worker_dead:{w.name}")
            continue
        beat = beats.get(w.name)
        last = beat if beat is not None else snap.started_at_s
        if snap.at_s - last > stall_s:
            causes.append(f"worker_stalled:{w.name}")
    return tuple(causes)


class Controller:
    def __init__(
        self,
        *,
        ctx: EMSContext,
        cfg: ControlConfig,
        clock: Clock,
        workers: Sequence[Supervised] = (),
        on_cycle: Sequence[Callable[[CycleReport], None]] = (),
    ) -> None:
        self._ctx = ctx
        self._cfg = cfg
        self._clock = clock
        self._critical = tuple(w for w in workers if getattr(w, "critical", True))
        self._auxiliary = tuple(w for w in workers if not getattr(w, "critical", True))
        self._last_degraded: tuple[str, ...] = ()
        self._on_cycle = tuple(on_cycle)
        self._core = CoreState()
        self._seq = 0
        self._overruns = 0
        self._last_reasons: tuple[str, ...] = ()
        self._last_causes: tuple[str, ...] = ()
        self._next_summary_s = clock.monotonic() + cfg.summary_interval_s

    @property
    def core(self) -> CoreState:
        return self._core

    def cycle(self, *, shutdown: bool = False) -> Decision:
        """One control step at the clock's current time: read, decide, publish, log edges."""
        snap = self._ctx.snapshot()
        inputs = Inputs(
            now_s=snap.at_s,
            started_at_s=snap.started_at_s,
            measurements=snap.measurements,
            bms_flags=snap.bms_flags,
            requested_mode=snap.requested_mode,
            external_setpoint=snap.external_setpoint,
            worker_faults=supervise(self._critical, snap, self._cfg.worker_stall_s),
            shutdown=shutdown,
        )
        prev_state = self._core.machine.state
        decision = step(self._core, inputs, self._cfg)
        self._core = decision.core
        self._seq += 1
        cmd = Command(self._seq, decision.state, decision.setpoint_w, decision.written_w, decision.reasons, snap.at_s)
        self._ctx.publish_command(cmd, fault_causes=decision.fault_causes, limits_bound=decision.reasons)
        self._log_edges(decision, snap, prev_state)
        self._check_auxiliary(snap)
        return decision

    def _check_auxiliary(self, snap: Snapshot) -> None:
        degraded = supervise(self._auxiliary, snap, self._cfg.worker_stall_s)
        if degraded == self._last_degraded:
            return
        for cause in sorted(set(degraded) - set(self._last_degraded)):
            log.warning("service_degraded", cause=cause, effect="no FAULT: control goes on")
        for cause in sorted(set(self._last_degraded) - set(degraded)):
            log.info("service_restored", cause=cause)
        self._ctx.set_status("degraded_services", degraded)
        self._ctx.record_event("service", degraded=list(degraded))
        self._last_degraded = degraded

    def _log_edges(self, d: Decision, snap: Snapshot, prev_state: State) -> None:
        tr = d.transition
        if tr.changed:
            prev = prev_state.value
            level = log.warning if d.state is State.FAULT else log.info
            level("state_changed", from_state=prev, to_state=d.state.value, reason=tr.reason, setpoint_w=round(d.written_w, 1))
            self._ctx.record_event("state", from_state=prev, to_state=d.state.value, reason=tr.reason)
        if d.fault_causes != self._last_causes:
            added = sorted(set(d.fault_causes) - set(self._last_causes))
            cleared = sorted(set(self._last_causes) - set(d.fault_causes))
            if added:
                log.warning("fault_raised", causes=",".join(added), active=",".join(d.fault_causes))
                self._ctx.record_event("fault", raised=added, active=list(d.fault_causes))
            if cleared:
                log.info(
                    "fault_cleared", causes=",".join(cleared), active=",".join(d.fault_causes) or "none", recover_s=self._cfg.recover_s
                )
                self._ctx.record_event("fault", cleared=cleared, active=list(d.fault_causes))
            self._last_causes = d.fault_causes
        if d.reasons != self._last_reasons:
            for name in sorted(set(d.reasons) - set(self._last_reasons)):
                log.info("limit_bound", limit=name, setpoint_w=round(d.setpoint_w, 1))
            for name in sorted(set(self._last_reasons) - set(d.reasons)):
                log.info("limit_released", limit=name, setpoint_w=round(d.setpoint_w, 1))
            self._last_reasons = d.reasons
        log.debug("cycle", state=d.state.value, setpoint_w=d.setpoint_w, written_w=d.written_w, reasons=",".join(d.reasons))
        if self._cfg.summary_interval_s > 0 and snap.at_s >= self._next_summary_s:
            self._next_summary_s = snap.at_s + self._cfg.summary_interval_s
            log.info(
                "summary",
                state=d.state.value,
                mode=snap.requested_mode.value,
                **self._summary_values(snap),
                setpoint_w=round(d.setpoint_w, 1),
                written_w=round(d.written_w, 1),
                limits=",".join(d.reasons) or "none",
                overruns=self._overruns,
            )

    @staticmethod
    def _summary_values(snap: Snapshot) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for q in (Quantity.GRID_POWER_W, Quantity.PV_POWER_W, Quantity.ESS_POWER_W, Quantity.SOC_PCT):
            r = snap.reading(q)
            out[q.value] = None if r is None else round(r.value, 1)
        return out

    def run(self, stop: threading.Event) -> None:
        """Step at `period_s` on absolute deadlines until `stop` is set, then shut down safely."""
        period_s = self._cfg.period_s
        deadline_s = self._clock.monotonic()
        log.info(
            "controller_started",
            period_s=period_s,
            enabled=self._cfg.enabled,
            dry_run=self._cfg.dry_run,
            live=self._cfg.live,
            required_sources=",".join(q.value for q in self._cfg.required_sources),
        )
        while not self._clock.wait_until(deadline_s, stop):
            decision = self.cycle()
            deadline_s += period_s
            now_s = self._clock.monotonic()
            on_time = now_s <= deadline_s
            if not on_time:
                missed = math.floor((now_s - deadline_s) / period_s) + 1
                self._overruns += missed
                self._ctx.add_overruns(missed)
                deadline_s += missed * period_s
                log.warning(
                    "cycle_overrun",
                    late_s=round(now_s - (deadline_s - missed * period_s), 3),
                    skipped_cycles=missed,
                    overruns=self._overruns,
                )
            report = CycleReport(decision, on_time, self._overruns)
            for hook in self._on_cycle:
                hook(report)
        self.shutdown()

    def shutdown(self) -> bool:
        """Publish STOP at 0 W and wait (bounded) for the inverter to take it. True if it did."""
        decision = self.cycle(shutdown=True)
        assert decision.written_w == 0.0
        written = self._ctx.wait_command_written(self._seq, timeout_s=self._cfg.shutdown_timeout_s)
        log.info("controller_stopped", zero_written=written, state=decision.state.value)
        return written
