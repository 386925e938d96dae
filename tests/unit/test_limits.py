"""Each limit of the chain binds, says why, and never lets a command outside the limits (DESIGN §4)."""

from __future__ import annotations

import math

import pytest

from ems.limits import Allowed, LimitInputs, apply_limits, constraints, soc_latches
from tests.helpers.core import control_cfg

CFG = control_cfg(
    max_charge_w=3000, max_discharge_w=4000, soc_min_pct=10, soc_max_pct=90, soc_hysteresis_pct=2, force_charge_w=800
).limits()


def li(**kw: object) -> LimitInputs:
    base: dict[str, object] = {"soc_pct": 50.0}
    base.update(kw)
    return LimitInputs(**base)  # type: ignore[arg-type]


def test_every_bound_limit_is_named_in_design_order() -> None:
    """A command that breaks every limit at once names them as DESIGN §4 lists them."""
    cfg = control_cfg(max_discharge_w=4000, ramp_w_per_s=100, max_export_w=500).limits()
    i = li(bms_voltage_v=50.0, bms_dcl_a=60.0, prev_cmd_w=2000.0, discharge_blocked=True, grid_w=-100.0, ess_w=0.0)
    out, reasons = apply_limits(9000.0, i, cfg)
    assert reasons == ("inverter_rating", "bms_dcl", "soc_min", "max_export", "ramp")
    assert out == 0.0  # the SOC window allows no discharge at all


def test_each_protection_allows_zero_and_the_request_yields_to_them() -> None:
    """0 W is always allowed (the safe value); the force-charge request alone may exclude it."""
    cfg = control_cfg(max_import_w=1000, max_export_w=0, ramp_w_per_s=50).limits()
    i = li(bms_voltage_v=50.0, bms_ccl_a=0.0, bms_dcl_a=0.0, grid_w=5000.0, ess_w=0.0, prev_cmd_w=0.0, bms_force_charge=True)
    found = constraints(i, cfg)
    assert all(a.lo_w <= 0.0 <= a.hi_w for a in found if not a.request)
    assert [a for a in found if a.request] == [
        Allowed(hi_w=-1000.0, hi_reason="bms_force_charge", request=True)
    ]  # the default force_charge_w
    out, reasons = apply_limits(0.0, i, cfg)
    assert out == 0.0 and reasons == ("bms_ccl", "bms_force_charge", "max_import", "ramp")


@pytest.mark.parametrize(("cmd", "expected"), [(9000.0, 4000.0), (-9000.0, -3000.0), (1234.0, 1234.0)])
def test_inverter_rating(cmd: float, expected: float) -> None:
    out, reasons = apply_limits(cmd, li(), CFG)
    assert out == expected
    assert reasons == (("inverter_rating",) if cmd != expected else ())


def test_bms_dcl_and_ccl_times_voltage_bind_and_name_the_bms() -> None:
    bms = {"bms_voltage_v": 50.0, "bms_ccl_a": 20.0, "bms_dcl_a": 30.0}
    assert apply_limits(3500.0, li(**bms), CFG) == (1500.0, ("bms_dcl",))
    assert apply_limits(-2500.0, li(**bms), CFG) == (-1000.0, ("bms_ccl",))
    assert apply_limits(-900.0, li(**bms), CFG) == (-900.0, ())


def test_bms_enable_flags_block_a_direction() -> None:
    assert apply_limits(500.0, li(bms_discharge_enable=False), CFG) == (0.0, ("bms_discharge_disabled",))
    assert apply_limits(-500.0, li(bms_charge_enable=False), CFG) == (0.0, ("bms_charge_disabled",))


def test_bms_limits_ignored_when_disabled_in_config() -> None:
    cfg = control_cfg(use_bms_limits=False).limits()
    assert apply_limits(3000.0, li(bms_voltage_v=50.0, bms_dcl_a=1.0), cfg) == (3000.0, ())


def test_soc_window_blocks_discharge_at_min_and_charge_at_max() -> None:
    dis, chg = soc_latches(soc_pct=10.0, discharge_blocked=False, charge_blocked=False, cfg=CFG.soc)
    assert (dis, chg) == (True, False)
    assert apply_limits(1000.0, li(soc_pct=10.0, discharge_blocked=True), CFG) == (0.0, ("soc_min",))
    assert apply_limits(-1000.0, li(soc_pct=10.0, discharge_blocked=True), CFG) == (-1000.0, ())
    assert apply_limits(-1000.0, li(soc_pct=90.0, charge_blocked=True), CFG) == (0.0, ("soc_max",))


def test_soc_window_hysteresis_reopens_only_inside_the_band() -> None:
    dis = soc_latches(soc_pct=9.0, discharge_blocked=False, charge_blocked=False, cfg=CFG.soc)[0]
    assert dis
    for soc, still_blocked in ((10.5, True), (11.9, True), (12.0, False)):
        assert soc_latches(soc_pct=soc, discharge_blocked=True, charge_blocked=False, cfg=CFG.soc)[0] is still_blocked
    # without a previous block, 10.5 % is allowed to discharge
    assert soc_latches(soc_pct=10.5, discharge_blocked=False, charge_blocked=False, cfg=CFG.soc)[0] is False
    assert soc_latches(soc_pct=88.5, discharge_blocked=False, charge_blocked=True, cfg=CFG.soc)[1] is True
    assert soc_latches(soc_pct=88.0, discharge_blocked=False, charge_blocked=True, cfg=CFG.soc)[1] is False


def test_unknown_soc_blocks_both_directions() -> None:
    assert apply_limits(500.0, li(soc_pct=None), CFG) == (0.0, ("soc_unknown",))
    assert apply_limits(-500.0, li(soc_pct=None), CFG) == (0.0, ("soc_unknown",))


def test_force_charge_request_is_honoured_within_ccl() -> None:
    assert apply_limits(2000.0, li(bms_force_charge=True, soc_pct=5.0, discharge_blocked=True), CFG) == (-800.0, ("bms_force_charge",))
    out, reasons = apply_limits(0.0, li(bms_force_charge=True, bms_voltage_v=50.0, bms_ccl_a=10.0), CFG)
    assert (out, reasons) == (-500.0, ("bms_ccl", "bms_force_charge"))  # the BMS charge limit bounds the forced charge
    assert apply_limits(-2000.0, li(bms_force_charge=True), CFG) == (-2000.0, ())  # charging harder already


def test_grid_limits_only_move_toward_zero() -> None:
    cfg = control_cfg(max_import_w=3000, max_export_w=1000).limits()
    # load - pv = 2500 W; charging 2000 W would import 4500 W -> charge at most 500 W
    assert apply_limits(-2000.0, li(grid_w=2500.0, ess_w=0.0), cfg) == (-500.0, ("max_import",))
    # already importing 3500 W with the battery idle: the limit stops charging, it does not discharge
    assert apply_limits(-2000.0, li(grid_w=3500.0, ess_w=0.0), cfg) == (0.0, ("max_import",))
    # pv surplus 500 W (grid -500): discharging 2000 W would export 2500 W -> at most 500 W
    assert apply_limits(2000.0, li(grid_w=-500.0, ess_w=0.0), cfg) == (500.0, ("max_export",))
    assert apply_limits(2000.0, li(grid_w=-1500.0, ess_w=0.0), cfg) == (0.0, ("max_export",))


def test_ramp_limits_rise_but_reductions_are_immediate() -> None:
    cfg = control_cfg(ramp_w_per_s=500, period_s=1.0).limits()
    assert apply_limits(3000.0, li(prev_cmd_w=1000.0), cfg) == (1500.0, ("ramp",))
    assert apply_limits(-3000.0, li(prev_cmd_w=2000.0), cfg) == (-500.0, ("ramp",))  # reversal: via 0, then ramp
    assert apply_limits(3000.0, li(prev_cmd_w=-2000.0), cfg) == (500.0, ("ramp",))
    assert apply_limits(0.0, li(prev_cmd_w=3000.0), cfg) == (0.0, ())
    assert apply_limits(200.0, li(prev_cmd_w=3000.0), cfg) == (200.0, ())


def test_several_limits_report_in_chain_order() -> None:
    cfg = control_cfg(max_discharge_w=4000, ramp_w_per_s=100).limits()
    out, reasons = apply_limits(9000.0, li(bms_voltage_v=50.0, bms_dcl_a=60.0, prev_cmd_w=2000.0), cfg)
    assert (out, reasons) == (2100.0, ("inverter_rating", "bms_dcl", "ramp"))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_command_becomes_zero(bad: float) -> None:
    assert apply_limits(bad, li(), CFG) == (0.0, ("non_finite_command",))
