"""The dashboard updates from the live stream (GET /api/v1/stream), not only from its 2-s poll: in real
headless Chromium against the real main.py, with the page's timers frozen (Playwright's clock) so the
poll never fires, a state change made over REST still appears at once; a second page whose stream is
blocked shows nothing until its timers run again.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.helpers.common import free_port, wait_for
from tests.helpers.proc import LoggedProcess, stop_all
from tests.helpers.ui import OPERATOR_TOKEN, TOKEN_ENV, api_section, chromium_page, read_page, wait_page

pytestmark = pytest.mark.system

REFRESH_S = 2.0  # ui.js REFRESH_MS: the poll interval


def _freeze(page: Any) -> None:
    """Stop the page's clock: setTimeout/setInterval (the poll, the stale check) fire no more."""
    now_ms = float(page.evaluate("() => Date.now()"))
    page.clock.pause_at(datetime.fromtimestamp(now_ms / 1000 + 0.05, UTC))


def test_a_state_change_appears_from_the_stream_while_the_poll_is_frozen(tmp_path: Path) -> None:
    port = free_port()
    cfg = {
        "site": {"id": "ui-stream-site", "name": "Stream test"},
        # no devices and nothing required: the state machine runs (SELF_CONSUMPTION), so a mode request moves it
        "control": {"required_sources": [], "summary_interval_s": 0},
        "api": api_section(port),
    }
    (tmp_path / "ems.yaml").write_text(yaml.safe_dump(cfg))
    ems = LoggedProcess(["main.py", "--config", str(tmp_path / "ems.yaml"), "--log-format", "json"], env=TOKEN_ENV)
    url = f"http://127.0.0.1:{port}"
    try:
        ems.wait_event(lambda e: e.get("event") == "api_started", timeout_s=30, what="api_started")
        with chromium_page(tmp_path / "chromium-profile", width=1280, height=900) as (page, log):
            page.clock.install()  # fake timers, flowing with real time until frozen
            page.goto(f"{url}/ui/")
            wait_page(page, lambda d: d["state"] == "SELF_CONSUMPTION" and d["conn"] == "live", timeout_s=20, what="SELF_CONSUMPTION")
            wait_for(lambda: page.evaluate("() => document.body.dataset.stream") == "open", what="the stream open")

            blind = page.context.new_page()  # the control: the same page with its stream refused
            blind.clock.install()
            blind.route("**/api/v1/stream*", lambda route: route.abort())
            blind.goto(f"{url}/ui/")
            wait_page(blind, lambda d: d["state"] == "SELF_CONSUMPTION", timeout_s=20, what="the blind page rendered")
            assert blind.evaluate("() => document.body.dataset.stream") != "open"

            _freeze(page)
            _freeze(blind)
            polled: list[str] = []
            page.on("request", lambda r: polled.append(r.url) if "/api/v1/status" in r.url else None)
            threading.Event().wait(REFRESH_S + 0.5)  # a poll would have come by now
            assert polled == [], "the frozen page still polls"

            t0 = time.monotonic()
            r = requests.put(f"{url}/api/v1/mode", json={"mode": "IDLE"}, headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}, timeout=5)
            assert r.status_code == 200 and r.json()["accepted"] is True
            d = wait_page(
                page, lambda d: d["state"] == "STANDBY" and d["requested"] == "IDLE", timeout_s=10, what="STANDBY from the stream"
            )
            took_s = time.monotonic() - t0
            assert polled, "the page fetched the status: the push made it"
            assert any(e["kind"] == "audit" and "IDLE" in e["text"] for e in d["events"])  # the event list came with it
            assert took_s < 5.0, f"the change took {took_s:.1f} s to appear"

            # without its stream and with its timers frozen, the other page has not moved
            assert read_page(blind)["state"] == "SELF_CONSUMPTION"
            blind.clock.resume()  # its poll runs again: it catches up (it was alive, only not pushed to)
            wait_page(blind, lambda d: d["state"] == "STANDBY", timeout_s=10, what="the blind page after its poll")
        assert log.page_errors == [] and log.off_loopback() == []
    finally:
        stop_all(ems)
