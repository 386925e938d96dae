"""What every price source returns and raises (docs/scheduling.md).

A source fetches [start, end) and returns the `PricePoint`s it got: a day that is not published
yet is simply absent (the caller's `ems.tariff.day_ahead_state` turns that into awaiting / late).
Everything that went wrong on the wire or in the document is a `PriceSourceError` whose `reason`
is a short snake_case word for logs, health and the API: never a crash of the planner thread.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import requests

from ems.tariff import PricePoint
from interfaces import sources
from interfaces.sources import SourceError, iso_utc, request

__all__ = ["PriceFetch", "PriceSourceError", "get", "iso_utc", "parse_iso_utc"]


class PriceSourceError(SourceError):
    """A fetch failed: `reason` is one of http_error, auth, timeout, unreachable, malformed, currency."""


@dataclass(frozen=True, slots=True)
class PriceFetch:
    source: str
    currency: str
    points: tuple[PricePoint, ...]  # sorted by start; may be empty (nothing published for the window yet)

    @property
    def end_unix_s(self) -> int | None:
        return self.points[-1].end_unix_s if self.points else None


def get(session: requests.Session | None, url: str, *, timeout_s: float, **kw: Any) -> requests.Response:
    """GET or POST (json=...) with a timeout; network trouble and a refused token become PriceSourceError."""
    r = request(session, url, timeout_s=timeout_s, error=PriceSourceError, **kw)
    if r.status_code in (401, 403):
        raise PriceSourceError("auth", f"HTTP {r.status_code} (check the token)")
    return r


parse_iso_utc = functools.partial(sources.parse_iso_utc, error=PriceSourceError)
