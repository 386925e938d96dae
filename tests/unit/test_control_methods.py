"""The control methods a device profile can declare (interfaces/modbus/control.py): the point values
each writes for a command (+ discharge), and the simulator's reading of them back."""

from __future__ import annotations

import pytest

from interfaces.modbus.control import ControlSpec, command_points, decode_command, revert_value


def spec(**kw: object) -> ControlSpec:
    return ControlSpec.model_validate(kw)


SIGNED = spec(method="signed_w", setpoint="w", enable={"point": "ena", "value": 802}, heartbeat="hb")
DIRECTION_ONE = spec(
    method="direction_and_magnitude", direction={"point": "cmd", "charge": 0xAA, "discharge": 0xBB, "stop": 0xCC}, magnitude="p"
)
DIRECTION_TWO = spec(
    method="direction_and_magnitude",
    direction={"point": "force", "charge": 1, "discharge": 2, "stop": 0},
    charge_magnitude="pc",
    discharge_magnitude="pd",
)
PERCENT = spec(method="percent_of_rating", mode={"point": "storctl", "value": 3}, charge_rate="inw", discharge_rate="outw", rating_w=5000)
PHASES = spec(method="per_phase", phases=["l1", "l2", "l3"])
WINDOW = spec(method="min_max_window", charge_min="cmin", charge_max="cmax", discharge_min="dmin", discharge_max="dmax")


@pytest.mark.parametrize(
    ("s", "setpoint_w", "expected"),
    [
        (SIGNED, 1500.0, (("ena", 802.0), ("w", 1500.0))),
        (SIGNED, -2000.0, (("ena", 802.0), ("w", -2000.0))),
        (DIRECTION_ONE, 1500.0, (("p", 1500.0), ("cmd", 0xBB))),
        (DIRECTION_ONE, -2000.0, (("p", 2000.0), ("cmd", 0xAA))),
        (DIRECTION_ONE, 0.0, (("p", 0.0), ("cmd", 0xCC))),
        (DIRECTION_TWO, -2000.0, (("pc", 2000.0), ("pd", 0.0), ("force", 1))),
        (DIRECTION_TWO, 1500.0, (("pc", 0.0), ("pd", 1500.0), ("force", 2))),
        # discharge 1500 W of 5000 W: allow 30 % discharge and force it with a -30 % charge limit
        (PERCENT, 1500.0, (("storctl", 3), ("outw", 30.0), ("inw", -30.0))),
        (PERCENT, -2000.0, (("storctl", 3), ("outw", -40.0), ("inw", 40.0))),
        (PERCENT, 0.0, (("storctl", 3), ("outw", 0.0), ("inw", 0.0))),
        (PERCENT, 9000.0, (("storctl", 3), ("outw", 100.0), ("inw", -100.0))),  # capped at the rating
        (PHASES, -1500.0, (("l1", -500.0), ("l2", -500.0), ("l3", -500.0))),
        (WINDOW, 1500.0, (("cmin", 0.0), ("cmax", 0.0), ("dmin", 1500.0), ("dmax", 1500.0))),
        (WINDOW, -2000.0, (("cmin", 2000.0), ("cmax", 2000.0), ("dmin", 0.0), ("dmax", 0.0))),
    ],
)
def test_each_method_writes_the_points_its_devices_expect(
    s: ControlSpec, setpoint_w: float, expected: tuple[tuple[str, float], ...]
) -> None:
    assert command_points(s, setpoint_w) == expected


@pytest.mark.parametrize("s", [SIGNED, DIRECTION_ONE, DIRECTION_TWO, PERCENT, PHASES, WINDOW])
@pytest.mark.parametrize("setpoint_w", [2500.0, -1800.0, 0.0])
def test_the_simulator_reads_the_command_back(s: ControlSpec, setpoint_w: float) -> None:
    values = dict(command_points(s, setpoint_w))
    assert decode_command(s, values, rating_w=5000.0) == pytest.approx(setpoint_w)


def test_own_mode_values_read_as_no_command() -> None:
    assert decode_command(SIGNED, {"ena": 803.0, "w": 1000.0}) is None  # 803: inactive
    assert decode_command(DIRECTION_ONE, {"cmd": 0x00, "p": 1000.0}) is None  # not a forced direction
    assert decode_command(PERCENT, {"storctl": 0.0, "inw": 100.0, "outw": 100.0}, rating_w=5000.0) is None


def test_a_percent_method_without_a_usable_rating_refuses_to_write() -> None:
    s = spec(method="percent_of_rating", charge_rate="inw", discharge_rate="outw", rating="wchamax")
    with pytest.raises(ValueError, match="no usable rating"):
        command_points(s, 1000.0, rating_w=0.0)


def test_a_method_without_its_points_is_a_profile_error() -> None:
    with pytest.raises(ValueError, match="setpoint: required for method signed_w"):
        spec(method="signed_w")
    with pytest.raises(ValueError, match="magnitude: give one magnitude point"):
        spec(method="direction_and_magnitude", direction={"point": "d", "charge": 1, "discharge": 2, "stop": 0})


@pytest.mark.parametrize(
    ("revert", "fault_timeout_s", "expected"),
    [
        ({"point": "t", "unit": "s", "min_s": 1, "max_s": 600}, 3.0, ("t", 3.0, 3.0)),
        ({"point": "t", "unit": "s", "min_s": 1}, 2.5, ("t", 3.0, 3.0)),  # whole seconds, rounded up: never shorter
        ({"point": "t", "unit": "min", "min_s": 60, "max_s": 86400}, 3.0, ("t", 1.0, 60.0)),  # Huawei-like: 1 min at least
        ({"point": "t", "unit": "ms", "min_s": 0.5}, 3.0, ("t", 3000.0, 3.0)),
        ({"point": "t", "unit": "s", "min_s": 10}, 3.0, ("t", 10.0, 10.0)),  # the device's minimum wins
    ],
)
def test_the_revert_timer_is_the_fault_timeout_where_the_device_allows(
    revert: dict[str, object], fault_timeout_s: float, expected: tuple[str, float, float]
) -> None:
    s = spec(method="signed_w", setpoint="w", revert=revert)
    assert revert_value(s, fault_timeout_s=fault_timeout_s) == expected
    assert revert_value(spec(method="signed_w", setpoint="w"), fault_timeout_s=3.0) is None  # not settable
