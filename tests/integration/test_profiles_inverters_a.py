"""Device profiles victron_gx_ess3, sma_sunny_island, sma_sunny_boy_storage, fronius_gen24 and sunspec_124 (and
the reference sunspec_ess) against their simulators (`python -m simulators` with `ess.map: <profile>`) over real
Modbus TCP on loopback.

The EMS side is the real DeviceLink + Actuator (and, last, the real Modbus worker from build_modbus_links); the
simulator is the real Simulator: the register image from the profile, the inverter's control semantics, the
profile's dynamics. Every expected register word below is written out by hand from the vendor's layout (the research
notes in /work/research/devices), not taken from the profile, and read back over the wire with a second Modbus
client: {(unit id, PDU address): words}. Device timers run on the plant's simulated time: no sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pymodbus.client import ModbusTcpClient

from config.modbus import EssDeviceConfig, ModbusConfig
from ems.clock import SimClock, SystemClock
from ems.context import EMSContext
from ems.model import Mode, Quantity
from interfaces.modbus.actuator import Actuator
from interfaces.modbus.link import DeviceLink
from interfaces.modbus.pointmap import load_map
from simulators.config import load_sim_config
from simulators.site import Simulator
from tests.helpers.common import free_port, wait_for
from tests.helpers.context import publish
from tests.helpers.modbus import LoopThread, running_links, serving

FAULT_TIMEOUT_S = 3.0
LOAD_W = 800.0  # the flat test profile: 800 W load, no PV; a device's own mode covers it from the battery

Words = dict[tuple[int, int], list[int]]  # (unit id, PDU address) -> register words


def s16(value: int) -> int:
    """An int16 as its register word (two's complement)."""
    return value & 0xFFFF


def s32(value: int) -> list[int]:
    """An S32/U32 as its two register words, high word first (SMA, SunSpec, Victron)."""
    n = value & 0xFFFF_FFFF
    return [n >> 16, n & 0xFFFF]


@dataclass(frozen=True)
class Case:
    profile: str
    unit: int  # the EMS's modbus.ess.device_id (the simulator's ess.device_id)
    handover: Words  # after take_control
    commands: dict[float, Words]  # set-point W (+ discharge) -> the registers one command leaves
    release: Words  # after the release on stop
    timeout_s: float  # when the simulated device reverts without a new command
    revert_settable: bool  # the EMS writes the device's timer (to fault_timeout_s) and reads it back
    own_mode_w: float = LOAD_W  # what the device drives after its timer fired (self-consumption; Victron: 0 W passthru)
    reading: tuple[int, int, int] = (0, 0, 1)  # (unit, address, count) of the battery power register, for its sign
    reading_charge_2000: list[int] = field(default_factory=list)  # its words while the battery charges 2 kW
    plant: dict[str, float] = field(default_factory=dict)  # simulator plant overrides (e.g. a distinct rating)
    absent: tuple[int, int] = (0, 0)  # (unit, address) of a register the device does not have: an exception response


# Victron GX, ESS Mode 3: /Hub4/L1..L3/AcPowerSetpoint at the VE.Bus unit (227), int16 W, + = taken from AC-in
# (charge), so a discharge of 1500 W is -500 W on each phase; Hub4Mode 2902 at unit 100: 3 = external control.
VICTRON = Case(
    profile="victron_gx_ess3",
    unit=100,
    handover={(100, 2902): [3]},
    commands={
        1500.0: {(227, 37): [s16(-500)], (227, 40): [s16(-500)], (227, 41): [s16(-500)]},
        -2000.0: {(227, 37): [667], (227, 40): [667], (227, 41): [667]},  # 2000 / 3 = 666.7 -> 667 W per phase
        0.0: {(227, 37): [0], (227, 40): [0], (227, 41): [0]},
    },
    release={(100, 2902): [1]},  # ESS with phase compensation: the GX regulates again
    timeout_s=60.0,
    revert_settable=False,
    own_mode_w=0.0,  # Mode 3 falls back to passthru: no charge, no discharge
    reading=(100, 842, 1),  # /Dc/Battery/Power int16 W, + = charging
    reading_charge_2000=[2000],
    absent=(100, 37),  # a VE.Bus register asked of the system unit
)
# SMA Sunny Island / STP SE: 40149 WSpt S32 W (+ discharge) and 40151 WCtlComAct U32 (802 active, 803 inactive), unit 3.
SMA_SI = Case(
    profile="sma_sunny_island",
    unit=3,
    handover={},
    commands={
        1500.0: {(3, 40149): [0x0000, 0x05DC], (3, 40151): [0x0000, 0x0322]},
        -2000.0: {(3, 40149): [0xFFFF, 0xF830], (3, 40151): [0x0000, 0x0322]},
        0.0: {(3, 40149): [0x0000, 0x0000], (3, 40151): [0x0000, 0x0322]},
    },
    release={(3, 40151): [0x0000, 0x0323]},
    timeout_s=1800.0,  # the longest default of its (not Modbus-settable) timeout parameter
    revert_settable=False,
    reading=(3, 31393, 4),  # BatChrg.CurBatCha, BatDsch.CurBatDsch: U32 W magnitudes
    reading_charge_2000=[*s32(2000), *s32(0)],
    absent=(3, 40153),
)
# SMA Sunny Boy Storage: CmpBMS.OpMod 40236 (2289 charge, 2290 discharge, 2424 default) and the window 40793..40799
# (charge min/max, discharge min/max), then GridWSpt 40801 = 0; all U32, unit 3.
SMA_SBS = Case(
    profile="sma_sunny_boy_storage",
    unit=3,
    handover={},
    commands={
        1500.0: {(3, 40236): s32(2290), (3, 40793): [*s32(0), *s32(0), *s32(1500), *s32(1500), *s32(0)]},
        -2000.0: {(3, 40236): s32(2289), (3, 40793): [*s32(2000), *s32(2000), *s32(0), *s32(0), *s32(0)]},
        0.0: {(3, 40236): s32(2424), (3, 40793): [*s32(0), *s32(0), *s32(0), *s32(0), *s32(0)]},
    },
    release={(3, 40236): s32(2424), (3, 40793): [*s32(0), *s32(6000), *s32(0), *s32(6000), *s32(0)]},
    timeout_s=300.0,
    revert_settable=False,
    reading=(3, 30775, 2),  # GridMs.TotW S32, + = AC out (discharge)
    reading_charge_2000=s32(-2000),
    absent=(3, 40803),
)
# Fronius GEN24 (int+SF): model 124 at 40343 behind a 4-module model 160; StorCtl_Mod 40348 = 3, OutWRte 40355 and
# InWRte 40356 int16 % of WChaMax at InOutWRte_SF -2 (x100), InOutWRte_RvrtTms 40358 s. WChaMax 8000 W here:
# 1500 W = 18.75 % -> 1875, 2000 W = 25 % -> 2500; a negative OutWRte forces the charge, a negative InWRte the discharge.
FRONIUS = Case(
    profile="fronius_gen24",
    unit=1,
    handover={(1, 40358): [3]},  # the revert timer = fault_timeout_s
    commands={
        1500.0: {(1, 40348): [3], (1, 40355): [1875, s16(-1875)]},
        -2000.0: {(1, 40348): [3], (1, 40355): [s16(-2500), 2500]},
        0.0: {(1, 40348): [3], (1, 40355): [0, 0]},
    },
    release={(1, 40348): [0], (1, 40355): [10000, 10000], (1, 40358): [0]},
    timeout_s=FAULT_TIMEOUT_S,
    revert_settable=True,
    reading=(1, 40314, 1),  # model 160 module 3 DCW (battery charge power, uint16, DCW_SF 0 at 40257)
    reading_charge_2000=[2000],
    plant={"inverter_max_charge_w": 8000.0, "inverter_max_discharge_w": 8000.0},
    absent=(1, 40371),  # past the end marker
)
# Generic SunSpec 124 (this simulator: models 1 L66, 103, 124, 802; model 124 at 40122): StorCtl_Mod 40127,
# OutWRte 40134, InWRte 40135 at InOutWRte_SF -1 (x10) of WChaMax 5000 W, RvrtTms 40137.
SUNSPEC_124 = Case(
    profile="sunspec_124",
    unit=1,
    handover={(1, 40137): [3]},
    commands={
        1500.0: {(1, 40127): [3], (1, 40134): [300, s16(-300)]},
        -2000.0: {(1, 40127): [3], (1, 40134): [s16(-400), 400]},
        0.0: {(1, 40127): [3], (1, 40134): [0, 0]},
    },
    release={(1, 40127): [0], (1, 40134): [1000, 1000], (1, 40137): [0]},
    timeout_s=FAULT_TIMEOUT_S,
    revert_settable=True,
    reading=(1, 40084, 1),  # model 103 W (int16, W_SF 0), + = AC out
    reading_charge_2000=[s16(-2000)],
    absent=(1, 40300),
)
CASES = [VICTRON, SMA_SI, SMA_SBS, FRONIUS, SUNSPEC_124]
IDS = [c.profile for c in CASES]


@dataclass
class Rig:
    loop: LoopThread
    sim: Simulator
    link: DeviceLink
    actuator: Actuator
    clock: SimClock  # the actuator's: advanced with the plant
    raw: ModbusTcpClient  # a second client reading the registers as words
    case: Case

    def step(self, seconds: float, dt_s: float = 0.5) -> None:
        """Advance the plant (and so the device's timers) and the EMS's clock together."""

        def run() -> None:
            for _ in range(round(seconds / dt_s)):
                self.sim.step(dt_s)

        self.loop.call(run)
        self.clock.advance(seconds)

    def hold(self, setpoint_w: float, seconds: float, every_s: float = 1.0) -> None:
        """Write the command every `every_s` for `seconds`, as the EMS's loop does."""
        for _ in range(round(seconds / every_s)):
            self.step(every_s)
            self.actuator.write(self.link, setpoint_w)

    def words(self, unit: int, address: int, count: int) -> list[int]:
        rr = self.raw.read_holding_registers(address, count=count, device_id=unit)
        assert not rr.isError(), f"read unit {unit} {address}+{count}: {rr}"
        return list(rr.registers)

    def holds(self, expected: Words) -> bool:
        return all(self.words(unit, addr, len(w)) == w for (unit, addr), w in expected.items())

    def external(self) -> bool:
        inv = self.sim.inverter
        assert inv is not None
        return bool(self.loop.call(lambda: inv.external))

    def driving_w(self) -> float:
        return float(self.loop.call(lambda: self.sim.setpoint_w))


def _flat(tmp_path: Path) -> str:
    path = tmp_path / "flat.csv"
    path.write_text(f"t_s,load_w,pv_w\n0,{LOAD_W:g},0\n", encoding="utf-8")
    return str(path)


def _sim_cfg(case: Case, tmp_path: Path, *, port: int, control: bool = False) -> dict[str, object]:
    over: dict[str, object] = {
        "plant.profile": _flat(tmp_path),
        "plant.meter_noise_w": 0.0,
        "plant.soc_start_pct": 50.0,
        "plant.summary_interval_s": 0.0,
        "ess.map": case.profile,
        "ess.port": port,
        "ess.device_id": case.unit,
        "meter.port": free_port(),
        "control.enabled": control,
    }
    over.update({f"plant.{k}": v for k, v in case.plant.items()})
    return over


@contextmanager
def rig(case: Case, tmp_path: Path, *, release: bool = True) -> Iterator[Rig]:
    port = free_port()
    with serving(load_sim_config(None, _sim_cfg(case, tmp_path, port=port))) as (loop, sim):
        yield from _actuated(loop, sim, case, port, release=release)


def _actuated(loop: LoopThread, sim: Simulator, case: Case, port: int, *, release: bool) -> Iterator[Rig]:
    link = DeviceLink("ess", EssDeviceConfig(port=port, device_id=case.unit, map=case.profile, timeout_s=1.0))
    spec = load_map(case.profile).control
    assert spec is not None
    clock = SimClock()
    actuator = Actuator("ess", spec, clock=clock, fault_timeout_s=FAULT_TIMEOUT_S, rating_w=None, release=release)
    raw = ModbusTcpClient("127.0.0.1", port=port, timeout=1.0)
    try:
        link.connect()
        assert raw.connect()
        yield Rig(loop, sim, link, actuator, clock, raw, case)
    finally:
        raw.close()  # type: ignore[no-untyped-call]
        link.close()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_take_control_writes_the_handover_and_the_revert_timer(case: Case, tmp_path: Path) -> None:
    with rig(case, tmp_path) as r:
        r.actuator.take_control(r.link)
        assert r.holds(case.handover)
        rv = r.actuator.revert
        assert rv is not None
        assert (rv.settable, rv.verified) == (case.revert_settable, case.revert_settable)  # written and read back
        assert rv.timeout_s == case.timeout_s
        inv = r.sim.inverter
        assert inv is not None and inv.revert_s == case.timeout_s  # the device runs on what the EMS wrote (or its own)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("setpoint_w", [1500.0, -2000.0, 0.0])
def test_a_set_point_leaves_the_vendors_register_words(case: Case, setpoint_w: float, tmp_path: Path) -> None:
    with rig(case, tmp_path) as r:
        r.actuator.take_control(r.link)
        r.actuator.write(r.link, setpoint_w)
        for (unit, address), words in case.commands[setpoint_w].items():
            assert r.words(unit, address, len(words)) == words, f"unit {unit} register {address}"
        inv = r.sim.inverter
        assert inv is not None
        assert r.external() and r.loop.call(lambda: inv.setpoint_w) == pytest.approx(setpoint_w, abs=1.0)  # Victron: 3 x 667 W


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_readings_carry_the_design_signs(case: Case, tmp_path: Path) -> None:
    with rig(case, tmp_path) as r:
        r.actuator.take_control(r.link)
        r.actuator.write(r.link, -2000.0)
        r.hold(-2000.0, 20.0)  # the plant follows with the profile's dynamics
        unit, address, count = case.reading
        got = r.words(unit, address, count)
        assert len(got) == len(case.reading_charge_2000)
        for w, want in zip(got, case.reading_charge_2000, strict=True):  # the device's own sign convention, on the wire
            assert abs(((w - want + 0x8000) & 0xFFFF) - 0x8000) <= 3, f"{got} vs {case.reading_charge_2000}"
        values, rejected = r.link.poll()
        assert rejected == []
        assert values[Quantity.ESS_POWER_W] == pytest.approx(-2000.0, abs=5.0)  # - charge, as DESIGN §2 says
        view = r.sim.view
        assert values[Quantity.SOC_PCT] == pytest.approx(view.soc_pct, abs=0.51) and view.soc_pct > 50.0
        if Quantity.GRID_POWER_W in values:  # the inverter's own grid meter (Victron, SMA SI): + import
            assert values[Quantity.GRID_POWER_W] == pytest.approx(LOAD_W + 2000.0, abs=5.0)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_keep_alive_holds_the_command_past_the_device_timeout_and_its_revert_follows_silence(case: Case, tmp_path: Path) -> None:
    spec = load_map(case.profile).control
    assert spec is not None
    every_s = spec.write.keepalive_s or 1.0  # the profile's keep-alive, else every control cycle
    with rig(case, tmp_path) as r:
        r.actuator.take_control(r.link)
        r.actuator.write(r.link, 1500.0)
        before = r.loop.call(lambda: r.sim.devices["ess"].writes)
        r.hold(1500.0, max(case.timeout_s + 3 * every_s, 20.0), every_s=every_s)  # past the timeout, and settled
        inv = r.sim.inverter
        assert inv is not None
        assert r.external() and inv.reverts == 0, "reverted although the command was rewritten"
        assert r.loop.call(lambda: r.sim.devices["ess"].writes) > before  # rewritten, not just left standing
        assert r.holds(case.commands[1500.0])
        assert r.sim.view.ess_power_w == pytest.approx(1500.0, abs=5.0)
        # silence: the device's own timer returns it to its own mode
        r.step(case.timeout_s - 1.0, dt_s=max(0.5, case.timeout_s / 600))
        assert r.external(), "reverted before its timeout"
        r.step(2.0)
        assert not r.external() and inv.reverted
        assert r.driving_w() == pytest.approx(case.own_mode_w)
        r.actuator.write(r.link, 1500.0)  # the next command takes control again (the hand-over still holds)
        assert r.external()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_release_on_stop_native_hands_the_device_back_and_zero_leaves_it_at_0_w(case: Case, tmp_path: Path) -> None:
    with rig(case, tmp_path, release=True) as r:
        r.actuator.take_control(r.link)
        r.actuator.write(r.link, 1500.0)
        assert r.actuator.release(r.link)
        assert r.holds(case.release)
        assert not r.external()
        assert r.driving_w() == pytest.approx(LOAD_W)  # its own self-consumption covers the load
    with rig(case, tmp_path, release=False) as r:  # modbus.ess.release_on_stop: zero
        r.actuator.take_control(r.link)
        r.actuator.write(r.link, 0.0)  # the controller's last command
        assert not r.actuator.release(r.link)
        assert r.holds(case.commands[0.0])  # nothing written over it
        assert r.external() and r.driving_w() == 0.0  # at 0 W until its own timer reverts it


def test_victron_commands_count_only_after_the_handover(tmp_path: Path) -> None:
    """In Hub4Mode 1/2 the GX's own hub4control overwrites 37/40/41: a set-point written before 2902 = 3 does nothing."""
    with rig(VICTRON, tmp_path) as r:
        assert r.words(100, 2902, 1) == [1]  # the GX starts in ESS mode "with phase compensation"
        r.actuator.write(r.link, 1500.0)
        assert r.holds(VICTRON.commands[1500.0]) and not r.external()
        r.actuator.take_control(r.link)
        r.actuator.write(r.link, 1500.0)
        assert r.external()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_register_the_device_does_not_have_is_an_exception_response(case: Case, tmp_path: Path) -> None:
    with rig(case, tmp_path) as r:
        unit, address = case.absent
        assert r.raw.read_holding_registers(address, count=1, device_id=unit).isError()
        assert r.raw.read_holding_registers(address, count=1, device_id=99).isError()  # a unit id it does not serve


def test_victron_reads_never_span_an_unlisted_register(tmp_path: Path) -> None:
    """The GX refuses a read over an address its register list lacks (dbus_modbustcp): the read plan keeps to the profile."""
    with rig(VICTRON, tmp_path) as r:
        assert r.raw.read_holding_registers(843, count=8, device_id=100).isError()  # 845..850 are not in the profile
        r.step(1.0)
        values, rejected = r.link.poll()
        assert rejected == [] and {Quantity.ESS_POWER_W, Quantity.SOC_PCT, Quantity.GRID_POWER_W} <= values.keys()


def test_auto_discovery_picks_the_most_specific_sunspec_profile(tmp_path: Path) -> None:
    """`map: auto`: the reference device stays sunspec_ess, a GEN24 is fronius_gen24, a plain model-124 device sunspec_124."""
    for profile in ("sunspec_ess", "fronius_gen24", "sunspec_124"):
        loop = LoopThread()
        port = free_port()
        sim = Simulator(load_sim_config(None, _sim_cfg(Case(profile, 1, {}, {}, {}, 1.0, False), tmp_path, port=port)))

        async def start(s: Simulator = sim) -> None:
            for dev in s.devices.values():
                await dev.start()

        async def stop(s: Simulator = sim) -> None:
            for dev in s.devices.values():
                await dev.stop()

        loop.run(start())
        link = DeviceLink("ess", EssDeviceConfig(port=port, device_id=1, map="auto", timeout_s=1.0))
        try:
            link.connect()
            assert link.pmap is not None and link.pmap.name == profile
        finally:
            link.close()
            loop.run(stop())
            loop.close()


# ---- the real Modbus worker: build_modbus_links as main.py builds it ---------------------------------------------
@pytest.mark.parametrize("release_on_stop", ["native", "zero"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_modbus_worker_takes_control_writes_commands_and_releases_on_stop(case: Case, release_on_stop: str, tmp_path: Path) -> None:
    loop = LoopThread()
    port = free_port()
    sim = Simulator(load_sim_config(None, _sim_cfg(case, tmp_path, port=port)))
    stop_sim = asyncio.Event()
    task = loop.call(lambda: loop.loop.create_task(sim.run(stop_sim)))
    clock = SystemClock()
    ctx = EMSContext(clock=clock, start_mode=Mode.SELF_CONSUMPTION)
    cfg = ModbusConfig.model_validate(
        {
            "enabled": True,
            "reconnect_min_s": 0.1,
            "reconnect_max_s": 0.5,
            "ess": {
                "port": port,
                "device_id": case.unit,
                "map": case.profile,
                "poll_period_s": 0.2,
                "timeout_s": 0.5,
                "release_on_stop": release_on_stop,
            },
            "meter": {"enabled": False},
        }
    )
    raw = ModbusTcpClient("127.0.0.1", port=port, timeout=1.0)
    r = Rig(loop, sim, DeviceLink("unused", EssDeviceConfig(port=port)), None, SimClock(), raw, case)  # type: ignore[arg-type]
    try:
        wait_for(lambda: sim.devices["ess"].running, timeout_s=5, what="simulator serving")
        assert raw.connect()
        with running_links(cfg, ctx, clock):
            wait_for(lambda: r.holds(case.handover) and r.holds(case.commands[0.0]), timeout_s=5, what="hand-over, then 0 W")
            publish(ctx, seq=1, setpoint_w=-2000.0)
            wait_for(lambda: r.holds(case.commands[-2000.0]), timeout_s=2, what="-2000 W in the vendor's words")
            assert r.external()
            wait_for(lambda: (q := ctx.snapshot().reading(Quantity.SOC_PCT)) is not None and q.value > 0, timeout_s=5, what="SOC read")
            publish(ctx, seq=2, setpoint_w=0.0)  # the controller's 0 W before it stops
            wait_for(lambda: r.holds(case.commands[0.0]), timeout_s=2, what="0 W")
        if release_on_stop == "native":
            assert r.holds(case.release) and not r.external()
        else:
            assert r.holds(case.commands[0.0]) and r.external() and r.driving_w() == 0.0
    finally:
        raw.close()  # type: ignore[no-untyped-call]
        loop.call(stop_sim.set)
        loop.run(asyncio.wait_for(asyncio.shield(task), 10))
        loop.close()
