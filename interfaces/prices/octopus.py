"""Octopus Energy (UK) Agile: half-hourly unit rates over the public REST API (no key needed).

GET <endpoint>/products/<product>/electricity-tariffs/<tariff>/standard-unit-rates/?period_from=ISO
&period_to=ISO&page_size=1500 -> {"count", "next", "previous", "results": [{"value_exc_vat",
"value_inc_vat", "valid_from", "valid_to", "payment_method"}, ...]} newest first, paged by `next`.
Values are pence per kWh in GBP: the result is GBP/kWh (value_inc_vat / 100); the tariff's
currency must be GBP. Tomorrow's rates appear around 16:00 UK time.
"""

from __future__ import annotations

import math
from typing import Any

import requests

from ems.tariff import PricePoint
from interfaces.prices.common import PriceFetch, PriceSourceError, get, iso_utc, parse_iso_utc

__all__ = ["fetch_octopus", "parse_octopus_page"]

_MAX_PAGES = 10


def parse_octopus_page(doc: Any, *, period_to_unix_s: int) -> tuple[list[PricePoint], str | None]:
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
        raise PriceSourceError("malformed", "Octopus answer has no results list")
    out = []
    for row in doc["results"]:
        try:
            a = parse_iso_utc(str(row["valid_from"]))
            b = parse_iso_utc(str(row["valid_to"])) if row.get("valid_to") else period_to_unix_s
            p = float(row["value_inc_vat"]) / 100.0  # p/kWh -> GBP/kWh
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PriceSourceError("malformed", f"Octopus rate {row!r:.120}: {exc}") from exc
        if b <= a or not math.isfinite(p):
            raise PriceSourceError("malformed", f"Octopus rate with an empty interval or a bad value: {row!r:.120}")
        out.append(PricePoint(a, b, p))
    nxt = doc.get("next")
    return out, (str(nxt) if nxt else None)


def fetch_octopus(
    endpoint: str,
    *,
    product_code: str,
    tariff_code: str,
    start_unix_s: int,
    end_unix_s: int,
    timeout_s: float,
    session: requests.Session | None = None,
) -> PriceFetch:
    url: str | None = f"{endpoint.rstrip('/')}/products/{product_code}/electricity-tariffs/{tariff_code}/standard-unit-rates/"
    params: dict[str, str | int] | None = {"period_from": iso_utc(start_unix_s), "period_to": iso_utc(end_unix_s), "page_size": 1500}
    points: list[PricePoint] = []
    for _ in range(_MAX_PAGES):
        if url is None:
            break
        r = get(session, url, timeout_s=timeout_s, params=params)
        if r.status_code != 200:
            raise PriceSourceError("http_error", f"Octopus HTTP {r.status_code}")
        try:
            doc = r.json()
        except ValueError as exc:
            raise PriceSourceError("malformed", "Octopus answer is not JSON") from exc
        page, url = parse_octopus_page(doc, period_to_unix_s=end_unix_s)
        points += page
        params = None  # `next` carries the query
    else:
        if url is not None:
            raise PriceSourceError("malformed", f"Octopus: more than {_MAX_PAGES} pages for one window")
    uniq = {p.start_unix_s: p for p in points}
    return PriceFetch("octopus", "GBP", tuple(uniq[k] for k in sorted(uniq)))
