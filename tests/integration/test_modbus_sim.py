"""The simulated site over real Modbus: the EMS's DeviceLink discovers it, writes set-points and
heartbeats, the plant follows; the watchdog takes the inverter to 0 W; rehearsal commands work."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest
from pymodbus.exceptions import ModbusException

from config.modbus import ModbusConfig, ModbusDeviceConfig
from ems.clock import SystemClock
from ems.context import EMSContext
from ems.model import Quantity
from interfaces.modbus.link import DeviceLink
from simulators.config import load_sim_config
from simulators.site import Simulator
from tests.helpers.common import free_port, wait_for
from tests.helpers.modbus import LoopThread, device, info, running_links, serving


@pytest.fixture
def running() -> Iterator[tuple[LoopThread, Simulator, DeviceLink, DeviceLink]]:
    ports = {"ess": free_port(), "meter": free_port()}
    cfg = load_sim_config(
        None,
        {
            "plant.profile": "summer-sunny",
            "plant.start_time": "12:00",
            "plant.meter_noise_w": 0.0,
            "plant.watchdog_s": 5.0,
            "plant.soc_start_pct": 50.0,
            "ess.port": ports["ess"],
            "meter.port": ports["meter"],
            "control.enabled": False,
        },
    )
    with serving(cfg) as (loop, sim):  # the test steps the plant: device timers follow it
        ess = DeviceLink("ess", ModbusDeviceConfig(port=ports["ess"], device_id=1, map="auto", timeout_s=1.0))
        meter = DeviceLink("meter", ModbusDeviceConfig(port=ports["meter"], device_id=2, map="sdm630", timeout_s=1.0))
        ess.connect()
        meter.connect()
        try:
            yield loop, sim, ess, meter
        finally:
            ess.close()
            meter.close()


def _command(ess: DeviceLink, *, setpoint_w: float, beat: int) -> None:
    ess.write_named([("enable", 1.0), ("setpoint_w", setpoint_w), ("heartbeat", float(beat))])


def _step(loop: LoopThread, sim: Simulator, seconds: float, dt_s: float = 0.1) -> None:
    def run() -> None:
        for _ in range(round(seconds / dt_s)):
            sim.step(dt_s)

    loop.call(run)


def test_set_point_drives_the_plant_and_the_meter_sees_it(running: tuple[LoopThread, Simulator, DeviceLink, DeviceLink]) -> None:
    loop, sim, ess, meter = running
    assert ess.pmap is not None and ess.pmap.name == "sunspec_ess"
    assert ess.identity["manufacturer"] == "EMS project"
    _command(ess, setpoint_w=-2000.0, beat=1)
    assert loop.call(lambda: sim.view.setpoint_w) == -2000.0  # the status shows a write at once, not at the next step
    for beat in range(2, 12):  # a heartbeat every simulated second (watchdog_s = 5)
        _step(loop, sim, 1.0)
        ess.write_named([("heartbeat", float(beat))])
    values, rejected = ess.poll()
    assert rejected == []
    assert values[Quantity.ESS_POWER_W] == pytest.approx(-2000.0, abs=1.0)
    assert sim.view.soc_pct > 50.0
    assert values[Quantity.SOC_PCT] == pytest.approx(sim.view.soc_pct, abs=0.051)  # 0.1 % resolution (SF -1)
    assert values[Quantity.BMS_CURRENT_A] > 0  # charging: + charge after the map's sign flip
    grid, rejected = meter.poll()
    assert rejected == []
    view = sim.view
    assert grid[Quantity.GRID_POWER_W] == pytest.approx(view.load_w - view.pv_w - view.ess_power_w, abs=2.0)


def test_watchdog_lapse_drops_the_inverter_to_zero_and_clears_enable(running: tuple[LoopThread, Simulator, DeviceLink, DeviceLink]) -> None:
    loop, sim, ess, _meter = running
    _command(ess, setpoint_w=1500.0, beat=1)
    for beat in range(2, 6):  # heartbeats every simulated second keep it running
        _step(loop, sim, 1.0)
        ess.write_named([("heartbeat", float(beat))])
    assert sim.view.ess_power_w == pytest.approx(1500.0, rel=0.02)
    _step(loop, sim, 12.0)  # no heartbeat for longer than watchdog_s = 5 s (then ~7 tau of decay)
    assert sim.view.watchdog_tripped and not sim.view.enabled
    assert abs(sim.view.ess_power_w) < 20.0
    values, _ = ess.poll()
    assert abs(values[Quantity.ESS_POWER_W]) < 20.0
    _command(ess, setpoint_w=1500.0, beat=7)  # the EMS's next command re-enables
    _step(loop, sim, 4.0)
    assert not sim.view.watchdog_tripped and sim.view.ess_power_w == pytest.approx(1500.0, rel=0.02)


def test_rehearsal_commands(running: tuple[LoopThread, Simulator, DeviceLink, DeviceLink]) -> None:
    loop, sim, _ess, meter = running
    assert loop.run(sim.command("load_offset 750")) == "ok load_offset_w=750"
    assert sim.plant.load_offset_w == 750.0
    assert loop.run(sim.command("meter stop")) == "ok meter running=False"
    with pytest.raises(ModbusException):
        meter.poll()
    assert loop.run(sim.command("meter start")) == "ok meter running=True"
    meter.connect()
    assert Quantity.GRID_POWER_W in meter.poll()[0]
    status = loop.run(sim.command("status"))
    assert '"load_offset_w":750.0' in status and '"meter":{"running":true' in status
    assert loop.run(sim.command("fly away")).startswith("error: unknown command")
    assert loop.run(sim.command("bms silent on")).startswith("error: the BMS simulator is not enabled")
    assert loop.run(sim.command("load_offset nan")).startswith("error")


def test_pv_meter_feeds_pv_power_positive_while_producing() -> None:
    """The optional PV meter: the simulator serves production as export (negative, as a wired SDM630
    shows it), the sdm630_pv map flips it, and the PV meter's Modbus link puts pv_power_w >= 0 in the context."""
    ports = {"ess": free_port(), "meter": free_port(), "pv": free_port()}
    over: dict[str, object] = {"plant.profile": "summer-sunny", "plant.start_time": "12:00", "control.enabled": False}
    over.update({f"{n}.port": p for n, p in ports.items()} | {"pv.enabled": True})
    clock = SystemClock()
    ctx = EMSContext(clock=clock)
    cfg = ModbusConfig.model_validate(
        {
            "enabled": True,
            "ess": {"port": ports["ess"], "map": "auto", "poll_period_s": 0.2, "timeout_s": 0.5},
            "meter": {"port": ports["meter"], "poll_period_s": 0.2, "timeout_s": 0.5},
            "pv": {"enabled": True, "port": ports["pv"], "poll_period_s": 0.2, "timeout_s": 0.5},
        }
    )
    # on exit: every link stopped, each thread ended, the simulated devices stopped
    with serving(load_sim_config(None, over), plant_time=False) as (loop, sim), running_links(cfg, ctx, clock) as links:
        assert sorted(link.name for link in links) == ["modbus-ess", "modbus-meter", "modbus-pv"]
        _step(loop, sim, 0.2)  # the plant publishes its values to the register images when it steps
        pv_w = sim.view.pv_w
        assert pv_w > 1000.0  # noon in summer
        image = sim.images["pv"]
        raw = struct.unpack(">f", struct.pack(">HH", *(image.read(image.address_of("pv_power_w"), 2) or [])))[0]
        assert raw == pytest.approx(-pv_w, rel=1e-6)  # on the wire: export
        reading = wait_for(lambda: ctx.snapshot().reading(Quantity.PV_POWER_W), timeout_s=10, what="pv_power_w in the context")
        assert reading.value == pytest.approx(pv_w, rel=1e-6)  # in the EMS: production is +
        assert reading.source == "pv" and device(ctx, "pv").thread == "modbus-pv"
        assert wait_for(lambda: info(ctx, "pv"), timeout_s=5, what="pv meter status")["map"] == "sdm630_pv"
        assert loop.run(sim.command("pv silent on")) == "ok pv silent=True"
