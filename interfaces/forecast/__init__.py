"""PV forecast providers (docs/scheduling.md): Open-Meteo (irradiance -> power) and forecast.solar (watts).

Each returns a `PvForecastFetch` of [start, end) power points or raises `ForecastError` with a short
reason; `slot_means` puts the points on the planner's slots. Without a provider (or when it
fails) the planner uses the local model of ems.forecast.
"""

from interfaces.forecast.common import ForecastError, PowerPoint, PvForecastFetch, slot_means

__all__ = ["ForecastError", "PowerPoint", "PvForecastFetch", "slot_means"]
