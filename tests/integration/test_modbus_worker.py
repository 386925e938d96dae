"""Modbus links against real pymodbus servers on loopback: readings, commands, reconnect, garbage, RTU,
and health per device (one link thread per TCP device: a dead or hung meter never holds up the inverter)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from config.modbus import ModbusConfig
from ems.clock import SystemClock
from ems.context import EMSContext
from ems.model import Mode, Quantity
from interfaces.modbus.worker import BATTERY_QUANTITIES, ModbusLink
from simulators.black_hole import BlackHole
from tests.helpers.common import free_port, wait_for
from tests.helpers.context import publish
from tests.helpers.modbus import LoopThread, SimDevice, device, info, pty_pair, running_links

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
def links(devices: tuple[SimDevice, SimDevice], ctx: EMSContext, clock: SystemClock) -> Iterator[list[ModbusLink]]:
    with running_links(_cfg(*devices), ctx, clock) as started:
        yield started


def _alive(links: list[ModbusLink]) -> bool:
    return bool(links) and all(link.is_alive() for link in links)


def _value(ctx: EMSContext, q: Quantity) -> float | None:
    r = ctx.snapshot().reading(q)
    return None if r is None else r.value


def _publish(ctx: EMSContext, seq: int, written_w: float) -> None:
    publish(ctx, seq=seq, setpoint_w=written_w)


def _connected(ctx: EMSContext, name: str) -> bool:
    return info(ctx, name).get("connected") is True


def _lost(ctx: EMSContext, name: str) -> bool:
    return info(ctx, name).get("connected") is False


def test_readings_land_in_si_units_with_design_signs(links: list[ModbusLink], ctx: EMSContext) -> None:
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
    status = wait_for(lambda: info(ctx, "ess"), timeout_s=5, what="ESS link info")
    assert status["connected"] is True and status["map"] == "sunspec_ess"
    assert status["identity"]["manufacturer"] == "EMS project"  # type: ignore[index]
    assert {1, 103, 124, 802, 64901} <= set(status["models"])  # type: ignore[call-overload]
    # one link thread per TCP device; each reading names the device that owns it
    assert sorted(link.name for link in links) == ["modbus-ess", "modbus-meter"]
    assert (device(ctx, "ess").thread, device(ctx, "meter").thread) == ("modbus-ess", "modbus-meter")
    snap = ctx.snapshot()
    assert {q: r.source for q, r in snap.measurements.items() if q in (Quantity.GRID_POWER_W, Quantity.ESS_POWER_W, Quantity.SOC_PCT)} == {
        Quantity.GRID_POWER_W: "meter",
        Quantity.ESS_POWER_W: "ess",
        Quantity.SOC_PCT: "ess",  # no CAN BMS here: the inverter's optional copy is the reading
    }


@pytest.mark.parametrize(("raw_word", "expected_a"), [((-285) & 0xFFFF, 28.5), (285, -28.5)])
def test_bms_current_sign_comes_from_the_raw_802_words(
    devices: tuple[SimDevice, SimDevice], ctx: EMSContext, clock: SystemClock, raw_word: int, expected_a: float
) -> None:
    """SunSpec 802 `A` is + discharge on this device (int16, SF -1 at offset 61 -> 10^-1); the EMS's
    bms_current_a is + charge (DESIGN §2). The words are put in the register as the device would
    serve them, not encoded through the map the link decodes with."""
    ess, meter = devices
    ess.override("bms_current_a", [raw_word])
    assert ess.words("bms_current_a") == [raw_word]
    with running_links(_cfg(ess, meter), ctx, clock):
        got = wait_for(lambda: _value(ctx, Quantity.BMS_CURRENT_A), timeout_s=5, what="bms_current_a")
    assert got == pytest.approx(expected_a)


def test_published_command_reaches_the_inverter_within_one_poll_period(
    links: list[ModbusLink], devices: tuple[SimDevice, SimDevice], ctx: EMSContext
) -> None:
    ess, _meter = devices
    wait_for(lambda: _connected(ctx, "ess"), timeout_s=5, what="ESS connected")
    _publish(ctx, 1, -1234.0)
    wait_for(lambda: ess.value("setpoint_w") == -1234.0, timeout_s=POLL_S, what="set-point register = -1234 W")
    assert ess.value("enable") == 1.0
    wait_for(lambda: ctx.snapshot().written_seq == 1, timeout_s=POLL_S, what="command acknowledged")
    beat = ess.value("heartbeat")
    _publish(ctx, 2, 250.0)
    wait_for(lambda: ess.value("setpoint_w") == 250.0, timeout_s=POLL_S, what="set-point register = 250 W")
    assert ess.value("heartbeat") != beat  # heartbeat written with every command


def test_worker_reconnects_after_a_server_restart_and_rewrites_command_first(
    links: list[ModbusLink], devices: tuple[SimDevice, SimDevice], ctx: EMSContext
) -> None:
    ess, _meter = devices
    _publish(ctx, 1, 800.0)
    wait_for(lambda: ess.value("setpoint_w") == 800.0, timeout_s=5, what="first command")
    ess.stop()
    wait_for(lambda: _lost(ctx, "ess"), timeout_s=5, what="link loss noticed")
    ess.set(setpoint_w=0.0, enable=0.0)  # the inverter "rebooted" to its defaults
    ess.loop.call(lambda: ess.image.set_values({}))
    ess.writes.clear()
    ess.start()
    wait_for(
        lambda: ess.value("setpoint_w") == 800.0 and ess.value("enable") == 1.0, timeout_s=5, what="command re-written after reconnect"
    )
    # before any new command: the inverter's own revert timer (the profile's watchdog, = fault_timeout_s), then the command
    assert ess.writes[:3] == [("watchdog_s", 3.0), ("enable", 1.0), ("setpoint_w", 800.0)]
    before = ctx.snapshot().reading(Quantity.SOC_PCT)
    assert before is not None
    wait_for(
        lambda: (r := ctx.snapshot().reading(Quantity.SOC_PCT)) is not None and r.at_s > before.at_s, timeout_s=5, what="polling resumed"
    )
    assert _connected(ctx, "ess") and device(ctx, "ess").error_streak == 0
    assert _alive(links)


def test_garbage_register_is_counted_skipped_and_its_source_goes_stale(
    links: list[ModbusLink], devices: tuple[SimDevice, SimDevice], ctx: EMSContext
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
    assert _alive(links)


def test_meter_down_does_not_block_inverter_commands(
    links: list[ModbusLink], devices: tuple[SimDevice, SimDevice], ctx: EMSContext, clock: SystemClock
) -> None:
    ess, meter = devices
    wait_for(lambda: _value(ctx, Quantity.GRID_POWER_W) is not None, timeout_s=5, what="meter reading")
    meter.stop()
    wait_for(lambda: _lost(ctx, "meter"), timeout_s=5, what="meter loss noticed")
    # health is per device: the meter is failing (its streak grows with each failed reconnect), the ESS is not
    wait_for(lambda: device(ctx, "meter").error_streak >= 2, timeout_s=5, what="meter reconnects failing")
    meter_health = device(ctx, "meter")
    assert meter_health.last_error is not None and meter_health.thread == "modbus-meter"
    assert "error" in info(ctx, "meter")
    since_s = clock.monotonic()
    wait_for(lambda: (device(ctx, "ess").last_ok_s or 0.0) > since_s, timeout_s=5, what="ESS polls still good")
    assert device(ctx, "ess").error_streak == 0
    for seq, w in ((1, 100.0), (2, 0.0), (3, -300.0)):
        _publish(ctx, seq, w)
        wait_for(lambda w=w: ess.value("setpoint_w") == w, timeout_s=POLL_S, what=f"set-point {w} W with the meter down")
    meter.start()
    wait_for(lambda: _connected(ctx, "meter"), timeout_s=5, what="meter back")
    assert device(ctx, "meter").error_streak == 0


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
        with running_links(cfg, ctx, clock) as links:
            status = wait_for(lambda: info(ctx, "ess"), timeout_s=5, what="ESS link status")
            assert status["connected"] is False and "SunSpec" in str(status["error"])
            wait_for(lambda: ctx.snapshot().counters.get("modbus_ess_errors", 0) >= 2, timeout_s=5, what="retries with backoff")
            ess = device(ctx, "ess")
            assert ess.error_streak >= 2 and ess.last_ok_s is None and ess.required  # the actuator
            assert [link.name for link in links] == ["modbus-ess"]
            assert _alive(links)
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
        try:
            with running_links(cfg, ctx, clock) as links:
                wait_for(lambda: _value(ctx, Quantity.GRID_POWER_W) == pytest.approx(1525.0), timeout_s=5, what="RTU meter reading")
                assert _value(ctx, Quantity.GRID_FREQUENCY_HZ) == pytest.approx(49.98, abs=1e-3)
                meter.set(grid_power_w=-40.0)
                wait_for(lambda: _value(ctx, Quantity.GRID_POWER_W) == pytest.approx(-40.0), timeout_s=5, what="RTU update")
                assert [link.name for link in links] == ["modbus-rtu-pty-b"]  # a serial line's thread is named after its tty
        finally:
            meter.stop()


def test_sunspec_discovery_at_base_0_and_ignored_points(loop: LoopThread, ctx: EMSContext, clock: SystemClock) -> None:
    """ignore_points still drops a reading (no CAN BMS needed for that any more: see the next test)."""
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
        with running_links(cfg, ctx, clock):
            wait_for(lambda: _value(ctx, Quantity.ESS_POWER_W) == pytest.approx(700.0), timeout_s=5, what="ESS power from base 0")
            assert ctx.snapshot().reading(Quantity.SOC_PCT) is None  # ignored
            assert Quantity.SOC_PCT not in ctx.owners()  # not even claimed
    finally:
        loop.run(server.stop())


def test_a_can_bms_owns_the_battery_readings_the_inverter_also_reports(
    devices: tuple[SimDevice, SimDevice], ctx: EMSContext, clock: SystemClock
) -> None:
    """The ESS's battery readings (SunSpec 802) are optional claims: with a CAN BMS claiming them first
    (main.py builds the CAN worker before the links), the inverter's copies never land and no
    ignore_points is needed."""
    bms = ctx.readings.claim("bms", BATTERY_QUANTITIES)
    bms.update({Quantity.SOC_PCT: 55.0}, at_s=clock.monotonic())
    heard = ctx.snapshot().reading(Quantity.SOC_PCT)
    with running_links(_cfg(*devices), ctx, clock):
        wait_for(lambda: _value(ctx, Quantity.ESS_POWER_W) == pytest.approx(-1500.0), timeout_s=5, what="ESS power")
        first = ctx.snapshot().reading(Quantity.ESS_POWER_W)
        assert first is not None
        wait_for(
            lambda: (r := ctx.snapshot().reading(Quantity.ESS_POWER_W)) is not None and r.at_s > first.at_s,
            timeout_s=5,
            what="a second ESS poll",
        )
        snap = ctx.snapshot()
        assert snap.reading(Quantity.SOC_PCT) == heard  # still the BMS's 55 %, not the inverter's 62.3 %
        assert all(snap.reading(q) is None for q in BATTERY_QUANTITIES - {Quantity.SOC_PCT})
        assert {ctx.owners()[q] for q in BATTERY_QUANTITIES} == {"bms"}
        assert snap.counters.get("readings_refused", 0) == 0  # not polled at all, so nothing to refuse
        assert Quantity.ESS_POWER_W in device(ctx, "ess").owns and Quantity.SOC_PCT not in device(ctx, "ess").owns


def test_silent_meter_times_out_without_starving_inverter_writes(
    links: list[ModbusLink], devices: tuple[SimDevice, SimDevice], ctx: EMSContext
) -> None:
    ess, meter = devices
    wait_for(lambda: _value(ctx, Quantity.GRID_POWER_W) is not None, timeout_s=5, what="meter reading")
    meter.loop.call(lambda: meter.server.set_silent(True))
    wait_for(lambda: _lost(ctx, "meter"), timeout_s=5, what="silent meter noticed")
    last = ctx.snapshot().reading(Quantity.GRID_POWER_W)
    for seq, w in ((1, 420.0), (2, -42.0)):
        _publish(ctx, seq, w)
        # the meter has its own thread, so its blocked read does not delay the write (the bound is the old, shared-thread one)
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
        try:
            with running_links(cfg, ctx, clock) as links:
                assert [(link.name, link.devices) for link in links] == [("modbus-rtu-pty-b", ("ess", "meter"))]  # one thread per line
                wait_for(
                    lambda: (
                        _value(ctx, Quantity.GRID_POWER_W) == pytest.approx(35.0) and _value(ctx, Quantity.SOC_PCT) == pytest.approx(77.7)
                    ),
                    timeout_s=10,
                    what="both devices read over one RTU line",
                )
                _publish(ctx, 1, -600.0)
                wait_for(lambda: ("setpoint_w", -600.0) in writes, timeout_s=5, what="set-point over RTU")
                # one thread, two devices: health is still kept per device
                assert (device(ctx, "ess").thread, device(ctx, "meter").thread) == ("modbus-rtu-pty-b", "modbus-rtu-pty-b")
                assert device(ctx, "ess").last_ok_s is not None and device(ctx, "meter").last_ok_s is not None
        finally:
            loop.run(line.stop())


def test_devices_on_one_serial_line_must_agree() -> None:
    from config import ConfigError, parse_config

    rtu = {"transport": "rtu", "serial_port": "/dev/ttyUSB0"}
    with pytest.raises(ConfigError, match=r"modbus\.meter"):
        parse_config({"modbus": {"ess": {**rtu, "baudrate": 9600}, "meter": {**rtu, "baudrate": 19200}}}, {})
    with pytest.raises(ConfigError, match=r"modbus\.meter"):
        parse_config({"modbus": {"ess": {**rtu, "device_id": 2}, "meter": {**rtu, "device_id": 2}}}, {})


def test_a_set_point_reaches_the_ess_register_while_the_meters_server_accepts_connections_but_never_answers(
    loop: LoopThread, ctx: EMSContext, clock: SystemClock
) -> None:
    """A hung meter gateway (TCP accepted, no Modbus answer ever): with one link thread per device the
    inverter's set-point does not queue behind the meter's 1 s request timeouts."""
    ess = SimDevice(loop, "sunspec_ess", port=free_port(), device_id=1)
    ess.set(ess_power_w=0.0, soc_pct=50.0)
    ess.start()
    hole = BlackHole()
    cfg = ModbusConfig.model_validate(
        {
            "enabled": True,
            "ess": {"port": ess.server.port, "device_id": 1, "map": "auto", "poll_period_s": POLL_S, "timeout_s": 0.5},
            "meter": {"port": hole.port, "device_id": 2, "map": "sdm630", "poll_period_s": POLL_S, "timeout_s": 1.0},
            "reconnect_min_s": 0.1,
            "reconnect_max_s": 0.5,
        }
    )
    try:
        with running_links(cfg, ctx, clock) as links:
            try:
                wait_for(lambda: _connected(ctx, "ess"), timeout_s=5, what="ESS connected")
                wait_for(lambda: hole.requests >= 1, timeout_s=5, what="the meter link waiting on an answer that never comes")
                _publish(ctx, 1, -1234.0)
                wait_for(lambda: ess.words("setpoint_w") == [-1234 & 0xFFFF], timeout_s=5, what="set-point register = -1234 W (raw)")
                assert ess.words("enable") == [1]
                wait_for(lambda: ctx.snapshot().written_seq == 1, timeout_s=5, what="command acknowledged")
                wait_for(lambda: device(ctx, "meter").error_streak >= 1, timeout_s=5, what="meter request timed out")
                meter = device(ctx, "meter")
                assert meter.last_ok_s is None and meter.last_error is not None and _lost(ctx, "meter")
                since_s = clock.monotonic()
                wait_for(lambda: (device(ctx, "ess").last_ok_s or 0.0) > since_s, timeout_s=5, what="fresh ESS poll")
                assert device(ctx, "ess").error_streak == 0 and _connected(ctx, "ess")
                assert _alive(links)
            finally:
                hole.close()  # drop the hung connections first: the meter link's read ends at once
    finally:
        ess.stop()


def test_a_failing_pv_meter_leaves_the_ess_and_the_meter_healthy(
    loop: LoopThread, devices: tuple[SimDevice, SimDevice], ctx: EMSContext, clock: SystemClock
) -> None:
    ess, meter = devices
    pv = SimDevice(loop, "sdm630_pv", port=free_port(), device_id=3)
    pv.set(pv_power_w=2500.0)
    pv.start()
    pv_cfg = {"enabled": True, "port": pv.server.port, "device_id": 3, "poll_period_s": POLL_S, "timeout_s": 0.5}
    try:
        with running_links(_cfg(ess, meter, pv=pv_cfg), ctx, clock) as links:
            assert sorted(link.name for link in links) == ["modbus-ess", "modbus-meter", "modbus-pv"]
            wait_for(lambda: _value(ctx, Quantity.PV_POWER_W) == pytest.approx(2500.0), timeout_s=5, what="PV reading")
            assert ctx.snapshot().reading(Quantity.PV_POWER_W).source == "pv"  # type: ignore[union-attr]
            pv.stop()
            wait_for(lambda: device(ctx, "pv").error_streak >= 2, timeout_s=5, what="pv meter failing")
            assert _lost(ctx, "pv") and device(ctx, "pv").last_error is not None
            assert not device(ctx, "pv").required  # its failure never faults the battery
            since_s = clock.monotonic()
            for name in ("ess", "meter"):
                wait_for(lambda name=name: (device(ctx, name).last_ok_s or 0.0) > since_s, timeout_s=5, what=f"fresh {name} poll")
                health = device(ctx, name)
                assert health.error_streak == 0 and health.errors_total == 0 and _connected(ctx, name), health
            assert device(ctx, "pv").error_streak >= 2  # still failing while the others are fine
            assert _alive(links)
    finally:
        if pv.server.running:
            pv.stop()
