"""Meter profiles as data: each loads, names its sources and unverified facts, reads its grid (or PV)
power, and the simulator's plant table knows every measurement point; `device.identify` is checked on load."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from ems.model import Quantity
from interfaces.modbus.pointmap import Identify, MapError, PointType, load_map
from simulators.site import meter_values

METERS = (
    "sdm630",
    "sdm630_pv",
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


def _readings(name: str) -> set[str]:
    known = {q.value for q in Quantity}
    return {p.part_of or p.name for p in load_map(name).all_points() if (p.part_of or p.name) in known}


@pytest.mark.parametrize("name", METERS)
def test_each_meter_profile_names_its_sources_and_what_is_unverified(name: str) -> None:
    pmap = load_map(name)
    d = pmap.device
    assert d.kind in ("meter", "pv_meter") and pmap.control is None  # read only
    assert d.vendor and d.model and d.installer
    assert "@" in d.source and "UNVERIFIED" in d.source  # peer definitions with their commit; the open points
    power = "pv_power_w" if d.kind == "pv_meter" else "grid_power_w"
    assert power in _readings(name)
    assert not any(p.writable for p in pmap.all_points())


@pytest.mark.parametrize("name", METERS)
def test_the_simulator_table_gives_every_measurement_point_of_each_profile_a_value(name: str) -> None:
    pmap = load_map(name)
    values = meter_values(pmap, power_w=-900.0, positive_wh=5000.0, negative_wh=2000.0)
    served = {p.part_of or p.name for p in pmap.all_points() if p.server_value is None and p.type is not PointType.STRING}
    assert served <= set(values), f"{name}: the table does not know {sorted(served - set(values))}"
    power = "pv_power_w" if pmap.device.kind == "pv_meter" else "grid_power_w"
    assert values[power] == -900.0


def test_the_table_splits_per_phase_values_and_keeps_unsigned_points_unsigned() -> None:
    values = meter_values(load_map("em24"), power_w=-900.0, positive_wh=5000.0, negative_wh=2000.0)
    assert values["l1_power_w"] == -300.0 and values["grid_power_w"] == -900.0
    assert values["l1_current_a"] == pytest.approx(300.0 / 230.0)  # min: 0 on the EM24's currents (no sign)
    assert values["grid_import_wh"] == 5000.0 and values["grid_export_wh"] == 2000.0 and values["l2_import_wh"] == pytest.approx(5000.0 / 3)
    assert values["grid_power_factor"] == 1.0 and values["l12_voltage_v"] == pytest.approx(398.37, abs=0.01)
    huawei = meter_values(load_map("huawei_meter"), power_w=-900.0, positive_wh=0.0, negative_wh=0.0)
    assert huawei["l1_current_a"] == pytest.approx(-300.0 / 230.0)  # signed: the profile's sign flips it on the wire
    single = meter_values(load_map("sdm120"), power_w=-900.0, positive_wh=0.0, negative_wh=0.0)
    assert single["grid_current_a"] == pytest.approx(-900.0 / 230.0)


def test_identify_entries_name_a_register_one_way() -> None:
    assert Identify(point="meter_code", equals=(112,)).equals == (112.0,)
    assert Identify(address=30000, type=PointType.STRING, size=15, contains="SUN2000").size == 15
    with pytest.raises(ValidationError, match="either point or address"):
        Identify(point="meter_code", address=64514)
    with pytest.raises(ValidationError, match="either point or address"):
        Identify(equals=(1,))
    with pytest.raises(ValidationError, match="come from the point"):
        Identify(point="meter_code", type=PointType.UINT32)
    with pytest.raises(ValidationError, match="size: required"):
        Identify(address=30000, type=PointType.STRING)
    with pytest.raises(ValidationError, match="not both"):
        Identify(address=1, equals=(1,), contains="x")


def test_identify_must_name_a_point_of_the_profile(tmp_path: Path) -> None:
    raw = {
        "name": "x",
        "kind": "plain",
        "points": [{"name": "grid_power_w", "offset": 0, "type": "float32"}],
        "device": {"kind": "meter", "identify": [{"point": "meter_code", "equals": [32]}]},
    }
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(MapError, match=r"device\.identify: names unknown point 'meter_code'"):
        load_map(path)


def test_a_profile_without_identify_still_loads() -> None:
    assert load_map("janitza_umg604").device.identify == ()
