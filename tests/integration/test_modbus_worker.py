"""Modbus worker against real pymodbus servers on loopback: readings, commands, reconnect, garbage, RTU."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from config.modbus import ModbusConfig
from ems.clock import SystemClock
from ems.context import EMSContext
from ems.model import Command, Mode, Quantity, State
from interfaces.modbus.worker import ModbusWorker
from tests.helpers.common import free_port, wait_for
from tests.helpers.modbus import LoopThread, SimDevice, pty_pair

POLL_S = 0.2


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture
def clock() -> SystemClock:
    return SystemClock()


@pytest.fixture
def ctx(clock: SystemClock) -> EMSContext:
    return EMSContext(clock=clock, start_mode=Mode.SELF_CONSUMPTION)


def _devices(loop: LoopThread) -> Iterator[tuple[SimDevice, SimDevice]]:
    ess = SimDevice(loop, "sunspec_ess", port=free_port(), device_id=1)
    meter = SimDevice(loop, "sdm630", port=free_port(), device_id=2)
    ess.set(
        ess_power_w=-1500.0,
        soc_pct=62.3,
        soh_pct=98,
        bms_current_a=28.5,
        bms_voltage_v=52.61,
        bms_ccl_a=100,
        bms_dcl_a=90,
        ess_max_charge_w=5000,
        ess_max_discharge_w=4500,
        ess_status=4,
    )
    meter.set(grid_power_w=-812.5, grid_voltage_v=231.2, grid_frequency_hz=50.01, grid_import_wh=1234500.0, grid_export_wh=42000.0)
    ess.start()
    meter.start()
    try:
        yield ess, meter
    finally:
        for d in (ess, meter):
            if d.server.running:
                d.stop()


@pytest.fixture
def devices(loop: LoopThread) -> Iterator[tuple[SimDevice, SimDevice]]:
    yield from _devices(loop)


def _cfg(ess: SimDevice, meter: SimDevice, **kw: object) -> ModbusConfig:
    return ModbusConfig.model_validate(
        {
            "enabled": True,
            "ess": {"port": ess.server.port, "device_id": 1, "map": "auto", "poll_period_s": POLL_S, "timeout_s": 0.5},
            "meter": {"port": meter.server.port, "device_id": 2, "map": "sdm630", "poll_period_s": POLL_S, "timeout_s": 0.5},
            "reconnect_min_s": 0.1,
            "reconnect_max_s": 0.5,
            **kw,
        }
    )


@pytest.fixture
def worker(devices: tuple[SimDevice, SimDevice], ctx: EMSContext, clock: SystemClock) -> Iterator[ModbusWorker]:
    w = ModbusWorker(cfg=_cfg(*devices), ctx=ctx, clock=clock)
    w.start()
    yield w
    w.stop()
    assert not w.is_alive()


def _value(ctx: EMSContext, q: Quantity) -> float | None:
    r = ctx.snapshot().reading(q)
    return None if r is None else r.value


def _publish(ctx: EMSContext, clock: SystemClock, seq: int, written_w: float) -> None:
    ctx.publish_command(Command(seq, State.SELF_CONSUMPTION, written_w, written_w, (), clock.monotonic()), fault_causes=(), limits_bound=())


def test_readings_land_in_si_units_with_design_signs(worker: ModbusWorker, ctx: EMSContext) -> None:
    wait_for(
        lambda: _value(ctx, Quantity.GRID_POWER_W) is not None and _value(ctx, Quantity.SOC_PCT) is not None,
        timeout_s=5,
        what="first readings",
    )
    assert _value(ctx, Quantity.GRID_POWER_W) == pytest.approx(-812.5)  # export stays negative
    assert _value(ctx, Quantity.GRID_IMPORT_WH) == pytest.approx(1234500.0)  # kWh register -> Wh
    assert _value(ctx, Quantity.GRID_FREQUENCY_HZ) == pytest.approx(50.01, abs=1e-3)
    assert _value(ctx, Quantity.ESS_POWER_W) == pytest.approx(-1500.0)  # charging = negative
    assert _value(ctx, Quantity.SOC_PCT) == pytest.approx(62.3)  # SunSpec SF -1
    assert _value(ctx, Quantity.BMS_VOLTAGE_V) == pytest.approx(52.61)  # SF -2
    assert _value(ctx, Quantity.BMS_CURRENT_A) == pytest.approx(28.5)  # device + discharge, flipped to + charge
    assert _value(ctx, Quantity.ESS_MAX_DISCHARGE_W) == pytest.approx(4500.0)
    status = ctx.snapshot().status["modbus.ess"]
    assert isinstance(status, dict) and status["map"] == "sunspec_ess" and status["identity"]["manufacturer"] == "EMS project"
    assert {1, 103, 124, 802, 64901} <= set(status["models"])


def test_published_command_reaches_the_inverter_within_one_poll_period(
    worker: ModbusWorker, devices: tuple[SimDevice, SimDevice], ctx: EMSContext, clock: SystemClock
) -> None:
    ess, _meter = devices
    wait_for(lambda: ctx.snapshot().status.get("modbus.ess"), timeout_s=5, what="ESS connected")
    _publish(ctx, clock, 1, -1234.0)
    wait_for(lambda: ess.value("setpoint_w") == -1234.0, timeout_s=POLL_S, what="set-point register = -1234 W")
    assert ess.value("enable") == 1.0
    wait_for(lambda: ctx.snapshot().command_written_seq == 1, timeout_s=POLL_S, what="command acknowledged")
    beat = ess.value("heartbeat")
    _publish(ctx, clock, 2, 250.0)
    wait_for(lambda: ess.value("setpoint_w") == 250.0, timeout_s=POLL_S, what="set-point register = 250 W")
    assert ess.value("heartbeat") != beat  # heartbeat written with every command


def test_worker_reconnects_after_a_server_restart_and_rewrites_command_first(
    worker: ModbusWorker, devices: tuple[SimDevice, SimDevice], ctx: EMSContext, clock: SystemClock
) -> None:
    ess, _meter = devices
    _publish(ctx, clock, 1, 800.0)
    wait_for(lambda: ess.value("setpoint_w") == 800.0, timeout_s=5, what="first command")
    ess.stop()
    wait_for(lambda: (s := ctx.snapshot().status.get("modbus.ess")) and not s["connected"], timeout_s=5, what="link loss noticed")  # type: ignore[index]
    ess.set(setpoint_w=0.0, enable=0.0)  # the inverter "rebooted" to its defaults
    ess.loop.call(lambda: ess.image.set_values({}))
    ess.writes.clear()
    ess.start()
    wait_for(
        lambda: ess.value("setpoint_w") == 800.0 and ess.value("enable") == 1.0, timeout_s=5, what="command re-written after reconnect"
    )
    assert ess.writes[:2] == [("enable", 1.0), ("setpoint_w", 800.0)]  # before any new command
    before = ctx.snapshot().reading(Quantity.SOC_PCT)
    assert before is not None
    wait_for(
        lambda: (r := ctx.snapshot().reading(Quantity.SOC_PCT)) is not None and r.at_s > before.at_s, timeout_s=5, what="polling resumed"
    )
    assert worker.is_alive()


def test_garbage_register_is_counted_skipped_and_its_source_goes_stale(
    worker: ModbusWorker, devices: tuple[SimDevice, SimDevice], ctx: EMSContext
) -> None:
    _ess, meter = devices
    wait_for(lambda: _value(ctx, Quantity.GRID_POWER_W) is not None, timeout_s=5, what="first meter reading")
    meter.override("grid_power_w", [0x7FC0, 0x0000])  # float32 NaN
    frozen = wait_for(
        lambda: ctx.snapshot().counters.get("modbus_bad_value", 0) >= 1 and ctx.snapshot().reading(Quantity.GRID_POWER_W),
        timeout_s=5,
        what="NaN counted",
    )
    freq_before = ctx.snapshot().reading(Quantity.GRID_FREQUENCY_HZ)
    assert freq_before is not None
    wait_for(
        lambda: (r := ctx.snapshot().reading(Quantity.GRID_FREQUENCY_HZ)) is not None and r.at_s > freq_before.at_s + 2 * POLL_S,
        timeout_s=5,
        what="other meter values keep updating",
    )
    grid = ctx.snapshot().reading(Quantity.GRID_POWER_W)
    assert grid is not None and grid.at_s == frozen.at_s and grid.value == pytest.approx(-812.5)  # not updated: ages -> stale
    meter.override("grid_power_w", None)
    meter.set(grid_power_w=5.0e6)  # out of range (max 200 kW)
    n = ctx.snapshot().counters["modbus_bad_value"]
    wait_for(lambda: ctx.snapshot().counters["modbus_bad_value"] > n + 1, timeout_s=5, what="out-of-range counted")
    assert _value(ctx, Quantity.GRID_POWER_W) == pytest.approx(-812.5)
    meter.set(grid_power_w=120.0)
    wait_for(lambda: _value(ctx, Quantity.GRID_POWER_W) == pytest.approx(120.0), timeout_s=5, what="recovery after good value")
    assert worker.is_alive()


def test_meter_down_does_not_block_inverter_commands(
    worker: ModbusWorker, devices: tuple[SimDevice, SimDevice], ctx: EMSContext, clock: SystemClock
) -> None:
    ess, meter = devices
    wait_for(lambda: _value(ctx, Quantity.GRID_POWER_W) is not None, timeout_s=5, what="meter reading")
    meter.stop()
    wait_for(lambda: (s := ctx.snapshot().status.get("modbus.meter")) and not s["connected"], timeout_s=5, what="meter loss noticed")  # type: ignore[index]
    # between reconnect attempts the worker's health names the device and that it is waiting
    wait_for(
        lambda: any(h.name == "modbus" and h.last_error == "meter:reconnecting" for h in ctx.snapshot().workers),
        timeout_s=5,
        what="worker health: meter:reconnecting",
    )
    for seq, w in ((1, 100.0), (2, 0.0), (3, -300.0)):
        _publish(ctx, clock, seq, w)
        wait_for(lambda w=w: ess.value("setpoint_w") == w, timeout_s=POLL_S, what=f"set-point {w} W with the meter down")
    meter.start()
    wait_for(lambda: (s := ctx.snapshot().status.get("modbus.meter")) and s["connected"], timeout_s=5, what="meter back")  # type: ignore[index]


def test_sunspec_map_mismatch_is_reported_and_worker_survives(loop: LoopThread, ctx: EMSContext, clock: SystemClock) -> None:
    meter = SimDevice(loop, "sdm630", port=free_port(), device_id=2)
    meter.start()
    try:
        cfg = ModbusConfig.model_validate(
            {
                "enabled": True,
                "ess": {"port": meter.server.port, "device_id": 2, "timeout_s": 0.3},
                "meter": {"enabled": False},
                "reconnect_min_s": 0.1,
                "reconnect_max_s": 0.2,
            }
        )
        w = ModbusWorker(cfg=cfg, ctx=ctx, clock=clock)
        w.start()
        try:
            status = wait_for(lambda: ctx.snapshot().status.get("modbus.ess"), timeout_s=5, what="ESS link status")
            assert isinstance(status, dict) and not status["connected"] and "SunSpec" in status["error"]
            wait_for(lambda: ctx.snapshot().counters.get("modbus_ess_errors", 0) >= 2, timeout_s=5, what="retries with backoff")
            assert w.is_alive()
        finally:
            w.stop()
    finally:
        meter.stop()


def test_rtu_through_a_pty_pair(loop: LoopThread, ctx: EMSContext, clock: SystemClock, tmp_path: Path) -> None:
    with pty_pair(tmp_path) as (server_end, client_end):
        meter = SimDevice(loop, "sdm630", transport="rtu", serial_port=server_end, baudrate=38400, device_id=3)
        meter.set(grid_power_w=1525.0, grid_frequency_hz=49.98)
        meter.start()
        cfg = ModbusConfig.model_validate(
            {
                "enabled": True,
                "ess": {"enabled": False},
                "meter": {
                    "transport": "rtu",
                    "serial_port": client_end,
                    "baudrate": 38400,
                    "device_id": 3,
                    "map": "sdm630",
                    "poll_period_s": POLL_S,
                },
            }
        )
        w = ModbusWorker(cfg=cfg, ctx=ctx, clock=clock)
        w.start()
        try:
            wait_for(lambda: _value(ctx, Quantity.GRID_POWER_W) == pytest.approx(1525.0), timeout_s=5, what="RTU meter reading")
            assert _value(ctx, Quantity.GRID_FREQUENCY_HZ) == pytest.approx(49.98, abs=1e-3)
            meter.set(grid_power_w=-40.0)
            wait_for(lambda: _value(ctx, Quantity.GRID_POWER_W) == pytest.approx(-40.0), timeout_s=5, what="RTU update")
        finally:
            w.stop()
            meter.stop()


def test_sunspec_discovery_at_base_0_and_ignored_points(loop: LoopThread, ctx: EMSContext, clock: SystemClock) -> None:
    from interfaces.modbus.pointmap import load_map
    from simulators.modbus_server import DeviceServer, RegisterImage

    image = RegisterImage(load_map("sunspec_ess"), base=0)
    image.set_values({"ess_power_w": 700.0, "soc_pct": 41.0})
    server = DeviceServer("ess0", image, port=free_port(), device_id=1)
    loop.run(server.start())
    try:
        cfg = ModbusConfig.model_validate(
            {
                "enabled": True,
                "meter": {"enabled": False},
                "ess": {"port": server.port, "poll_period_s": POLL_S, "ignore_points": ["soc_pct"]},
            }
        )
        w = ModbusWorker(cfg=cfg, ctx=ctx, clock=clock)
        w.start()
        try:
            wait_for(lambda: _value(ctx, Quantity.ESS_POWER_W) == pytest.approx(700.0), timeout_s=5, what="ESS power from base 0")
            assert ctx.snapshot().reading(Quantity.SOC_PCT) is None  # ignored: a CAN BMS owns it
        finally:
            w.stop()
    finally:
        loop.run(server.stop())


def test_silent_meter_times_out_without_starving_inverter_writes(
    worker: ModbusWorker, devices: tuple[SimDevice, SimDevice], ctx: EMSContext, clock: SystemClock
) -> None:
    ess, meter = devices
    wait_for(lambda: _value(ctx, Quantity.GRID_POWER_W) is not None, timeout_s=5, what="meter reading")
    meter.loop.call(lambda: meter.server.set_silent(True))
    wait_for(lambda: (s := ctx.snapshot().status.get("modbus.meter")) and not s["connected"], timeout_s=5, what="silent meter noticed")  # type: ignore[index]
    last = ctx.snapshot().reading(Quantity.GRID_POWER_W)
    for seq, w in ((1, 420.0), (2, -42.0)):
        _publish(ctx, clock, seq, w)
        # a blocked meter read can delay a write by at most one request timeout (0.5 s)
        wait_for(lambda w=w: ess.value("setpoint_w") == w, timeout_s=0.5 + POLL_S, what=f"set-point {w} W with the meter silent")
    assert ctx.snapshot().reading(Quantity.GRID_POWER_W) == last  # no reading while silent: it goes stale
    meter.loop.call(lambda: meter.server.set_silent(False))
    wait_for(
        lambda: (r := ctx.snapshot().reading(Quantity.GRID_POWER_W)) is not None and last is not None and r.at_s > last.at_s,
        timeout_s=10,
        what="meter readings resume",
    )


def test_rtu_ess_and_meter_share_one_serial_line(loop: LoopThread, ctx: EMSContext, clock: SystemClock, tmp_path: Path) -> None:
    from interfaces.modbus.pointmap import load_map
    from simulators.modbus_server import DeviceServer, RegisterImage

    with pty_pair(tmp_path) as (server_end, client_end):
        writes: list[tuple[str, float]] = []
        ess_img = RegisterImage(load_map("sunspec_ess"), on_write=lambda n, v: writes.append((n, v)))
        meter_img = RegisterImage(load_map("sdm630"))
        ess_img.set_values({"ess_power_w": -900.0, "soc_pct": 77.7})
        meter_img.set_values({"grid_power_w": 35.0})
        line = DeviceServer("rs485", ess_img, transport="rtu", serial_port=server_end, baudrate=38400, device_id=1)
        line.attach(2, meter_img)
        loop.run(line.start())
        rtu = {"transport": "rtu", "serial_port": client_end, "baudrate": 38400, "poll_period_s": POLL_S, "timeout_s": 0.5}
        cfg = ModbusConfig.model_validate({"enabled": True, "ess": {**rtu, "device_id": 1}, "meter": {**rtu, "device_id": 2}})
        w = ModbusWorker(cfg=cfg, ctx=ctx, clock=clock)
        w.start()
        try:
            wait_for(
                lambda: _value(ctx, Quantity.GRID_POWER_W) == pytest.approx(35.0) and _value(ctx, Quantity.SOC_PCT) == pytest.approx(77.7),
                timeout_s=10,
                what="both devices read over one RTU line",
            )
            _publish(ctx, clock, 1, -600.0)
            wait_for(lambda: ("setpoint_w", -600.0) in writes, timeout_s=5, what="set-point over RTU")
        finally:
            w.stop()
            loop.run(line.stop())


def test_devices_on_one_serial_line_must_agree() -> None:
    from config import ConfigError, parse_config

    rtu = {"transport": "rtu", "serial_port": "/dev/ttyUSB0"}
    with pytest.raises(ConfigError, match=r"modbus\.meter"):
        parse_config({"modbus": {"ess": {**rtu, "baudrate": 9600}, "meter": {**rtu, "baudrate": 19200}}}, {})
    with pytest.raises(ConfigError, match=r"modbus\.meter"):
        parse_config({"modbus": {"ess": {**rtu, "device_id": 2}, "meter": {**rtu, "device_id": 2}}}, {})
