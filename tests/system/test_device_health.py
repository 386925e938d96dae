"""Health per device against the real main.py and simulators (issue: one link per device, health per device).

A PV meter that goes silent (its server accepts requests and never answers) degrades the EMS but
leaves it healthy: `/api/v1/health` answers 200 naming the PV meter degraded, while the ESS and the
grid meter keep fresh "last ok" ages and control goes on.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulators.ctl import send
from tests.helpers.common import wait_for
from tests.helpers.proc import LoggedProcess, simulators_and_ems
from tests.helpers.site import site_configs

pytestmark = pytest.mark.system


@pytest.fixture
def site(tmp_path: Path) -> Iterator[dict[str, Any]]:
    s = site_configs(tmp_path, pv=True, api=True, plant={"step_s": 0.05}, control={"period_s": 0.5})
    s.ems["modbus"]["pv"]["timeout_s"] = 0.3
    with simulators_and_ems(tmp_path, s.sim, s.ems, start_timeout_s=20) as (sim, ems):
        ems.wait_event(lambda e: e.get("event") == "api_started", timeout_s=30, what="api_started")
        yield {"sim": sim, "ems": ems, "url": f"http://127.0.0.1:{s.ports['api']}", "ctl": s.ports["control"]}


def _health(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"{url}/api/v1/health", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _devices(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in body["devices"]}


def test_a_silent_pv_meter_degrades_but_leaves_the_ems_healthy_and_the_other_devices_fresh(site: dict[str, Any]) -> None:
    url, ems = site["url"], site["ems"]
    ems: LoggedProcess
    wait_for(lambda: _health(url)[0] == 200 and _health(url)[1]["state"] == "SELF_CONSUMPTION", timeout_s=30, what="healthy")
    code, body = _health(url)
    assert _devices(body)["pv"]["status"] == "ok" and not body["degraded"]

    assert send("pv silent on", port=site["ctl"]).startswith("ok pv silent=True")
    wait_for(lambda: "device_failing:pv" in _health(url)[1]["degraded"], timeout_s=60, what="pv named degraded")
    for _ in range(3):  # a few cycles later: still healthy, still regulating, ESS and meter fresh
        code, body = _health(url)
        devices = _devices(body)
        assert code == 200 and body["healthy"] and body["state"] == "SELF_CONSUMPTION", body
        assert devices["pv"]["status"] == "degraded" and not devices["pv"]["required"]
        for name in ("ess", "meter"):
            assert devices[name]["required"] and devices[name]["status"] == "ok"
            assert devices[name]["last_ok_age_s"] is not None and devices[name]["last_ok_age_s"] < 2.0, devices[name]
        wait_for(lambda b=body: _health(url)[1]["cycles"] > b["cycles"], timeout_s=10, what="the next cycle")
    lost = ems.wait_event(lambda e: e.get("event") == "modbus_link_lost" and e.get("device") == "pv", timeout_s=10, what="pv link lost")
    assert lost["level"] == "warning"
    assert not [e for e in ems.events if e.get("event") == "modbus_link_lost" and e.get("device") in ("ess", "meter")]

    assert send("pv silent off", port=site["ctl"]).startswith("ok pv silent=False")
    wait_for(lambda: _devices(_health(url)[1])["pv"]["status"] == "ok", timeout_s=60, what="pv back")
    ems.wait_event(lambda e: e.get("event") == "modbus_link_recovered" and e.get("device") == "pv", timeout_s=10, what="pv recovered")
