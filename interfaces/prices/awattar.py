"""aWATTar market data (Germany / Austria): EPEX day-ahead prices as JSON.

GET <endpoint>?start=<ms>&end=<ms> -> {"object": "list", "data": [{"start_timestamp": ms,
"end_timestamp": ms, "marketprice": float, "unit": "Eur/MWh"}, ...]}. Prices are wholesale in
EUR/MWh (negative ones happen); tomorrow appears after the auction (about 14:00 local).
"""

from __future__ import annotations

import math
from typing import Any

import requests

from ems.tariff import PricePoint
from interfaces.prices.common import PriceFetch, PriceSourceError, get

__all__ = ["fetch_awattar", "parse_awattar"]


def parse_awattar(doc: Any) -> tuple[PricePoint, ...]:
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise PriceSourceError("malformed", "aWATTar answer has no data list")
    out = []
    for row in doc["data"]:
        try:
            unit = str(row.get("unit", "Eur/MWh"))
            if unit.lower() != "eur/mwh":
                raise PriceSourceError("malformed", f"aWATTar unit {unit} (expected Eur/MWh)")
            a, b = int(row["start_timestamp"]) // 1000, int(row["end_timestamp"]) // 1000
            p = float(row["marketprice"]) / 1000.0
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PriceSourceError("malformed", f"aWATTar row {row!r:.120}: {exc}") from exc
        if b <= a or not math.isfinite(p):
            raise PriceSourceError("malformed", f"aWATTar row with an empty interval or a bad price: {row!r:.120}")
        out.append(PricePoint(a, b, p))
    return tuple(sorted(out, key=lambda p: p.start_unix_s))


def fetch_awattar(
    endpoint: str, *, start_unix_s: int, end_unix_s: int, timeout_s: float, session: requests.Session | None = None
) -> PriceFetch:
    r = get(session, endpoint, timeout_s=timeout_s, params={"start": start_unix_s * 1000, "end": end_unix_s * 1000})
    if r.status_code != 200:
        raise PriceSourceError("http_error", f"aWATTar HTTP {r.status_code}")
    try:
        doc = r.json()
    except ValueError as exc:
        raise PriceSourceError("malformed", "aWATTar answer is not JSON") from exc
    return PriceFetch("awattar", "EUR", parse_awattar(doc))
