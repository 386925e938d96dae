"""The main control thread (DESIGN.md §1, §3, §5): read -> core.step -> publish, at 1 Hz.

Schedules on absolute monotonic deadlines: no drift; an overrun is counted and logged and the
missed cycles are skipped, never burst. Logs only edges: state changes, fault causes, limit
bindings, holds, overruns, plus a summary line every `summary_interval_s`.

It is handed the context parts it uses: readings and requests (read), health (supervision),
the command channel (publish) and the event log.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import structlog

from ems.clock import Clock
from ems.context import CommandChannel, EMSContext, EventLog, Health, PlanBoard, Readings, Requests
from ems.core import CoreConfig, CoreState, Decision, step
from ems.inputs import Inputs
from ems.law import plant_changed
from ems.model import Command, ControlStatus, DeviceHealth, Quantity, Reading, State, ThreadHealth
from ems.plan import DEFAULT_MAX_AGE_S, PlanBounds, active_bounds, slot_guidance

__all__ = ["Controller", "ControllerConfig", "CycleReport", "Supervised", "supervise"]

log = structlog.get_logger("ems.controller")


class Supervised(Protocol):
    """A thread the controller watches.

    A dead or stalled thread that serves a *required* device (the actuator, or the owner of a
    required source) is a FAULT cause. Any other thread (store, uplink, API, a PV meter's link) is
    reported as degraded — logged on the edge — but never stops the battery: the sources it may
    feed go stale and fault on their own.
    """

    @property
    def name(self) -> str: ...

    def is_alive(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    core: CoreConfig
    period_s: float = 1.0
    worker_stall_s: float = 10.0  # a thread with no heartbeat for this long is stalled
    shutdown_timeout_s: float = 3.0  # on stop, wait this long for the inverter to take 0 W
    summary_interval_s: float = 60.0  # 0 = off
    plan_max_age_s: float = DEFAULT_MAX_AGE_S  # a plan not refreshed for this long is not followed


@dataclass(frozen=True, slots=True)
class CycleReport:
    decision: Decision
    on_time: bool  # the cycle finished before its deadline
    overruns: int  # total so far


def supervise(
    workers: Sequence[Supervised], beats: dict[str, float | None], *, now_s: float, started_at_s: float, stall_s: float
) -> tuple[str, ...]:
    """Dead or stalled threads as named causes: `worker_dead:<name>`, `worker_stalled:<name>`."""
    causes = []
    for w in workers:
        if not w.is_alive():
            causes.append(f"worker_dead:{w.name}")
            continue
        beat = beats.get(w.name)
        if now_s - (beat if beat is not None else started_at_s) > stall_s:
            causes.append(f"worker_stalled:{w.name}")
    return tuple(causes)


class Controller:
    def __init__(
        self,
        *,
        readings: Readings,
        requests: Requests,
        commands: CommandChannel,
        health: Health,
        events: EventLog,
        required_sources: frozenset[Quantity],
        cfg: ControllerConfig,
        clock: Clock,
        workers: Sequence[Supervised] = (),
        on_cycle: Sequence[Callable[[CycleReport], None]] = (),
        plans: PlanBoard | None = None,
    ) -> None:
        self._plans = plans
        self._last_plan: str | None = None
        self._readings = readings
        self._requests = requests
        self._commands = commands
        self._health = health
        self._events = events
        self._required_sources = required_sources
        self._cfg = cfg
        self._clock = clock
        self._workers = tuple(workers)
        self._on_cycle = tuple(on_cycle)
        self._started_at_s = clock.monotonic()
        self._core = CoreState()
        self._seq = 0
        self._overruns = 0
        self._state_since_s = self._started_at_s
        self._last_limits: tuple[str, ...] = ()
        self._last_hold: str | None = None
        self._last_causes: tuple[str, ...] = ()
        self._last_degraded: tuple[str, ...] = ()
        self._next_summary_s = self._started_at_s + cfg.summary_interval_s
        self._last_law: Mapping[str, float | str] = {}

    @classmethod
    def on(
        cls,
        ctx: EMSContext,
        cfg: ControllerConfig,
        clock: Clock,
        *,
        workers: Sequence[Supervised] = (),
        on_cycle: Sequence[Callable[[CycleReport], None]] = (),
        follow_plans: bool = True,
    ) -> Controller:
        """A controller handed the parts of `ctx` it uses (main.py, benches and tests build it so)."""
        return cls(
            readings=ctx.readings,
            requests=ctx.requests,
            commands=ctx.commands,
            health=ctx.health,
            events=ctx.events,
            required_sources=ctx.required_sources,
            cfg=cfg,
            clock=clock,
            workers=workers,
            on_cycle=on_cycle,
            plans=ctx.plans if follow_plans else None,
        )

    def _split(
        self, devices: tuple[DeviceHealth, ...], threads: tuple[ThreadHealth, ...]
    ) -> tuple[tuple[Supervised, ...], tuple[Supervised, ...], dict[str, float | None]]:
        """(critical, auxiliary) workers: critical = serves a required device (a thread with no device: its `critical`)."""
        required = {d.name for d in devices if d.required}
        served = {t.name: t.devices for t in threads}
        critical: list[Supervised] = []
        auxiliary: list[Supervised] = []
        for w in self._workers:
            devs = served.get(w.name, ())
            is_critical = any(d in required for d in devs) if devs else getattr(w, "critical", True)
            (critical if is_critical else auxiliary).append(w)
        return tuple(critical), tuple(auxiliary), {t.name: t.last_beat_s for t in threads}

    def cycle(self, *, shutdown: bool = False) -> Decision:
        """One control step at the clock's current time: read, decide, publish, log edges."""
        measurements, flags = self._readings.snapshot()
        mode, setpoint = self._requests.snapshot()
        devices, threads = self._health.snapshot(self._readings.owners(), self._required_sources)
        now_s = self._clock.monotonic()  # after the copies: no reading is newer than now
        critical, auxiliary, beats = self._split(devices, threads)
        stall = {"now_s": now_s, "started_at_s": self._started_at_s, "stall_s": self._cfg.worker_stall_s}
        plan = self._plan_bounds(measurements)
        inputs = Inputs(
            now_s=now_s,
            started_at_s=self._started_at_s,
            measurements=measurements,
            bms_flags=flags,
            requested_mode=mode,
            external_setpoint=setpoint,
            worker_faults=supervise(critical, beats, **stall),
            shutdown=shutdown,
            plan=plan,
            import_cap=self._requests.import_cap(),
        )
        prev_state = self._core.machine.state
        decision = step(self._core, inputs, self._cfg.core)
        if decision.state not in (State.SELF_CONSUMPTION, State.EXTERNAL) and decision.written_w != 0.0:
            # a real check, not an assert: it must hold under python -O too
            log.error("safety_violation", state=decision.state.value, written_w=decision.written_w, action="0 W written instead")
            decision = _zeroed(decision)
        self._core = decision.core
        self._seq += 1
        if decision.state is not prev_state:
            self._state_since_s = now_s
        law = self._cfg.core.law.describe(decision.core.law_state)
        self._commands.publish(
            ControlStatus(
                command=Command(self._seq, decision.setpoint_w, decision.written_w, now_s),
                state=decision.state,
                state_since_s=self._state_since_s,
                limits=decision.limits,
                hold=decision.hold,
                gate=decision.gate,
                fault_causes=decision.fault_causes,
                overruns=self._overruns,
                plan=decision.plan,
                law=law,
            )
        )
        self._log_law(law)
        self._log_edges(decision, inputs, prev_state)
        self._check_auxiliary(supervise(auxiliary, beats, **stall))
        return decision

    def _plan_bounds(self, measurements: Mapping[Quantity, Reading]) -> PlanBounds | None:
        """The active plan slot after its SOC rules, or None (no planner, no usable plan)."""
        if self._plans is None:
            return None
        plan, _status = self._plans.snapshot()
        guidance = slot_guidance(plan, self._clock.wall(), max_age_s=self._cfg.plan_max_age_s)
        if guidance is None:
            return None
        soc = measurements.get(Quantity.SOC_PCT)
        fresh = soc is not None and soc.fresh(now_s=self._clock.monotonic(), max_age_s=self._cfg.core.fresh_s)
        return active_bounds(guidance, soc.value if fresh and soc is not None else None)

    def _log_law(self, law: Mapping[str, float | str]) -> None:
        """What the law believes about the inverter and meter, logged when it changes meaningfully."""
        if not self._last_law or plant_changed(self._last_law, law):
            if len(law) > 1:  # more than its name: a law that identifies something
                log.info("law_plant_identified", **dict(law))
            self._last_law = law

    def _check_auxiliary(self, degraded: tuple[str, ...]) -> None:
        if degraded == self._last_degraded:
            return
        for cause in sorted(set(degraded) - set(self._last_degraded)):
            log.warning("service_degraded", cause=cause, effect="no FAULT: control goes on")
        for cause in sorted(set(self._last_degraded) - set(degraded)):
            log.info("service_restored", cause=cause)
        self._events.record("service", degraded=list(degraded))
        self._last_degraded = degraded

    def _log_edges(self, d: Decision, inputs: Inputs, prev_state: State) -> None:
        tr = d.transition
        if tr.changed:
            prev = prev_state.value
            level = log.warning if d.state is State.FAULT else log.info
            level("state_changed", from_state=prev, to_state=d.state.value, reason=tr.reason, setpoint_w=round(d.written_w, 1))
            self._events.record("state", from_state=prev, to_state=d.state.value, reason=tr.reason)
        if d.fault_causes != self._last_causes:
            added = sorted(set(d.fault_causes) - set(self._last_causes))
            cleared = sorted(set(self._last_causes) - set(d.fault_causes))
            if added:
                log.warning("fault_raised", causes=",".join(added), active=",".join(d.fault_causes))
                self._events.record("fault", raised=added, active=list(d.fault_causes))
            if cleared:
                log.info(
                    "fault_cleared",
                    causes=",".join(cleared),
                    active=",".join(d.fault_causes) or "none",
                    recover_s=self._cfg.core.machine.recover_s,
                )
                self._events.record("fault", cleared=cleared, active=list(d.fault_causes))
            self._last_causes = d.fault_causes
        if d.limits != self._last_limits:
            for name in sorted(set(d.limits) - set(self._last_limits)):
                log.info("limit_bound", limit=name, setpoint_w=round(d.setpoint_w, 1))
            for name in sorted(set(self._last_limits) - set(d.limits)):
                log.info("limit_released", limit=name, setpoint_w=round(d.setpoint_w, 1))
            self._last_limits = d.limits
        if d.plan != self._last_plan:
            if d.plan is not None:
                bounds = inputs.plan
                log.info(
                    "plan_followed",
                    slot=d.plan,
                    grid_target_w=None if bounds is None else round(bounds.grid_target_w, 1),
                    lo_w=None if bounds is None else round(bounds.lo_w, 1),
                    hi_w=None if bounds is None else round(bounds.hi_w, 1),
                )
            else:
                log.info("plan_not_followed", previous=self._last_plan, effect="plain self-consumption")
            self._last_plan = d.plan
        if d.hold != self._last_hold:
            if d.hold is not None:
                log.info("command_held", reason=d.hold, setpoint_w=0.0)
            else:
                log.info("command_hold_ended", reason=self._last_hold)
            self._last_hold = d.hold
        log.debug("cycle", state=d.state.value, setpoint_w=d.setpoint_w, written_w=d.written_w, reasons=",".join(d.reasons))
        if self._cfg.summary_interval_s > 0 and inputs.now_s >= self._next_summary_s:
            self._next_summary_s = inputs.now_s + self._cfg.summary_interval_s
            log.info(
                "summary",
                state=d.state.value,
                mode=inputs.requested_mode.value,
                **_summary_values(inputs, self._cfg.core.fresh_s),
                setpoint_w=round(d.setpoint_w, 1),
                written_w=round(d.written_w, 1),
                limits=",".join(d.limits) or "none",
                overruns=self._overruns,
            )

    def run(self, stop: threading.Event) -> None:
        """Step at `period_s` on absolute deadlines until `stop` is set, then shut down safely."""
        period_s = self._cfg.period_s
        deadline_s = self._clock.monotonic()
        core = self._cfg.core
        log.info(
            "controller_started",
            period_s=period_s,
            enabled=core.enabled,
            dry_run=core.dry_run,
            live=core.live,
            law=core.law.name,
            required_sources=",".join(sorted(q.value for q in self._required_sources)),
        )
        while not self._clock.wait_until(deadline_s, stop):
            decision = self.cycle()
            deadline_s += period_s
            now_s = self._clock.monotonic()
            on_time = now_s <= deadline_s
            if not on_time:
                missed = math.floor((now_s - deadline_s) / period_s) + 1
                self._overruns += missed
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
        written = self._commands.wait_written(self._seq, timeout_s=self._cfg.shutdown_timeout_s)
        log.info("controller_stopped", zero_written=written, state=decision.state.value)
        return written


def _zeroed(d: Decision) -> Decision:
    return replace(d, written_w=0.0, setpoint_w=0.0, core=replace(d.core, prev_cmd_w=0.0))


def _summary_values(inputs: Inputs, fresh_s: float) -> dict[str, float | None]:
    """The headline readings, fresh ones only (a stale value shows as None, not as if current)."""
    out: dict[str, float | None] = {}
    for q in (Quantity.GRID_POWER_W, Quantity.PV_POWER_W, Quantity.ESS_POWER_W, Quantity.SOC_PCT):
        v = inputs.value(q, max_age_s=fresh_s)
        out[q.value] = None if v is None else round(v, 1)
    return out
