"""The framework pieces the profiles victron_gx_ess3, sma_sunny_island, sma_sunny_boy_storage, fronius_gen24 and
sunspec_124 declare: a min/max window with a mode per direction and constants written with every command, a device
that holds 0 W after its timer fires (revert.power_after), and the simulator serving a pair of magnitudes."""

from __future__ import annotations

import re

import pytest

from interfaces.modbus.control import ControlSpec, command_points, decode_command
from interfaces.modbus.pointmap import load_map
from simulators.inverter import InverterModel
from simulators.site import _split_by_sign

PROFILES = ["victron_gx_ess3", "sma_sunny_island", "sma_sunny_boy_storage", "fronius_gen24", "sunspec_124"]

WINDOW_WITH_MODE = ControlSpec.model_validate(
    {
        "method": "min_max_window",
        "direction": {"point": "mode", "charge": 2289, "discharge": 2290, "stop": 2424},
        "charge_min": "cmin",
        "charge_max": "cmax",
        "discharge_min": "dmin",
        "discharge_max": "dmax",
        "also": [{"point": "grid", "value": 0}],
    }
)


@pytest.mark.parametrize(
    ("setpoint_w", "expected"),
    [
        (1500.0, (("mode", 2290), ("cmin", 0.0), ("cmax", 0.0), ("dmin", 1500.0), ("dmax", 1500.0), ("grid", 0.0))),
        (-2000.0, (("mode", 2289), ("cmin", 2000.0), ("cmax", 2000.0), ("dmin", 0.0), ("dmax", 0.0), ("grid", 0.0))),
        (0.0, (("mode", 2424), ("cmin", 0.0), ("cmax", 0.0), ("dmin", 0.0), ("dmax", 0.0), ("grid", 0.0))),
    ],
)
def test_a_window_with_a_mode_writes_the_mode_first_and_the_constants_last(
    setpoint_w: float, expected: tuple[tuple[str, float], ...]
) -> None:
    assert command_points(WINDOW_WITH_MODE, setpoint_w) == expected
    assert decode_command(WINDOW_WITH_MODE, dict(expected)) == setpoint_w


def test_an_open_window_or_another_mode_is_the_devices_own_regulation() -> None:
    released = {"mode": 2424.0, "cmin": 0.0, "cmax": 6000.0, "dmin": 0.0, "dmax": 6000.0, "grid": 0.0}
    assert decode_command(WINDOW_WITH_MODE, released) is None
    assert decode_command(WINDOW_WITH_MODE, {**dict(command_points(WINDOW_WITH_MODE, 1500.0)), "mode": 1438.0}) is None


def test_a_forced_direction_drives_up_to_its_windows_maximum() -> None:
    """SMA 2289/2290: the inverter charges/discharges up to the window's maximum (also while a set is half written)."""
    assert decode_command(WINDOW_WITH_MODE, {"mode": 2290.0, "dmin": 0.0, "dmax": 1500.0}) == 1500.0
    assert decode_command(WINDOW_WITH_MODE, {"mode": 2289.0, "cmin": 1800.0, "cmax": 2000.0}) == -2000.0


def _victron() -> InverterModel:
    return InverterModel(load_map("victron_gx_ess3"), rating_w=5000.0, default_revert_s=None)


def test_victron_holds_0_w_when_taken_over_without_a_live_command_and_after_its_fallback() -> None:
    inv = _victron()
    assert inv.target_w(net_load_w=800.0) == 800.0  # Hub4Mode 1: the GX's own ESS covers the load
    inv.write("l1_setpoint_w", 500.0, now_s=0.0)  # before the hand-over: hub4control overwrites it
    assert not inv.external
    inv.write("hub4_mode", 3.0, now_s=0.0)
    assert inv.target_w(net_load_w=800.0) == 0.0  # external control, no set-point yet: passthru
    for ph in ("l1_setpoint_w", "l2_setpoint_w", "l3_setpoint_w"):
        inv.write(ph, -500.0, now_s=1.0)
    assert inv.external and inv.target_w(net_load_w=800.0) == -1500.0
    inv.step(1.0 + 60.0 + 0.1)  # the fixed 60 s fallback
    assert inv.reverted and inv.target_w(net_load_w=800.0) == 0.0  # passthru, not self-consumption
    inv.write("hub4_mode", 1.0, now_s=70.0)  # the release
    assert inv.target_w(net_load_w=800.0) == 800.0


def test_a_device_reverting_to_its_own_mode_covers_the_load_again() -> None:
    inv = InverterModel(load_map("sma_sunny_island"), rating_w=5000.0, default_revert_s=None)
    inv.write("power_control_mode", 802.0, now_s=0.0)
    inv.write("active_power_setpoint_w", -2000.0, now_s=0.0)
    assert inv.external and inv.target_w(net_load_w=800.0) == -2000.0
    inv.step(1800.0 + 1.0)
    assert inv.reverted and inv.target_w(net_load_w=800.0) == 800.0


def test_the_simulator_serves_a_pair_of_magnitudes_by_sign_and_per_phase_parts_evenly() -> None:
    sma = load_map("sma_sunny_island")
    got = _split_by_sign(sma, {"ess_power_w": -2000.0, "grid_power_w": 500.0, "soc_pct": 50.0})
    assert got == {
        "soc_pct": 50.0,
        "ess_charge_power_w": -2000.0,  # SI (- charge); its sign -1 makes the U32 register +2000
        "ess_discharge_power_w": 0.0,
        "grid_import_power_w": 500.0,
        "grid_export_power_w": 0.0,
    }
    victron = load_map("victron_gx_ess3")
    same = {"grid_power_w": 900.0}
    assert _split_by_sign(victron, same) is same  # L1..L3: one sign, the image splits it evenly


@pytest.mark.parametrize("profile", PROFILES)
def test_each_profile_names_its_sources_and_what_is_unverified(profile: str) -> None:
    pmap = load_map(profile)
    d = pmap.device
    assert d.kind == "inverter" and d.vendor and d.installer and d.port == 502
    assert re.search(r"@[0-9a-f]{40}", d.source), "a peer definition file and its commit"
    assert "UNVERIFIED" in d.source
    assert pmap.control is not None and pmap.control.release, "a native release"
    assert pmap.control.revert.point is not None or pmap.control.revert.fixed_s is not None
    assert "tau_s" in pmap.dynamics.model_fields_set
