"""Device profiles huawei_sun2000, solaredge_storedge, sungrow_sh, goodwe_et and kostal_plenticore against their
simulators (`python -m simulators` with `ess.map: <profile>`) over real Modbus TCP on loopback.

The EMS side is the real DeviceLink + Actuator; the simulator is the real Simulator (register image from the
profile, the inverter's control semantics, the profile's dynamics). Every expected register write below is
written out by hand from the vendor's layout (the research notes in /work/research/devices), not derived from
the profile: (function code, PDU address, words). The device clock is the plant's, so the revert timers run on
simulated time: no sleeps.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusException

from config.modbus import ModbusConfig, ModbusDeviceConfig
from ems.clock import SimClock
from ems.model import Quantity
from interfaces.modbus.actuator import Actuator
from interfaces.modbus.link import DeviceLink
from interfaces.modbus.pointmap import load_map
from simulators.config import load_sim_config
from simulators.site import Simulator
from tests.helpers.common import free_port, wait_for
from tests.helpers.modbus import LoopThread, serving

FC6, FC16 = 6, 16
FAULT_TIMEOUT_S = 3.0
LOAD_W = 800.0  # the flat test profile: 800 W load, no PV; the inverter's own mode covers it from the battery

Write = tuple[int, int, list[int]]  # (function code, PDU address, register words)

# float32 words, high word first, written out by hand (IEEE 754): 1500.0 = 0x44BB8000, 2000.0 = 0x44FA0000
F1500 = (0x44BB, 0x8000)
F2000 = (0x44FA, 0x0000)
FM2000 = (0xC4FA, 0x0000)


def le(words: tuple[int, int]) -> list[int]:
    """A 32-bit value's two words in little-endian word order (low word first)."""
    return [words[1], words[0]]


@dataclass(frozen=True)
class Case:
    profile: str
    unit: int
    handover: list[Write]  # at take_control, before the revert timer
    revert_write: list[Write]  # the revert timer, written at take_control (fault_timeout_s = 3 s)
    commands: dict[float, list[Write]]  # set-point W (+ discharge) -> the writes of one command
    release: list[Write]
    timeout_s: float | None  # when the simulated device reverts without a new command (None: never)
    revert_verified: bool  # the EMS wrote the timer and read it back
    on_revert: dict[int, list[int]] = field(default_factory=dict)  # address -> words the device shows after its revert
    single_client: bool = False


HUAWEI = Case(
    profile="huawei_sun2000",
    unit=1,
    handover=[(FC6, 47246, [0])],  # forcible setting mode 0 = time (duration in 47083)
    revert_write=[(FC6, 47083, [1])],  # the forcible period: whole minutes, at least 1 (so 60 s, not 3 s)
    commands={
        # 47083 period (U16, FC6), 47247 charge W (U32 big-endian words, FC16), 47249 discharge W, 47100 1/2/0 (FC6)
        1500.0: [(FC6, 47083, [1]), (FC16, 47247, [0, 0]), (FC16, 47249, [0, 1500]), (FC6, 47100, [2])],
        -2000.0: [(FC6, 47083, [1]), (FC16, 47247, [0, 2000]), (FC16, 47249, [0, 0]), (FC6, 47100, [1])],
        0.0: [(FC6, 47083, [1]), (FC16, 47247, [0, 0]), (FC16, 47249, [0, 0]), (FC6, 47100, [2])],  # discharge 0 W: holds 0 W
    },
    release=[(FC6, 47100, [0])],  # stop: the forcible command ends, the battery runs its working mode
    timeout_s=60.0,
    revert_verified=True,
    single_client=True,
)
SOLAREDGE = Case(
    profile="solaredge_storedge",
    unit=1,
    handover=[(FC16, 0xE004, [4]), (FC16, 0xE00A, [7])],  # remote control; default mode = maximise self-consumption
    revert_write=[(FC16, 0xE00B, [3, 0])],  # command timeout U32 s = 3, little-endian words: low word first
    commands={
        # 0xE00E charge limit + 0xE010 discharge limit (float32, little-endian words) in one FC16, then 0xE00D mode
        1500.0: [(FC16, 0xE00E, [0, 0, *le(F1500)]), (FC16, 0xE00D, [4])],  # 4 = discharge to maximise export
        -2000.0: [(FC16, 0xE00E, [*le(F2000), 0, 0]), (FC16, 0xE00D, [3])],  # 3 = charge from solar and grid
        0.0: [(FC16, 0xE00E, [0, 0, 0, 0]), (FC16, 0xE00D, [0])],  # 0 = off (solar power only)
    },
    release=[(FC16, 0xE00D, [7]), (FC16, 0xE004, [1])],
    timeout_s=3.0,
    revert_verified=True,
    on_revert={0xE00D: [7]},  # the command mode reads the default mode again
    single_client=True,
)
SUNGROW = Case(
    profile="sungrow_sh",
    unit=1,
    handover=[],
    revert_write=[(FC6, 13079, [3])],  # doc 13080 external EMS heartbeat, s
    commands={
        # doc 13080 heartbeat reload, doc 13050 EMS mode 3, doc 13052 power W, doc 13051 command; all FC6 (PDU = doc - 1)
        1500.0: [(FC6, 13079, [3]), (FC6, 13049, [3]), (FC6, 13051, [1500]), (FC6, 13050, [0xBB])],
        -2000.0: [(FC6, 13079, [3]), (FC6, 13049, [3]), (FC6, 13051, [2000]), (FC6, 13050, [0xAA])],
        0.0: [(FC6, 13079, [3]), (FC6, 13049, [3]), (FC6, 13051, [0]), (FC6, 13050, [0xCC])],
    },
    release=[(FC6, 13049, [0]), (FC6, 13050, [0xCC])],
    timeout_s=3.0,
    revert_verified=True,
    on_revert={13049: [0]},  # EMS mode back to 0 (self-consumption)
)
GOODWE = Case(
    profile="goodwe_et",
    unit=247,
    handover=[],
    revert_write=[],
    commands={
        # 47512 EMS power set (U16 W), then 47511 EMS power mode: 12 discharge battery, 11 charge battery, 8 standby
        1500.0: [(FC16, 47512, [1500]), (FC16, 47511, [12])],
        -2000.0: [(FC16, 47512, [2000]), (FC16, 47511, [11])],
        0.0: [(FC16, 47512, [0]), (FC16, 47511, [8])],
    },
    release=[(FC16, 47511, [1, 0])],  # mode 1 (auto) and power 0 in one request
    timeout_s=None,
    revert_verified=False,
)
KOSTAL = Case(
    profile="kostal_plenticore",
    unit=71,
    handover=[],
    revert_write=[],
    commands={
        # 1034 battery set-point, float32 W, little-endian words, - = charge, + = discharge
        1500.0: [(FC16, 1034, le(F1500))],
        -2000.0: [(FC16, 1034, le(FM2000))],
        0.0: [(FC16, 1034, [0, 0])],
    },
    release=[(FC16, 1034, [0, 0])],
    timeout_s=60.0,  # fixed in the inverter's UI (the profile assumes the longer reported default)
    revert_verified=False,
    single_client=True,
)
CASES = [HUAWEI, SOLAREDGE, SUNGROW, GOODWE, KOSTAL]
IDS = [c.profile for c in CASES]


@dataclass
class Rig:
    loop: LoopThread
    sim: Simulator
    link: DeviceLink
    actuator: Actuator
    clock: SimClock  # the actuator's (its keep-alive and min-interval decisions)
    port: int
    case: Case

    def writes(self) -> list[Write]:
        """The writes the simulated device received since the last call, in order."""
        log = self.sim.devices["ess"].write_log
        out = [(fc, addr, list(words)) for fc, unit, addr, words in log if unit == self.case.unit]
        log.clear()
        return out

    def step(self, seconds: float, dt_s: float = 0.5) -> None:
        def run() -> None:
            for _ in range(round(seconds / dt_s)):
                self.sim.step(dt_s)

        self.loop.call(run)

    def hold(self, setpoint_w: float, seconds: float) -> None:
        """Write the command every simulated second for `seconds`, as the EMS's 1 Hz loop does."""
        for _ in range(round(seconds)):
            self.step(1.0)
            self.clock.advance(1.0)
            self.actuator.write(self.link, setpoint_w)

    def words(self, address: int, count: int) -> list[int] | None:
        image = self.sim.images["ess"]
        return self.loop.call(lambda: image.read(address, count))

    def link_cfg(self) -> ModbusDeviceConfig:
        return ModbusDeviceConfig(port=self.port, device_id=self.case.unit, map=self.case.profile, timeout_s=1.0)


@contextmanager
def rig(case: Case, tmp_path: Path) -> Iterator[Rig]:
    (tmp_path / "flat.csv").write_text(f"t_s,load_w,pv_w\n0,{LOAD_W:g},0\n", encoding="utf-8")
    port = free_port()
    cfg = load_sim_config(
        None,
        {
            "plant.profile": str(tmp_path / "flat.csv"),
            "plant.meter_noise_w": 0.0,
            "plant.soc_start_pct": 50.0,
            "plant.watchdog_s": 30.0,
            "ess.map": case.profile,
            "ess.port": port,
            "ess.device_id": case.unit,
            "meter.port": free_port(),
            "control.enabled": False,
        },
    )
    with serving(cfg) as (loop, sim):  # device timers run on the plant's time
        yield from _actuated(loop, sim, case, port)


def _actuated(loop: LoopThread, sim: Simulator, case: Case, port: int) -> Iterator[Rig]:
    link = DeviceLink("ess", ModbusDeviceConfig(port=port, device_id=case.unit, map=case.profile, timeout_s=1.0))
    spec = load_map(case.profile).control
    assert spec is not None
    clock = SimClock()
    actuator = Actuator("ess", spec, clock=clock, fault_timeout_s=FAULT_TIMEOUT_S, rating_w=None, release=True)
    try:
        link.connect()
        yield Rig(loop, sim, link, actuator, clock, port, case)
    finally:
        link.close()


def _external(r: Rig) -> bool:
    inv = r.sim.inverter
    assert inv is not None
    return r.loop.call(lambda: inv.external)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_handover_and_the_revert_timer_are_written_as_the_vendor_lays_them_out(case: Case, tmp_path: Path) -> None:
    with rig(case, tmp_path) as r:
        r.actuator.take_control(r.link)
        assert r.writes() == case.handover + case.revert_write
        rv = r.actuator.revert
        assert rv is not None
        assert rv.verified is case.revert_verified
        assert rv.timeout_s == case.timeout_s
        for fc, address, words in case.revert_write:  # the timer reads back as written
            assert fc in (FC6, FC16)
            assert r.words(address, len(words)) == words


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("setpoint_w", [1500.0, -2000.0, 0.0])
def test_a_set_point_reaches_the_device_as_the_vendors_register_words(case: Case, setpoint_w: float, tmp_path: Path) -> None:
    with rig(case, tmp_path) as r:
        r.actuator.take_control(r.link)
        r.writes()
        r.actuator.write(r.link, setpoint_w)
        assert r.writes() == case.commands[setpoint_w]
        for _fc, address, words in case.commands[setpoint_w]:  # and the registers hold them
            assert r.words(address, len(words)) == words
        inv = r.sim.inverter
        assert inv is not None
        assert _external(r) and r.loop.call(lambda: inv.setpoint_w) == setpoint_w
        r.hold(setpoint_w, 20.0)  # the plant follows (the profile's dynamics), the inverter's readings show it
        assert _external(r)
        values, rejected = r.link.poll()
        assert rejected == []
        assert values[Quantity.ESS_POWER_W] == pytest.approx(setpoint_w, abs=5.0)  # + discharge after the map's sign
        view = r.sim.view
        assert values[Quantity.GRID_POWER_W] == pytest.approx(view.grid_power_w, abs=1.0)  # + import
        assert values[Quantity.GRID_POWER_W] == pytest.approx(LOAD_W - setpoint_w, abs=5.0)
        assert values[Quantity.SOC_PCT] == pytest.approx(view.soc_pct, abs=0.51)  # GoodWe reports whole %


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_device_returns_to_its_own_mode_after_its_timeout_when_commands_stop(case: Case, tmp_path: Path) -> None:
    with rig(case, tmp_path) as r:
        r.actuator.take_control(r.link)
        r.actuator.write(r.link, -2000.0)
        assert _external(r)
        inv = r.sim.inverter
        assert inv is not None
        if case.timeout_s is None:  # GoodWe: no timer; the last EMS mode stays
            r.step(3600.0, dt_s=5.0)
            assert _external(r) and inv.reverts == 0
            assert r.words(47511, 1) == [11]
            return
        r.step(case.timeout_s - 1.0)
        assert _external(r), "reverted before its timeout"
        r.step(2.0)
        assert not _external(r) and inv.reverted
        for address, words in case.on_revert.items():
            assert r.words(address, len(words)) == words
        r.step(20.0)  # its own mode: self-consumption covers the load from the battery
        values, _ = r.link.poll()
        assert values[Quantity.ESS_POWER_W] == pytest.approx(LOAD_W, abs=5.0)
        r.actuator.write(r.link, -2000.0)  # the EMS's next command takes control again
        assert _external(r)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_keep_alive_writes_hold_the_command_past_the_device_timeout(case: Case, tmp_path: Path) -> None:
    spec = load_map(case.profile).control
    assert spec is not None
    interval_s = spec.write.keepalive_s or 1.0  # the profile's keep-alive, else every control cycle
    with rig(case, tmp_path) as r:
        r.actuator.take_control(r.link)
        r.actuator.write(r.link, 1500.0)
        span_s = 3 * (case.timeout_s or 5.0)
        for _ in range(round(span_s / interval_s)):
            r.step(interval_s)
            r.clock.advance(interval_s)
            assert r.actuator.due(1500.0)  # an unchanged command is due again after the keep-alive interval
            r.actuator.write(r.link, 1500.0)
            assert _external(r)
        inv = r.sim.inverter
        assert inv is not None and inv.reverts == 0
        assert r.writes()[-len(case.commands[1500.0]) :] == case.commands[1500.0]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_release_on_stop_hands_the_device_back_to_its_own_mode(case: Case, tmp_path: Path) -> None:
    with rig(case, tmp_path) as r:
        r.actuator.take_control(r.link)
        r.actuator.write(r.link, 1500.0)
        r.writes()
        assert r.actuator.release(r.link)
        assert r.writes() == case.release
        if case.profile == "kostal_plenticore":  # 1034 = 0 once; the UI timeout then returns it to internal control
            assert _external(r)
            r.step((case.timeout_s or 0.0) + 2.0)
        assert not _external(r)


@pytest.mark.parametrize("case", [c for c in CASES if c.single_client], ids=[c.profile for c in CASES if c.single_client])
def test_a_second_client_is_refused_and_the_first_keeps_working(case: Case, tmp_path: Path) -> None:
    with rig(case, tmp_path) as r:
        r.step(1.0)
        assert Quantity.GRID_POWER_W in r.link.poll()[0]
        second = DeviceLink("second", r.link_cfg())
        try:
            second.connect()  # TCP accepts; the device closes the connection at once
            with pytest.raises((ModbusException, OSError)):
                second.poll()
        finally:
            second.close()
        assert r.sim.devices["ess"].refused_connections >= 1
        values, rejected = r.link.poll()
        assert rejected == [] and Quantity.GRID_POWER_W in values
        r.actuator.take_control(r.link)
        r.actuator.write(r.link, 1500.0)
        assert _external(r)
    # a device without the limit serves two clients
    with rig(GOODWE, tmp_path) as r:
        other = DeviceLink("second", r.link_cfg())
        try:
            other.connect()
            r.step(1.0)
            assert Quantity.GRID_POWER_W in other.poll()[0] and Quantity.GRID_POWER_W in r.link.poll()[0]
        finally:
            other.close()
        assert r.sim.devices["ess"].refused_connections == 0


def test_sungrow_serves_readings_as_input_and_settings_as_holding_registers(tmp_path: Path) -> None:
    with rig(SUNGROW, tmp_path) as r:
        client = ModbusTcpClient("127.0.0.1", port=r.port, timeout=1.0)
        assert client.connect()
        try:
            assert not client.read_input_registers(13021, count=2, device_id=1).isError()  # SoC (doc 13022), input
            assert client.read_holding_registers(13021, count=2, device_id=1).isError()  # not a holding register
            assert not client.read_holding_registers(13049, count=3, device_id=1).isError()  # EMS mode..power, holding
            assert client.read_input_registers(13049, count=3, device_id=1).isError()
            assert client.read_holding_registers(60000, count=1, device_id=1).isError()  # a register it does not have
        finally:
            client.close()  # type: ignore[no-untyped-call]


@pytest.mark.parametrize("case", [HUAWEI, SUNGROW], ids=["huawei_sun2000", "sungrow_sh"])
def test_a_single_register_takes_fc6_and_refuses_fc16(case: Case, tmp_path: Path) -> None:
    """These profiles write 16-bit settings with FC6 as the peers do (control.write.function: fc6_for_single);
    the simulator holds the EMS to it."""
    address = {"huawei_sun2000": 47100, "sungrow_sh": 13050}[case.profile]
    value = {"huawei_sun2000": 2, "sungrow_sh": 0xBB}[case.profile]
    with rig(case, tmp_path) as r:
        client = ModbusTcpClient("127.0.0.1", port=r.port, timeout=1.0)
        r.link.poll()  # the device has accepted the EMS's connection ...
        r.link.close()  # ... and, serving one client, must see it closed before the next one
        wait_for(lambda: r.loop.call(lambda: r.sim.devices["ess"].clients) == 0, timeout_s=5, what="the EMS link closed")
        assert client.connect()
        try:
            assert client.write_registers(address, [value], device_id=case.unit).isError()  # FC16, one register
            assert not client.write_register(address, value, device_id=case.unit).isError()  # FC6
        finally:
            client.close()  # type: ignore[no-untyped-call]
        assert r.writes() == [(FC16, address, [value]), (FC6, address, [value])]
        assert r.words(address, 1) == [value]


# Readings on the wire, decoded by hand from the vendor's layout (word order, sign convention), while the
# battery charges 2 kW and the house imports load + 2 kW: (address, register count, decoder, expected raw value).
def s16(w: list[int]) -> float:
    return float(w[0] - 0x1_0000 if w[0] >= 0x8000 else w[0])


def s32_be(w: list[int]) -> float:
    n = (w[0] << 16) | w[1]
    return float(n - (1 << 32) if n >= 0x8000_0000 else n)


def s32_le(w: list[int]) -> float:
    return s32_be([w[1], w[0]])


def f32_le(w: list[int]) -> float:
    return float(struct.unpack(">f", struct.pack(">HH", w[1], w[0]))[0])


CHARGE_W, IMPORT_W = 2000.0, LOAD_W + 2000.0
WIRE: dict[str, list[tuple[int, int, Callable[[list[int]], float], float]]] = {
    "huawei_sun2000": [(37765, 2, s32_be, +CHARGE_W), (37113, 2, s32_be, -IMPORT_W)],  # + charging; + export
    "solaredge_storedge": [(0xE174, 2, f32_le, +CHARGE_W), (40206, 1, s16, -IMPORT_W)],  # + charging; + export (SF 0)
    "sungrow_sh": [(5213, 2, s32_le, -CHARGE_W), (13009, 2, s32_le, -IMPORT_W)],  # + discharging; + export
    "goodwe_et": [(35182, 2, s32_be, -CHARGE_W), (36025, 2, s32_be, -IMPORT_W)],  # + discharge; + export
    "kostal_plenticore": [(582, 1, s16, -CHARGE_W), (252, 2, f32_le, +IMPORT_W)],  # + discharge; + import
}


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_readings_carry_the_vendors_word_order_and_signs_on_the_wire(case: Case, tmp_path: Path) -> None:
    with rig(case, tmp_path) as r:
        r.actuator.take_control(r.link)
        r.actuator.write(r.link, -CHARGE_W)
        r.hold(-CHARGE_W, 20.0)
        for address, count, decode, expected in WIRE[case.profile]:
            words = r.words(address, count)
            assert words is not None
            assert decode(words) == pytest.approx(expected, abs=5.0), f"register {address}"
        values, _ = r.link.poll()  # and the EMS sees + discharge and + import (DESIGN §2)
        assert values[Quantity.ESS_POWER_W] == pytest.approx(-CHARGE_W, abs=5.0)
        assert values[Quantity.GRID_POWER_W] == pytest.approx(IMPORT_W, abs=5.0)


def test_a_meter_at_the_address_of_a_single_client_inverter_is_a_config_error() -> None:
    base = {"enabled": True, "ess": {"host": "192.0.2.10", "port": 502, "map": "huawei_sun2000"}}
    with pytest.raises(ValueError, match=r"meter\.port: modbus\.meter\.host:port \(192\.0\.2\.10:502\) is modbus\.ess\.host:port"):
        ModbusConfig.model_validate({**base, "meter": {"host": "192.0.2.10", "port": 502}})
    with pytest.raises(ValueError, match=r"pv\.port: .*modbus\.pv\.enabled: false"):
        ModbusConfig.model_validate({**base, "meter": {"enabled": False}, "pv": {"enabled": True, "host": "192.0.2.10", "port": 502}})
    ModbusConfig.model_validate({**base, "meter": {"enabled": False}})  # the inverter's own grid reading serves
    ModbusConfig.model_validate({**base, "meter": {"host": "192.0.2.11", "port": 502}})  # a meter of its own
    ModbusConfig.model_validate(  # a device that serves several clients may share its address
        {"enabled": True, "ess": {"host": "192.0.2.10", "port": 502, "map": "goodwe_et"}, "meter": {"host": "192.0.2.10", "port": 502}}
    )
