"""The CAN worker on a real python-can bus (virtual interface), end to end into the control core.

Frames -> CanWorker -> EMSContext -> a real Controller (SimClock, cycles stepped by hand):
fields decode with scale and sign, a protection gives FAULT and 0 W in one cycle, a warning is
logged once and exposed, silence gives FAULT after fault_timeout_s, CCL/DCL bind the command.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import can
import pytest
import structlog

from config import EMSConfig
from ems.clock import SimClock, SystemClock
from ems.context import EMSContext
from ems.controller import Controller
from ems.core import Decision
from ems.model import Mode, State
from ems.model import Quantity as Q
from interfaces.can.worker import CanWorker
from simulators.bms import BmsSimConfig, BmsSimulator, StaticBattery
from tests.helpers.can import BmsTx, bms_info, can_counters, can_worker, ems_config, virtual_bus, virtual_channel
from tests.helpers.common import wait_for
from tests.helpers.context import feed, make_controller


@dataclass
class Rig:
    cfg: EMSConfig
    clock: SimClock
    ctx: EMSContext
    worker: CanWorker
    tx: BmsTx
    controller: Controller

    def decoded(self) -> int:
        return can_counters(self.ctx).get("can_frames_decoded", 0)

    def send_and_wait(self, **state: Any) -> None:
        """Send the whole BMS frame set and wait until the worker decoded all of it."""
        before = self.decoded()
        n = self.tx.send_state(**state)
        wait_for(lambda: self.decoded() >= before + n, timeout_s=5, what="BMS frames decoded")

    def feed_meter(self, *, grid_w: float = 2000.0, ess_w: float = 0.0) -> None:
        """The Modbus side (not under test here): fresh grid and ESS readings at the current time."""
        feed(self.ctx, {Q.GRID_POWER_W: grid_w, Q.ESS_POWER_W: ess_w}, source="modbus")

    def bring_up(self, *, mode: Mode = Mode.SELF_CONSUMPTION, grid_w: float = 2000.0, **state: Any) -> Decision:
        self.ctx.requests.request_mode(mode, who="test", via="test")
        self.send_and_wait(**state)
        self.feed_meter(grid_w=grid_w)
        assert self.controller.cycle().state is State.STANDBY
        d = self.controller.cycle()
        assert d.state is State.SELF_CONSUMPTION, d.fault_causes
        return d


def _beat(ctx: EMSContext) -> bool:
    return any(t.name == "can" and t.last_beat_s is not None for t in ctx.snapshot().threads)


@pytest.fixture
def make_rig() -> Iterator[Callable[..., Rig]]:
    made: list[tuple[CanWorker, can.BusABC]] = []

    def make(*, can_cfg: dict[str, Any] | None = None, control: dict[str, Any] | None = None) -> Rig:
        channel = virtual_channel()
        cfg = ems_config(can_cfg={"channel": channel} | (can_cfg or {}), control=control)
        clock = SimClock()
        ctx = EMSContext(clock=clock, start_mode=Mode.SELF_CONSUMPTION)
        worker = can_worker(cfg, ctx, clock)
        worker.start()
        bus = virtual_bus(channel)
        made.append((worker, bus))
        wait_for(lambda: _beat(ctx), timeout_s=5, what="worker bus open (first heartbeat)")
        controller = make_controller(ctx, cfg, clock, workers=[worker])
        return Rig(cfg, clock, ctx, worker, BmsTx(bus), controller)

    yield make
    for worker, bus in made:
        worker.stop()
        bus.shutdown()
        assert not worker.is_alive()


def test_every_field_lands_in_the_context_with_scale_and_sign(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.send_and_wait(
        soc_pct=57,
        voltage_v=52.31,
        current_a=-23.4,
        temperature_degc=-3.5,
        ccl_a=80.5,
        dcl_a=120.0,
        charge_enable=False,
        discharge_enable=True,
        force_charge=True,
    )
    snap = rig.ctx.snapshot()
    values = {q: r.value for q, r in snap.measurements.items()}
    assert values == {
        Q.BMS_CVL_V: 56.0, Q.BMS_CCL_A: 80.5, Q.BMS_DCL_A: 120.0, Q.BMS_DVL_V: 46.0,
        Q.SOC_PCT: 57.0, Q.SOH_PCT: 98.0,
        Q.BMS_VOLTAGE_V: 52.31, Q.BMS_CURRENT_A: -23.4, Q.BMS_TEMPERATURE_DEGC: -3.5,
        Q.BMS_CHARGE_ENABLE: 0.0, Q.BMS_DISCHARGE_ENABLE: 1.0, Q.BMS_FORCE_CHARGE: 1.0,
    }  # fmt: skip
    assert all(r.at_s == rig.clock.monotonic() for r in snap.measurements.values())
    assert snap.bms_flags is not None and snap.bms_flags.protections == frozenset() and snap.bms_flags.warnings == frozenset()
    bms = snap.device("bms")
    assert bms is not None
    assert dict(bms.info) == {
        "name": "PYLON",
        "modules": 2,
        "full_charge_request": False,
        "protections": (),
        "warnings": (),
        "silent": False,
    }  # the info is stored frozen: lists become tuples
    assert bms.last_ok_s is not None and bms.error_streak == 0
    assert bms.thread == "can" and set(bms.owns) >= {Q.SOC_PCT, Q.BMS_CCL_A, Q.BMS_DCL_A, Q.BMS_VOLTAGE_V}
    assert all(r.source == "bms" for r in snap.measurements.values())


def test_a_bms_reporting_discharge_positive_is_converted_to_charge_positive(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(can_cfg={"current_positive": "discharge"})
    before = rig.decoded()
    rig.tx.send(0x356, bytes([0x70, 0x14, 0x7D, 0x00, 0xF1, 0x00]))  # +12.5 A on the wire: discharging
    wait_for(lambda: rig.decoded() > before, what="0x356 decoded")
    assert rig.ctx.snapshot().measurements[Q.BMS_CURRENT_A].value == -12.5


def test_the_plant_driven_simulator_is_decoded_field_by_field() -> None:
    channel = virtual_channel()
    cfg = ems_config(can_cfg={"channel": channel, "keepalive_period_s": 0.2})
    clock = SystemClock()
    ctx = EMSContext(clock=clock)
    battery = StaticBattery(soc_pct=42.4, voltage_v=51.87, current_a=31.2, temperature_degc=28.3, ccl_a=64.0, dcl_a=99.5)
    sim = BmsSimulator(battery, BmsSimConfig(interface="virtual", channel=channel, serve_bridge=False, name="SIMBMS", modules=3)).start()
    worker = can_worker(cfg, ctx, clock)
    worker.start()
    try:
        wait_for(lambda: bms_info(ctx).get("name") == "SIMBMS", what="simulated BMS identified")
        wait_for(lambda: Q.BMS_TEMPERATURE_DEGC in ctx.snapshot().measurements, what="0x356 decoded")
        wait_for(lambda: sim.keepalives_received >= 2, what="the simulator hears the EMS keep-alive")
        m = {q: r.value for q, r in ctx.snapshot().measurements.items()}
        assert m[Q.SOC_PCT] == 42.0  # 0x355 carries whole percent
        assert (m[Q.BMS_VOLTAGE_V], m[Q.BMS_CURRENT_A], m[Q.BMS_TEMPERATURE_DEGC]) == (51.87, 31.2, 28.3)
        assert (m[Q.BMS_CCL_A], m[Q.BMS_DCL_A], m[Q.BMS_CVL_V], m[Q.BMS_DVL_V]) == (64.0, 99.5, 56.0, 46.0)
        assert (m[Q.BMS_CHARGE_ENABLE], m[Q.BMS_DISCHARGE_ENABLE], m[Q.BMS_FORCE_CHARGE]) == (1.0, 1.0, 0.0)
        assert bms_info(ctx)["modules"] == 3
        battery.soc_pct = 2.0  # the simulator follows its battery source: low SOC -> force-charge request
        wait_for(lambda: ctx.snapshot().measurements[Q.BMS_FORCE_CHARGE].value == 1.0, what="force charge requested")
        assert ctx.snapshot().measurements[Q.SOC_PCT].value == 2.0
    finally:
        worker.stop()
        sim.stop()


def test_a_protection_flag_gives_fault_and_zero_watts_within_one_cycle(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    up = rig.bring_up(grid_w=2000.0)
    assert up.written_w > 0  # discharging to cover the import
    rig.send_and_wait(protections=frozenset({"over_voltage"}))
    d = rig.controller.cycle()
    assert d.state is State.FAULT
    assert d.written_w == 0.0 and d.setpoint_w == 0.0
    assert "bms_protection:over_voltage" in d.fault_causes
    snap = rig.ctx.snapshot()
    assert snap.command is not None and snap.command.written_w == 0.0
    assert [e.data["flag"] for e in rig.ctx.events.since(0) if e.kind == "alarm"] == ["over_voltage"]
    # clear it: FAULT holds for recover_s, then STANDBY, then the requested mode again
    rig.send_and_wait()
    assert rig.controller.cycle().state is State.FAULT  # hysteresis starts now
    rig.clock.advance(rig.cfg.control.recover_s)
    rig.send_and_wait()
    rig.feed_meter()
    assert rig.controller.cycle().state is State.STANDBY
    assert rig.controller.cycle().state is State.SELF_CONSUMPTION


def test_a_warning_is_logged_once_exposed_and_does_not_fault(make_rig: Callable[..., Rig]) -> None:
    with structlog.testing.capture_logs() as logs:
        rig = make_rig()
        rig.bring_up()
        for _ in range(4):
            rig.send_and_wait(warnings=frozenset({"high_temperature"}))
        snap = rig.ctx.snapshot()
        assert snap.bms_flags is not None and snap.bms_flags.warnings == {"high_temperature"}
        assert bms_info(rig.ctx)["warnings"] == ("high_temperature",)
        assert rig.controller.cycle().state is State.SELF_CONSUMPTION
        rig.send_and_wait()
        rig.send_and_wait()
    raised = [e for e in logs if e["event"] == "bms_warning_raised"]
    cleared = [e for e in logs if e["event"] == "bms_warning_cleared"]
    assert [e["flag"] for e in raised] == ["high_temperature"] and raised[0]["log_level"] == "warning"
    assert [e["flag"] for e in cleared] == ["high_temperature"]
    assert bms_info(rig.ctx)["warnings"] == ()
    alarms = [(e.data["level"], e.data["flag"], e.data["raised"]) for e in rig.ctx.events.since(0) if e.kind == "alarm"]
    assert alarms == [("warning", "high_temperature", True), ("warning", "high_temperature", False)]


def test_silence_gives_fault_after_the_timeout(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()  # stale_after_s null: the worker uses control.fault_timeout_s too
    rig.bring_up()
    timeout_s = rig.cfg.control.fault_timeout_s
    rig.clock.advance(timeout_s - 0.5)  # the BMS says nothing more; the meter stays fresh
    rig.feed_meter()
    assert rig.controller.cycle().state is State.SELF_CONSUMPTION
    rig.clock.advance(1.0)
    rig.feed_meter()
    d = rig.controller.cycle()
    assert d.state is State.FAULT and d.written_w == 0.0
    assert {"stale:soc_pct", "stale:bms_voltage_v", "stale:bms_ccl_a", "stale:bms_dcl_a"} <= set(d.fault_causes)
    wait_for(lambda: bms_info(rig.ctx).get("silent") is True, what="worker reports the BMS silent")
    assert "bms_protection:bms_silent" in rig.controller.cycle().fault_causes
    bms = rig.ctx.snapshot().device("bms")
    assert bms is not None and bms.last_error == "bms_silent" and bms.error_streak >= 1
    rig.send_and_wait()  # heard again: the worker recovers and drops its flag
    assert bms_info(rig.ctx)["silent"] is False
    bms = rig.ctx.snapshot().device("bms")
    assert bms is not None and bms.error_streak == 0
    assert rig.ctx.snapshot().bms_flags is not None and rig.ctx.snapshot().bms_flags.protections == frozenset()


def test_silence_faults_even_when_another_source_keeps_the_bms_fields_fresh(make_rig: Callable[..., Rig]) -> None:
    """SunSpec model 802 over Modbus also reports soc_pct/bms_voltage_v/bms_ccl_a/bms_dcl_a. The CAN BMS
    owns them, so the inverter's copies are dropped; and even with those fields fresh, staleness alone
    would not see the CAN BMS go quiet, so the worker raises its own protection flag."""
    battery = {Q.SOC_PCT: 60.0, Q.BMS_VOLTAGE_V: 50.0, Q.BMS_CCL_A: 100.0, Q.BMS_DCL_A: 100.0}
    rig = make_rig()
    # the inverter's battery readings are optional claims (as build_modbus_links makes them)
    inverter = rig.ctx.readings.claim("ess", (), optional=battery.keys())
    rig.bring_up()
    heard = {q: rig.ctx.snapshot().measurements[q] for q in battery}
    rig.clock.advance(rig.cfg.control.fault_timeout_s + 0.5)
    rig.feed_meter()
    inverter.update(battery, at_s=rig.clock.monotonic())
    assert {q: rig.ctx.snapshot().measurements[q] for q in battery} == heard  # the copies did not land: the BMS owns them
    feed(rig.ctx, battery, source="bms")  # the fields fresh anyway, as if the BMS's own values kept coming
    wait_for(lambda: bms_info(rig.ctx).get("silent") is True, what="worker reports the BMS silent")
    d = rig.controller.cycle()
    assert d.state is State.FAULT and d.written_w == 0.0
    assert d.fault_causes == ("bms_protection:bms_silent",)
    assert [(e.data["flag"], e.data["raised"]) for e in rig.ctx.events.since(0) if e.kind == "alarm"] == [("bms_silent", True)]


@pytest.mark.parametrize(
    ("mode", "state", "expected_w", "reason"),
    [
        (Mode.CHARGE_ONLY, {"voltage_v": 50.0, "ccl_a": 10.0}, -500.0, "bms_ccl"),
        (Mode.DISCHARGE_ONLY, {"voltage_v": 50.0, "dcl_a": 20.0}, 1000.0, "bms_dcl"),
        (Mode.CHARGE_ONLY, {"charge_enable": False}, 0.0, "bms_charge_disabled"),
        (Mode.DISCHARGE_ONLY, {"discharge_enable": False}, 0.0, "bms_discharge_disabled"),
    ],
)
def test_bms_limits_bind_the_command(
    make_rig: Callable[..., Rig], mode: Mode, state: dict[str, Any], expected_w: float, reason: str
) -> None:
    rig = make_rig(control={"charge_power_w": 3000.0, "discharge_power_w": 3000.0})
    d = rig.bring_up(mode=mode, **state)
    assert d.written_w == pytest.approx(expected_w)
    assert reason in d.reasons
    assert reason in rig.ctx.snapshot().limits


def test_a_force_charge_request_is_honoured(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(control={"force_charge_w": 800.0})
    d = rig.bring_up(grid_w=2000.0, force_charge=True)  # the grid alone would ask for a discharge
    assert d.written_w == pytest.approx(-800.0)
    assert "bms_force_charge" in d.reasons


def test_keepalive_is_sent_when_configured() -> None:
    channel = virtual_channel()
    cfg = ems_config(can_cfg={"channel": channel, "keepalive_period_s": 0.1})
    clock = SystemClock()
    ctx = EMSContext(clock=clock)
    observer = virtual_bus(channel)
    worker = can_worker(cfg, ctx, clock)
    worker.start()
    try:
        got: list[can.Message] = []

        def three_keepalives() -> bool:
            msg = observer.recv(0.2)
            if msg is not None and msg.arbitration_id == 0x305:
                got.append(msg)
            return len(got) >= 3

        wait_for(three_keepalives, what="three 0x305 keep-alives")
        assert all(bytes(m.data) == bytes(8) and not m.is_extended_id for m in got)
        assert can_counters(ctx)["can_keepalives_sent"] >= 3
    finally:
        worker.stop()
        observer.shutdown()


def test_no_keepalive_by_default(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.send_and_wait()
    assert rig.tx.bus.recv(0.3) is None
    assert "can_keepalives_sent" not in can_counters(rig.ctx)
