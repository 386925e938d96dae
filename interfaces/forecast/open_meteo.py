"""Open-Meteo weather forecast: 15-minute irradiance on the module plane -> PV power.

GET <endpoint>?latitude=..&longitude=..&minutely_15=global_tilted_irradiance&tilt=..&azimuth=..
&forecast_days=3&timezone=GMT&timeformat=unixtime -> {"utc_offset_seconds", "minutely_15_units",
"minutely_15": {"time": [...], "global_tilted_irradiance": [...]}}. Azimuth 0 = south, -90 = east,
90 = west (the same convention as config). Radiation values are the mean of the PRECEDING 15
minutes, so the value at t is the power of [t - 15 min, t). `shortwave_radiation` (horizontal) may
be asked for instead. Errors are {"error": true, "reason": "..."} with HTTP 400.
PV power = irradiance / 1000 W/m2 x peak_w x system efficiency, capped at peak_w.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import requests

from interfaces.forecast.common import ForecastError, PowerPoint, PvForecastFetch, get_json
from interfaces.sources import SourceError, parse_iso_utc

__all__ = ["DEFAULT_URL", "fetch_open_meteo", "parse_open_meteo"]

DEFAULT_URL = "https://api.open-meteo.com/v1/forecast"
Variable = Literal["global_tilted_irradiance", "shortwave_radiation"]


def _time(v: Any, offset_s: int) -> int:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return int(v)
    try:
        return parse_iso_utc(f"{v}+00:00") - offset_s  # Open-Meteo iso8601 times are local, without offset
    except SourceError as exc:
        raise ForecastError("malformed", f"Open-Meteo time {v!r}") from exc


def parse_open_meteo(doc: Any, *, variable: Variable, peak_w: float, efficiency: float) -> tuple[PowerPoint, ...]:
    if not isinstance(doc, dict):
        raise ForecastError("malformed", "Open-Meteo answer is not an object")
    block = doc.get("minutely_15")
    if not isinstance(block, dict) or not isinstance(block.get("time"), list) or not isinstance(block.get(variable), list):
        raise ForecastError("malformed", f"Open-Meteo answer has no minutely_15.time / minutely_15.{variable}")
    times, values = block["time"], block[variable]
    if len(times) != len(values):
        raise ForecastError("malformed", f"Open-Meteo: {len(times)} times but {len(values)} values")
    offset_s = int(doc.get("utc_offset_seconds") or 0)
    out = []
    for t, v in zip(times, values, strict=True):
        if v is None:
            continue  # not forecast (e.g. beyond the model's range)
        try:
            irr = float(v)
        except (TypeError, ValueError) as exc:
            raise ForecastError("malformed", f"Open-Meteo value {v!r}") from exc
        if not math.isfinite(irr):
            raise ForecastError("malformed", "Open-Meteo value is not finite")
        end = _time(t, offset_s)
        power = min(peak_w, max(0.0, irr) / 1000.0 * peak_w * efficiency)
        out.append(PowerPoint(end - 900, end, power))
    return tuple(out)


def fetch_open_meteo(
    endpoint: str,
    *,
    latitude_deg: float,
    longitude_deg: float,
    tilt_deg: float,
    azimuth_deg: float,
    peak_w: float,
    efficiency: float,
    variable: Variable = "global_tilted_irradiance",
    forecast_days: int = 3,
    timeout_s: float,
    session: requests.Session | None = None,
) -> PvForecastFetch:
    params: dict[str, Any] = {
        "latitude": latitude_deg,
        "longitude": longitude_deg,
        "minutely_15": variable,
        "forecast_days": forecast_days,
        "timezone": "GMT",
        "timeformat": "unixtime",
    }
    if variable == "global_tilted_irradiance":
        params |= {"tilt": tilt_deg, "azimuth": azimuth_deg}
    status, doc = get_json(session, endpoint, timeout_s=timeout_s, params=params)
    if status != 200 or (isinstance(doc, dict) and doc.get("error")):
        reason = doc.get("reason", "") if isinstance(doc, dict) else ""
        raise ForecastError("rate_limited" if status == 429 else "http_error", f"Open-Meteo HTTP {status}: {str(reason)[:200]}")
    return PvForecastFetch("open_meteo", parse_open_meteo(doc, variable=variable, peak_w=peak_w, efficiency=efficiency))
