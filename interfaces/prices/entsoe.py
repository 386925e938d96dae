"""ENTSO-E Transparency Platform: day-ahead prices (document type A44) as IEC 62325 XML.

GET <endpoint>?securityToken=..&documentType=A44&in_Domain=EIC&out_Domain=EIC&periodStart=YYYYMMDDHHMM
&periodEnd=YYYYMMDDHHMM (UTC). The answer is a Publication_MarketDocument: TimeSeries (currency,
unit MWH, curveType) with Periods (timeInterval start/end, resolution PT60M / PT30M / PT15M) of
Points (position from 1, price.amount in currency/MWh). Curve type A03 ("variable sized block")
leaves out positions whose price equals the one before: they repeat the previous price. A01 gives
every position; a missing one stays missing. No data yet (tomorrow before publication) is an
Acknowledgement_MarketDocument with reason code 999: an empty result, not an error.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import requests

from ems.tariff import PricePoint
from interfaces.prices.common import PriceFetch, PriceSourceError, get, parse_iso_utc

__all__ = ["fetch_entsoe", "parse_entsoe"]

_RESOLUTION_S = {"PT15M": 900, "PT30M": 1800, "PT60M": 3600, "PT1H": 3600}
_NO_DATA = "999"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(el: ET.Element, name: str) -> ET.Element | None:
    for c in el:
        if _local(c.tag) == name:
            return c
    return None


def _text(el: ET.Element, name: str) -> str:
    c = _child(el, name)
    if c is None or c.text is None:
        raise PriceSourceError("malformed", f"ENTSO-E document: <{name}> missing in <{_local(el.tag)}>")
    return c.text.strip()


def _minutes_z(text: str) -> int:
    """ENTSO-E writes interval times as 2023-06-01T22:00Z (no seconds)."""
    return parse_iso_utc(re.sub(r"T(\d\d:\d\d)Z$", r"T\1:00Z", text))


def parse_entsoe(body: bytes, *, currency: str) -> tuple[PricePoint, ...]:
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise PriceSourceError("malformed", f"ENTSO-E answer is not XML: {exc}") from exc
    kind = _local(root.tag)
    if kind == "Acknowledgement_MarketDocument":
        reason = _child(root, "Reason")
        code = _text(reason, "code") if reason is not None else ""
        if code == _NO_DATA:
            return ()
        text = reason.findtext("{*}text", default="") if reason is not None else ""
        raise PriceSourceError("http_error", f"ENTSO-E refused the query (reason {code or '?'}: {text.strip()[:200]})")
    if kind != "Publication_MarketDocument":
        raise PriceSourceError("malformed", f"unexpected ENTSO-E document <{kind}>")
    points: dict[int, PricePoint] = {}
    for ts in (c for c in root if _local(c.tag) == "TimeSeries"):
        cur = _child(ts, "currency_Unit.name")
        if cur is not None and (cur.text or "").strip() != currency:
            raise PriceSourceError("currency", f"ENTSO-E prices are in {(cur.text or '').strip()}, the tariff in {currency}")
        unit = _child(ts, "price_Measure_Unit.name")
        if unit is not None and (unit.text or "").strip() != "MWH":
            raise PriceSourceError("malformed", f"ENTSO-E price unit {(unit.text or '').strip()} (expected MWH)")
        curve_el = _child(ts, "curveType")
        curve = (curve_el.text or "A01").strip() if curve_el is not None else "A01"
        for period in (c for c in ts if _local(c.tag) == "Period"):
            interval = _child(period, "timeInterval")
            if interval is None:
                raise PriceSourceError("malformed", "ENTSO-E Period without timeInterval")
            start, end = _minutes_z(_text(interval, "start")), _minutes_z(_text(interval, "end"))
            res_text = _text(period, "resolution")
            step = _RESOLUTION_S.get(res_text)
            if step is None:
                raise PriceSourceError("malformed", f"ENTSO-E resolution {res_text} not supported")
            count = (end - start) // step
            given: dict[int, float] = {}
            for pt in (c for c in period if _local(c.tag) == "Point"):
                try:
                    pos = int(_text(pt, "position"))
                    given[pos] = float(_text(pt, "price.amount")) / 1000.0
                except ValueError as exc:
                    raise PriceSourceError("malformed", f"ENTSO-E Point: {exc}") from exc
            last: float | None = None
            for pos in range(1, count + 1):
                if pos in given:
                    last = given[pos]
                elif curve != "A03":
                    last = None
                if last is None:
                    continue
                a = start + (pos - 1) * step
                points.setdefault(a, PricePoint(a, a + step, last))
    return tuple(points[k] for k in sorted(points))


def _stamp(t_unix_s: int) -> str:
    return datetime.fromtimestamp(t_unix_s, UTC).strftime("%Y%m%d%H%M")


def fetch_entsoe(
    endpoint: str,
    *,
    token: str,
    bidding_zone: str,
    start_unix_s: int,
    end_unix_s: int,
    timeout_s: float,
    currency: str = "EUR",
    session: requests.Session | None = None,
) -> PriceFetch:
    params = {
        "securityToken": token,
        "documentType": "A44",
        "in_Domain": bidding_zone,
        "out_Domain": bidding_zone,
        "periodStart": _stamp(start_unix_s),
        "periodEnd": _stamp(end_unix_s),
    }
    r = get(session, endpoint, timeout_s=timeout_s, params=params)
    if r.status_code not in (200, 400) or (r.status_code == 400 and b"Acknowledgement_MarketDocument" not in r.content):
        raise PriceSourceError("http_error", f"ENTSO-E HTTP {r.status_code}")
    pts = parse_entsoe(r.content, currency=currency)
    return PriceFetch("entsoe", currency, tuple(p for p in pts if p.end_unix_s > start_unix_s and p.start_unix_s < end_unix_s))
