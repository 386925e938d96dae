"""The shared context: narrow writes, frozen snapshots, audited requests, command hand-off."""

from __future__ import annotations

import dataclasses
import math
import threading

import pytest

from ems.clock import SimClock
from ems.context import EMSContext
from ems.model import Command, Mode, Quantity, State

Q = Quantity


def test_measurements_carry_receive_time_and_non_finite_values_are_counted_and_dropped(ctx: EMSContext) -> None:
    dropped = ctx.update_measurements({Q.GRID_POWER_W: 120.0, Q.SOC_PCT: math.nan, Q.PV_POWER_W: math.inf}, at_s=5.0)
    snap = ctx.snapshot()
    assert dropped == 2 and snap.counters["measurements_rejected"] == 2
    assert snap.reading(Q.GRID_POWER_W) == dataclasses.replace(snap.reading(Q.GRID_POWER_W), value=120.0, at_s=5.0)  # type: ignore[arg-type]
    assert snap.reading(Q.SOC_PCT) is None


def test_snapshot_is_frozen_and_detached(ctx: EMSContext) -> None:
    ctx.update_measurements({Q.GRID_POWER_W: 1.0}, at_s=1.0)
    snap = ctx.snapshot()
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.state = State.FAULT  # type: ignore[misc]
    with pytest.raises(TypeError):
        snap.measurements[Q.GRID_POWER_W] = None  # type: ignore[index]
    ctx.update_measurements({Q.GRID_POWER_W: 2.0}, at_s=2.0)
    assert snap.reading(Q.GRID_POWER_W).value == 1.0  # type: ignore[union-attr]


def test_requests_are_audited(ctx: EMSContext, sim_clock: SimClock) -> None:
    ctx.request_mode(Mode.IDLE, who="alice", via="rest")
    ok = ctx.set_external_setpoint(power_w=1500.0, ttl_s=60.0, reason="dispatch", who="agg", via="mqtt", seq=7)
    bad = ctx.set_external_setpoint(power_w=1500.0, ttl_s=1e9, reason="too long", who="agg", via="mqtt")
    events = ctx.events_since(0)
    assert [e.data["result"] for e in events] == ["accepted", "accepted", "refused"]
    assert ok.accepted and not bad.accepted
    assert events[0].data["old"] == "SELF_CONSUMPTION" and events[0].data["new"] == "IDLE"
    snap = ctx.snapshot()
    assert snap.requested_mode is Mode.EXTERNAL
    assert snap.external_setpoint is not None and snap.external_setpoint.expires_at_s == sim_clock.monotonic() + 60.0
    ctx.release_setpoint(who="agg", via="mqtt", mode=Mode.SELF_CONSUMPTION)
    assert ctx.snapshot().external_setpoint is None and ctx.snapshot().requested_mode is Mode.SELF_CONSUMPTION


def test_error_streak_edges(ctx: EMSContext) -> None:
    assert ctx.mark_error("modbus", reason="timeout", at_s=1.0) == 1
    assert ctx.mark_error("modbus", reason="timeout", at_s=2.0) == 2
    assert ctx.mark_ok("modbus", at_s=3.0) == 2
    assert ctx.mark_ok("modbus", at_s=4.0) == 0
    (w,) = ctx.snapshot().workers
    assert (w.errors_total, w.error_streak, w.last_ok_s) == (2, 0, 4.0)


def test_published_command_wakes_a_waiting_writer(ctx: EMSContext) -> None:
    got: list[Command | None] = []
    ready = threading.Event()

    def writer() -> None:
        ready.set()
        got.append(ctx.wait_command(after_seq=0, timeout_s=10.0))

    t = threading.Thread(target=writer)
    t.start()
    ready.wait(5)
    cmd = Command(1, State.SELF_CONSUMPTION, 100.0, 100.0, (), 1000.0)
    ctx.publish_command(cmd, fault_causes=(), limits_bound=())
    t.join(10)
    assert got == [cmd]


def test_shutdown_wait_is_bounded_and_sees_the_ack(ctx: EMSContext) -> None:
    assert ctx.wait_command_written(1, timeout_s=5.0) is False  # no writer registered: do not wait
    ctx.register_command_consumer()
    ctx.publish_command(Command(1, State.STOP, 0.0, 0.0, (), 1.0), fault_causes=(), limits_bound=())
    threading.Timer(0.01, lambda: ctx.ack_command(1, at_s=2.0)).start()
    assert ctx.wait_command_written(1, timeout_s=10.0) is True
    assert ctx.snapshot().command_written_seq == 1
