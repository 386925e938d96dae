"""What every price source returns and raises (docs/scheduling.md).

A source fetches [start, end) and returns the `PricePoint`s it got: a day that is not published
yet is simply absent (the caller's `ems.tariff.day_ahead_state` turns that into awaiting / late).
Everything that went wrong on the wire or in the document is a `PriceSourceError` whose `reason`
is a short snake_case word for logs, health and the API: never a crash of the planner thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests

from ems.tariff import PricePoint

__all__ = ["PriceFetch", "PriceSourceError", "get", "iso_utc", "parse_iso_utc"]


class PriceSourceError(Exception):
    """A fetch failed: `reason` is one of http_error, auth, timeout, unreachable, malformed, currency."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class PriceFetch:
    source: str
    currency: str
    points: tuple[PricePoint, ...]  # sorted by start; may be empty (nothing published for the window yet)

    @property
    def end_unix_s(self) -> int | None:
        return self.points[-1].end_unix_s if self.points else None


def get(session: requests.Session | None, url: str, *, timeout_s: float, **kw: Any) -> requests.Response:
    """GET or POST (json=...) with a timeout; network trouble and HTTP errors become PriceSourceError."""
    s = session or requests.Session()
    method = "POST" if "json" in kw else "GET"
    try:
        r = s.request(method, url, timeout=timeout_s, **kw)
    except requests.Timeout as exc:
        raise PriceSourceError("timeout", f"{url}: no answer within {timeout_s:g} s") from exc
    except requests.RequestException as exc:
        raise PriceSourceError("unreachable", f"{url}: {type(exc).__name__}") from exc
    finally:
        if session is None:
            s.close()
    if r.status_code in (401, 403):
        raise PriceSourceError("auth", f"HTTP {r.status_code} (check the token)")
    return r


def iso_utc(t_unix_s: float) -> str:
    return datetime.fromtimestamp(t_unix_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso_utc(text: str) -> int:
    """ISO 8601 with an offset or Z -> unix seconds; a naive time is refused (ambiguous)."""
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (TypeError, ValueError) as exc:
        raise PriceSourceError("malformed", f"not an ISO 8601 time: {text!r}") from exc
    if dt.tzinfo is None:
        raise PriceSourceError("malformed", f"time without an offset: {text!r}")
    return int(dt.timestamp())
