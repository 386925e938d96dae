"""Tibber: the home's prices over GraphQL (bearer token).

POST <endpoint> {"query": ...} with `Authorization: Bearer <token>`; the answer's
data.viewer.homes[].currentSubscription.priceInfo has `today` and `tomorrow` lists of
{total, energy, tax, startsAt (ISO 8601 with offset), currency}. `total` is the retail price
(energy + grid fees + taxes as Tibber bills it), `energy` the spot part. `tomorrow` is an empty list
until the day-ahead prices are out (about 13:00 local). GraphQL errors come back as
{"errors": [{"message": ..., "extensions": {"code": ...}}]}, often with HTTP 200.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import requests

from ems.tariff import PricePoint
from interfaces.prices.common import PriceFetch, PriceSourceError, get, parse_iso_utc

__all__ = ["QUERY", "fetch_tibber", "parse_tibber"]

_FIELDS = "total energy tax startsAt currency"
QUERY = "{ viewer { homes { id currentSubscription { priceInfo%s { today { %s } tomorrow { %s } } } } } }"
_STEP_S = {"HOURLY": 3600, "QUARTER_HOURLY": 900}


def _query(resolution: str) -> str:
    arg = "" if resolution == "HOURLY" else f"(resolution: {resolution})"
    return QUERY % (arg, _FIELDS, _FIELDS)


def parse_tibber(
    doc: Any, *, home_id: str | None, price: Literal["total", "energy"], resolution: str
) -> tuple[str, tuple[PricePoint, ...]]:
    """(currency, points) from a priceInfo answer."""
    if isinstance(doc, dict) and doc.get("errors"):
        err = doc["errors"][0] if isinstance(doc["errors"], list) and doc["errors"] else {}
        code = str((err.get("extensions") or {}).get("code", "")) if isinstance(err, dict) else ""
        msg = str(err.get("message", "")) if isinstance(err, dict) else ""
        raise PriceSourceError("auth" if code == "UNAUTHENTICATED" else "api_error", f"Tibber: {code} {msg[:200]}".strip())
    try:
        homes = doc["data"]["viewer"]["homes"]
        if not isinstance(homes, list):
            raise TypeError("homes is not a list")
    except (KeyError, TypeError) as exc:
        raise PriceSourceError("malformed", f"Tibber answer without data.viewer.homes: {exc}") from exc
    chosen = [h for h in homes if home_id is None or h.get("id") == home_id]
    if not chosen:
        raise PriceSourceError("malformed", f"Tibber: no home {home_id!r} in this account")
    sub = chosen[0].get("currentSubscription")
    if not sub or not sub.get("priceInfo"):
        raise PriceSourceError("malformed", "Tibber: the home has no active subscription with price info")
    info = sub["priceInfo"]
    step = _STEP_S[resolution]
    out: list[PricePoint] = []
    currency = "EUR"
    for day in ("today", "tomorrow"):
        for row in info.get(day) or []:
            try:
                a = parse_iso_utc(str(row["startsAt"]))
                p = float(row[price])
                currency = str(row.get("currency") or currency)
            except (KeyError, TypeError, ValueError) as exc:
                raise PriceSourceError("malformed", f"Tibber price row {row!r:.120}: {exc}") from exc
            if not math.isfinite(p):
                raise PriceSourceError("malformed", "Tibber price is not finite")
            out.append(PricePoint(a, a + step, p))
    out.sort(key=lambda p: p.start_unix_s)
    return currency, tuple(out)


def fetch_tibber(
    endpoint: str,
    *,
    token: str,
    home_id: str | None = None,
    price: Literal["total", "energy"] = "total",
    resolution: str = "HOURLY",
    timeout_s: float,
    currency: str = "EUR",
    session: requests.Session | None = None,
) -> PriceFetch:
    r = get(session, endpoint, timeout_s=timeout_s, json={"query": _query(resolution)}, headers={"Authorization": f"Bearer {token}"})
    try:
        doc = r.json()
    except ValueError as exc:
        raise PriceSourceError("http_error" if r.status_code != 200 else "malformed", f"Tibber HTTP {r.status_code}, not JSON") from exc
    if r.status_code != 200 and not (isinstance(doc, dict) and doc.get("errors")):
        raise PriceSourceError("http_error", f"Tibber HTTP {r.status_code}")
    cur, points = parse_tibber(doc, home_id=home_id, price=price, resolution=resolution)
    if points and cur != currency:
        raise PriceSourceError("currency", f"Tibber prices are in {cur}, the tariff in {currency}")
    return PriceFetch("tibber", cur, points)
