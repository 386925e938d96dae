"""End to end: the real main.py with the planner on, against `python -m simulators`, prices pushed over REST.

A store with two hours of load history is prepared (the forecasts need some), the EMS starts with
no prices (status no_prices, plain self-consumption), then an operator pushes a day-ahead series that
makes the current hour the cheapest of two days: the planner re-plans at once, the loop follows the
grid-charging slot and the simulated inverter charges from the grid while the plan says so. The
dashboard shows the plan card with its chart.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from interfaces.store.schema import open_writer
from simulators.ctl import send
from tests.helpers.common import wait_for
from tests.helpers.proc import LoggedProcess, simulators_and_ems
from tests.helpers.site import site_configs

pytestmark = pytest.mark.system

OPERATOR = "tok-plan-operator-5d1e"
LOAD_ONLY = "t_s,load_w,pv_w\n0,500,0\n"  # 500 W, no PV: every charge beyond it comes from the grid


def _history(db: Path, *, now_s: float, hours: float = 2.0) -> None:
    """Minute aggregates as the store writes them: 500 W from the grid, the battery idle, no PV."""
    conn = open_writer(db)
    stats = json.dumps({"grid_power_w": [500.0, 500.0, 500.0, 500.0, 60], "ess_power_w": [0.0, 0.0, 0.0, 0.0, 60]})
    first = int(now_s // 60 * 60 - hours * 3600)
    conn.executemany(
        "INSERT INTO minutes (ts, n, stats, states) VALUES (?, 60, ?, ?)",
        [(t, stats, '{"SELF_CONSUMPTION": 60}') for t in range(first, int(now_s // 60 * 60), 60)],
    )
    conn.close()


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("planner-system")
    _history(tmp / "ems.db", now_s=datetime.now(UTC).timestamp())
    site = site_configs(
        tmp,
        profile_csv=LOAD_ONLY,
        api=True,
        plant={"soc_start_pct": 40.0},
        ems={
            "api": {"tokens": [{"name": "plan-operator", "role": "operator", "secret": {"env": "EMS_T_PLAN_OPERATOR"}}]},
            "store": {"enabled": True, "path": str(tmp / "ems.db"), "flush_interval_s": 1.0},
            "tariff": {
                "timezone": "UTC",
                "import_price": {"kind": "dynamic", "formula": {"adder_eur_per_kwh": 0.14, "vat_pct": 6}},
                "export_price": {"kind": "dynamic", "formula": {"adder_eur_per_kwh": -0.01}},
                "source": {"kind": "push"},
            },
            "planner": {"enabled": True},
        },
    )
    with simulators_and_ems(tmp, site.sim, site.ems, ems_env={"EMS_T_PLAN_OPERATOR": OPERATOR}, start_timeout_s=20) as (sim, ems):
        yield {"ems": ems, "sim": sim, "api": f"http://127.0.0.1:{site.ports['api']}/api/v1", "ctl": site.ports["control"]}


def _sim(port: int) -> dict[str, Any]:
    return dict(json.loads(send("status", port=port)))


def _day_ahead() -> dict[str, Any]:
    """Two days of quarter-hour spot prices from today 00:00 UTC: 0.30 EUR/kWh, but -0.20 in this quarter and
    -0.10 in the seven after it (cheapest now: the plan charges now, whatever the solver does with ties)."""
    now = datetime.now(UTC)
    day0 = now.replace(hour=0, minute=0, second=0, microsecond=0)
    q = int((now - day0).total_seconds() // 900)
    prices = [-0.20 if k == q else -0.10 if q < k <= q + 7 else 0.30 for k in range(192)]
    return {"start": day0.isoformat(), "resolution_s": 900, "prices_eur_per_kwh": prices}


def test_the_ems_charges_from_the_grid_while_the_plan_says_so(rig: dict[str, Any]) -> None:
    ems: LoggedProcess = rig["ems"]
    api, port = rig["api"], rig["ctl"]
    ems.wait_event(lambda e: e.get("event") == "planner_state_changed" and e.get("to_state") == "no_prices", timeout_s=30, what="no_prices")
    ems.wait_event(lambda e: e.get("event") == "api_started", timeout_s=30, what="the API")  # it starts after the planner
    plan = requests.get(f"{api}/plan", timeout=5).json()
    assert plan["planner"]["state"] == "no_prices" and plan["planner"]["reason"] == "no prices pushed yet"
    assert plan["followed"] is None  # plain self-consumption: nothing to charge for
    ems.wait_event(lambda e: e.get("event") == "state_changed" and e.get("to_state") == "SELF_CONSUMPTION", timeout_s=20, what="SC")
    assert _sim(port)["setpoint_w"] > -1000.0  # no PV, no plan: the battery covers the load or idles, never charges hard

    r = requests.put(f"{api}/prices", json=_day_ahead(), headers={"Authorization": f"Bearer {OPERATOR}"}, timeout=5)
    assert r.status_code == 200, r.text
    made = ems.wait_event(lambda e: e.get("event") == "plan_made" and e.get("trigger") == "prices", timeout_s=20, what="plan_made")
    assert made["status"] == "ok" and made["slots"] > 90 and made["savings_eur"] > 0
    followed = ems.wait_event(
        lambda e: e.get("event") == "plan_followed" and str(e.get("slot", "")).startswith("plan:charge_from_grid"),
        timeout_s=20,
        what="the loop following the grid-charging slot",
    )
    charge_w = followed["grid_target_w"] - 500.0  # the planned import beyond the load charges the battery
    assert charge_w > 1000.0 and followed["hi_w"] == 0.0, followed
    wait_for(  # the inverter charges and the charge comes from the grid (the meter refreshes once a second)
        lambda: (s := _sim(rig["ctl"])) and s["ess_power_w"] < -0.8 * charge_w and s["grid_power_w"] > 500.0 + 0.7 * charge_w,
        timeout_s=20,
        what="the inverter charging from the grid",
    )
    plan = requests.get(f"{api}/plan", timeout=5).json()
    active = plan["slots"][plan["active_slot"]]
    assert plan["planner"]["state"] == "ok" and plan["followed"].startswith("plan:charge_from_grid")
    assert active["mode"] == "charge_from_grid" and active["planned_battery_w"] < -3000.0
    status = requests.get(f"{api}/status", timeout=5).json()
    assert status["planner"]["state"] == "ok" and status["plan_followed"].startswith("plan:charge_from_grid")


def test_the_dashboard_shows_the_plan_card_and_its_chart(rig: dict[str, Any], tmp_path: Path) -> None:
    from tests.helpers.ui import chromium_page

    rig["ems"].wait_event(lambda e: e.get("event") == "plan_made" and e.get("status") == "ok", timeout_s=30, what="a plan")
    with chromium_page(tmp_path / "profile") as (page, log):
        page.goto(rig["api"].removesuffix("/api/v1") + "/ui/")
        page.wait_for_function("() => !document.getElementById('plan-card').hidden", timeout=15_000)
        page.wait_for_function("() => Number(document.getElementById('plan-chart').dataset.slots) > 90", timeout=15_000)
        shown = page.evaluate("() => document.getElementById('plan-summary').textContent")
        has_canvas = page.evaluate("() => !!document.querySelector('#plan-chart canvas')")
    assert "planner" in shown and "ok" in shown and "charge from grid" in shown, shown
    assert has_canvas and not log.page_errors and not log.console_errors, (log.page_errors, log.console_errors)
