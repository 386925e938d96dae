"""Simulator config (config/simulators.yaml schema): defaults, checked keys, plant parameters."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulators.config import SimConfigError, load_sim_config

REPO = Path(__file__).resolve().parents[2]


def test_shipped_simulator_config_loads_with_device_defaults() -> None:
    cfg = load_sim_config(REPO / "config" / "simulators.yaml")
    assert cfg.ess.map == "sunspec_ess" and cfg.meter.map == "sdm630"
    assert cfg.plant.start_time_s == 8 * 3600 + 30 * 60
    params = cfg.plant.params()
    assert params.watchdog_s == cfg.plant.watchdog_s and params.capacity_wh == cfg.plant.capacity_wh


def test_partial_device_sections_keep_their_own_defaults() -> None:
    cfg = load_sim_config(None, {"meter.port": 1502, "ess.port": 1503})
    assert (cfg.meter.map, cfg.meter.device_id) == ("sdm630", 2)
    assert (cfg.ess.map, cfg.ess.device_id) == ("sunspec_ess", 1)


def test_unknown_and_bad_keys_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "sim.yaml"
    bad.write_text("plant:\n  capacity_kwh: 10\n  start_time: '25:00'\nmeter:\n  port: 0\n")
    with pytest.raises(SimConfigError) as err:
        load_sim_config(bad)
    text = str(err.value)
    assert "plant.capacity_kwh" in text and "plant.start_time" in text and "meter.port" in text


def test_inconsistent_plant_parameters_are_refused() -> None:
    with pytest.raises(SimConfigError, match="plant: tapers"):
        load_sim_config(None, {"plant.discharge_taper_end_pct": 95.0, "plant.charge_taper_start_pct": 90.0})
