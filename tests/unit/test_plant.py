"""Plant model: energy balance, SOC integration with efficiency, inverter lag, watchdog, meter."""

from __future__ import annotations

import gzip
import math
from dataclasses import replace
from pathlib import Path

import pytest

from simulators.plant import Plant, PlantParams
from simulators.profile import Profile, ProfileError, available_profiles, load_profile

FLAT = Profile.constant(load_w=2000.0, pv_w=500.0)
BASE = PlantParams(inverter_tau_s=0.0, meter_noise_w=0.0)


def run(plant: Plant, seconds: float, dt_s: float = 0.1) -> None:
    for _ in range(round(seconds / dt_s)):
        plant.step(dt_s)


def test_grid_is_load_minus_pv_minus_ess() -> None:
    plant = Plant(BASE, FLAT)
    plant.set_setpoint(1000.0)
    run(plant, 2.0)
    assert plant.ess_power_w == pytest.approx(1000.0)
    assert plant.grid_power_w == pytest.approx(2000.0 - 500.0 - 1000.0)
    assert plant.grid_true_w == pytest.approx(plant.load_w - plant.pv_w - plant.ess_power_w)


def test_discharge_soc_drop_includes_discharge_efficiency() -> None:
    params = replace(BASE, capacity_wh=10_000.0, soc_start_pct=50.0, discharge_efficiency=0.8)
    plant = Plant(params, FLAT)
    plant.set_setpoint(1000.0)
    run(plant, 3600.0, dt_s=1.0)
    # 1 kWh AC out = 1.25 kWh DC = 12.5 % of 10 kWh.
    assert plant.soc_pct == pytest.approx(50.0 - 12.5, abs=1e-6)
    assert plant.ess_discharged_wh == pytest.approx(1000.0)
    assert plant.battery_current_a < 0


def test_charge_soc_rise_includes_charge_efficiency() -> None:
    params = replace(BASE, capacity_wh=10_000.0, soc_start_pct=20.0, charge_efficiency=0.9)
    plant = Plant(params, FLAT)
    plant.set_setpoint(-2000.0)
    run(plant, 1800.0, dt_s=1.0)
    # 1 kWh AC in = 0.9 kWh DC = 9 %.
    assert plant.soc_pct == pytest.approx(29.0, abs=1e-6)
    assert plant.battery_current_a > 0
    assert plant.grid_import_wh == pytest.approx((2000.0 - 500.0 + 2000.0) * 0.5)


def test_inverter_follows_setpoint_with_first_order_lag() -> None:
    plant = Plant(replace(BASE, inverter_tau_s=1.0), FLAT)
    plant.set_setpoint(3000.0)
    run(plant, 1.0, dt_s=0.01)
    assert plant.ess_power_w == pytest.approx(3000.0 * (1.0 - math.exp(-1.0)), rel=1e-6)
    run(plant, 4.0, dt_s=0.01)
    assert plant.ess_power_w == pytest.approx(3000.0 * (1.0 - math.exp(-5.0)), rel=1e-6)


def test_setpoint_is_clamped_to_inverter_rating() -> None:
    plant = Plant(replace(BASE, inverter_max_discharge_w=3000.0, inverter_max_charge_w=2500.0), FLAT)
    plant.set_setpoint(9000.0)
    run(plant, 1.0)
    assert plant.ess_power_w == pytest.approx(3000.0)
    plant.set_setpoint(-9000.0)
    run(plant, 1.0)
    assert plant.ess_power_w == pytest.approx(-2500.0)
    assert plant.setpoint_w == -9000.0


def test_quantisation_rounds_the_inverter_target() -> None:
    plant = Plant(replace(BASE, quantisation_w=100.0), FLAT)
    plant.set_setpoint(1234.0)
    run(plant, 1.0)
    assert plant.ess_power_w == pytest.approx(1200.0)


def test_empty_battery_stops_discharging() -> None:
    plant = Plant(replace(BASE, capacity_wh=100.0, soc_start_pct=1.0, discharge_taper_end_pct=0.0), FLAT)
    plant.set_setpoint(1000.0)
    run(plant, 60.0)
    assert plant.soc_pct == 0.0
    assert plant.ess_power_w == 0.0
    tapered = Plant(replace(BASE, capacity_wh=100.0, soc_start_pct=1.0), FLAT)
    tapered.set_setpoint(1000.0)
    run(tapered, 600.0)
    assert tapered.soc_pct == pytest.approx(0.0, abs=1e-3)
    assert tapered.ess_power_w == pytest.approx(0.0, abs=1.0)


def test_full_battery_stops_charging_and_ccl_tapers() -> None:
    params = replace(BASE, capacity_wh=100.0, soc_start_pct=95.0)
    plant = Plant(params, FLAT)
    assert plant.charge_current_limit_a == pytest.approx(params.max_charge_current_a * 0.5)
    plant.set_setpoint(-1000.0)
    run(plant, 600.0)
    assert plant.soc_pct == pytest.approx(100.0, abs=1e-3)
    assert plant.ess_power_w == pytest.approx(0.0, abs=1.0)


def test_watchdog_lapse_drops_inverter_to_zero_and_forgets_setpoint() -> None:
    plant = Plant(replace(BASE, watchdog_s=5.0), FLAT)
    plant.set_setpoint(2000.0)
    for _ in range(30):  # fed every second: keeps running
        run(plant, 1.0)
        plant.feed_watchdog()
    assert not plant.watchdog_tripped
    assert plant.ess_power_w == pytest.approx(2000.0)
    run(plant, 5.5)
    assert plant.watchdog_tripped
    assert plant.ess_power_w == 0.0
    assert plant.setpoint_w == 0.0
    plant.feed_watchdog()
    assert not plant.watchdog_tripped


def test_watchdog_disabled_by_default() -> None:
    plant = Plant(BASE, FLAT)
    plant.set_setpoint(1000.0)
    run(plant, 600.0, dt_s=1.0)
    assert not plant.watchdog_tripped
    assert plant.ess_power_w == pytest.approx(1000.0)


def test_meter_holds_between_refreshes() -> None:
    plant = Plant(replace(BASE, meter_period_s=1.0), FLAT)
    plant.step(0.5)
    before = plant.grid_power_w
    plant.set_setpoint(1000.0)
    plant.step(0.4)
    assert plant.grid_power_w == before
    plant.step(0.1)
    assert plant.grid_power_w == pytest.approx(500.0)


def test_meter_noise_is_deterministic_for_a_seed() -> None:
    def trace(seed: int) -> list[float]:
        plant = Plant(replace(BASE, meter_noise_w=20.0, seed=seed), FLAT)
        out = []
        for _ in range(50):
            plant.step(1.0)
            out.append(plant.grid_power_w)
        return out

    assert trace(7) == trace(7)
    assert trace(7) != trace(8)
    assert any(abs(v - 1500.0) > 1.0 for v in trace(7))


def test_voltage_follows_ocv_and_current_sign() -> None:
    plant = Plant(replace(BASE, soc_start_pct=50.0), FLAT)
    ocv = plant.params.ocv_v(50.0)
    assert plant.battery_voltage_v == pytest.approx(ocv)
    plant.set_setpoint(-2000.0)
    plant.step(1.0)
    assert plant.battery_voltage_v > plant.params.ocv_v(plant.soc_pct)
    assert plant.params.ocv_v(10.0) < plant.params.ocv_v(90.0)


def test_bad_params_are_refused() -> None:
    with pytest.raises(ValueError, match="capacity_wh"):
        PlantParams(capacity_wh=0.0)
    with pytest.raises(ValueError, match="charge_efficiency"):
        PlantParams(charge_efficiency=1.5)


def test_profile_step_holds_and_wraps(tmp_path: Path) -> None:
    csv_text = "t_s,load_w,pv_w\n0,100,0\n3,400,50\n4,500,60\n"
    plain = tmp_path / "p.csv"
    plain.write_text(csv_text)
    gz = tmp_path / "p.csv.gz"
    gz.write_bytes(gzip.compress(csv_text.encode()))
    for prof in (load_profile(plain), load_profile(gz)):
        assert prof.duration_s == 5
        assert prof.at(2.9) == (100.0, 0.0)
        assert prof.at(3.0) == (400.0, 50.0)
        assert prof.at(5.0) == (100.0, 0.0)


def test_shipped_profiles_load_by_name() -> None:
    assert {"summer-sunny", "spring-mixed", "winter"} <= set(available_profiles())
    prof = load_profile("summer-sunny")
    assert prof.duration_s == 86400
    _noon_load, noon_pv = prof.at(13 * 3600)
    assert noon_pv > 0


def test_profile_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("time,load,pv\n0,1,2\n")
    with pytest.raises(ProfileError, match=r"bad\.csv"):
        load_profile(bad)
    with pytest.raises(ProfileError, match="not found"):
        load_profile("no-such-day")


def test_load_offset_steps_the_load() -> None:
    plant = Plant(BASE, FLAT)
    plant.load_offset_w = 1000.0
    plant.step(1.0)
    assert plant.load_w == pytest.approx(3000.0)
    assert plant.grid_power_w == pytest.approx(2500.0)
    plant.load_offset_w = -5000.0
    plant.step(1.0)
    assert plant.load_w == 0.0


def test_dead_time_delays_the_first_response_by_exactly_that_long() -> None:
    plant = Plant(replace(BASE, dead_time_s=1.0), FLAT)
    plant.set_setpoint(2000.0)
    run(plant, 1.0, dt_s=0.125)  # a step acts on what is in force at its start: the interval (t0, t]
    assert plant.ess_power_w == 0.0
    assert plant.setpoint_w == 2000.0  # as written
    run(plant, 0.125, dt_s=0.125)
    assert plant.ess_power_w == pytest.approx(2000.0)


def test_dead_time_is_a_fifo_each_set_point_acts_for_as_long_as_it_was_written() -> None:
    plant = Plant(replace(BASE, dead_time_s=1.5), FLAT)
    seen = []
    for w in (1000.0, 2000.0, -500.0, 0.0, 0.0, 0.0):
        plant.set_setpoint(w)
        for _ in range(2):
            plant.step(0.5)
            seen.append(plant.ess_power_w)
    # written at 0, 1, 2, 3 s; in force from 1.5, 2.5, 3.5, 4.5 s (samples at the end of each 0.5 s step)
    assert seen == [0.0, 0.0, 0.0, 1000.0, 1000.0, 2000.0, 2000.0, -500.0, -500.0, 0.0, 0.0, 0.0]


def test_dead_time_inside_a_step_splits_it() -> None:
    plant = Plant(replace(BASE, dead_time_s=0.3, inverter_tau_s=1.0), FLAT)
    plant.set_setpoint(1000.0)
    plant.step(1.0)  # the set-point acts for the last 0.7 s of this step
    assert plant.ess_power_w == pytest.approx(1000.0 * (1.0 - math.exp(-0.7)), rel=1e-9)


def test_ramp_limits_the_rate_of_change_both_ways() -> None:
    plant = Plant(replace(BASE, ramp_w_per_s=1000.0), FLAT)
    plant.set_setpoint(2500.0)
    run(plant, 1.0, dt_s=0.25)
    assert plant.ess_power_w == pytest.approx(1000.0)
    run(plant, 2.0, dt_s=0.25)
    assert plant.ess_power_w == pytest.approx(2500.0)  # reached, no overshoot
    plant.set_setpoint(-1000.0)
    run(plant, 0.5, dt_s=0.25)
    assert plant.ess_power_w == pytest.approx(2000.0)


def test_ramp_then_lag_the_lag_follows_the_ramped_reference() -> None:
    plant = Plant(replace(BASE, ramp_w_per_s=1000.0, inverter_tau_s=0.5), FLAT)
    plant.set_setpoint(5000.0)
    run(plant, 1.0, dt_s=0.001)
    # reference 1000 t; a first-order lag of a ramp lags it by tau: 1000 * (t - tau * (1 - exp(-t / tau)))
    assert plant.ess_power_w == pytest.approx(1000.0 * (1.0 - 0.5 * (1.0 - math.exp(-2.0))), rel=2e-3)


def test_quantisation_applies_to_the_set_point_before_the_ramp() -> None:
    plant = Plant(replace(BASE, quantisation_w=50.0, ramp_w_per_s=100.0), FLAT)
    plant.set_setpoint(74.0)
    run(plant, 5.0, dt_s=0.25)
    assert plant.ess_power_w == pytest.approx(50.0)


def test_watchdog_trip_clears_set_points_still_in_the_dead_time() -> None:
    plant = Plant(replace(BASE, watchdog_s=2.0, dead_time_s=1.0), FLAT)
    plant.set_setpoint(1000.0)
    run(plant, 2.5, dt_s=0.5)  # tripped at 2.5 s
    assert plant.watchdog_tripped and plant.ess_power_w == 0.0
    plant.feed_watchdog()
    run(plant, 2.0, dt_s=0.5)
    assert plant.ess_power_w == 0.0  # the forgotten set-point does not come back


def test_new_plant_knobs_are_refused_when_negative() -> None:
    for bad in ({"dead_time_s": -1.0}, {"ramp_w_per_s": -1.0}):
        with pytest.raises(ValueError):
            PlantParams(**bad)  # type: ignore[arg-type]
