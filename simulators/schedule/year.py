"""The year data: household load and PV per 15 minutes, day-ahead prices (simulators/year/)."""

from __future__ import annotations

import csv
import gzip
import io
import itertools
from dataclasses import dataclass
from pathlib import Path

from ems.tariff import PricePoint
from interfaces.prices.common import PriceSourceError, parse_iso_utc
from interfaces.prices.csv_file import read_price_csv

__all__ = ["HOUSEHOLD", "PRICES", "YEAR_DIR", "Year", "load_year"]

YEAR_DIR = Path(__file__).resolve().parents[1] / "year"
HOUSEHOLD = YEAR_DIR / "household-2023-15min.csv.gz"
PRICES = YEAR_DIR / "be-dayahead-2023.csv.gz"
_HEADER = ("ts_utc", "load_w", "pv_w")


@dataclass(frozen=True, slots=True)
class Year:
    start_unix_s: int
    slot_s: int
    load_w: tuple[float, ...]
    pv_w: tuple[float, ...]
    prices: tuple[PricePoint, ...]

    @property
    def n(self) -> int:
        return len(self.load_w)

    def t(self, i: int) -> int:
        return self.start_unix_s + i * self.slot_s


def _text(path: Path) -> str:
    raw = path.read_bytes()
    return gzip.decompress(raw).decode("utf-8") if raw[:2] == b"\x1f\x8b" else raw.decode("utf-8")


def load_year(household: Path = HOUSEHOLD, prices: Path = PRICES) -> Year:
    """Read `ts_utc,load_w,pv_w` (regular steps, no gaps) and `ts_utc,price_eur_per_kwh`. Raises ValueError naming the file."""
    reader = csv.reader(io.StringIO(_text(household)))
    header = next(reader, None)
    if header is None or tuple(h.strip() for h in header[:3]) != _HEADER:
        raise ValueError(f"{household}: header must be {','.join(_HEADER)} (got {header})")
    ts: list[int] = []
    load: list[float] = []
    pv: list[float] = []
    for n, row in enumerate(reader, start=2):
        if not row:
            continue
        try:
            ts.append(parse_iso_utc(row[0].strip()))
            load.append(float(row[1]))
            pv.append(max(0.0, float(row[2])))
        except (IndexError, ValueError, PriceSourceError) as exc:
            raise ValueError(f"{household} line {n}: {exc}") from exc
    if len(ts) < 2:
        raise ValueError(f"{household}: needs at least two rows")
    step = ts[1] - ts[0]
    if any(b - a != step for a, b in itertools.pairwise(ts)):
        raise ValueError(f"{household}: rows must be evenly spaced without gaps")
    try:
        fetch = read_price_csv(prices)
    except PriceSourceError as exc:
        raise ValueError(str(exc)) from exc
    return Year(ts[0], step, tuple(load), tuple(pv), fetch.points)
