"""The commissioning thread inside the EMS (`emsctl commission`, docs/commissioning.md).

The EMS owns the Modbus link (several inverters accept only one Modbus client), so the measurement
runs here, not in emsctl. A run, taken from the commissioning board (ems/context/commission.py):

1. asks the links for a fast poll of the inverter and the meter (ems/context/polling.py; bounded,
   it expires by itself) and records every new reading with its receive time, and every published
   command with its time (a recorder thread, so an audit commit never leaves a gap in the samples);
2. holds 0 W and checks each reading's sign and plausibility (ems.commission.preflight);
3. steps the set-point (+S, 0, -S, 0 W; small steps inside every limit) through the audited external
   set-point path: EXTERNAL with a short TTL renewed while the run goes on, so a dead commissioning
   thread ends it too; each step is held until its response has settled;
4. aborts on FAULT, on a limit that binds (other than the EMS's own ramp, which the fit follows), on
   an operator's abort, when its client stops polling, when the EMS stops, or when the inverter does
   not follow; and always ends at 0 W with the mode as it was (unless another request took over);
5. fits dead time, time constant, gain and ramp to each step (ems/stepfit.py), the meter's response
   against the battery's (wiring, sign, phase), and publishes the report on the board
   (interfaces/commission/report.py; the recording: interfaces/commission/recorder.py).
"""

from __future__ import annotations

import math
import statistics
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields

import structlog

from config import EMSConfig
from config.control import ControlConfig
from ems.clock import Clock
from ems.commission import Check, CheckStatus, CommissionParams, Directions, at_rest, plan_steps, preflight, settled
from ems.context import CommandChannel, EMSContext, EventLog, Health, Readings, Requests
from ems.context.commission import CommissionBoard, CommissionRequest, RunState
from ems.context.polling import PollRequests
from ems.jsonable import jsonable
from ems.model import Mode, Quantity, Snapshot, State
from ems.plausibility import Window
from ems.stepfit import fit_response
from interfaces.commission.recorder import SAME_W, Recorder, command_changes, slope
from interfaces.commission.report import PRE_STEP_S, RunFacts, StepRecord, build_report, max_dead_s

__all__ = ["Commissioner", "Parts", "build_commissioner", "params_from"]

log = structlog.get_logger("interfaces.commission")
Q = Quantity
_TICK_S = 0.05  # the run's own pace (checks, TTL renewal, progress)
_FAST_POLLED = ("ess", "meter")  # the devices asked for a fast poll (whichever exist)
_EXTRA_HOLD_S = 0.5  # held this long past the settle criterion: tail samples for the fit
_CHECK_EVERY_S = 0.5  # how often a held step's quick fit runs


def params_from(raw: Mapping[str, object]) -> CommissionParams:
    """The run's parameters from a request's (checked) params, defaults for the rest."""
    base = CommissionParams()
    over: dict[str, object] = {}
    for k in (f.name for f in fields(CommissionParams) if f.name != "directions"):
        v = raw.get(k)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            over[k] = float(v)
    d = raw.get("directions")
    if isinstance(d, str):
        over["directions"] = Directions(d)
    return CommissionParams(**{**asdict(base), **over})


class _Abort(Exception):
    def __init__(self, reason: str, *, restore: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.restore = restore


@dataclass(frozen=True, slots=True)
class Parts:
    """What a run uses of the EMS (each a narrow part of the context)."""

    board: CommissionBoard
    polling: PollRequests
    requests: Requests
    readings: Readings
    commands: CommandChannel
    events: EventLog
    snapshot: Callable[[], Snapshot]
    clock: Clock
    control: ControlConfig
    windows: Mapping[Quantity, Window]
    site_id: str


class _Run:
    """One run: the sequence, its checks and aborts, its report. Lives in the commissioning thread."""

    def __init__(self, req: CommissionRequest, parts: Parts, stop: threading.Event) -> None:
        self.req = req
        self.p = parts
        self.params = params_from(req.params)
        self.stop = stop
        self.clock = parts.clock
        self.rec = Recorder(parts.readings, parts.commands)
        self.reason_prefix = f"commissioning run {req.run}"
        self.setpoint_w = 0.0
        self.setpoint_at_s = -math.inf
        self._why = "hold 0 W"  # the reason of the standing set-point (renewed with it)
        self.phase = "starting"
        self.steps: list[StepRecord] = []
        self.planned: tuple[float, ...] = ()
        self.notes: list[str] = []
        self.checks: list[Check] = []
        self.noise_w = 0.0
        self.rest_s = -math.inf  # since when the battery has been at rest at 0 W
        self.rating_w = min(parts.control.max_charge_w, parts.control.max_discharge_w)
        self._progress_at_s = -math.inf
        self.started_s = self.clock.monotonic()
        self.started_wall = self.clock.wall()

    # ---- the sequence ---------------------------------------------------------------------------
    def execute(self) -> tuple[RunState, dict[str, object]]:
        self.rec.start()
        self._fast_poll()
        state: RunState = RunState.DONE
        reason: str | None = None
        try:
            try:
                self._sequence()
                restore = True
            except _Abort as exc:
                state, reason, restore = RunState.ABORTED, exc.reason, exc.restore
                log.warning("commission_aborted", run=self.req.run, reason=reason, phase=self.phase)
            end = self._end(restore=restore)
        except Exception:  # a bug in the run: hand back what can be handed back, then let the thread report it
            self._emergency_end()
            raise
        finally:
            self.p.polling.withdraw(self._who())
            self.rec.stop()
        self.phase = "fitting"
        self._progress(force=True)
        ess_dev = self.p.snapshot().device("ess")
        facts = RunFacts(
            run=self.req.run,
            who=self.req.who,
            site_id=self.p.site_id,
            profile=None if ess_dev is None else ess_dev.info.get("map"),
            params=self.params,
            planned=self.planned,
            notes=tuple(self.notes),
            checks=tuple(self.checks),
            started_s=self.started_s,
            started_at=self.started_wall.isoformat(timespec="seconds"),
            ended_s=self.clock.monotonic(),
            rest_s=self.rest_s,
        )
        return state, build_report(self.rec, self.steps, facts, state=state, reason=reason, end=end)

    def _sequence(self) -> None:
        self._hold_zero(at_start=True)
        self._preflight()
        self._plan()
        for i, target in enumerate(self.planned, 1):
            self._step(i, len(self.planned), target)

    def _emergency_end(self) -> None:
        """After an unexpected error: release the set-point to the previous mode (0 W until then: the TTL)."""
        try:
            self.p.requests.release_setpoint(who=self.req.who, via="commission", mode=self.req.prev_mode)
        except Exception:
            log.exception("commission_release_failed", run=self.req.run)

    def _who(self) -> str:
        return f"commission:{self.req.run}"

    def _fast_poll(self) -> None:
        horizon_s = 4 * (self.params.max_hold_s + 5.0) + 2 * self.params.settle_zero_s + 30.0
        self.p.polling.request(
            _FAST_POLLED, period_s=self.params.poll_period_s, duration_s=horizon_s, now_s=self.clock.monotonic(), who=self._who()
        )

    def _set(self, power_w: float, why: str) -> None:
        r = self.p.requests.set_external_setpoint(
            power_w=power_w, ttl_s=self.params.ttl_s, reason=f"{self.reason_prefix}: {why}", who=self.req.who, via="commission"
        )
        if not r.accepted:
            raise _Abort(f"the set-point {power_w:+.0f} W was refused: {r.message}")
        self.setpoint_w, self.setpoint_at_s = power_w, self.clock.monotonic()
        self._why = why

    def _tick(self) -> Snapshot:
        """One pace of every wait: the abort conditions, the TTL, the progress. Raises _Abort."""
        if self.stop.wait(_TICK_S):
            raise _Abort("the EMS is stopping")
        snap = self.p.snapshot()
        now = snap.at_s
        if snap.state is State.FAULT:
            raise _Abort(f"FAULT: {', '.join(snap.fault_causes) or 'no cause given'}")
        asked = self.p.board.abort_requested()
        if asked is not None:
            raise _Abort(f"aborted by request: {asked}")
        touched = self.p.board.touched_s()
        if touched is not None and now - touched > self.params.client_timeout_s:
            raise _Abort(f"the client stopped polling (last poll {now - touched:.0f} s ago)")
        sp = snap.external_setpoint
        ours = sp is not None and sp.source == self.req.who and sp.reason.startswith(self.reason_prefix)
        if snap.requested_mode is not Mode.EXTERNAL or not ours:
            raise _Abort("another request took over (mode or set-point changed)", restore=False)
        bound = [lim for lim in snap.limits if lim != "ramp"]
        if bound:
            raise _Abort(f"a limit binds: {', '.join(bound)}")
        if snap.control is not None and snap.control.hold:
            raise _Abort(f"the controller holds 0 W: {snap.control.hold}")
        if now - self.setpoint_at_s >= self.params.ttl_s / 2.0:
            self._set(self.setpoint_w, self._why)
        self._progress(snap=snap)
        return snap

    def _progress(self, *, snap: Snapshot | None = None, force: bool = False) -> None:
        now = self.clock.monotonic()
        if not force and now - self._progress_at_s < 0.25:
            return
        self._progress_at_s = now
        ess = None if snap is None else snap.reading(Q.ESS_POWER_W)
        self.p.board.progress(
            self.req.run,
            phase=self.phase,
            step=len(self.steps),
            steps=len(self.planned),
            elapsed_s=round(now - self.started_s, 1),
            setpoint_w=self.setpoint_w,
            ess_power_w=None if ess is None else round(ess.value, 1),
        )

    def _written_level(self) -> float | None:
        cmds = self.rec.commands()
        return cmds[-1].written_w if cmds else None

    def _hold_zero(self, *, at_start: bool) -> float | None:
        """0 W until the inverter reads 0 W (within a tolerance) for a second; the last reading. At the
        start the command must also have been 0 W for `quiet_s` (a response to an earlier command
        may still be on its way: dead time), unless the controller was in STANDBY all along."""
        self.phase = "holding 0 W" if at_start else "back to 0 W"
        first = self.p.snapshot()
        standby_since = first.state_since_s if first.state is State.STANDBY else None
        self._set(0.0, "hold 0 W" if at_start else "back to 0 W")
        tol_w = self._zero_tol_w()
        t0 = self.clock.monotonic()
        while True:
            snap = self._tick()
            now = snap.at_s
            recent = self.rec.series(Q.ESS_POWER_W, since_s=now - 1.5)
            cmds = self.rec.commands()
            level = cmds[-1].written_w if cmds else None
            nonzero = [c.at_s for c in cmds if abs(c.written_w) > SAME_W]
            zero_since = nonzero[-1] if nonzero else (standby_since if standby_since is not None else t0)
            quiet = not at_start or now - zero_since >= self.params.quiet_s
            if level is not None and abs(level) <= SAME_W and quiet and at_rest(recent, now_s=now, tol_w=tol_w):
                if at_start:
                    vals = [v for _t, v in recent]
                    self.noise_w = statistics.pstdev(vals) if len(vals) > 1 else 0.0
                    self.rest_s = now
                return recent[-1][1]
            if now - t0 > self.params.settle_zero_s:
                got = recent[-1][1] if recent else None
                if at_start:
                    reads = "no reading" if got is None else f"reads {got:+.0f} W"
                    raise _Abort(f"the inverter does not come to rest at 0 W within {self.params.settle_zero_s:g} s ({reads})")
                return got

    def _preflight(self) -> None:
        self.phase = "checking the readings"
        snap = self._tick()
        self.checks = list(
            preflight(
                snap.measurements,
                now_s=snap.at_s,
                max_age_s=max(2.0, 5 * self.params.poll_period_s),
                required=frozenset(self.p.control.required_sources),
                windows=self.p.windows,
                rating_w=self.rating_w,
            )
        )
        failed = [c for c in self.checks if c.status is CheckStatus.FAIL]
        if failed:
            raise _Abort("preflight: " + "; ".join(f"{c.name}: {c.detail}" for c in failed))

    def _plan(self) -> None:
        snap = self.p.snapshot()
        c = self.p.control
        soc = snap.reading(Q.SOC_PCT)
        volt = snap.reading(Q.BMS_VOLTAGE_V)
        ccl, dcl = snap.reading(Q.BMS_CCL_A), snap.reading(Q.BMS_DCL_A)
        v = volt.value if volt is not None else None
        steps, notes = plan_steps(
            self.params,
            max_charge_w=c.max_charge_w,
            max_discharge_w=c.max_discharge_w,
            soc_pct=None if soc is None else soc.value,
            soc_min_pct=c.soc_min_pct,
            soc_max_pct=c.soc_max_pct,
            hysteresis_pct=c.soc_hysteresis_pct,
            bms_charge_w=None if v is None or ccl is None or not c.use_bms_limits else ccl.value * v,
            bms_discharge_w=None if v is None or dcl is None or not c.use_bms_limits else dcl.value * v,
        )
        self.planned, self.notes = steps, list(notes)
        if not steps:
            raise _Abort("no step is possible: " + "; ".join(notes))
        log.info("commission_planned", run=self.req.run, steps=",".join(f"{s:+.0f}" for s in steps), notes="; ".join(notes) or None)

    def _step(self, i: int, n: int, target_w: float) -> None:
        level = self._written_level() or 0.0
        self.phase = f"step {i}/{n}: {level:+.0f} -> {target_w:+.0f} W"
        asked_s = self.clock.monotonic()
        before = [v for t, v in self.rec.series(Q.ESS_POWER_W, since_s=asked_s - PRE_STEP_S)]
        self._set(target_w, f"step {i}/{n} ({target_w:+.0f} W)")
        wait_s = 2.0 * self.p.control.period_s + 2.0
        changed_at: float | None = None
        while changed_at is None:
            self._tick()
            changed_at = next((c.at_s for c in self.rec.commands() if c.at_s >= asked_s - 1e-9 and abs(c.written_w - level) > SAME_W), None)
            if changed_at is None and self.clock.monotonic() - asked_s > wait_s:
                raise _Abort(f"the controller did not write step {i} within {wait_s:g} s")
        step = StepRecord(i, level, target_w, changed_at, ess_before_w=statistics.fmean(before) if before else level)
        self.steps.append(step)
        settled_at: float | None = None
        checked_at = -math.inf
        while True:
            snap = self._tick()
            now = snap.at_s
            written = self._written_level()
            last_change = self._changes()[-1][0]
            held = now - step.at_s
            since = self.rec.series(Q.ESS_POWER_W, since_s=last_change)
            moved = bool(since) and abs(since[-1][1] - step.ess_before_w) >= 0.2 * abs(target_w - level)
            if held >= self.params.no_response_s and not moved:
                raise _Abort(
                    f"the inverter does not follow the set-point: {target_w - level:+.0f} W asked, "
                    f"{(since[-1][1] - step.ess_before_w) if since else 0:+.0f} W after {held:.0f} s"
                )
            if (
                settled_at is None
                and held >= self.params.min_hold_s
                and now - checked_at >= _CHECK_EVERY_S
                and written is not None
                and abs(written - target_w) <= SAME_W
            ):
                checked_at = now
                if self._settled(step, now, since):
                    settled_at = now
            if (settled_at is not None and now - settled_at >= _EXTRA_HOLD_S) or held >= self.params.max_hold_s:
                if settled_at is None:
                    self.notes.append(f"step {i} had not settled after max_hold_s {self.params.max_hold_s:g} s")
                step.end_s = now
                log.info("commission_step", run=self.req.run, step=i, from_w=level, to_w=target_w, held_s=round(held, 2))
                return

    def _changes(self, *, until_s: float = math.inf) -> list[tuple[float, float]]:
        """The command since the battery was found at rest at 0 W (the hold before the steps)."""
        return command_changes(self.rec.commands(), since_s=self.rest_s, until_s=until_s)

    def _max_dead_s(self, step: StepRecord) -> float:
        return max_dead_s(self.steps, step, limit_s=self.params.no_response_s)

    def _settled(self, step: StepRecord, now_s: float, since: Sequence[tuple[float, float]]) -> bool:
        """The step's response has settled: a quick fit says the window lasts past dead time + 4 tau,
        explains the response, and the last second of samples agrees with the fitted final value; or,
        when the quick fit cannot tell, the trend of the last two seconds is flat (ems.commission.settled)."""
        change_w = step.to_w - step.from_w
        changes = self._changes()
        samples = self.rec.series(Q.ESS_POWER_W, since_s=step.at_s - PRE_STEP_S)
        fit = fit_response(changes, samples, max_dead_time_s=self._max_dead_s(step), quick=True)
        if fit is not None and fit.r2 >= 0.9 and fit.gain >= 0.2:
            final_w = fit.offset_w + fit.gain * changes[-1][1]
            last = [(t, v) for t, v in since if t >= now_s - 1.0]
            if len(last) < 5:
                return False
            mean_v = statistics.fmean(v for _t, v in last)
            near = abs(mean_v - final_w) <= 0.05 * abs(change_w) + 2.0 * self.noise_w
            # what is left to come, judged from the samples' own slope: about slope x tau for a first order
            slope_w_per_s = slope(last)
            flat = abs(slope_w_per_s) * max(fit.tau_s, 0.1) <= 0.03 * abs(change_w) + 2.0 * self.noise_w
            return fit.settled and near and flat
        return settled(since, before_w=step.ess_before_w, change_w=change_w, noise_w=self.noise_w, now_s=now_s)

    def _end(self, *, restore: bool) -> dict[str, object]:
        """0 W and the mode as before (unless another request took over)."""
        if not restore:
            return {"restored": False, "why": "another request took over: left as it is"}
        self.phase = "back to 0 W"
        last_w: float | None = None
        for attempt in range(2):
            try:
                last_w = self._hold_zero(at_start=False)
                break
            except _Abort as exc:  # a fault or abort while returning: 0 W is still what the inverter gets
                log.info("commission_end_check_skipped", run=self.req.run, reason=exc.reason, attempt=attempt)
                if not exc.restore:
                    return {"restored": False, "why": exc.reason}
                if "refused" in exc.reason or "stopping" in exc.reason:
                    break
                self.p.board.progress(self.req.run, phase="back to 0 W (checks off)")
                last_w = self._wait_zero_quietly()
                break
        r = self.p.requests.release_setpoint(who=self.req.who, via="commission", mode=self.req.prev_mode)
        ess = self.p.snapshot().reading(Q.ESS_POWER_W)
        tol_w = self._zero_tol_w()
        return {
            "restored": r.accepted,
            "mode": self.req.prev_mode.value,
            "release": r.message,
            "ess_power_w": None if ess is None else round(ess.value, 1),
            "at_zero": last_w is not None and abs(last_w) <= tol_w,
        }

    def _zero_tol_w(self) -> float:
        """How close to 0 W "at 0 W" is: an inverter's own offset, at least 30 W."""
        return max(30.0, 0.01 * self.rating_w)

    def _wait_zero_quietly(self) -> float | None:
        """After an abort during the return (FAULT, say): wait for 0 W without the abort checks."""
        tol_w = self._zero_tol_w()
        t0 = self.clock.monotonic()
        while not self.stop.wait(_TICK_S):
            now = self.clock.monotonic()
            recent = self.rec.series(Q.ESS_POWER_W, since_s=now - 1.5)
            if at_rest(recent, now_s=now, tol_w=tol_w):
                return recent[-1][1]
            if self.clock.monotonic() - t0 > self.params.settle_zero_s:
                return recent[-1][1] if recent else None
        return None


class Commissioner(threading.Thread):
    """The service main.py starts: waits for a run on the board, executes it, publishes its report."""

    critical = False  # its death ends a run (the set-point's TTL lapses), never the control loop

    def __init__(self, parts: Parts, *, health: Health, name: str = "commission") -> None:
        super().__init__(name=name, daemon=True)
        self._parts = parts
        self._health = health
        self._stop_event = threading.Event()
        health.register_thread(name, ())

    def run(self) -> None:
        log.info("worker_started", worker=self.name)
        while not self._stop_event.is_set():
            self._health.beat(self.name, at_s=self._parts.clock.monotonic())
            req = self._parts.board.take(timeout_s=0.5)
            if req is not None:
                self._execute(req)
        log.info("worker_stopped", worker=self.name)

    def _execute(self, req: CommissionRequest) -> None:
        p = self._parts
        log.info("commission_started", run=req.run, who=req.who, params=dict(req.params), prev_mode=req.prev_mode.value)
        beat = threading.Event()
        beater = threading.Thread(target=self._beat_while, args=(beat,), name="commission-beat", daemon=True)
        beater.start()
        try:
            state, report = _Run(req, p, self._stop_event).execute()
        except Exception as exc:  # the thread survives a bug in a run; the set-point's TTL ends it
            log.exception("commission_failed", run=req.run)
            state, report = RunState.FAILED, {"run": req.run, "result": "failed", "reason": f"{type(exc).__name__}: {exc}"[:300]}
            p.polling.withdraw(f"commission:{req.run}")
        finally:
            beat.set()
            beater.join(1.0)
        inv = report.get("inverter") if isinstance(report.get("inverter"), Mapping) else {}
        met = report.get("meter") if isinstance(report.get("meter"), Mapping) else {}
        assert isinstance(inv, Mapping) and isinstance(met, Mapping)
        p.events.record(
            "commission",
            run=req.run,
            who=req.who,
            result=state.value,
            reason=report.get("reason"),
            tau_s=inv.get("tau_s"),
            dead_time_s=inv.get("dead_time_s"),
            gain=inv.get("gain"),
            meter=met.get("verdict"),
        )
        log.info(
            "commission_finished",
            run=req.run,
            result=state.value,
            reason=report.get("reason"),
            tau_s=inv.get("tau_s"),
            dead_time_s=inv.get("dead_time_s"),
            gain=inv.get("gain"),
            meter=met.get("verdict"),
        )
        p.board.finish(req.run, state=state, report=jsonable(report))

    def _beat_while(self, done: threading.Event) -> None:
        """A run takes minutes: the thread's heartbeat goes on meanwhile (stall supervision)."""
        while not done.wait(1.0):
            self._health.beat(self.name, at_s=self._parts.clock.monotonic())

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout_s)


def build_commissioner(cfg: EMSConfig, ctx: EMSContext, clock: Clock) -> Commissioner:
    """The commissioning thread with the context parts it uses (main.build_services)."""
    parts = Parts(
        board=ctx.commission,
        polling=ctx.polling,
        requests=ctx.requests,
        readings=ctx.readings,
        commands=ctx.commands,
        events=ctx.events,
        snapshot=ctx.snapshot,
        clock=clock,
        control=cfg.control,
        windows=cfg.windows(),
        site_id=cfg.site.id,
    )
    return Commissioner(parts, health=ctx.health)
