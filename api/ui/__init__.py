"""The local web dashboard (docs/ui.md): static HTML/CSS/JS served at `/ui/` by the API's Flask app.

The page talks to the EMS only through the REST API under `/api/v1` (no second data path); this
blueprint only serves files. No build step: the chart library (uPlot, MIT) is vendored as one
minified file under `static/vendor/`. Nothing is loaded from another host at run time.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, redirect, send_from_directory

__all__ = ["STATIC_DIR", "UI_PREFIX", "ui_blueprint"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
UI_PREFIX = "/ui"
_ASSET_MAX_AGE_S = 60  # assets revalidate by ETag after this; the page itself always does
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _harden(resp: Response) -> Response:
    resp.headers["Content-Security-Policy"] = _CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers["X-Frame-Options"] = "DENY"
    return resp


def ui_blueprint() -> Blueprint:
    """`/` and `/ui` redirect to `/ui/` (so relative URLs resolve), which serves index.html."""
    bp = Blueprint("ui", __name__, static_folder=None)

    @bp.get("/")
    @bp.get(UI_PREFIX)
    def ui_redirect() -> Response:
        return redirect(f"{UI_PREFIX}/", code=302)  # type: ignore[return-value]

    @bp.get(f"{UI_PREFIX}/")
    def ui_index() -> Response:
        return _harden(send_from_directory(STATIC_DIR, "index.html", max_age=0))

    @bp.get(f"{UI_PREFIX}/<path:name>")
    def ui_asset(name: str) -> Response:
        return _harden(send_from_directory(STATIC_DIR, name, max_age=_ASSET_MAX_AGE_S))

    return bp
