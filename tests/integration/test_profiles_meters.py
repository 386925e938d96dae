"""Meter profiles against their simulators over real Modbus TCP on 127.0.0.1.

For each profile: the EMS's DeviceLink polls the simulated device and gets SI readings with our signs
(grid + import, PV + production), and the raw register words are pinned by hand here, independently of
the profiles' codec (hex literals, struct), with the vendor's word order, scale and sign. Where the real
device answers ILLEGAL DATA ADDRESS for a register it does not have, so does the simulator. Then
`emsctl modbus scan` identifies each simulated device from the profiles' identification registers, and
the full simulator (`python -m simulators` with meter.map: <profile>) feeds every profile plausibly.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from pymodbus.client import ModbusTcpClient

from config.modbus import ModbusConfig, ModbusDeviceConfig
from ems.clock import SystemClock
from ems.context import EMSContext
from ems.model import Quantity
from interfaces.cli.client import EXIT_FAIL, EXIT_OK
from interfaces.cli.main import main as emsctl
from interfaces.modbus.link import DeviceLink
from interfaces.modbus.pointmap import PointMap, load_map
from simulators.config import load_sim_config
from simulators.modbus_server import DeviceServer, RegisterImage
from simulators.site import Simulator, meter_values
from tests.helpers.common import free_port, wait_for
from tests.helpers.modbus import LoopThread, running_links

ILLEGAL_ADDRESS = 2  # Modbus exception code 02
GRID_METERS = (
    "sdm630",
    "sdm72",
    "sdm120",
    "em24",
    "em24_ethernet",
    "em340",
    "janitza_umg604",
    "sunspec_meter",
    "victron_gx_grid",
    "huawei_meter",
    "sungrow_meter",
    "solaredge_meter",
)
UNIT = {"victron_gx_grid": 100, "sunspec_meter": 200}  # the unit ids the devices answer at


def f32(value: float) -> list[int]:
    """IEEE-754 float32, high word first."""
    hi, lo = struct.unpack(">HH", struct.pack(">f", value))
    return [hi, lo]


def u32_low_first(value: int) -> list[int]:
    """A 32-bit integer (two's complement) as two registers, low word first."""
    n = value & 0xFFFF_FFFF
    return [n & 0xFFFF, n >> 16]


def u32_high_first(value: int) -> list[int]:
    n = value & 0xFFFF_FFFF
    return [n >> 16, n & 0xFFFF]


@dataclass
class Served:
    """One simulated meter: its register image on a pymodbus server, and a raw client beside the EMS's link."""

    loop: LoopThread
    image: RegisterImage
    server: DeviceServer
    unit: int

    @property
    def port(self) -> int:
        return self.server.port

    def set(self, values: dict[str, float | str]) -> None:
        self.loop.call(lambda: self.image.set_values(values))

    def feed(self, *, power_w: float, positive_wh: float = 0.0, negative_wh: float = 0.0) -> None:
        """What the simulator's plant table serves for a meter measuring `power_w` (simulators.site.meter_values)."""
        self.set(meter_values(self.image.map, power_w=power_w, positive_wh=positive_wh, negative_wh=negative_wh))

    def raw(self, address: int, count: int, *, fc: int) -> list[int] | int:
        """Registers read with FC3/FC4 by a plain client, or the exception code the device answered."""
        client = ModbusTcpClient("127.0.0.1", port=self.port, timeout=2.0, retries=0)
        assert client.connect()
        try:
            read = client.read_input_registers if fc == 4 else client.read_holding_registers
            rr = read(address, count=count, device_id=self.unit)
            return int(rr.exception_code) if rr.isError() else list(rr.registers)
        finally:
            client.close()  # type: ignore[no-untyped-call]

    def link(self, map_name: str) -> DeviceLink:
        link = DeviceLink("meter", ModbusDeviceConfig(port=self.port, device_id=self.unit, map=map_name, timeout_s=1.0))
        link.connect()
        return link


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


@contextmanager
def served(loop: LoopThread, name: str, *, unit: int = 1, models: Sequence[int] | None = None) -> Iterator[Served]:
    """Serve profile `name`; for a SunSpec profile optionally only the listed models, in that order
    (a real meter carries one meter model; the profile lists the alternatives)."""
    pmap: PointMap = load_map(name)
    if models is not None:
        left = list(pmap.models)
        chosen = [left.pop(next(i for i, m in enumerate(left) if m.id == mid)) for mid in models]  # a repeated id: the next one
        pmap = pmap.model_copy(update={"models": tuple(chosen)})
    image = RegisterImage(pmap)
    server = DeviceServer(name, image, host="127.0.0.1", port=free_port(), device_id=unit)
    loop.run(server.start())
    try:
        yield Served(loop, image, server, unit)
    finally:
        loop.run(server.stop())


def poll(link: DeviceLink) -> dict[Quantity, float]:
    values, rejected = link.poll()
    assert rejected == []
    return values


# ---- Eastron ----------------------------------------------------------------------------------------
def test_sdm630_grid_power_is_float32_high_word_first_at_input_0x34_and_gaps_are_refused(loop: LoopThread) -> None:
    with served(loop, "sdm630") as dev:
        dev.feed(power_w=-812.5, positive_wh=1_234_500.0, negative_wh=98_700.0)
        link = dev.link("sdm630")
        try:
            values = poll(link)
            assert dev.raw(0x0034, 2, fc=4) == [0xC44B, 0x2000]  # -812.5 W: exporting
            assert values[Quantity.GRID_POWER_W] == -812.5
            assert dev.raw(0x0048, 4, fc=4) == f32(1234.5) + f32(98.7)  # import / export, kWh
            assert values[Quantity.GRID_IMPORT_WH] == pytest.approx(1_234_500.0)
            assert values[Quantity.GRID_EXPORT_WH] == pytest.approx(98_700.0, rel=1e-6)
            assert values[Quantity.GRID_VOLTAGE_V] == 230.0 and values[Quantity.GRID_FREQUENCY_HZ] == 50.0
            # per phase: an even split, power factor 1, VA = |W|
            assert dev.raw(0x000C, 6, fc=4) == f32(-812.5 / 3) * 3
            assert link.read_named("l2_power_w") == pytest.approx(-812.5 / 3)
            assert link.read_named("l3_apparent_power_va") == pytest.approx(812.5 / 3)
            assert link.read_named("grid_power_factor") == 1.0
            assert link.read_named("l31_voltage_v") == pytest.approx(398.37, abs=0.01)
        finally:
            link.close()
        assert dev.raw(0xFC02, 1, fc=3) == [0x0070]  # meter code, holding register
        # the vendor table lists nothing at 0x0036 (between total W and total VA): refused (the
        # conservative reading of an undocumented behaviour, see the profile's source)
        assert dev.raw(0x0036, 2, fc=4) == ILLEGAL_ADDRESS
        assert dev.raw(0x0034, 4, fc=4) == ILLEGAL_ADDRESS  # a read across that gap
        assert dev.raw(0x0180, 2, fc=4) == ILLEGAL_ADDRESS  # past the last energy register 0x017C


def test_sdm630_pv_reads_production_positive_from_an_export_reading(loop: LoopThread) -> None:
    with served(loop, "sdm630_pv", unit=3) as dev:
        dev.set({"pv_power_w": 3000.0, "pv_l1_power_w": 1000.0, "pv_l1_voltage_v": 229.5, "pv_frequency_hz": 49.98})
        assert dev.raw(0x0034, 2, fc=4) == [0xC53B, 0x8000]  # -3000.0 on the wire: the meter sees export
        link = DeviceLink("pv", ModbusDeviceConfig(port=dev.port, device_id=3, map="sdm630_pv", timeout_s=1.0))
        link.connect()
        try:
            values = poll(link)
            assert values[Quantity.PV_POWER_W] == 3000.0
            assert link.read_named("pv_l1_power_w") == 1000.0
        finally:
            link.close()


def test_sdm72_total_and_unsigned_import_export_power(loop: LoopThread) -> None:
    with served(loop, "sdm72") as dev:
        dev.feed(power_w=-812.5, positive_wh=5000.0, negative_wh=2000.0)
        link = dev.link("sdm72")
        try:
            values = poll(link)
            assert values[Quantity.GRID_POWER_W] == -812.5
            assert dev.raw(0x0034, 2, fc=4) == [0xC44B, 0x2000]
            assert dev.raw(0x0500, 4, fc=4) == f32(0.0) + f32(812.5)  # import / export power, both >= 0
            assert values[Quantity.GRID_IMPORT_WH] == 5000.0 and values[Quantity.GRID_EXPORT_WH] == 2000.0
            assert link.read_named("net_energy_wh") == pytest.approx(3000.0)
        finally:
            link.close()
        assert dev.raw(0xFC02, 1, fc=3) == [0x0089]  # SDM72D-M-2
        assert dev.raw(0x0024, 2, fc=4) == ILLEGAL_ADDRESS  # phase angles: not on the SDM72 (S4, S5)


def test_sdm120_single_phase_power_at_0x0c(loop: LoopThread) -> None:
    with served(loop, "sdm120") as dev:
        dev.feed(power_w=1500.25, positive_wh=700_000.0)
        link = dev.link("sdm120")
        try:
            values = poll(link)
            assert values[Quantity.GRID_POWER_W] == 1500.25
            assert dev.raw(0x000C, 2, fc=4) == f32(1500.25)
            assert dev.raw(0x0006, 2, fc=4) == f32(1500.25 / 230.0)  # the one current
            assert values[Quantity.GRID_IMPORT_WH] == 700_000.0
        finally:
            link.close()
        assert dev.raw(0xFC02, 1, fc=3) == [0x0020]
        assert dev.raw(0x0024, 2, fc=4) == ILLEGAL_ADDRESS  # no phase angle on the SDM120


# ---- Carlo Gavazzi ----------------------------------------------------------------------------------------
def test_em24_int32_low_word_first_tenths_of_watts(loop: LoopThread) -> None:
    with served(loop, "em24") as dev:
        dev.feed(power_w=-812.5, positive_wh=1_234_500.0, negative_wh=50_000.0)
        link = dev.link("em24")
        try:
            values = poll(link)
            assert dev.raw(0x0028, 2, fc=3) == [0xE043, 0xFFFF]  # -8125 (W x10), low word first
            assert dev.raw(0x0028, 2, fc=4) == [0xE043, 0xFFFF]  # FC4 reads the same
            assert values[Quantity.GRID_POWER_W] == -812.5
            assert dev.raw(0x003E, 2, fc=3) == [0x3039, 0x0000]  # kWh(+) TOT: 12345 = 1234.5 kWh x10
            assert dev.raw(0x005C, 2, fc=3) == [500, 0]  # kWh(-) TOT: 50.0 kWh
            assert values[Quantity.GRID_IMPORT_WH] == 1_234_500.0 and values[Quantity.GRID_EXPORT_WH] == 50_000.0
            assert dev.raw(0x0037, 1, fc=3) == [500]  # Hz x10, INT16
            assert dev.raw(0x0000, 2, fc=3) == [2300, 0]  # V L1-N x10
            assert dev.raw(0x000C, 2, fc=3) == u32_low_first(round(812.5 / 3 / 230.0 * 1000))  # A x1000, no sign
            assert link.read_named("l1_power_w") == pytest.approx(-812.5 / 3, abs=0.05)
        finally:
            link.close()
        assert dev.raw(0x000B, 1, fc=3) == [71]  # identification code
        assert dev.raw(0x1101, 1, fc=3) == [7]  # application H
        assert dev.raw(0x0068, 2, fc=3) == ILLEGAL_ADDRESS  # after the last counter 0x0066 (unverified on a real EM24)


def test_em24_ethernet_uses_the_em300_addresses(loop: LoopThread) -> None:
    with served(loop, "em24_ethernet") as dev:
        dev.feed(power_w=2500.0, positive_wh=10_000.0, negative_wh=20_000.0)
        link = dev.link("em24_ethernet")
        try:
            values = poll(link)
            assert dev.raw(0x0028, 2, fc=3) == [25000, 0]
            assert dev.raw(0x0033, 3, fc=3) == [500, 100, 0]  # Hz x10, then kWh(+) 10.0 kWh low word first
            assert dev.raw(0x004E, 2, fc=3) == [200, 0]  # kWh(-) 20.0 kWh
            assert values == {
                Quantity.GRID_POWER_W: 2500.0,
                Quantity.GRID_VOLTAGE_V: 230.0,
                Quantity.GRID_FREQUENCY_HZ: 50.0,
                Quantity.GRID_IMPORT_WH: 10_000.0,
                Quantity.GRID_EXPORT_WH: 20_000.0,
            }
        finally:
            link.close()
        assert dev.raw(0x000B, 1, fc=3) == [1648]
        assert dev.raw(0xA000, 1, fc=3) == [7]


def test_em340_mode_b_and_the_vendors_illegal_address_for_unlisted_settings(loop: LoopThread) -> None:
    with served(loop, "em340") as dev:
        dev.feed(power_w=-4321.0, positive_wh=7_000.0, negative_wh=3_000_000.0)
        link = dev.link("em340")
        try:
            values = poll(link)
            assert dev.raw(0x0028, 2, fc=4) == u32_low_first(-43210)  # = [0x5736, 0xFFFF]
            assert dev.raw(0x0028, 2, fc=4) == [0x5736, 0xFFFF]
            assert values[Quantity.GRID_POWER_W] == -4321.0
            assert dev.raw(0x0034, 2, fc=4) == [70, 0] and dev.raw(0x004E, 2, fc=4) == u32_low_first(30000)
            assert values[Quantity.GRID_EXPORT_WH] == 3_000_000.0
            assert dev.raw(0x0031, 3, fc=4) == [1000, 0, 500]  # PF system x1000, phase sequence, Hz x10
        finally:
            link.close()
        assert dev.raw(0x000B, 1, fc=3) == [341]  # EM340
        assert dev.raw(0x1103, 1, fc=3) == [1]  # measurement mode B
        assert dev.raw(0x004A, 4, fc=4) == [0, 0, 0, 0]  # tariffs 3/4: "not available" reads 0 (vendor)
        assert dev.raw(0x1200, 1, fc=3) == ILLEGAL_ADDRESS  # unlisted programming address (vendor §2.4)


# ---- Janitza ----------------------------------------------------------------------------------------------
def test_janitza_float_block_at_19000_and_energies_in_wh(loop: LoopThread) -> None:
    with served(loop, "janitza_umg604") as dev:
        dev.feed(power_w=-812.5, positive_wh=123_456.0, negative_wh=654_321.0)
        link = dev.link("janitza_umg604")
        try:
            values = poll(link)
            assert dev.raw(19026, 2, fc=3) == [0xC44B, 0x2000]
            assert dev.raw(9851, 2, fc=3) == f32(123_456.0) and dev.raw(9863, 2, fc=3) == f32(654_321.0)
            assert values[Quantity.GRID_POWER_W] == -812.5
            assert values[Quantity.GRID_IMPORT_WH] == 123_456.0 and values[Quantity.GRID_EXPORT_WH] == 654_321.0
            assert dev.raw(19050, 2, fc=3) == f32(50.0)
        finally:
            link.close()
        assert dev.raw(19122, 2, fc=3) == ILLEGAL_ADDRESS  # after the block (unverified on a real UMG 604)


# ---- SunSpec meters ---------------------------------------------------------------------------------------
def test_fronius_float_meter_213_at_unit_200(loop: LoopThread) -> None:
    with served(loop, "sunspec_meter", unit=200, models=(1, 213)) as dev:
        dev.set({"grid_power_w": -812.5, "grid_import_wh": 4_000_000.0, "grid_export_wh": 1_500_000.0})
        dev.set({"grid_voltage_v": 231.0, "grid_frequency_hz": 50.02})
        assert dev.raw(40000, 4, fc=3) == [0x5375, 0x6E53, 1, 65]  # SunS, common model, L = 65
        assert dev.raw(40069, 2, fc=3) == [213, 124]  # the meter model right after it
        assert dev.raw(40097, 2, fc=3) == [0xC44B, 0x2000]  # W at +28: + import, so this is export
        assert dev.raw(40137, 2, fc=3) == f32(4_000_000.0)  # TotWhImp at +68
        assert dev.raw(40195, 2, fc=3) == [0xFFFF, 0]  # end marker
        link = dev.link("sunspec_meter")
        try:
            assert link.models == {1: (40002, 65), 213: (40069, 124)}
            assert link.identity["manufacturer"] == "Fronius"
            values = poll(link)
            assert values[Quantity.GRID_POWER_W] == -812.5
            assert values[Quantity.GRID_IMPORT_WH] == 4_000_000.0 and values[Quantity.GRID_EXPORT_WH] == 1_500_000.0
            assert values[Quantity.GRID_VOLTAGE_V] == 231.0
            assert values[Quantity.GRID_FREQUENCY_HZ] == pytest.approx(50.02)
        finally:
            link.close()


def test_sunspec_int_meter_203_with_scale_factors(loop: LoopThread) -> None:
    with served(loop, "sunspec_meter", unit=200, models=(1, 203)) as dev:
        dev.set({"grid_power_w": -812.0, "grid_import_wh": 123_456.0, "grid_voltage_v": 230.4, "grid_frequency_hz": 49.97})
        assert dev.raw(40069, 2, fc=3) == [203, 105]
        assert dev.raw(40087, 2, fc=3) == [0xFCD4, 0x0000]  # W = -812 at +18, WphA (not set) 0
        assert dev.raw(40091, 1, fc=3) == [0]  # W_SF
        assert dev.raw(40077, 1, fc=3) == [2304]  # PhVphA at +8: 230.4 V with V_SF -1
        assert dev.raw(40084, 1, fc=3) == [0xFFFF]  # V_SF = -1
        assert dev.raw(40115, 2, fc=3) == [0x0001, 0xE240]  # TotWhImp acc32 high word first, 123456 Wh
        assert dev.raw(40176, 1, fc=3) == [0xFFFF]  # end marker after L = 105
        link = dev.link("sunspec_meter")
        try:
            values = poll(link)
            assert values[Quantity.GRID_POWER_W] == -812.0
            assert values[Quantity.GRID_IMPORT_WH] == 123_456.0
            assert values[Quantity.GRID_VOLTAGE_V] == pytest.approx(230.4)
            assert values[Quantity.GRID_FREQUENCY_HZ] == pytest.approx(49.97)
        finally:
            link.close()


def test_solaredge_meter_1_reports_export_positive(loop: LoopThread) -> None:
    with served(loop, "solaredge_meter", models=(1, 103, 1, 203)) as dev:
        dev.set({"grid_power_w": -812.0, "grid_import_wh": 123_456.0, "grid_export_wh": 7.0})
        assert dev.raw(40121, 2, fc=3) == [1, 65]  # meter 1's common model (SolarEdge's fixed base)
        assert dev.raw(40188, 2, fc=3) == [203, 105]
        assert dev.raw(40206, 1, fc=3) == [0x032C]  # M_AC_Power +812: SolarEdge's + export
        assert dev.raw(40234, 2, fc=3) == [0x0001, 0xE240]  # M_Imported, not flipped
        assert dev.raw(40226, 2, fc=3) == [0, 7]  # M_Exported
        link = dev.link("solaredge_meter")
        try:
            assert link.identity["manufacturer"] == "SolarEdge"
            values = poll(link)
            assert values[Quantity.GRID_POWER_W] == -812.0  # ours: exporting
            assert values[Quantity.GRID_IMPORT_WH] == 123_456.0 and values[Quantity.GRID_EXPORT_WH] == 7.0
        finally:
            link.close()


# ---- Victron GX ---------------------------------------------------------------------------------------------
def test_victron_gx_grid_sums_three_int16_phases_at_unit_100(loop: LoopThread) -> None:
    with served(loop, "victron_gx_grid", unit=100) as dev:
        dev.set({"l1_power_w": -500.0, "l2_power_w": 100.0, "l3_power_w": -500.0})
        assert dev.raw(820, 3, fc=4) == [0xFE0C, 0x0064, 0xFE0C]
        assert dev.raw(820, 3, fc=3) == [0xFE0C, 0x0064, 0xFE0C]  # FC3 reads the same map
        link = dev.link("victron_gx_grid")
        try:
            assert poll(link) == {Quantity.GRID_POWER_W: -900.0}
        finally:
            link.close()
        assert dev.raw(799, 1, fc=4) == ILLEGAL_ADDRESS  # 794-799 are unregistered on the GX (attributes.csv)


def test_victron_gx_grid_reading_reaches_the_context_through_the_worker(loop: LoopThread) -> None:
    """The summed reading is claimed like any other (map_quantities counts part_of) and published."""
    with served(loop, "victron_gx_grid", unit=100) as dev:
        dev.set({"grid_power_w": -1500.0})  # split over 820-822 by the image
        clock = SystemClock()
        ctx = EMSContext(clock=clock)
        cfg = ModbusConfig.model_validate(
            {
                "enabled": True,
                "ess": {"enabled": False},
                "meter": {"port": dev.port, "device_id": 100, "map": "victron_gx_grid", "poll_period_s": 0.2, "timeout_s": 0.5},
            }
        )
        with running_links(cfg, ctx, clock):
            reading = wait_for(lambda: ctx.snapshot().reading(Quantity.GRID_POWER_W), timeout_s=10, what="grid_power_w")
        assert reading.value == -1500.0 and reading.source == "meter"


# ---- inverter-attached meters ------------------------------------------------------------------------------
def test_huawei_meter_37113_is_export_positive_int32_high_word_first(loop: LoopThread) -> None:
    with served(loop, "huawei_meter") as dev:
        dev.feed(power_w=812.0, positive_wh=1_234_560.0, negative_wh=5_000.0)  # importing 812 W
        assert dev.raw(37113, 2, fc=3) == [0xFFFF, 0xFCD4]  # -812: Huawei's "supply from the grid"
        assert dev.raw(37119, 4, fc=3) == [0, 500, *u32_high_first(123_456)]  # exported / imported, kWh x100
        assert dev.raw(37107, 2, fc=3) == u32_high_first(-round(812.0 / 3 / 230.0 * 100))  # A x100, + export
        link = dev.link("huawei_meter")
        try:
            values = poll(link)
            assert values[Quantity.GRID_POWER_W] == 812.0
            assert values[Quantity.GRID_IMPORT_WH] == 1_234_560.0 and values[Quantity.GRID_EXPORT_WH] == 5_000.0
            assert values[Quantity.GRID_VOLTAGE_V] == 230.0 and values[Quantity.GRID_FREQUENCY_HZ] == 50.0
            assert link.read_named("l2_power_w") == pytest.approx(812.0 / 3, abs=0.5)
        finally:
            link.close()


def test_sungrow_meter_13009_export_and_5600_import_have_opposite_signs(loop: LoopThread) -> None:
    with served(loop, "sungrow_meter") as dev:
        dev.feed(power_w=812.0, positive_wh=1_234_500.0, negative_wh=100.0)
        assert dev.raw(13009, 2, fc=4) == [0xFCD4, 0xFFFF]  # -812 low word first: "+ export"
        assert dev.raw(5600, 2, fc=4) == [0x032C, 0x0000]  # +812: "+ buy from grid"
        assert dev.raw(13036, 2, fc=4) == [0x3039, 0x0000]  # 1234.5 kWh x10
        assert dev.raw(4999, 1, fc=4) == [0x0E03]  # device type code (SH10RT)
        link = dev.link("sungrow_meter")
        try:
            values = poll(link)
            assert values[Quantity.GRID_POWER_W] == 812.0
            assert values[Quantity.GRID_IMPORT_WH] == 1_234_500.0 and values[Quantity.GRID_EXPORT_WH] == 100.0
            assert link.read_named("meter_power_w") == 812.0
        finally:
            link.close()
        assert dev.raw(13011, 2, fc=4) == ILLEGAL_ADDRESS  # not served (unverified on a real SH inverter)


# ---- the full simulator serves every profile ---------------------------------------------------------------
@pytest.mark.parametrize("name", GRID_METERS)
def test_the_simulator_serves_each_grid_meter_profile_from_the_plant(name: str) -> None:
    loop = LoopThread()
    port = free_port()
    unit = UNIT.get(name, 2)
    over: dict[str, object] = {
        "plant.profile": "summer-sunny",
        "plant.start_time": "23:00",
        "plant.load_offset_w": 1000.0,  # importing
        "plant.meter_noise_w": 0.0,
        "control.enabled": False,
        "ess.enabled": False,
        "meter.port": port,
        "meter.device_id": unit,
        "meter.map": name,
    }
    sim = Simulator(load_sim_config(None, over))
    loop.run(sim.devices["meter"].start())
    try:
        loop.call(lambda: sim.step(1.0))
        link = DeviceLink("meter", ModbusDeviceConfig(port=port, device_id=unit, map=name, timeout_s=1.0))
        link.connect()
        try:
            values = poll(link)
        finally:
            link.close()
        view = sim.view
        assert view.grid_power_w > 100.0
        assert values[Quantity.GRID_POWER_W] == pytest.approx(view.grid_power_w, abs=3.0)  # int16 W split over parts
        if Quantity.GRID_VOLTAGE_V in values:
            assert values[Quantity.GRID_VOLTAGE_V] == pytest.approx(230.0, abs=0.5)
        if Quantity.GRID_FREQUENCY_HZ in values:
            assert values[Quantity.GRID_FREQUENCY_HZ] == pytest.approx(50.0, abs=0.05)
        if Quantity.GRID_IMPORT_WH in values:
            assert values[Quantity.GRID_IMPORT_WH] == pytest.approx(sim.plant.grid_import_wh, abs=101.0)  # 0.1 kWh steps
    finally:
        loop.run(sim.devices["meter"].stop())
        loop.close()


@pytest.mark.parametrize("name", ["sdm630_pv"])
def test_the_simulator_serves_each_pv_meter_profile_from_the_plant(name: str) -> None:
    loop = LoopThread()
    port = free_port()
    over: dict[str, object] = {
        "plant.profile": "summer-sunny",
        "plant.start_time": "12:00",
        "control.enabled": False,
        "ess.enabled": False,
        "meter.enabled": False,
        "pv.enabled": True,
        "pv.port": port,
        "pv.map": name,
    }
    sim = Simulator(load_sim_config(None, over))
    loop.run(sim.devices["pv"].start())
    try:
        loop.call(lambda: sim.step(1.0))
        link = DeviceLink("pv", ModbusDeviceConfig(port=port, device_id=3, map=name, timeout_s=1.0))
        link.connect()
        try:
            values = poll(link)
            assert link.read_named("pv_l1_power_w") == pytest.approx(sim.view.pv_w / 3, rel=1e-5)
        finally:
            link.close()
        assert sim.view.pv_w > 1000.0
        assert values[Quantity.PV_POWER_W] == pytest.approx(sim.view.pv_w, rel=1e-6)
    finally:
        loop.run(sim.devices["pv"].stop())
        loop.close()


# ---- emsctl modbus scan -------------------------------------------------------------------------------------
def scan(port: int, unit: int, *extra: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = emsctl(["modbus", "scan", f"127.0.0.1:{port}", "--unit", str(unit), "--rate", "20", *extra], environ={}, stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    ("name", "unit", "expected", "why"),
    [
        ("sdm630", 1, ["sdm630", "sdm630_pv"], "meter_code holding 64514 uint16 = 112 (0x0070)"),
        ("sdm72", 1, ["sdm72"], "= 137 (0x0089)"),
        ("sdm120", 1, ["sdm120"], "= 32 (0x0020)"),
        ("em24", 1, ["em24"], "id_code holding 11 uint16 = 71"),
        ("em24_ethernet", 1, ["em24_ethernet"], "= 1648"),
        ("em340", 1, ["em340"], "= 341"),
        ("huawei_meter", 1, ["huawei_meter"], "model_name holding 30000 string = 'SUN2000-10KTL-M1'"),
        ("sungrow_meter", 1, ["sungrow_meter"], "device_type_code input 4999 uint16 = 3587 (0x0E03)"),
        ("victron_gx_grid", 100, ["victron_gx_grid"], "serial input 800 string"),
    ],
)
def test_scan_identifies_a_plain_device_by_its_vendor_registers(
    loop: LoopThread, name: str, unit: int, expected: list[str], why: str
) -> None:
    with served(loop, name, unit=unit) as dev:
        rc, out, err = scan(dev.port, unit)
        assert rc == EXIT_OK, err
        assert out.startswith("no SunSpec marker")
        maps_line = next(line for line in out.splitlines() if line.startswith("maps      "))
        assert set(expected) <= set(maps_line.removeprefix("maps      ").split(", "))
        assert why in out
        rc, out, _ = scan(dev.port, unit, "--json")
        doc: dict[str, Any] = json.loads(out)
        assert set(expected) <= {s["map"] for s in doc["suggestions"] if s["identified"]}
        assert doc["found"] is False  # no SunSpec marker
        assert dev.server.writes == 0  # read-only


def test_scan_puts_the_vendor_specific_sunspec_profile_before_the_generic_one(loop: LoopThread) -> None:
    with served(loop, "solaredge_meter", models=(1, 103, 1, 203)) as dev:
        rc, out, err = scan(dev.port, 1, "--json")
    assert rc == EXIT_OK, err
    doc = json.loads(out)
    assert [m["id"] for m in doc["models"]] == [1, 103, 1, 203]
    order = [s["map"] for s in doc["suggestions"]]
    assert order.index("solaredge_meter") < order.index("sunspec_meter")
    assert doc["suggestions"][order.index("solaredge_meter")] == {
        "map": "solaredge_meter",
        "kind": "meter",
        "vendor": "SolarEdge",
        "why": "manufacturer holding 40004 string = 'SolarEdge'",
        "identified": True,
    }
    generic = {
        "map": "sunspec_meter",
        "kind": "meter",
        "vendor": "SunSpec (Fronius and others)",
        "why": "SunSpec models 203",
        "identified": False,
    }
    assert doc["suggestions"][order.index("sunspec_meter")] == generic


def test_scan_suggests_the_sunspec_meter_for_a_fronius_meter(loop: LoopThread) -> None:
    with served(loop, "sunspec_meter", unit=200, models=(1, 213)) as dev:
        rc, out, err = scan(dev.port, 200)
    assert rc == EXIT_OK, err
    assert "model   213  Meter float (wye three phase)" in out
    assert "manufacturer=Fronius" in out
    assert "sunspec_meter" in out.split("maps      ", 1)[1].splitlines()[0]
    assert "solaredge_meter" not in out


def test_scan_of_a_device_that_matches_nothing_exits_1_and_says_what_it_tried(loop: LoopThread) -> None:
    """A Janitza UMG 604 has no model-code register: nothing identifies it (and nothing else claims it)."""
    with served(loop, "janitza_umg604") as dev:
        rc, out, _ = scan(dev.port, 1)
        assert rc == EXIT_FAIL
        assert out.startswith("no SunSpec marker")
        assert "no profile's identification matches" in out
        rc, out, _ = scan(dev.port, 1, "--json")
        doc = json.loads(out)
        assert doc["suggestions"] == [] and doc["maps"] == []
        assert doc["probes"] and all(p["registers"] is None for p in doc["probes"])  # every probe refused
        assert len({(p["function"], p["address"]) for p in doc["probes"]}) == len(doc["probes"])  # each register once
        assert doc["requests"] == 3 + len(doc["probes"])  # the three SunSpec bases, then one read per probe
        assert dev.server.writes == 0
