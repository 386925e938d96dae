"""The dashboard in real headless Chromium against the real main.py (API enabled) and the real
`python -m simulators`: what the page shows matches /api/v1/status and updates; an operator signs in
and changes the mode, sends and releases a set-point, and the state follows; refused actions show the
API's error; a lost meter shows FAULT in red with its causes; a stopped EMS shows "stale".
Screenshots go to tests/artifacts/ (ignored by git).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from simulators.ctl import send
from tests.helpers.common import free_port
from tests.helpers.proc import LoggedProcess, simulators_and_ems, stop_all
from tests.helpers.site import site_configs
from tests.helpers.ui import (
    ARTIFACTS,
    OPERATOR_TOKEN,
    TOKEN_ENV,
    VIEWER_TOKEN,
    BrowserLog,
    StatusLog,
    api_section,
    assert_page_matches,
    chromium_page,
    read_page,
    sign_in,
    status_of,
    wait_page,
)

pytestmark = pytest.mark.system

FAULT_TIMEOUT_S = 1.5
RECOVER_S = 2.0
RED = "rgb(198, 40, 40)"  # --bad in ui.css


def _ems_config(api_port: int, control: dict[str, Any], modbus: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "site": {"id": "ui-test-site", "name": "Dashboard test"},
        "control": {"fault_timeout_s": FAULT_TIMEOUT_S, "recover_s": RECOVER_S, "summary_interval_s": 0, **control},
        "api": api_section(api_port),
    }
    if modbus is not None:
        cfg["modbus"] = modbus
    return cfg


@pytest.fixture
def site(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Simulators (noon on a sunny summer day) + main.py with live control of the simulated battery."""
    s = site_configs(
        tmp_path,
        profile_csv=None,
        plant={"profile": "summer-sunny", "start_time": "12:30", "speed": 1.0, "step_s": 0.1, "soc_start_pct": 58.0,
               "meter_noise_w": 5.0, "inverter_tau_s": 1.0},
        poll_period_s=0.5,
        api=True,
    )  # fmt: skip
    ports = s.ports
    sim_cfg = s.sim
    ems_cfg = _ems_config(ports["api"], {"enabled": True, "dry_run": False}, s.ems["modbus"])
    with simulators_and_ems(tmp_path, sim_cfg, ems_cfg, ems_env=TOKEN_ENV) as (sim, ems):
        ems.wait_event(lambda e: e.get("event") == "api_started", timeout_s=30, what="api_started")
        yield {"sim": sim, "ems": ems, "url": f"http://127.0.0.1:{ports['api']}", "ctl_port": ports["control"]}


def _assert_renders_status(page: Any, statuses: StatusLog, what: str) -> dict[str, Any]:
    d = read_page(page)
    candidates = statuses.by_cycles(d["cycles"])
    assert candidates, f"{what}: the page shows cycle {d['cycles']} but no such /status answer was received"
    errors = []
    for s in candidates:
        try:
            assert_page_matches(d, s)
            return d
        except AssertionError as exc:
            errors.append(exc)
    raise errors[0]


_WATCH_JS = """() => {
  window.__uiRewrites = {};
  for (const id of ["state", "fault-causes", "grid-value", "limits", "events"]) {
    window.__uiRewrites[id] = 0;
    new MutationObserver((ms) => { window.__uiRewrites[id] += ms.length; })
      .observe(document.getElementById(id), { childList: true, subtree: true, characterData: true, attributes: true });
  }
}"""


def _api_message(method: str, url: str, token: str, **kw: Any) -> str:
    """What the API itself answers to the same request (its error message)."""
    r = requests.request(method, url, headers={"Authorization": f"Bearer {token}"}, timeout=5, **kw)
    assert r.status_code >= 400
    return str(r.json()["message"])


def _op_done(d: dict[str, Any]) -> bool:
    return bool(d["op_result"]) and "sending" not in d["op_result"]


def _only_expected_console_errors(log: BrowserLog) -> list[str]:
    """HTTP 4xx answers and a refused connection (the EMS stopped) are expected; nothing else is."""
    return [e for e in log.console_errors if not e.startswith("Failed to load resource")]


def test_dashboard_follows_the_live_ems_and_operator_actions(site: dict[str, Any], tmp_path: Path) -> None:
    url = site["url"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with chromium_page(tmp_path / "chromium-profile") as (page, log):
        statuses = StatusLog(page)
        page.goto(f"{url}/ui")
        assert page.url == f"{url}/ui/"

        # Shown values match /api/v1/status, then update.
        first = wait_page(
            page,
            lambda d: (
                d["state"] == "SELF_CONSUMPTION"
                and d["conn"] == "live"
                and all(d["tiles"][k]["value"] is not None for k in ("grid", "load", "battery"))
                and d["soc"]["value"] is not None
            ),
            timeout_s=30,
            what="live values in SELF_CONSUMPTION",
        )
        _assert_renders_status(page, statuses, "first render")
        live = status_of(url)
        assert (first["site"], first["requested"]) == (live["site_id"], live["requested_mode"])
        assert first["control_badge"] == "LIVE" and first["dry_run_badge"] is None
        later = wait_page(page, lambda d: d["cycles"] >= first["cycles"] + 2 and d["points"] >= 3, timeout_s=15, what="two more refreshes")
        _assert_renders_status(page, statuses, "later render")
        assert later["tiles"] != first["tiles"] or later["computed"] != first["computed"], "values did not update"
        assert any(e["kind"] == "state" and "SELF CONSUMPTION" in e["text"] for e in later["events"])

        # Operator actions: locked without a token; a wrong token is refused with the API's message.
        assert page.is_disabled("button[data-mode=IDLE]")
        sign_in(page, "not-the-token")
        page.click("button[data-mode=IDLE]")
        d = wait_page(page, _op_done, what="refused mode request")
        msg = _api_message("PUT", f"{url}/api/v1/mode", "not-the-token", json={"mode": "IDLE"})
        assert msg in d["op_result"] and "refused" in d["op_result"] and not d["op_ok"]
        assert status_of(url)["requested_mode"] == "SELF_CONSUMPTION"
        page.click("#token-button")  # sign out
        assert page.evaluate("() => sessionStorage.getItem('ems.operatorToken')") is None

        sign_in(page, OPERATOR_TOKEN)
        storage = page.evaluate("() => [sessionStorage.getItem('ems.operatorToken'), localStorage.length, document.cookie]")
        assert storage == [OPERATOR_TOKEN, 0, ""]

        page.click("button[data-mode=IDLE]")
        d = wait_page(page, lambda d: d["state"] == "STANDBY" and d["requested"] == "IDLE", what="STANDBY after IDLE")
        assert "accepted" in d["op_result"] and d["op_ok"]
        assert status_of(url)["state"] == "STANDBY"
        _assert_renders_status(page, statuses, "STANDBY")

        page.fill("#sp-power", "-1500")
        page.fill("#sp-ttl", "120")
        page.fill("#sp-reason", "ui test")
        page.click("#sp-send")
        d = wait_page(page, lambda d: d["state"] == "EXTERNAL" and d["setpoint"] == -1500.0, what="EXTERNAL with the set-point")
        sp = status_of(url)["external_setpoint"]
        assert sp is not None and sp["power_w"] == -1500.0 and sp["source"] == "operator-ui"
        assert "1.50 kW" in d["setpoint_text"] and "charge" in d["setpoint_text"]

        page.fill("#sp-ttl", "999999")  # longer than control.external_max_ttl_s: refused
        page.click("#sp-send")
        d = wait_page(page, lambda d: _op_done(d) and not d["op_ok"], what="refused set-point")
        msg = _api_message("PUT", f"{url}/api/v1/setpoint", OPERATOR_TOKEN, json={"power_w": -1500, "ttl_s": 999999, "reason": "ui test"})
        assert msg in d["op_result"] and "HTTP 422" in d["op_result"]
        assert status_of(url)["external_setpoint"]["remaining_s"] <= 120

        page.click("#sp-release")
        wait_page(page, lambda d: d["state"] == "STANDBY" and d["setpoint"] is None and d["requested"] == "IDLE", what="released")
        page.click("button[data-mode=SELF_CONSUMPTION]")
        d = wait_page(page, lambda d: d["state"] == "SELF_CONSUMPTION" and d["points"] >= 8, timeout_s=20, what="back to SELF_CONSUMPTION")
        _assert_renders_status(page, statuses, "SELF_CONSUMPTION again")
        audits = [e["text"] for e in d["events"] if e["kind"] == "audit"]
        assert any("operator-ui via rest: mode IDLE → SELF_CONSUMPTION · accepted" in t for t in audits), audits
        assert any("refused" in t for t in audits), audits
        seqs = [e["seq"] for e in d["events"]]
        assert seqs == sorted(seqs, reverse=True)
        page.screenshot(path=str(ARTIFACTS / "ui-desktop.png"), full_page=True)

        # Phone: one column, no sideways scrolling.
        page.set_viewport_size({"width": 390, "height": 844})
        d = wait_page(page, lambda d: not d["overflow_x"], what="narrow layout without horizontal overflow")
        page.screenshot(path=str(ARTIFACTS / "ui-phone.png"), full_page=True)
        page.set_viewport_size({"width": 1400, "height": 1000})

        # The meter goes silent: FAULT in red, with its causes.
        assert send("meter stop", port=site["ctl_port"]).startswith("ok")
        d = wait_page(page, lambda d: d["state"] == "FAULT" and "stale:grid_power_w" in d["causes"], timeout_s=15, what="FAULT with causes")
        _assert_renders_status(page, statuses, "FAULT")
        # the meter owns grid_power_w: a required device, shown failing once its error streak is long enough
        d = wait_page(page, lambda d: d["device_status"]["meter"]["status"] == "failing", timeout_s=15, what="meter failing")
        assert d["device_status"]["meter"]["role"] == "required" and d["device_status"]["ess"]["status"] == "ok"
        _assert_renders_status(page, statuses, "meter failing")
        assert page.evaluate("() => getComputedStyle(document.getElementById('state')).backgroundColor") == RED
        assert page.evaluate("() => getComputedStyle(document.querySelector('#fault-causes li')).color") == RED
        page.screenshot(path=str(ARTIFACTS / "ui-fault.png"), full_page=True)
        assert send("meter start", port=site["ctl_port"]).startswith("ok")
        wait_page(page, lambda d: d["state"] == "SELF_CONSUMPTION" and not d["causes"], timeout_s=20, what="recovered")

        # The EMS stops: the page says stale and keeps the last values.
        assert site["ems"].terminate_and_wait(timeout_s=15) == 0
        d = wait_page(page, lambda d: d["conn"] == "stale" and d["stale_banner"], timeout_s=15, what="stale")
        assert "stale" in d["conn_text"] and d["state"] is not None
        page.screenshot(path=str(ARTIFACTS / "ui-stale.png"), full_page=True)

    assert log.off_loopback() == []
    assert log.page_errors == []
    assert _only_expected_console_errors(log) == []


def test_dashboard_shows_fault_causes_dry_run_and_requested_mode_without_devices(tmp_path: Path) -> None:
    """main.py alone (no devices, dry run): FAULT naming each stale source; a mode request is recorded
    (requested mode follows) while the state stays FAULT, and the page shows the API's note."""
    port = free_port()
    (tmp_path / "ems.yaml").write_text(yaml.safe_dump(_ems_config(port, {"enabled": True, "dry_run": True})))
    ems = LoggedProcess(["main.py", "--config", str(tmp_path / "ems.yaml"), "--log-format", "json"], env=TOKEN_ENV)
    url = f"http://127.0.0.1:{port}"
    try:
        ems.wait_event(lambda e: e.get("event") == "api_started", timeout_s=30, what="api_started")
        with chromium_page(tmp_path / "chromium-profile", width=1280, height=900) as (page, log):
            statuses = StatusLog(page)
            page.goto(f"{url}/")  # the root redirects to the dashboard
            assert page.url == f"{url}/ui/"
            d = wait_page(page, lambda d: d["state"] == "FAULT" and len(d["causes"]) == 3, timeout_s=20, what="FAULT with three causes")
            assert d["causes"] == ["stale:grid_power_w", "stale:ess_power_w", "stale:soc_pct"]
            assert d["control_badge"] == "DRY RUN" and d["dry_run_badge"] == "DRY RUN · 0 W written"
            assert d["tiles"]["grid"]["text"] == "—" and d["soc"]["value"] is None
            _assert_renders_status(page, statuses, "FAULT without devices")

            # No flicker: over two more refreshes, what did not change is not rewritten.
            page.evaluate(_WATCH_JS)
            wait_page(page, lambda x: x["cycles"] >= d["cycles"] + 2, what="two more refreshes")
            rewrites = page.evaluate("() => window.__uiRewrites")
            assert rewrites == {"state": 0, "fault-causes": 0, "grid-value": 0, "limits": 0, "events": 0}

            sign_in(page, OPERATOR_TOKEN)
            page.click("button[data-mode=CHARGE_ONLY]")
            d = wait_page(page, lambda d: d["requested"] == "CHARGE_ONLY" and _op_done(d), what="CHARGE_ONLY requested")
            assert d["state"] == "FAULT" and d["effective"] == "IDLE"
            assert "control.dry_run is true" in d["op_result"]
            _assert_renders_status(page, statuses, "requested CHARGE_ONLY")
            page.screenshot(path=str(ARTIFACTS / "ui-fault-no-devices.png"), full_page=True)
        assert log.off_loopback() == [] and log.page_errors == []
        assert _only_expected_console_errors(log) == []
    finally:
        stop_all(ems)


def test_dashboard_asks_for_a_token_when_reads_are_protected_and_shows_a_viewers_refusal(tmp_path: Path) -> None:
    port = free_port()
    cfg = _ems_config(port, {})
    cfg["api"]["protect_reads"] = True
    (tmp_path / "ems.yaml").write_text(yaml.safe_dump(cfg))
    ems = LoggedProcess(["main.py", "--config", str(tmp_path / "ems.yaml"), "--log-format", "json"], env=TOKEN_ENV)
    url = f"http://127.0.0.1:{port}"
    try:
        ems.wait_event(lambda e: e.get("event") == "api_started", timeout_s=30, what="api_started")
        with chromium_page(tmp_path / "chromium-profile", width=1280, height=900) as (page, log):
            page.goto(f"{url}/ui/")
            d = wait_page(page, lambda d: d["conn_text"] == "token needed to read" and d["stale_banner"], what="token needed")
            assert d["state"] is None and d["cycles"] == -1

            sign_in(page, VIEWER_TOKEN)
            d = wait_page(page, lambda d: d["state"] == "FAULT" and d["conn"] == "live", what="status with the viewer token")
            assert not d["stale_banner"]
            page.click("button[data-mode=IDLE]")
            d = wait_page(page, lambda d: _op_done(d) and not d["op_ok"], what="viewer refused")
            msg = _api_message("PUT", f"{url}/api/v1/mode", VIEWER_TOKEN, json={"mode": "IDLE"})
            assert "HTTP 403 forbidden" in d["op_result"] and msg in d["op_result"]
        assert log.off_loopback() == [] and log.page_errors == []
        assert _only_expected_console_errors(log) == []
    finally:
        stop_all(ems)
