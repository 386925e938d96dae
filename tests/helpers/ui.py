"""Dashboard test helpers: Debian's headless Chromium driven by Playwright, what the page shows
(read from the DOM in one call), and the check that it matches a /api/v1/status answer.

Chromium runs with --no-sandbox --headless and a fresh profile; it cannot look a name up (host
resolver rule) and everything not on loopback goes to a closed local proxy port. Every request the
page makes is recorded, so a test can assert that none left 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from tests.helpers.common import REPO_ROOT, wait_for

__all__ = [
    "ARTIFACTS",
    "OPERATOR_TOKEN",
    "TOKEN_ENV",
    "VIEWER_TOKEN",
    "BrowserLog",
    "StatusLog",
    "api_section",
    "assert_page_matches",
    "chromium_page",
    "read_page",
    "sign_in",
    "status_of",
    "wait_page",
]

ARTIFACTS = REPO_ROOT / "tests" / "artifacts"
OPERATOR_TOKEN = "ui-operator-5b1e9c"
VIEWER_TOKEN = "ui-viewer-0d7a44"
TOKEN_ENV = {"EMS_UI_TEST_OPERATOR": OPERATOR_TOKEN, "EMS_UI_TEST_VIEWER": VIEWER_TOKEN}
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # no name lookups
    "--proxy-server=http://127.0.0.1:9",  # anything not on loopback goes to a closed port
    "--proxy-bypass-list=127.0.0.1;localhost",
)


def api_section(port: int = 0) -> dict[str, Any]:
    return {
        "enabled": True,
        "host": "127.0.0.1",
        "port": port,
        "threads": 4,
        "tokens": [
            {"name": "operator-ui", "role": "operator", "secret": {"env": "EMS_UI_TEST_OPERATOR"}},
            {"name": "viewer-ui", "role": "viewer", "secret": {"env": "EMS_UI_TEST_VIEWER"}},
        ],
    }


def status_of(base_url: str) -> dict[str, Any]:
    r = requests.get(f"{base_url}/api/v1/status", timeout=5)
    r.raise_for_status()
    return dict(r.json())


# ---- browser ---------------------------------------------------------------------------------
def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None


@dataclass
class BrowserLog:
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def off_loopback(self) -> list[str]:
        return [
            u for u in self.requests if urlsplit(u).hostname not in ("127.0.0.1", "localhost") and not u.startswith(("data:", "about:"))
        ]


@contextmanager
def chromium_page(profile_dir: Path, *, width: int = 1400, height: int = 1000, mobile: bool = False) -> Iterator[tuple[Any, BrowserLog]]:
    """A Playwright page in Debian's Chromium, or a skip naming what is missing."""
    exe = chromium_path()
    if exe is None:
        reason = "Debian's chromium is not installed (make test installs it: TEST_SYSTEM_DEPS chromium:chromium)"
        print(f"SKIP dashboard browser test: {reason}")
        pytest.skip(reason)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "the playwright python package is missing (make dev installs requirements-dev.txt)"
        print(f"SKIP dashboard browser test: {reason}")
        pytest.skip(reason)
    log = BrowserLog()
    with sync_playwright() as pw:
        try:
            context = pw.chromium.launch_persistent_context(
                str(profile_dir),
                executable_path=exe,
                headless=True,
                args=list(CHROMIUM_FLAGS),
                viewport={"width": width, "height": height},
                device_scale_factor=2 if mobile else 1,
                is_mobile=mobile,
                has_touch=mobile,
                service_workers="block",
                timeout=60_000,
            )
        except Exception as exc:  # a chromium that will not start: say why and skip
            reason = f"chromium at {exe} did not start: {type(exc).__name__}: {str(exc)[:300]}"
            print(f"SKIP dashboard browser test: {reason}")
            pytest.skip(reason)

        page = context.pages[0] if context.pages else context.new_page()
        page.on("console", lambda m: log.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: log.page_errors.append(str(e)))
        page.on("request", lambda r: log.requests.append(r.url))
        try:
            yield page, log
        finally:
            context.close()


# ---- what the page shows ---------------------------------------------------------------------
_READ_JS = """() => {
  const q = (id) => document.getElementById(id);
  const dv = (e) => (e && e.hasAttribute("data-value") ? Number(e.getAttribute("data-value")) : null);
  const tile = (k) => ({ value: dv(q("tile-" + k)), text: q(k + "-value").textContent, dir: q(k + "-dir").dataset.dir || "" });
  return {
    cycles: Number(document.body.dataset.cycles || -1),
    site: q("site-id").textContent,
    state: q("state").dataset.value || null,
    state_text: q("state").textContent,
    card_state: q("state-card").dataset.state || "",
    requested: q("requested-mode").dataset.value || null,
    effective: q("effective-mode").dataset.value || null,
    causes: [...q("fault-causes").children].map((li) => li.dataset.cause),
    tiles: { grid: tile("grid"), pv: tile("pv"), load: tile("load"), battery: tile("battery") },
    soc: { value: dv(q("soc-value")), text: q("soc-value").textContent },
    computed: { value: dv(q("cmd-computed")), text: q("cmd-computed").textContent },
    written: { value: dv(q("cmd-written")), text: q("cmd-written").textContent },
    limits: [...q("limits").querySelectorAll("li[data-limit]")].map((li) => li.dataset.limit),
    devices: [...q("workers").tBodies[0].rows].map((r) => r.dataset.device).filter(Boolean),
    device_status: Object.fromEntries([...q("workers").tBodies[0].rows].filter((r) => r.dataset.device)
      .map((r) => [r.dataset.device, { status: r.cells[1].textContent, role: r.cells[3].textContent, ok: r.dataset.ok === "true" }])),
    conn: q("conn").dataset.state,
    conn_text: q("conn-text").textContent,
    stale_banner: !q("stale-banner").hidden,
    control_badge: q("control-badge").textContent,
    dry_run_badge: q("dry-run-badge").hidden ? null : q("dry-run-badge").textContent,
    points: Number(q("chart").dataset.points || 0),
    events: [...q("events").querySelectorAll("li[data-seq]")].map((li) => ({ seq: Number(li.dataset.seq), kind: li.dataset.kind, text: li.textContent })),
    op_result: q("op-result").textContent,
    op_ok: q("op-result").classList.contains("ok"),
    setpoint: q("setpoint").hidden ? null : dv(q("setpoint")),
    setpoint_text: q("setpoint").hidden ? "" : q("setpoint").textContent,
    overflow_x: document.documentElement.scrollWidth > window.innerWidth + 1,
  };
}"""


def read_page(page: Any) -> dict[str, Any]:
    """Everything the dashboard shows, read in one evaluation (one consistent render)."""
    return dict(page.evaluate(_READ_JS))


def wait_page(page: Any, predicate: Any, *, timeout_s: float = 15.0, what: str) -> dict[str, Any]:
    """Wait until what the page shows satisfies `predicate`; on timeout, say what it showed last."""
    last: list[dict[str, Any]] = [{}]

    def check() -> dict[str, Any] | None:
        last[0] = read_page(page)
        return last[0] if predicate(last[0]) else None

    try:
        return wait_for(check, timeout_s=timeout_s, what=what)
    except AssertionError as exc:
        shown = {k: last[0].get(k) for k in ("cycles", "state", "requested", "causes", "tiles", "soc", "conn_text", "op_result", "points")}
        raise AssertionError(f"{exc}; the page showed {shown}") from None


def sign_in(page: Any, token: str) -> None:
    page.click("#token-button")
    page.fill("#token-input", token)
    page.click("#token-save")


def _kw_text_ok(text: str, w: float) -> bool:
    """The page shows |W| / 1000 with two decimals (a leading minus sign on the command)."""
    return abs(float(text.replace("\u2212", "")) - abs(w) / 1000.0) <= 0.0051


def assert_page_matches(d: dict[str, Any], s: dict[str, Any]) -> None:
    """The rendered page `d` shows exactly the status answer `s` it says it rendered."""
    assert d["cycles"] == s["cycles"]
    assert d["site"] == s["site_id"]
    assert (d["state"], d["card_state"], d["state_text"]) == (s["state"], s["state"], s["state"].replace("_", " "))
    assert (d["requested"], d["effective"]) == (s["requested_mode"], s["effective_mode"])
    assert d["causes"] == s["fault_causes"]
    m = s["measurements"]
    for tile, key in (("grid", "grid_power_w"), ("pv", "pv_power_w"), ("battery", "ess_power_w")):
        if key in m:
            assert d["tiles"][tile]["value"] == pytest.approx(m[key]["value"], abs=1e-6), tile
            assert _kw_text_ok(d["tiles"][tile]["text"], m[key]["value"]), (tile, d["tiles"][tile], m[key])
        else:
            assert d["tiles"][tile]["value"] is None and d["tiles"][tile]["text"] == "\u2014"
    if "grid_power_w" in m and "ess_power_w" in m:
        load_w = m["grid_power_w"]["value"] + m.get("pv_power_w", {"value": 0.0})["value"] + m["ess_power_w"]["value"]
        assert d["tiles"]["load"]["value"] == pytest.approx(load_w, abs=1e-6)
        assert _kw_text_ok(d["tiles"]["load"]["text"], load_w)
    if "soc_pct" in m:
        assert d["soc"]["value"] == pytest.approx(m["soc_pct"]["value"], abs=1e-6)
        assert abs(float(d["soc"]["text"]) - m["soc_pct"]["value"]) <= 0.051
    cmd = s["command"]
    if cmd is not None:
        for k, field in (("computed", "setpoint_w"), ("written", "written_w")):
            assert d[k]["value"] == pytest.approx(cmd[field], abs=1e-6)
            assert _kw_text_ok(d[k]["text"], cmd[field])
    assert d["limits"] == [lim["name"] for lim in s["limits"]]
    assert d["devices"] == [dev["name"] for dev in s["devices"]]
    assert d["device_status"] == {
        dev["name"]: {
            "status": dev["status"],
            "role": "required" if dev["required"] else "optional",
            "ok": dev["status"] in ("ok", "starting"),
        }
        for dev in s["devices"]
    }
    c = s["control"]
    live_badge = {"FAULT": "LIVE · FAULT 0 W", "STOP": "LIVE · STOP 0 W", "STANDBY": "LIVE · STANDBY 0 W"}.get(s["state"], "LIVE")
    assert d["control_badge"] == (
        live_badge if c["live"] else "DRY RUN" if c["enabled"] else "CONTROL OFF"
    )  # green LIVE only when commanding
    assert (d["dry_run_badge"] is None) == c["live"]


class StatusLog:
    """Every /api/v1/status answer the page received, to look up the one a render came from."""

    def __init__(self, page: Any) -> None:
        self._responses: list[Any] = []
        page.on("response", self._on_response)

    def _on_response(self, resp: Any) -> None:
        if urlsplit(resp.url).path.endswith("/api/v1/status") and resp.status == 200:
            self._responses.append(resp)

    def by_cycles(self, cycles: int) -> list[dict[str, Any]]:
        """The answers (newest first) for control cycle `cycles` (two polls can fall in one cycle)."""
        return [body for resp in reversed(self._responses[-20:]) if (body := resp.json()).get("cycles") == cycles]
