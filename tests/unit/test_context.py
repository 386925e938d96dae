"""The shared context, part by part: readings with owners, frozen snapshots, audited requests,
the command channel, health per device."""

from __future__ import annotations

import dataclasses
import math
import threading

import pytest

from ems.clock import SimClock
from ems.context import AuditNotDurable, EMSContext
from ems.model import EventRecord, Mode, Quantity, State
from tests.helpers.context import feed, publish

Q = Quantity


def test_measurements_carry_receive_time_and_source_and_non_finite_values_are_counted_and_dropped(ctx: EMSContext) -> None:
    w = ctx.readings.claim("meter", [Q.GRID_POWER_W, Q.SOC_PCT, Q.PV_POWER_W])
    dropped = w.update({Q.GRID_POWER_W: 120.0, Q.SOC_PCT: math.nan, Q.PV_POWER_W: math.inf}, at_s=5.0)
    snap = ctx.snapshot()
    assert dropped == 2 and snap.counters["measurements_rejected"] == 2
    r = snap.reading(Q.GRID_POWER_W)
    assert r is not None and (r.value, r.at_s, r.source) == (120.0, 5.0, "meter")
    assert snap.reading(Q.SOC_PCT) is None


def test_a_second_writer_of_an_owned_quantity_is_refused_counted_and_logged_once(ctx: EMSContext) -> None:
    meter = ctx.readings.claim("meter", [Q.GRID_POWER_W])
    other = ctx.readings.claim("mqtt:site/grid", [Q.GRID_POWER_W], device="broker")
    assert other.claim.refused == {Q.GRID_POWER_W: "meter"} and Q.GRID_POWER_W not in other.claim.granted
    meter.update({Q.GRID_POWER_W: 300.0}, at_s=1.0)
    assert other.update({Q.GRID_POWER_W: -9999.0}, at_s=2.0) == 1  # refused
    assert other.update({Q.GRID_POWER_W: -9999.0}, at_s=3.0) == 1
    snap = ctx.snapshot()
    r = snap.reading(Q.GRID_POWER_W)
    assert r is not None and (r.value, r.source) == (300.0, "meter")
    assert snap.counters["readings_refused"] == 2 and snap.counters["readings_claims_refused"] == 1
    assert ctx.owners() == {Q.GRID_POWER_W: "meter"}


def test_a_write_nobody_claimed_is_refused(ctx: EMSContext) -> None:
    w = ctx.readings.claim("meter", [Q.GRID_POWER_W])
    assert w.update({Q.SOC_PCT: 50.0}, at_s=1.0) == 1
    assert ctx.snapshot().reading(Q.SOC_PCT) is None


@pytest.mark.parametrize("inverter_first", [True, False])
def test_the_inverters_battery_copies_yield_to_the_bms_whatever_the_start_order(ctx: EMSContext, inverter_first: bool) -> None:
    """An inverter's SOC (SunSpec 802) is an optional claim: a CAN BMS owns SOC firmly, so a silent
    BMS cannot be hidden by the inverter's copy; the inverter's lost copies drop quietly (not counted)."""

    def inverter():  # type: ignore[no-untyped-def]
        return ctx.readings.claim("ess", [Q.ESS_POWER_W], optional=[Q.SOC_PCT])

    def bms():  # type: ignore[no-untyped-def]
        return ctx.readings.claim("bms", [Q.SOC_PCT], bms_flags=True)

    if inverter_first:
        ess = inverter()
        can = bms()
    else:
        can = bms()
        ess = inverter()
    assert not ess.owns(Q.SOC_PCT) and can.owns(Q.SOC_PCT) and ess.owns(Q.ESS_POWER_W)
    ess.update({Q.ESS_POWER_W: -500.0, Q.SOC_PCT: 80.0}, at_s=1.0)
    can.update({Q.SOC_PCT: 42.0}, at_s=1.0)
    snap = ctx.snapshot()
    soc = snap.reading(Q.SOC_PCT)
    assert soc is not None and (soc.value, soc.source) == (42.0, "bms")
    assert "readings_refused" not in snap.counters


def test_an_inverter_alone_keeps_its_battery_readings(ctx: EMSContext) -> None:
    ess = ctx.readings.claim("ess", [Q.ESS_POWER_W], optional=[Q.SOC_PCT])
    ess.update({Q.SOC_PCT: 61.0}, at_s=1.0)
    soc = ctx.snapshot().reading(Q.SOC_PCT)
    assert soc is not None and (soc.value, soc.source) == (61.0, "ess")


def test_bms_flags_only_from_their_owner(ctx: EMSContext) -> None:
    can = ctx.readings.claim("bms", [Q.SOC_PCT], bms_flags=True)
    other = ctx.readings.claim("other", [Q.PV_POWER_W])
    assert can.set_bms_flags(protections={"over_voltage"}, warnings=(), at_s=1.0)
    assert not other.set_bms_flags(protections=(), warnings=(), at_s=2.0)
    flags = ctx.snapshot().bms_flags
    assert flags is not None and flags.protections == {"over_voltage"}
    with pytest.raises(ValueError, match="already owned by bms"):
        ctx.readings.claim("rogue", [], bms_flags=True)


def test_snapshot_is_frozen_detached_and_never_older_than_its_readings(ctx: EMSContext, sim_clock: SimClock) -> None:
    feed(ctx, {Q.GRID_POWER_W: 1.0})
    ctx.health.register_device("ess", kind="modbus", where="tcp://x", thread="modbus-ess")
    info = {"identity": {"model": "X"}, "models": [1, 103]}
    ctx.health.set_info("ess", **info)
    snap = ctx.snapshot()
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.control = None  # type: ignore[misc]
    with pytest.raises(TypeError):
        snap.measurements[Q.GRID_POWER_W] = None  # type: ignore[index]
    dev = snap.device("ess")
    assert dev is not None
    with pytest.raises(TypeError):
        dev.info["identity"]["model"] = "Y"  # type: ignore[index]
    info["models"].append(802)  # the worker's own dict: the snapshot does not see it
    assert dev.info["models"] == (1, 103)
    feed(ctx, {Q.GRID_POWER_W: 2.0})
    assert snap.reading(Q.GRID_POWER_W).value == 1.0  # type: ignore[union-attr]
    assert all(r.at_s <= snap.at_s for r in snap.measurements.values())


def test_requests_are_audited(ctx: EMSContext, sim_clock: SimClock) -> None:
    rq = ctx.requests
    rq.request_mode(Mode.IDLE, who="alice", via="rest")
    ok = rq.set_external_setpoint(power_w=1500.0, ttl_s=60.0, reason="dispatch", who="agg", via="mqtt", seq=7)
    bad = rq.set_external_setpoint(power_w=1500.0, ttl_s=1e9, reason="too long", who="agg", via="mqtt")
    events = ctx.events.since(0)
    assert [e.data["result"] for e in events] == ["accepted", "accepted", "refused"]
    assert ok.accepted and not bad.accepted
    assert events[0].data["old"] == "SELF_CONSUMPTION" and events[0].data["new"] == "IDLE"
    snap = ctx.snapshot()
    assert snap.requested_mode is Mode.EXTERNAL
    assert snap.external_setpoint is not None and snap.external_setpoint.expires_at_s == sim_clock.monotonic() + 60.0
    rq.release_setpoint(who="agg", via="mqtt", mode=Mode.SELF_CONSUMPTION)
    assert ctx.snapshot().external_setpoint is None and ctx.snapshot().requested_mode is Mode.SELF_CONSUMPTION


def test_every_audit_event_reaches_the_sink_before_the_request_returns(ctx: EMSContext) -> None:
    seen: list[int] = []
    ctx.requests.set_audit_sink(lambda e: seen.append(e.seq))
    r1 = ctx.requests.request_mode(Mode.IDLE, who="a", via="rest")
    assert seen == [r1.event_seq]
    r2 = ctx.requests.set_external_setpoint(power_w=1.0, ttl_s=0.0, reason="", who="a", via="rest")
    assert not r2.accepted and seen == [r1.event_seq, r2.event_seq]


def test_error_streak_edges_are_per_device(ctx: EMSContext) -> None:
    h = ctx.health
    for name in ("meter", "pv"):
        h.register_device(name, kind="modbus", where=f"tcp://{name}", thread=f"modbus-{name}")
    assert h.error("pv", reason="timeout", at_s=1.0) == 1
    assert h.error("pv", reason="timeout", at_s=2.0) == 2
    assert h.ok("meter", at_s=2.5) == 0
    assert h.ok("pv", at_s=3.0) == 2
    snap = ctx.snapshot()
    pv, meter = snap.device("pv"), snap.device("meter")
    assert pv is not None and meter is not None
    assert (pv.errors_total, pv.error_streak, pv.last_ok_s, pv.last_error) == (2, 0, 3.0, "timeout")
    assert (meter.errors_total, meter.last_ok_s) == (0, 2.5)


def test_a_device_is_required_when_it_is_the_actuator_or_owns_a_required_source(sim_clock: SimClock) -> None:
    ctx = EMSContext(clock=sim_clock, required_sources=(Q.GRID_POWER_W, Q.SOC_PCT))
    for name, actuator in (("ess", True), ("meter", False), ("pv", False), ("broker", False)):
        ctx.health.register_device(name, kind="x", where="", thread=name, actuator=actuator)
    ctx.readings.claim("meter", [Q.GRID_POWER_W])
    ctx.readings.claim("pv", [Q.PV_POWER_W])
    ctx.readings.claim("mqtt:site/soc", [Q.SOC_PCT], device="broker")  # an ingest topic answers through the broker
    required = {d.name: d.required for d in ctx.snapshot().devices}
    assert required == {"ess": True, "meter": True, "pv": False, "broker": True}


def test_published_command_wakes_a_waiting_writer(ctx: EMSContext) -> None:
    got = []
    ready = threading.Event()

    def writer() -> None:
        ready.set()
        got.append(ctx.commands.wait_command(after_seq=0, timeout_s=10.0))

    t = threading.Thread(target=writer)
    t.start()
    ready.wait(5)
    cmd = publish(ctx, seq=1, setpoint_w=100.0)
    t.join(10)
    assert got == [cmd]
    snap = ctx.snapshot()
    assert snap.command == cmd and snap.state is State.SELF_CONSUMPTION and snap.cycles == 1


def test_shutdown_wait_is_bounded_and_sees_the_ack(ctx: EMSContext) -> None:
    ch = ctx.commands
    assert ch.wait_written(1, timeout_s=5.0) is False  # no writer registered: do not wait
    ch.register_consumer()
    publish(ctx, seq=1, setpoint_w=0.0, state=State.STOP)
    threading.Timer(0.01, lambda: ch.ack(1)).start()
    assert ch.wait_written(1, timeout_s=10.0) is True
    assert ctx.snapshot().written_seq == 1


def test_an_accepted_request_is_applied_only_after_its_audit_is_durable(ctx: EMSContext) -> None:
    seen: list[tuple[str, Mode]] = []

    def sink(e: EventRecord) -> None:  # the store's sink returns once the row is committed
        seen.append((str(e.data["result"]), ctx.snapshot().requested_mode))

    ctx.requests.set_audit_sink(sink)
    r = ctx.requests.request_mode(Mode.IDLE, who="a", via="rest")
    assert r.accepted and seen == [("accepted", Mode.SELF_CONSUMPTION)]  # not yet applied while the commit is awaited
    assert ctx.snapshot().requested_mode is Mode.IDLE


def test_a_request_whose_audit_cannot_be_committed_is_refused_not_applied_and_withdrawn(ctx: EMSContext) -> None:
    def sink(e: EventRecord) -> None:
        if e.data["result"] == "accepted":
            raise AuditNotDurable("no commit within 2 s")

    ctx.requests.set_audit_sink(sink)
    r = ctx.requests.set_external_setpoint(power_w=500.0, ttl_s=60.0, reason="dr", who="agg", via="mqtt")
    assert not r.accepted and r.not_durable and "could not be committed" in r.message
    snap = ctx.snapshot()
    assert snap.external_setpoint is None and snap.requested_mode is Mode.SELF_CONSUMPTION
    first, second = (e for e in ctx.events.since(0) if e.kind == "audit")
    assert first.data["result"] == "accepted" and second.data["result"] == "refused"
    assert second.data["withdraws"] == first.seq and second.seq == r.event_seq
    for call in (
        lambda: ctx.requests.request_mode(Mode.IDLE, who="a", via="rest"),
        lambda: ctx.requests.release_setpoint(who="a", via="rest", mode=Mode.IDLE),
        lambda: ctx.requests.set_import_cap(power_w=1000.0, ttl_s=None, reason="dso", who="a", via="rest"),
        lambda: ctx.requests.clear_import_cap(who="a", via="rest"),
    ):
        assert call().not_durable
    assert ctx.snapshot().requested_mode is Mode.SELF_CONSUMPTION and ctx.requests.import_cap() is None
