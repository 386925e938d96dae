"""The 1 Hz controller on a simulated clock: deadlines, overruns, supervision, edge logging, shutdown."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from structlog.testing import capture_logs

from config import EMSConfig
from ems.clock import SimClock
from ems.context import EMSContext
from ems.controller import CycleReport
from ems.model import Mode, Quantity, State
from tests.helpers.context import feed as feed_readings
from tests.helpers.context import make_controller

Q = Quantity


@dataclass
class StubWorker:
    """Stands in for a worker thread: the controller only asks its name and whether it lives."""

    name: str
    alive: bool = True
    clock: SimClock | None = None
    stall_on_call: int | None = None  # advance the clock inside a cycle: simulates a slow cycle
    stall_s: float = 0.0
    calls: int = field(default=0)

    def is_alive(self) -> bool:
        self.calls += 1
        if self.clock is not None and self.calls == self.stall_on_call:
            self.clock.advance(self.stall_s)
        return self.alive


def feed(ctx: EMSContext, clock: SimClock, *, grid_w: float = 0.0) -> None:
    feed_readings(ctx, {Q.GRID_POWER_W: grid_w, Q.ESS_POWER_W: 0.0, Q.SOC_PCT: 50.0}, at_s=clock.monotonic())


def stop_after(n: int, *, seen: list[CycleReport], before=None) -> tuple[threading.Event, object]:  # type: ignore[no-untyped-def]
    """An on_cycle hook that records reports, runs `before` and stops the loop after n cycles."""
    stop = threading.Event()

    def hook(r: CycleReport) -> None:
        seen.append(r)
        if before is not None:
            before()
        if len(seen) >= n:
            stop.set()

    return stop, hook


def test_cycles_run_on_absolute_deadlines(ctx: EMSContext, sim_clock: SimClock, live_cfg: EMSConfig) -> None:
    t0 = sim_clock.monotonic()
    times: list[float] = []
    stop, hook = stop_after(5, seen=[], before=lambda: (times.append(ctx.snapshot().command.at_s), feed(ctx, sim_clock)))  # type: ignore[union-attr]
    make_controller(ctx, live_cfg, sim_clock, on_cycle=[hook]).run(stop)  # type: ignore[list-item]
    assert times == [t0 + n for n in range(5)]
    assert ctx.snapshot().overruns == 0


def test_overrun_is_counted_and_missed_cycles_are_skipped_not_burst(ctx: EMSContext, sim_clock: SimClock, live_cfg: EMSConfig) -> None:
    t0 = sim_clock.monotonic()
    slow = StubWorker("slow", clock=sim_clock, stall_on_call=4, stall_s=2.5)  # 4th cycle takes 2.5 s
    times: list[float] = []
    reports: list[CycleReport] = []
    stop, hook = stop_after(6, seen=reports, before=lambda: (times.append(ctx.snapshot().command.at_s), feed(ctx, sim_clock)))  # type: ignore[union-attr]
    with capture_logs() as logs:
        make_controller(ctx, live_cfg, sim_clock, workers=[slow], on_cycle=[hook]).run(stop)  # type: ignore[list-item]
    assert times == [t0, t0 + 1, t0 + 2, t0 + 3, t0 + 6, t0 + 7]
    assert [r.on_time for r in reports] == [True, True, True, False, True, True]
    assert ctx.snapshot().overruns == 2
    assert [e["skipped_cycles"] for e in logs if e["event"] == "cycle_overrun"] == [2]


def test_dead_and_stalled_workers_are_named_fault_causes(ctx: EMSContext, sim_clock: SimClock, live_cfg: EMSConfig) -> None:
    dead = StubWorker("modbus-meter", alive=False)
    stalled = StubWorker("can")
    for thread, device in (("modbus-meter", "meter"), ("can", "bms")):
        ctx.health.register_device(device, kind="x", where="", thread=thread)
        ctx.health.register_thread(thread, [device])
    meter = ctx.readings.claim("meter", [Q.GRID_POWER_W])  # both own a required source: their threads are critical
    bms = ctx.readings.claim("bms", [Q.SOC_PCT])
    ctx.health.beat("can", at_s=sim_clock.monotonic())
    c = make_controller(ctx, live_cfg, sim_clock, workers=[dead, stalled])

    def fresh_readings() -> None:
        meter.update({Q.GRID_POWER_W: 0.0}, at_s=sim_clock.monotonic())
        bms.update({Q.SOC_PCT: 50.0}, at_s=sim_clock.monotonic())
        feed_readings(ctx, {Q.ESS_POWER_W: 0.0})

    fresh_readings()
    d = c.cycle()
    assert d.state is State.FAULT and d.fault_causes == ("worker_dead:modbus-meter",)
    sim_clock.advance(live_cfg.control.worker_stall_s + 1)
    fresh_readings()
    d = c.cycle()
    assert d.fault_causes == ("worker_dead:modbus-meter", "worker_stalled:can")
    assert ctx.snapshot().fault_causes == d.fault_causes


def test_edges_are_logged_once_not_every_cycle(ctx: EMSContext, sim_clock: SimClock, live_cfg: EMSConfig) -> None:
    c = make_controller(ctx, live_cfg, sim_clock)
    with capture_logs() as logs:
        for _ in range(15):  # nothing is ever measured: STOP -> STANDBY -> SELF_CONSUMPTION -> FAULT (stale)
            c.cycle()
            sim_clock.advance(1.0)
    events = [e["event"] for e in logs]
    assert events.count("state_changed") == 3
    assert events.count("fault_raised") == 1
    fault = next(e for e in logs if e["event"] == "state_changed" and e["to_state"] == "FAULT")
    assert fault["reason"] == "stale:grid_power_w,stale:ess_power_w,stale:soc_pct"
    assert fault["log_level"] == "warning"
    kinds = [e.kind for e in ctx.events.since(0)]
    assert kinds.count("state") == 3 and kinds.count("fault") == 1


def test_limit_binding_is_logged_on_change(ctx: EMSContext, sim_clock: SimClock, live_cfg: EMSConfig) -> None:
    c = make_controller(ctx, live_cfg, sim_clock)
    with capture_logs() as logs:
        for n in range(12):
            grid = 20000.0 if n < 8 else 0.0  # a load far above the rating, then gone
            feed(ctx, sim_clock, grid_w=grid)
            c.cycle()
            sim_clock.advance(1.0)
    bound = [e for e in logs if e["event"] in ("limit_bound", "limit_released")]
    assert [(e["event"], e["limit"]) for e in bound] == [("limit_bound", "inverter_rating"), ("limit_released", "inverter_rating")]


def test_sigterm_path_writes_zero_and_stops(ctx: EMSContext, sim_clock: SimClock, live_cfg: EMSConfig) -> None:
    ctx.requests.request_mode(Mode.DISCHARGE_ONLY, who="test", via="test")
    c = make_controller(ctx, live_cfg, sim_clock)
    for _ in range(3):
        feed(ctx, sim_clock)
        c.cycle()
        sim_clock.advance(1.0)
    assert ctx.snapshot().command.written_w == 2000.0  # type: ignore[union-attr]
    ch = ctx.commands
    ch.register_consumer()
    acker = threading.Thread(target=lambda: ch.ack(ch.wait_command(after_seq=3, timeout_s=10).seq))  # type: ignore[union-attr]
    acker.start()
    assert c.shutdown() is True
    acker.join(10)
    snap = ctx.snapshot()
    assert snap.command is not None and (snap.state, snap.command.written_w) == (State.STOP, 0.0)


def test_a_dead_auxiliary_service_degrades_but_does_not_fault(ctx: EMSContext, sim_clock: SimClock, live_cfg: EMSConfig) -> None:
    uplink = StubWorker("uplink", alive=False)
    pv = StubWorker("modbus-pv", alive=False)  # a device that owns no required source: not critical
    ctx.health.register_device("uplink", kind="https", where="", thread="uplink")
    ctx.health.register_thread("uplink", ["uplink"])
    ctx.health.register_device("pv", kind="modbus", where="", thread="modbus-pv")
    ctx.health.register_thread("modbus-pv", ["pv"])
    ctx.readings.claim("pv", [Q.PV_POWER_W])
    c = make_controller(ctx, live_cfg, sim_clock, workers=[uplink, pv])
    with capture_logs() as logs:
        for _ in range(3):
            feed(ctx, sim_clock)
            d = c.cycle()
            sim_clock.advance(1.0)
    assert d.state is State.SELF_CONSUMPTION and d.fault_causes == ()
    assert [e["cause"] for e in logs if e["event"] == "service_degraded"] == ["worker_dead:modbus-pv", "worker_dead:uplink"]
    (service,) = [e for e in ctx.events.since(0) if e.kind == "service"]  # logged and recorded once, on the edge
    assert service.data["degraded"] == ("worker_dead:uplink", "worker_dead:modbus-pv")


def test_the_identified_plant_is_published_and_logged_only_when_it_changes(ctx: EMSContext, sim_clock: SimClock) -> None:
    from config import parse_config

    cfg = parse_config({"control": {"enabled": True, "dry_run": False, "law": "adaptive"}}, {})
    c = make_controller(ctx, cfg, sim_clock)
    ess_w, tau_s = 0.0, 2.0  # a slow inverter the law is not told about
    with capture_logs() as logs:
        for n in range(400):
            load_w = 500.0 + (1500.0 if (n // 20) % 2 else 0.0) + 30.0 * ((n * 7919) % 13 - 6)
            feed_readings(ctx, {Q.GRID_POWER_W: load_w - ess_w, Q.ESS_POWER_W: ess_w, Q.SOC_PCT: 50.0}, at_s=sim_clock.monotonic())
            c.cycle()
            sim_clock.advance(1.0)
            ess_w += (ctx.snapshot().command.written_w - ess_w) * (1.0 - 2.718281828 ** (-1.0 / tau_s))  # type: ignore[union-attr]
    law = ctx.snapshot().control.law  # type: ignore[union-attr]
    assert law["law"] == "adaptive"
    assert law["inverter_tau_s"] == __import__("pytest").approx(tau_s, rel=0.2)
    assert law["confidence"] > 0.5
    lines = [e for e in logs if e["event"] == "law_plant_identified"]
    assert 2 <= len(lines) <= 16  # the first belief and its meaningful changes, not every cycle
    assert lines[-1]["inverter_tau_s"] == __import__("pytest").approx(tau_s, rel=0.2)
