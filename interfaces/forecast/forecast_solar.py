"""forecast.solar: PV power estimate for one plane, public (no key) or personal (API key).

GET <endpoint>/[<apikey>/]estimate/<lat>/<lon>/<dec>/<az>/<kwp>?time=utc -> {"result": {"watts":
{"2023-06-02T04:00:00+00:00": 0, ...}, "watt_hours_period": {...}, "watt_hours_day": {...}},
"message": {"code": 0, "type": "success", "info": {...}, "ratelimit": {...}}}. `watts` is the power
at each timestamp (hourly on the public plan), from sunrise to sunset of each day: between two
timestamps of a day the mean is taken as their average; the night between days is 0 W. dec: 0 =
horizontal, az: 0 = south, -90 = east. Errors: {"result": null, "message": {"type": "error",
"code": ..., "text": ...}}; HTTP 429 when the rate limit (12 calls/hour public) is reached.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import requests

from interfaces.forecast.common import ForecastError, PowerPoint, PvForecastFetch, get_json
from interfaces.sources import SourceError, parse_iso_utc

__all__ = ["DEFAULT_URL", "fetch_forecast_solar", "parse_forecast_solar"]

DEFAULT_URL = "https://api.forecast.solar"
_NIGHT_GAP_S = 3 * 3600  # consecutive timestamps further apart than this are sunset .. sunrise


def parse_forecast_solar(doc: Any) -> tuple[PowerPoint, ...]:
    if not isinstance(doc, dict):
        raise ForecastError("malformed", "forecast.solar answer is not an object")
    raw_msg = doc.get("message")
    msg: dict[str, Any] = raw_msg if isinstance(raw_msg, dict) else {}
    result = doc.get("result")
    if msg.get("type") == "error" or result is None:
        raise ForecastError("http_error", f"forecast.solar: {msg.get('code')} {str(msg.get('text', ''))[:200]}")
    watts = result.get("watts") if isinstance(result, dict) else None
    if not isinstance(watts, dict):
        raise ForecastError("malformed", "forecast.solar answer has no result.watts")
    samples: list[tuple[int, float]] = []
    for k, v in watts.items():
        try:
            samples.append((parse_iso_utc(str(k)), float(v)))
        except (SourceError, TypeError, ValueError) as exc:
            raise ForecastError("malformed", f"forecast.solar watts entry {k!r}: {v!r}") from exc
    samples.sort()
    out = []
    for (t0, w0), (t1, w1) in itertools.pairwise(samples):
        if not (math.isfinite(w0) and math.isfinite(w1)):
            raise ForecastError("malformed", "forecast.solar watts value is not finite")
        mean = 0.0 if t1 - t0 > _NIGHT_GAP_S else max(0.0, (w0 + w1) / 2.0)
        out.append(PowerPoint(t0, t1, mean))
    return tuple(out)


def fetch_forecast_solar(
    endpoint: str,
    *,
    latitude_deg: float,
    longitude_deg: float,
    tilt_deg: float,
    azimuth_deg: float,
    peak_w: float,
    api_key: str | None = None,
    timeout_s: float,
    session: requests.Session | None = None,
) -> PvForecastFetch:
    key = f"/{api_key}" if api_key else ""
    url = f"{endpoint.rstrip('/')}{key}/estimate/{latitude_deg:.4f}/{longitude_deg:.4f}/{round(tilt_deg)}/{round(azimuth_deg)}/{peak_w / 1000:.3f}"
    status, doc = get_json(session, url, timeout_s=timeout_s, params={"time": "utc"})
    if status == 429:
        raise ForecastError("rate_limited", "forecast.solar: rate limit reached")
    if status in (401, 403):
        raise ForecastError("auth", f"forecast.solar HTTP {status} (check the API key)")
    if status != 200:
        text = doc.get("message", {}).get("text", "") if isinstance(doc, dict) and isinstance(doc.get("message"), dict) else ""
        raise ForecastError("http_error", f"forecast.solar HTTP {status}: {str(text)[:200]}")
    return PvForecastFetch("forecast_solar", parse_forecast_solar(doc))
