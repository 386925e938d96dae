"""The DBC codec: documented sample payloads decode to project units and signs; bad frames are classified."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config import ConfigError, parse_config
from ems.model import Quantity as Q
from interfaces.can.codec import PROTECTIONS, WARNINGS, BadLength, Codec, FrameError, Undecodable, UnknownId

CODEC = Codec()


def test_limits_frame_decodes_the_documented_samples() -> None:
    # CVL 0x0230 = 56.0 V, CCL 0x03E8 = 100.0 A, DCL 0x0E74 = 370.0 A (PROTOCOLS.md), DVL 0x01CC = 46.0 V
    f = CODEC.decode(0x351, bytes([0x30, 0x02, 0xE8, 0x03, 0x74, 0x0E, 0xCC, 0x01]))
    assert f.measurements == {Q.BMS_CVL_V: 56.0, Q.BMS_CCL_A: 100.0, Q.BMS_DCL_A: 370.0, Q.BMS_DVL_V: 46.0}


def test_limits_frame_with_dlc_6_has_no_discharge_voltage_limit() -> None:
    f = CODEC.decode(0x351, bytes([0x30, 0x02, 0xE8, 0x03, 0x74, 0x0E]))
    assert Q.BMS_DVL_V not in f.measurements
    assert f.measurements[Q.BMS_DCL_A] == 370.0


def test_measurements_frame_scales_and_keeps_charge_positive() -> None:
    # 0x1470 = 5232 -> 52.32 V; 0xFF83 = -125 -> -12.5 A (discharging); 0x00F1 = 241 -> 24.1 degC
    f = CODEC.decode(0x356, bytes([0x70, 0x14, 0x83, 0xFF, 0xF1, 0x00]))
    assert f.measurements == {Q.BMS_VOLTAGE_V: 52.32, Q.BMS_CURRENT_A: -12.5, Q.BMS_TEMPERATURE_DEGC: 24.1}


def test_negative_temperature_decodes() -> None:
    f = CODEC.decode(0x356, bytes([0x70, 0x14, 0x00, 0x00, 0x9C, 0xFF]))  # -100 -> -10.0 degC
    assert f.measurements[Q.BMS_TEMPERATURE_DEGC] == -10.0


def test_current_sign_flips_for_a_bms_that_reports_discharge_positive() -> None:
    flipped = Codec(current_sign=-1.0)
    f = flipped.decode(0x356, bytes([0x70, 0x14, 0x7D, 0x00, 0xF1, 0x00]))  # +12.5 A on the wire = discharging
    assert f.measurements[Q.BMS_CURRENT_A] == -12.5


def test_soc_frame_accepts_the_v13_six_byte_variant() -> None:
    assert CODEC.decode(0x355, bytes([57, 0, 98, 0])).measurements == {Q.SOC_PCT: 57.0, Q.SOH_PCT: 98.0}
    assert CODEC.decode(0x355, bytes([57, 0, 98, 0, 0x10, 0x02])).measurements[Q.SOC_PCT] == 57.0


PROTECTION_BITS = [
    (0, 1, "over_voltage"),
    (0, 2, "under_voltage"),
    (0, 3, "over_temperature"),
    (0, 4, "under_temperature"),
    (0, 7, "discharge_over_current"),
    (1, 0, "charge_over_current"),
    (1, 3, "system_error"),
]
WARNING_BITS = [
    (2, 1, "high_voltage"),
    (2, 2, "low_voltage"),
    (2, 3, "high_temperature"),
    (2, 4, "low_temperature"),
    (2, 7, "high_discharge_current"),
    (3, 0, "high_charge_current"),
    (3, 3, "internal_communication"),
]


@pytest.mark.parametrize(("byte", "bit", "name"), PROTECTION_BITS)
def test_each_protection_bit_names_its_flag(byte: int, bit: int, name: str) -> None:
    data = bytearray([0, 0, 0, 0, 2, 0x50, 0x4E])
    data[byte] = 1 << bit
    f = CODEC.decode(0x359, bytes(data))
    assert f.protections == {name} and f.warnings == frozenset()
    assert f.info["modules"] == 2


@pytest.mark.parametrize(("byte", "bit", "name"), WARNING_BITS)
def test_each_warning_bit_names_its_flag(byte: int, bit: int, name: str) -> None:
    data = bytearray([0, 0, 0, 0, 1, 0x50, 0x4E])
    data[byte] = 1 << bit
    f = CODEC.decode(0x359, bytes(data))
    assert f.warnings == {name} and f.protections == frozenset()


def test_flag_tables_cover_every_documented_bit() -> None:
    assert set(PROTECTIONS.values()) == {n for _, _, n in PROTECTION_BITS}
    assert set(WARNINGS.values()) == {n for _, _, n in WARNING_BITS}


@pytest.mark.parametrize(
    ("byte0", "charge", "discharge", "force"),
    [(0xC0, 1.0, 1.0, 0.0), (0xA0, 1.0, 0.0, 1.0), (0x40, 0.0, 1.0, 0.0), (0x10, 0.0, 0.0, 1.0), (0x00, 0.0, 0.0, 0.0)],
)
def test_request_flags(byte0: int, charge: float, discharge: float, force: float) -> None:
    f = CODEC.decode(0x35C, bytes([byte0, 0]))
    assert f.measurements == {Q.BMS_CHARGE_ENABLE: charge, Q.BMS_DISCHARGE_ENABLE: discharge, Q.BMS_FORCE_CHARGE: force}


def test_name_frame_reads_the_bytes_sent() -> None:
    assert CODEC.decode(0x35E, b"PYLON   ").info == {"name": "PYLON"}
    assert CODEC.decode(0x35E, b"REC").info == {"name": "REC"}
    with pytest.raises(Undecodable):
        CODEC.decode(0x35E, b"\xffPYLON")


@pytest.mark.parametrize(
    ("frame_id", "data", "extended", "error"),
    [
        (0x123, b"\x00", False, UnknownId),
        (0x351, b"\x30\x02\xe8\x03\x74\x0e\xcc\x01", True, UnknownId),  # 29-bit id with a known number
        (0x351, b"\x30\x02\xe8\x03", False, BadLength),
        (0x356, b"", False, BadLength),
        (0x359, b"\x00" * 6, False, BadLength),
        (0x355, bytes([101, 0, 100, 0]), False, Undecodable),  # SOC above 100 %
        (0x356, bytes([0x18, 0xFC, 0, 0, 0, 0]), False, Undecodable),  # negative pack voltage
        (0x356, bytes([0x70, 0x14, 0, 0, 0xEC, 0x04]), False, Undecodable),  # 126.0 degC: above the DBC maximum
    ],
)
def test_bad_frames_raise_their_kind(frame_id: int, data: bytes, extended: bool, error: type[FrameError]) -> None:
    with pytest.raises(error):
        CODEC.decode(frame_id, data, is_extended_id=extended)


def test_simulator_encoders_round_trip() -> None:
    c = CODEC
    assert c.decode(0x351, c.encode_limits(cvl_v=55.2, ccl_a=80.5, dcl_a=120.0, dvl_v=None)).measurements == {
        Q.BMS_CVL_V: 55.2,
        Q.BMS_CCL_A: 80.5,
        Q.BMS_DCL_A: 120.0,
    }
    m = c.decode(0x356, c.encode_measurements(voltage_v=51.23, current_a=-33.3, temperature_degc=-5.5)).measurements
    assert m == {Q.BMS_VOLTAGE_V: 51.23, Q.BMS_CURRENT_A: -33.3, Q.BMS_TEMPERATURE_DEGC: -5.5}
    f = c.decode(0x359, c.encode_alarms(protections=frozenset({"system_error"}), warnings=frozenset({"low_voltage"}), modules=3))
    assert (f.protections, f.warnings, f.info["modules"]) == ({"system_error"}, {"low_voltage"}, 3)
    assert c.decode(0x305, c.encode_keepalive()).measurements == {}
    assert c.encode_keepalive() == bytes(8)
    with pytest.raises(ValueError, match="unknown BMS flag"):
        c.encode_alarms(protections=frozenset({"nope"}), warnings=frozenset(), modules=1)


@settings(max_examples=400, deadline=None)
@given(frame_id=st.integers(0, 0x1FFFFFFF), data=st.binary(min_size=0, max_size=8), extended=st.booleans())
def test_decode_never_fails_with_anything_but_a_frame_error(frame_id: int, data: bytes, extended: bool) -> None:
    try:
        f = CODEC.decode(frame_id, data, is_extended_id=extended)
    except FrameError:
        return
    assert all(isinstance(v, float) for v in f.measurements.values())


def test_can_enabled_requires_the_bms_fields_as_required_sources() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({"can": {"enabled": True}}, {})
    assert [str(p) for p in exc.value.problems] == [
        "control.required_sources: with can.enabled, add bms_voltage_v, bms_ccl_a, bms_dcl_a (a silent BMS must mean FAULT; see docs/can.md)"
    ]
    ok = parse_config(
        {"can": {"enabled": True}, "control": {"required_sources": ["soc_pct", "bms_voltage_v", "bms_ccl_a", "bms_dcl_a"]}}, {}
    )
    assert ok.can.enabled


def test_can_config_rejects_a_bad_ignore_id() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({"can": {"ignore_ids": [0x20000000]}}, {})
    assert [p.path for p in exc.value.problems] == ["can.ignore_ids"]


def test_can_config_rejects_unknown_keys() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({"can": {"bitrat": 250000}}, {})
    assert [p.path for p in exc.value.problems] == ["can.bitrat"]
