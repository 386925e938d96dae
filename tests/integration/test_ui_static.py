"""The dashboard's files over the real API server (waitress on loopback): routes, headers, every asset
the page references, no reference to another host, no way out of the static folder."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import requests

from api.server import ApiServer
from api.ui import STATIC_DIR
from config import parse_config
from ems.clock import SystemClock
from ems.context import EMSContext
from tests.helpers.ui import TOKEN_ENV, api_section


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    clock = SystemClock()
    server = ApiServer(cfg=parse_config({"api": api_section()}, TOKEN_ENV), ctx=EMSContext(clock=clock), clock=clock)
    server.start()
    try:
        yield server.url
    finally:
        server.stop(timeout_s=5)


def _get(url: str) -> requests.Response:
    return requests.get(url, allow_redirects=False, timeout=5)


def test_root_and_ui_redirect_to_the_dashboard(url: str) -> None:
    for path in ("/", "/ui"):
        r = _get(url + path)
        assert r.status_code == 302 and r.headers["Location"] == "/ui/"


def test_page_is_served_with_a_strict_content_security_policy(url: str) -> None:
    r = _get(url + "/ui/")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["X-Frame-Options"] == "DENY"
    assert "<script>" not in r.text and " style=" not in r.text  # nothing inline for the CSP to refuse


def test_every_referenced_asset_is_served(url: str) -> None:
    html = _get(url + "/ui/").text
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert {"ui.js", "ui.css", "vendor/uPlot.iife.min.js", "vendor/uPlot.min.css", "favicon.svg"} <= set(refs)
    for ref in refs:
        r = _get(f"{url}/ui/{ref}")
        assert r.status_code == 200 and r.content, ref
    assert _get(url + "/ui/ui.js").headers["Content-Type"].split(";")[0] in ("text/javascript", "application/javascript")


def test_nothing_is_loaded_from_another_host() -> None:
    for name in ("index.html", "ui.js", "ui.css", "favicon.svg"):
        text = (STATIC_DIR / name).read_text(encoding="utf-8")
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), name
        assert "//cdn" not in text, name
    assert '"../api/v1"' in (STATIC_DIR / "ui.js").read_text(encoding="utf-8")  # the REST API, relative: same origin


def test_vendored_chart_library_is_one_small_file_with_its_licence() -> None:
    js = STATIC_DIR / "vendor" / "uPlot.iife.min.js"
    assert js.stat().st_size < 80_000
    assert js.read_text(encoding="utf-8").startswith("/*! https://github.com/leeoniya/uPlot (v1.6.32) */")
    assert "MIT License" in (STATIC_DIR / "vendor" / "uPlot.LICENSE").read_text(encoding="utf-8")


@pytest.mark.parametrize("path", ["/ui/missing.js", "/ui/..%2F__init__.py", "/ui/%2e%2e/__init__.py", "/ui/vendor/../../__init__.py"])
def test_unknown_files_and_escapes_are_404_in_the_api_error_shape(url: str, path: str) -> None:
    r = _get(url + path)
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"
    assert "STATIC_DIR" not in r.text and "import" not in r.text
