"""The BMS simulator's frames and commands, without a bus: frames() is encoded through the DBC."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from ems.model import Quantity as Q
from interfaces.can.codec import BmsFrame, Codec
from simulators.bms import BmsSimConfig, BmsSimulator, StaticBattery

CODEC = Codec()


def _decoded(sim: BmsSimulator) -> dict[int, BmsFrame]:
    return {m.arbitration_id: CODEC.decode(m.arbitration_id, bytes(m.data)) for m in sim.frames()}


def test_frames_follow_the_battery_source() -> None:
    battery = StaticBattery(soc_pct=50.4, voltage_v=52.1, current_a=-40.0, temperature_degc=31.0, ccl_a=90.0, dcl_a=80.0)
    frames = _decoded(BmsSimulator(battery, BmsSimConfig(name="ABC", modules=4)))
    assert sorted(frames) == [0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E]
    assert frames[0x351].measurements == {Q.BMS_CVL_V: 56.0, Q.BMS_CCL_A: 90.0, Q.BMS_DCL_A: 80.0, Q.BMS_DVL_V: 46.0}
    assert frames[0x355].measurements[Q.SOC_PCT] == 50.0
    assert frames[0x356].measurements[Q.BMS_CURRENT_A] == -40.0
    assert frames[0x35E].info == {"name": "ABC"}
    assert frames[0x359].info == {"modules": 4}


def test_requests_follow_soc_and_overrides() -> None:
    battery = StaticBattery(soc_pct=2.0)
    sim = BmsSimulator(battery, BmsSimConfig(force_charge_below_pct=3.0, charge_disable_at_pct=99.0))
    assert _decoded(sim)[0x35C].measurements[Q.BMS_FORCE_CHARGE] == 1.0
    battery.soc_pct = 99.5
    req = _decoded(sim)[0x35C].measurements
    assert (req[Q.BMS_CHARGE_ENABLE], req[Q.BMS_FORCE_CHARGE]) == (0.0, 0.0)
    assert sim.command("request charge_enable on").startswith("ok")
    assert _decoded(sim)[0x35C].measurements[Q.BMS_CHARGE_ENABLE] == 1.0
    assert sim.command("request charge_enable auto").startswith("ok")
    assert _decoded(sim)[0x35C].measurements[Q.BMS_CHARGE_ENABLE] == 0.0


def test_flag_commands_and_clear() -> None:
    sim = BmsSimulator(StaticBattery(), BmsSimConfig(protections=("system_error",)))
    assert (
        sim.command("warning low_voltage on")
        == "ok protections=system_error warnings=low_voltage silent=False frames_sent=0 keepalives_received=0"
    )
    alarms = _decoded(sim)[0x359]
    assert (alarms.protections, alarms.warnings) == ({"system_error"}, {"low_voltage"})
    assert sim.command("clear").startswith("ok protections=- warnings=- silent=False")
    assert sim.command("protection nope on").startswith("error: unknown protection flag 'nope'")
    assert sim.command("dance").startswith("error: unknown command")


def test_out_of_range_battery_values_are_clamped_to_the_dbc() -> None:
    battery = StaticBattery(soc_pct=math.nan, voltage_v=1000.0, temperature_degc=-100.0, ccl_a=-5.0, dcl_a=1e9)
    frames = _decoded(BmsSimulator(battery))
    assert frames[0x355].measurements[Q.SOC_PCT] == 0.0
    assert frames[0x356].measurements[Q.BMS_VOLTAGE_V] == 327.67
    assert frames[0x356].measurements[Q.BMS_TEMPERATURE_DEGC] == -60.0
    assert (frames[0x351].measurements[Q.BMS_CCL_A], frames[0x351].measurements[Q.BMS_DCL_A]) == (0.0, 3276.7)


def test_config_rejects_unknown_flags_and_non_loopback_hosts() -> None:
    with pytest.raises(ValidationError, match="unknown protection flag"):
        BmsSimConfig(protections=("melting",))
    with pytest.raises(ValidationError, match="loopback"):
        BmsSimConfig(host="0.0.0.0")
