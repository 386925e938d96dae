"""Point maps and the register codec: raw layouts pinned, not-implemented markers, ranges, signs."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from interfaces.modbus.pointmap import (
    DecodeError,
    EncodeError,
    MapError,
    Point,
    PointType,
    available_maps,
    decode_raw,
    encode_raw,
    from_si,
    load_map,
    to_si,
)
from simulators.modbus_server import SUNSPEC_BASE, RegisterImage


def _p(type_: str, **kw: object) -> Point:
    return Point.model_validate({"name": "x", "offset": 0, "type": type_, **kw})


def test_shipped_maps_load() -> None:
    assert {"sunspec_ess", "sdm630"} <= set(available_maps())
    ess = load_map("sunspec_ess")
    assert ess.kind == "sunspec" and [m.id for m in ess.models] == [1, 103, 124, 802, 64901]
    assert ess.control is not None and ess.control.setpoint == "setpoint_w" and ess.control.heartbeat == "heartbeat"


def test_sdm630_total_power_is_float32_high_word_first_at_0x34() -> None:
    meter = RegisterImage(load_map("sdm630"))
    meter.set_values({"grid_power_w": -1234.5, "grid_import_wh": 2500.0})
    hi, lo = struct.unpack(">HH", struct.pack(">f", -1234.5))
    assert meter.read(0x34, 2) == [hi, lo]
    hi, lo = struct.unpack(">HH", struct.pack(">f", 2.5))  # kWh on the wire
    assert meter.read(0x48, 2) == [hi, lo]


def test_sunspec_chain_layout_follows_protocols_md() -> None:
    img = RegisterImage(load_map("sunspec_ess"))
    assert img.read(SUNSPEC_BASE, 4) == [0x5375, 0x6E53, 1, 66]
    m103 = SUNSPEC_BASE + 2 + 68
    assert img.read(m103, 2) == [103, 50]
    assert img.address_of("ess_power_w") == m103 + 14
    m124 = m103 + 52
    m802 = m124 + 26
    assert img.read(m802, 2) == [802, 62]
    assert img.address_of("soc_pct") == m802 + 11
    img.set_values({"soc_pct": 55.5})
    assert img.read(m802 + 11, 1) == [555]  # SF -1 at offset 56
    assert img.read(m802 + 56, 1) == [0xFFFF]
    end = img.end
    assert img.read(end - 2, 2) == [0xFFFF, 0]


@pytest.mark.parametrize(
    ("type_", "words", "raw"),
    [
        ("int16", [0xFFFE], -2.0),
        ("uint16", [0xFFFE], 65534.0),
        ("int32", [0xFFFF, 0xFFFE], -2.0),
        ("uint32", [0x0001, 0x0000], 65536.0),
        ("acc32", [0x0000, 0x0000], 0.0),
        ("sunssf", [0xFFFD], -3.0),
    ],
)
def test_integer_decoding(type_: str, words: list[int], raw: float) -> None:
    assert decode_raw(words, _p(type_)) == raw


@pytest.mark.parametrize(
    ("type_", "words"),
    [
        ("int16", [0x8000]),
        ("uint16", [0xFFFF]),
        ("enum16", [0xFFFF]),
        ("int32", [0x8000, 0]),
        ("uint32", [0xFFFF, 0xFFFF]),
        ("sunssf", [0x8000]),
    ],
)
def test_sunspec_not_implemented_markers_are_rejected(type_: str, words: list[int]) -> None:
    with pytest.raises(DecodeError, match="not implemented"):
        decode_raw(words, _p(type_))


def test_float_nan_and_malformed_registers_are_rejected() -> None:
    with pytest.raises(DecodeError, match="finite"):
        decode_raw([0x7FC0, 0x0000], _p("float32"))
    with pytest.raises(DecodeError, match="malformed"):
        decode_raw([0x1234], _p("float32"))
    with pytest.raises(DecodeError, match="malformed"):
        decode_raw([0x10000], _p("uint16"))


def test_word_order_little_swaps_words() -> None:
    p = _p("float32")
    big = encode_raw(3.5, p, word_order="big")
    little = encode_raw(3.5, p, word_order="little")
    assert little == list(reversed(big))
    assert decode_raw(little, p, word_order="little") == 3.5


def test_scale_factor_sign_and_range() -> None:
    p = _p("int16", sign=-1, min=-100, max=100)
    assert to_si(250.0, p, sf=-1) == pytest.approx(-25.0)
    with pytest.raises(DecodeError, match="outside"):
        to_si(2000.0, p, sf=-1)
    assert from_si(-25.0, p, sf=-1) == pytest.approx(250.0)


def test_encode_refuses_values_that_do_not_fit() -> None:
    with pytest.raises(EncodeError):
        encode_raw(70000.0, _p("int16"))
    with pytest.raises(EncodeError):
        encode_raw(-1.0, _p("uint16"))
    with pytest.raises(EncodeError):
        encode_raw(math.nan, _p("float32"))


def test_strings_round_trip_and_empty_is_not_implemented() -> None:
    p = _p("string", size=4)
    assert decode_raw(encode_raw("EMS", p), p) == "EMS"
    with pytest.raises(DecodeError):
        decode_raw([0, 0, 0, 0], p)


@given(value=st.floats(-3000.0, 3000.0), sf=st.integers(-2, 1))
def test_int16_round_trip_within_resolution(value: float, sf: int) -> None:
    p = _p("int16")
    raw = from_si(value, p, sf=sf)
    if not -32768 <= round(raw) <= 32767:
        return
    back = to_si(decode_raw(encode_raw(raw, p), p), p, sf=sf)  # type: ignore[arg-type]
    assert back == pytest.approx(value, abs=0.5 * 10.0**sf + 1e-9)


def test_bad_map_names_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nkind: plain\npoints:\n  - {name: grid_power_w, offset: 0, type: float64}\n")
    with pytest.raises(MapError, match=r"bad\.yaml.*points\.0\.type"):
        load_map(bad)
    with pytest.raises(MapError, match="not found"):
        load_map("no_such_map")


def test_sf_must_name_a_sunssf_point_of_the_model(tmp_path: Path) -> None:
    bad = tmp_path / "sf.yaml"
    bad.write_text(
        "name: sf\nkind: sunspec\nmodels:\n  - id: 103\n    length: 50\n    points:\n"
        "      - {name: ess_power_w, offset: 14, type: int16, sf: 15}\n"
    )
    with pytest.raises(MapError, match="sunssf"):
        load_map(bad)
    assert PointType.SUNSSF.value == "sunssf"
