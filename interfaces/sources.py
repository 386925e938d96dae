"""What the planner's outside sources (day-ahead price and PV forecast providers) share: an error that
carries a short snake_case `reason` for logs, health and the API; one HTTP request with a timeout whose
network trouble becomes that error; ISO 8601 UTC times."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import requests

__all__ = ["SourceError", "iso_utc", "parse_iso_utc", "request"]


class SourceError(Exception):
    """A fetch failed: `reason` says why in one word, `detail` for a person."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def request(
    session: requests.Session | None, url: str, *, timeout_s: float, error: type[SourceError] = SourceError, **kw: Any
) -> requests.Response:
    """GET, or POST when `json=` is given, with a timeout. No answer in time is `error("timeout")`, any other
    transport failure `error("unreachable")`; the HTTP status is the caller's to judge. Without a session
    one is opened for this request and closed."""
    s = session or requests.Session()
    method = "POST" if "json" in kw else "GET"
    try:
        return s.request(method, url, timeout=timeout_s, **kw)
    except requests.Timeout as exc:
        raise error("timeout", f"{url}: no answer within {timeout_s:g} s") from exc
    except requests.RequestException as exc:
        raise error("unreachable", f"{url}: {type(exc).__name__}") from exc
    finally:
        if session is None:
            s.close()


def iso_utc(t_unix_s: float) -> str:
    return datetime.fromtimestamp(t_unix_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso_utc(text: str, error: type[SourceError] = SourceError) -> int:
    """ISO 8601 with an offset or Z -> unix seconds; a naive time is refused (ambiguous): `error("malformed")`."""
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (TypeError, ValueError) as exc:
        raise error("malformed", f"not an ISO 8601 time: {text!r}") from exc
    if dt.tzinfo is None:
        raise error("malformed", f"time without an offset: {text!r}")
    return int(dt.timestamp())
