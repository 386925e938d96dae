"""REST surfaces of the planner over real HTTP: GET /plan, PUT /prices, PUT and DELETE /grid/import-cap
(auth, validation, audit)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from config.planner import PlannerConfig
from ems.clock import SimClock
from ems.context import EMSContext
from ems.model import Command, ControlStatus, Mode, State
from ems.plan import PlannerStatus
from ems.planner import PlanInputs, make_plan
from tests.helpers.api import RunningApi, api_config, running_api

WALL = datetime(2026, 3, 2, 9, 7, tzinfo=UTC)
T0 = int(datetime(2026, 3, 2, 9, 0, tzinfo=UTC).timestamp())
PLANNER_ON = {
    "store": {"enabled": True, "path": "unused.db"},
    "tariff": {"import_price": {"kind": "dynamic", "formula": {"adder_eur_per_kwh": 0.14}}, "source": {"kind": "push"}},
    "planner": {"enabled": True},
}


def _audits(ctx: EMSContext, what: str) -> list[dict[str, object]]:
    return [dict(e.data) for e in ctx.events.since(0) if e.kind == "audit" and e.data.get("what") == what]


@pytest.fixture
def api_on() -> Iterator[tuple[RunningApi, EMSContext, SimClock]]:
    clock = SimClock(start_wall=WALL)
    ctx = EMSContext(clock=clock, start_mode=Mode.SELF_CONSUMPTION)
    with running_api(api_config(**PLANNER_ON), ctx, clock) as api:
        yield api, ctx, clock


def test_the_plan_endpoint_shows_slots_costs_status_and_the_slot_followed(api_on: tuple[RunningApi, EMSContext, SimClock]) -> None:
    api, ctx, clock = api_on
    r = api.get("/api/v1/plan")
    assert r.status_code == 200 and r.json()["status"] is None and r.json()["slots"] == []
    assert r.json()["planner"]["state"] == "off"  # nothing published yet
    n = 8
    prices = (0.10, 0.10, 0.10, 0.10, 0.40, 0.40, 0.40, 0.40)
    inputs = PlanInputs(T0, 900, (500.0,) * n, (0.0,) * n, prices, (0.0,) * n, 10.0)  # empty: the dear hour needs energy
    plan = make_plan(inputs, PlannerConfig(), created_at_unix_s=T0 + 60)
    ctx.plans.publish(
        plan, PlannerStatus("ok", "plan made", clock.monotonic(), prices_until_unix_s=T0 + n * 900, replans=3, last_solve_s=0.01)
    )
    cmd = Command(1, -2000.0, -2000.0, clock.monotonic())
    ctx.commands.publish(
        ControlStatus(cmd, State.SELF_CONSUMPTION, 0.0, ("plan:charge_from_grid",), None, None, (), 0, plan="plan:charge_from_grid")
    )
    ctx.requests.set_import_cap(power_w=6000.0, ttl_s=600.0, reason="14a", who="dso", via="mqtt")
    body = api.get("/api/v1/plan").json()
    assert body["planner"] == {
        "enabled": True, "state": "ok", "reason": "plan made", "age_s": 0.0, "prices_until_ts": T0 + n * 900, "replans": 3, "last_solve_s": 0.01,
    }  # fmt: skip
    assert body["status"] == "ok" and len(body["slots"]) == n and body["horizon_h"] == 2.0
    assert body["active_slot"] == 0 and body["slots"][0]["active"] and not body["slots"][1]["active"]  # 09:07 is in the first slot
    assert body["followed"] == "plan:charge_from_grid"
    charging = [s for s in body["slots"][:4] if s["mode"] == "charge_from_grid"]  # cheap: charge for the dear hour
    assert charging and charging[0]["planned_grid_w"] > 500.0 and charging[0]["soc_target_pct"] > 10.0
    assert body["slots"][-1]["mode"] == "self_consumption" and body["slots"][-1]["price_import_eur_per_kwh"] == 0.40
    assert body["savings_eur"] == pytest.approx(plan.savings_eur, abs=1e-4) and body["savings_eur"] > 0
    assert body["import_cap"] == {"power_w": 6000.0, "remaining_s": 600.0, "reason": "14a", "source": "dso"}
    assert body["age_s"] == 360.0 and body["max_age_s"] == 10800.0 and body["currency"] == "EUR"


def test_pushed_prices_need_an_operator_and_are_audited(api_on: tuple[RunningApi, EMSContext, SimClock]) -> None:
    api, ctx, _ = api_on
    series = {"start": "2026-03-02T00:00:00+01:00", "resolution_s": 3600, "prices_eur_per_kwh": [0.1] * 24}
    assert api.put("/api/v1/prices", json=series).status_code == 401
    assert api.put("/api/v1/prices", "viewer", json=series).status_code == 403
    r = api.put("/api/v1/prices", "operator", json=series)
    assert r.status_code == 200, r.text
    assert r.json()["what"] == "prices" and r.json()["new"] == {"points": 24, "from_ts": T0 - 10 * 3600, "to_ts": T0 + 14 * 3600}
    (push,) = ctx.requests.pushes_since(0)
    assert push.via == "rest" and push.who == "operator-1" and len(push.points) == 24
    pts = {"points": [{"start": "2026-03-03T00:00:00Z", "end": "2026-03-03T00:15:00Z", "price_eur_per_kwh": -0.02}]}
    assert api.put("/api/v1/prices", "operator", json=pts).status_code == 200
    results = [(a["result"], a.get("status")) for a in _audits(ctx, "prices")]
    assert results == [("refused", 401), ("refused", 403), ("accepted", None), ("accepted", None)]


def test_bad_price_pushes_are_refused_naming_the_field(api_on: tuple[RunningApi, EMSContext, SimClock]) -> None:
    api, ctx, _ = api_on
    naive = {"points": [{"start": "2026-03-03T00:00:00", "end": "2026-03-03T01:00:00Z", "price_eur_per_kwh": 0.1}]}
    r = api.put("/api/v1/prices", "operator", json=naive)
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "points.0.start", r.text
    mwh = {"start": "2026-03-03T00:00:00Z", "prices_eur_per_kwh": [95.0, 120.0]}  # EUR/MWh sent as EUR/kWh
    r = api.put("/api/v1/prices", "operator", json=mwh)
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "prices_eur_per_kwh.1"
    both = {"start": "2026-03-03T00:00:00Z", "prices_eur_per_kwh": [0.1], "points": naive["points"]}
    assert api.put("/api/v1/prices", "operator", json=both).status_code == 422
    overlap = {
        "points": [
            {"start": "2026-03-03T00:00:00Z", "end": "2026-03-03T01:00:00Z", "price_eur_per_kwh": 0.1},
            {"start": "2026-03-03T00:30:00Z", "end": "2026-03-03T01:30:00Z", "price_eur_per_kwh": 0.2},
        ]
    }
    r = api.put("/api/v1/prices", "operator", json=overlap)
    assert r.status_code == 422 and r.json()["message"] == "points: point 1: overlaps the point before it"
    assert ctx.requests.pushes_since(0) == ()
    assert [a["result"] for a in _audits(ctx, "prices")] == ["refused"] * 4


def test_prices_are_refused_while_the_planner_is_off() -> None:
    clock = SimClock(start_wall=WALL)
    ctx = EMSContext(clock=clock)
    with running_api(api_config(), ctx, clock) as api:
        r = api.put("/api/v1/prices", "operator", json={"start": "2026-03-03T00:00:00Z", "prices_eur_per_kwh": [0.1]})
    assert r.status_code == 409 and "planner.enabled is false" in r.json()["message"]
    assert [(a["result"], a["status"]) for a in _audits(ctx, "prices")] == [("refused", 409)]


def test_the_import_cap_is_set_with_a_ttl_cleared_and_audited(api_on: tuple[RunningApi, EMSContext, SimClock]) -> None:
    api, ctx, clock = api_on
    assert api.put("/api/v1/grid/import-cap", "viewer", json={"power_w": 4200}).status_code == 403
    assert api.put("/api/v1/grid/import-cap", "operator", json={"power_w": -1}).status_code == 422
    assert api.put("/api/v1/grid/import-cap", "operator", json={"power_w": "4200"}).status_code == 422  # strict JSON types
    r = api.put("/api/v1/grid/import-cap", "operator", json={"power_w": 4200, "ttl_s": 900, "reason": "14a EnWG"})
    assert r.status_code == 200 and r.json()["new"] == 4200 and r.json()["old"] is None
    cap = ctx.requests.import_cap()
    assert cap is not None and cap.power_w == 4200.0 and cap.expires_at_s == clock.monotonic() + 900
    r = api.delete("/api/v1/grid/import-cap", "operator")
    assert r.status_code == 200 and r.json()["old"] == 4200 and ctx.requests.import_cap() is None
    results = [(a["result"], a["old"], a["new"]) for a in _audits(ctx, "import_cap")]
    assert results == [
        ("refused", None, 4200),
        ("refused", None, -1),
        ("refused", None, "4200"),
        ("accepted", None, 4200.0),
        ("accepted", 4200.0, None),
    ]
