"""`planner:` section: the price- and forecast-aware schedule (docs/scheduling.md).

Part of the root config (config/schema.py). The battery model here is the planner's view: its SOC
window and power limits default from `control:` (the loop's limits, which apply after the plan,
unchanged) and may only be narrower.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field, model_validator

from config.common import SecretRef, Section

__all__ = ["BatteryModel", "EndValue", "ForecastConfig", "GridModel", "LoadForecastConfig", "PlannerConfig", "PvForecastConfig", "PvSource"]


class BatteryModel(Section):
    capacity_wh: float = Field(10000.0, gt=0, le=1e7, description="usable energy between 0 and 100 % SOC, Wh")
    max_charge_w: float = Field(5000.0, ge=0, le=1e6, description="largest charge power, AC side (default: control.max_charge_w), W")
    max_discharge_w: float = Field(
        5000.0, ge=0, le=1e6, description="largest discharge power, AC side (default: control.max_discharge_w), W"
    )
    charge_efficiency_pct: float = Field(95.0, gt=0, le=100, description="one-way efficiency AC to stored energy, %")
    discharge_efficiency_pct: float = Field(95.0, gt=0, le=100, description="one-way efficiency stored energy to AC, %")
    soc_min_pct: float = Field(10.0, ge=0, le=100, description="the plan never goes below (default: control.soc_min_pct), %")
    soc_max_pct: float = Field(95.0, ge=0, le=100, description="the plan never goes above (default: control.soc_max_pct), %")
    reserve_soc_pct: float = Field(
        0.0,
        ge=0,
        le=100,
        description="backup reserve kept for outages: no planned discharge below, and the loop does not discharge at or below it, %",
    )
    cycle_cost_eur_per_kwh: float = Field(
        0.0, ge=0, le=10, description="wear cost per kWh of throughput (charge + discharge, AC side), EUR/kWh"
    )

    @model_validator(mode="after")
    def _window(self) -> BatteryModel:
        if self.soc_min_pct >= self.soc_max_pct:
            raise ValueError(f"soc_min_pct: must be < soc_max_pct (got {self.soc_min_pct:g} >= {self.soc_max_pct:g})")
        if self.reserve_soc_pct > self.soc_max_pct:
            raise ValueError(f"reserve_soc_pct: must be <= soc_max_pct (got {self.reserve_soc_pct:g} > {self.soc_max_pct:g})")
        return self


class GridModel(Section):
    import_max_w: float | None = Field(
        None, ge=0, le=1e7, description="grid import limit (fuse, contract), null = none (default: control.max_import_w), W"
    )
    export_max_w: float | None = Field(None, ge=0, le=1e7, description="feed-in cap, null = none (default: control.max_export_w), W")
    export_max_pct_of_pv_peak: float | None = Field(
        None, ge=0, le=100, description="feed-in cap as a share of pv_peak_w (e.g. 60 for the German 60 % rule), %"
    )
    pv_peak_w: float | None = Field(None, gt=0, le=1e7, description="installed PV peak power (for export_max_pct_of_pv_peak), W")
    allow_grid_charging: bool = Field(True, description="the battery may charge from the grid (else from PV surplus only)")
    allow_battery_export: bool = Field(True, description="the battery may discharge into the grid (else only to cover the load)")
    peak_charge_eur_per_kw: float = Field(
        0.0, ge=0, le=1000, description="demand charge on the highest planned import over the horizon (0 = none), EUR/kW"
    )

    @property
    def export_cap_w(self) -> float | None:
        """The tighter of the absolute feed-in cap and the share of the PV peak."""
        caps = [c for c in (self.export_max_w,) if c is not None]
        if self.export_max_pct_of_pv_peak is not None and self.pv_peak_w is not None:
            caps.append(self.pv_peak_w * self.export_max_pct_of_pv_peak / 100.0)
        return min(caps) if caps else None

    @model_validator(mode="after")
    def _peak(self) -> GridModel:
        if self.export_max_pct_of_pv_peak is not None and self.pv_peak_w is None:
            raise ValueError("pv_peak_w: required with export_max_pct_of_pv_peak")
        return self


class EndValue(StrEnum):
    """How the plan values the energy left in the battery at the end of the horizon (per stored kWh)."""

    ZERO = "zero"  # worth nothing: the plan empties the battery by the end of the known prices
    MEDIAN_IMPORT = "median_import"  # discharge efficiency x the median import price over the horizon
    MIN_IMPORT = "min_import"  # discharge efficiency x the lowest import price over the horizon


class LoadForecastConfig(Section):
    history_days: int = Field(28, ge=1, le=365, description="days of load history the weekday/weekend profiles are fitted on")
    half_life_days: float = Field(
        7.0, gt=0, le=365, description="weight of a past day halves every this many days (recent days count more)"
    )
    smoothing_slots: int = Field(2, ge=0, le=8, description="profile smoothed over +/- this many neighbouring slots")
    recent_weight: float = Field(
        0.5,
        ge=0,
        le=1,
        description="share of the last hours' deviation from the profile carried into the next hours (decays over recent_decay_h)",
    )
    recent_decay_h: float = Field(2.0, gt=0, le=48, description="the carried deviation decays with this time constant, h")


class PvSource(StrEnum):
    LOCAL = "local"  # fitted on the site's own history: no internet needed
    OPEN_METEO = "open_meteo"
    FORECAST_SOLAR = "forecast_solar"


class PvForecastConfig(Section):
    source: PvSource = Field(PvSource.LOCAL, description="local | open_meteo | forecast_solar (the local model is the fallback)")
    latitude_deg: float | None = Field(None, ge=-90, le=90, description="site latitude (providers; the local model's clear-sky shape), deg")
    longitude_deg: float | None = Field(None, ge=-180, le=180, description="site longitude, deg (east positive)")
    tilt_deg: float = Field(30.0, ge=0, le=90, description="module tilt, 0 = horizontal, deg")
    azimuth_deg: float = Field(0.0, ge=-180, le=180, description="module azimuth, 0 = south, -90 = east, 90 = west, deg")
    peak_w: float | None = Field(None, gt=0, le=1e7, description="installed PV peak power (providers; caps the local model), W")
    irradiance: Literal["global_tilted_irradiance", "shortwave_radiation"] = Field(
        "global_tilted_irradiance", description="open_meteo: irradiance on the module plane (tilt/azimuth) or on the horizontal"
    )
    system_efficiency_pct: float = Field(85.0, gt=0, le=100, description="open_meteo: PV power = irradiance / 1000 W/m2 x peak_w x this, %")
    history_days: int = Field(14, ge=1, le=365, description="local model: days of PV history the yield per time of day is fitted on")
    half_life_days: float = Field(4.0, gt=0, le=365, description="local model: weight of a past day halves every this many days")
    recent_weight: float = Field(
        1.0, ge=0, le=1, description="local model: share of today's measured yield ratio carried into the next hours"
    )
    recent_decay_h: float = Field(
        8.0, gt=0, le=48, description="local model: the carried ratio decays to the fitted yield with this time constant, h"
    )
    planning_factor: float = Field(
        0.85,
        gt=0,
        le=1.5,
        description="the plan uses this share of the PV forecast: below 1 plans as if a little less sun "
        "(a missed grid charge costs the price spread, an unneeded one stops at its SOC target; docs/scheduling.md)",
    )
    url: str | None = Field(None, max_length=500, pattern=r"^https?://", description="provider endpoint (null = the public one)")
    api_key: SecretRef | None = Field(
        None, description="forecast_solar: API key of a paid plan ({env: NAME} or {file: PATH}), null = public"
    )
    timeout_s: float = Field(10.0, gt=0, le=120, description="HTTP timeout per request, s")
    refresh_s: float = Field(
        3600.0, ge=900, le=86400, description="fetch the provider forecast this often, s (public plans are rate limited)"
    )

    @model_validator(mode="after")
    def _provider(self) -> PvForecastConfig:
        if self.source is not PvSource.LOCAL:
            if self.latitude_deg is None or self.longitude_deg is None:
                raise ValueError(f"latitude_deg: latitude_deg and longitude_deg are required for {self.source.value}")
            if self.peak_w is None:
                raise ValueError(f"peak_w: required for {self.source.value}")
        return self


class ForecastConfig(Section):
    load: LoadForecastConfig = Field(default_factory=LoadForecastConfig, description="household load from the site's history")
    pv: PvForecastConfig = Field(default_factory=PvForecastConfig, description="PV production forecast")


class PlannerConfig(Section):
    enabled: bool = Field(
        False, description="run the planner thread; without it (or without a usable plan) the loop does plain self-consumption"
    )
    slot_s: Literal[900] = Field(900, description="slot length, s (15 minutes; the day-ahead market's resolution)")
    horizon_h: float = Field(48.0, ge=1, le=72, description="plan this far ahead at most (shorter where prices end), h")
    replan_s: float = Field(
        900.0, ge=60, le=86400, description="re-plan this often, and at once when new prices or a large deviation arrive, s"
    )
    max_plan_age_s: float = Field(
        10800.0, ge=900, le=172800, description="a plan older than this is not followed (the loop falls back to self-consumption), s"
    )
    end_value: EndValue = Field(
        EndValue.MIN_IMPORT, description="value of the energy left at the end of the horizon: zero | median_import | min_import"
    )
    solver_time_limit_s: float = Field(5.0, gt=0, le=300, description="HiGHS time limit per solve, s")
    tolerance_w: float = Field(
        50.0, ge=0, le=10000, description="planned powers within this of a boundary count as on it when slots are classified, W"
    )
    battery: BatteryModel = Field(default_factory=BatteryModel, description="the battery as the planner sees it")
    grid: GridModel = Field(default_factory=GridModel, description="grid connection limits, feed-in cap and charges")
    forecast: ForecastConfig = Field(default_factory=ForecastConfig, description="load and PV forecasts")

    @property
    def horizon_slots(self) -> int:
        return int(self.horizon_h * 3600 // self.slot_s)
