"""Prices from a CSV file: header `ts_utc,price_eur_per_kwh` (DESIGN §7), plain or .gz.

Each row holds from its `ts_utc` to the next row's, at most an hour (the last row: as long as the
shortest step in the file). Hourly and 15-minute files both work; a longer step is a gap.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import math
from pathlib import Path

from ems.tariff import PricePoint
from interfaces.prices.common import PriceFetch, PriceSourceError, parse_iso_utc

__all__ = ["read_price_csv"]

_HEADER = ("ts_utc", "price_eur_per_kwh")
_MAX_ROW_S = 3600  # a row holds at most an hour: a longer step is a gap


def read_price_csv(path: Path, *, currency: str = "EUR") -> PriceFetch:
    try:
        raw = path.read_bytes()
        text = gzip.decompress(raw).decode("utf-8") if raw[:2] == b"\x1f\x8b" else raw.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile) as exc:
        raise PriceSourceError("unreadable", f"{path}: {exc}") from exc
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or tuple(h.strip() for h in header[:2]) != _HEADER:
        raise PriceSourceError("malformed", f"{path}: header must be {','.join(_HEADER)} (got {header})")
    starts: list[int] = []
    prices: list[float] = []
    for n, row in enumerate(reader, start=2):
        if not row:
            continue
        try:
            t = parse_iso_utc(row[0].strip())
            p = float(row[1])
        except (IndexError, ValueError, PriceSourceError) as exc:
            raise PriceSourceError("malformed", f"{path} line {n}: {exc}") from exc
        if not math.isfinite(p):
            raise PriceSourceError("malformed", f"{path} line {n}: price is not finite")
        if starts and t <= starts[-1]:
            raise PriceSourceError("malformed", f"{path} line {n}: times must increase")
        starts.append(t)
        prices.append(p)
    if not starts:
        return PriceFetch("csv", currency, ())
    steps = [b - a for a, b in itertools.pairwise(starts)]
    step = min(steps) if steps else 3600
    ends = [*(min(b, a + _MAX_ROW_S) for a, b in itertools.pairwise(starts)), starts[-1] + step]
    return PriceFetch("csv", currency, tuple(PricePoint(a, e, p) for a, e, p in zip(starts, ends, prices, strict=True)))
