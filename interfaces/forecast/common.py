"""What the PV forecast providers return and raise."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import requests

from interfaces.sources import SourceError, request

__all__ = ["ForecastError", "PowerPoint", "PvForecastFetch", "get_json", "slot_means"]


class ForecastError(SourceError):
    """A fetch failed: `reason` is one of http_error, rate_limited, auth, timeout, unreachable, malformed."""


@dataclass(frozen=True, slots=True)
class PowerPoint:
    start_unix_s: int
    end_unix_s: int
    power_w: float  # mean over [start, end)


@dataclass(frozen=True, slots=True)
class PvForecastFetch:
    source: str
    points: tuple[PowerPoint, ...]


def get_json(session: requests.Session | None, url: str, *, timeout_s: float, params: dict[str, Any] | None = None) -> tuple[int, Any]:
    """The HTTP status and the JSON document; a non-JSON body is http_error after a failure status, malformed after 200."""
    r = request(session, url, timeout_s=timeout_s, error=ForecastError, params=params)
    try:
        return r.status_code, r.json()
    except ValueError:
        if r.status_code != 200:
            raise ForecastError("http_error", f"HTTP {r.status_code}") from None
        raise ForecastError("malformed", "answer is not JSON") from None


def slot_means(points: Sequence[PowerPoint], *, start_unix_s: int, n_slots: int, slot_s: int) -> tuple[float | None, ...]:
    """Time-weighted mean power per slot; None where the points do not cover the whole slot."""
    out: list[float | None] = []
    pts = sorted(points, key=lambda p: p.start_unix_s)
    for k in range(n_slots):
        a = start_unix_s + k * slot_s
        b = a + slot_s
        covered = 0
        acc = 0.0
        for p in pts:
            if p.end_unix_s <= a or p.start_unix_s >= b:
                continue
            lo, hi = max(a, p.start_unix_s), min(b, p.end_unix_s)
            covered += hi - lo
            acc += (hi - lo) * p.power_w
        out.append(acc / slot_s if covered >= slot_s else None)
    return tuple(out)
