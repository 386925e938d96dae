"""The planner's MQTT surfaces against a real mosquitto: <base>/cmd/prices and <base>/cmd/import_cap
(accepted, refused, invalid, audited), and plan_slot / plan_savings_eur in the state and in discovery."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from config.planner import PlannerConfig
from ems.clock import SimClock
from ems.context import EMSContext
from ems.model import Command, ControlStatus, Mode, State
from ems.plan import PlannerStatus
from ems.planner import PlanInputs, make_plan
from interfaces.mqtt import MqttWorker
from simulators.broker import LocalBroker
from tests.helpers.common import wait_for
from tests.helpers.mosquitto import SITE, Probe, ems_mqtt_config, link_state, mosquitto, mqtt_worker  # noqa: F401  (fixture)

BASE = f"ems/{SITE}"
SERIES = {"start": "2026-03-02T00:00:00+01:00", "resolution_s": 3600, "prices_eur_per_kwh": [0.08] * 24}


def _rig(broker: LocalBroker, **kw: Any) -> tuple[MqttWorker, EMSContext]:
    ctx = EMSContext(clock=SimClock(), start_mode=Mode.SELF_CONSUMPTION)
    worker = mqtt_worker(ems_mqtt_config(broker), ctx, **kw)
    worker.start()
    wait_for(lambda: link_state(ctx) == "up", what="the worker to connect")
    return worker, ctx


@pytest.fixture
def operator(mosquitto: LocalBroker) -> Iterator[Probe]:  # noqa: F811
    p = Probe(mosquitto, "operator", client_id="operator")
    assert p.wait_connected() == 0
    p.subscribe(f"{BASE}/#")
    yield p
    p.close()


def _result(p: Probe, **match: object) -> dict[str, Any]:
    msg = p.wait_message(f"{BASE}/cmd/result", lambda m: all(m.json().get(k) == v for k, v in match.items()), what=f"a result {match}")
    doc: dict[str, Any] = msg.json()
    return doc


def test_prices_pushed_over_mqtt_reach_the_planner_and_are_audited(mosquitto: LocalBroker, operator: Probe) -> None:  # noqa: F811
    worker, ctx = _rig(mosquitto, prices_refused=None)
    try:
        operator.publish(f"{BASE}/cmd/prices", {**SERIES, "seq": 1, "source": "hems"})
        res = _result(operator, command="prices")
        assert res["status"] == "accepted" and res["new"]["points"] == 24
        (push,) = ctx.requests.pushes_since(0)
        assert push.via == "mqtt" and push.who == "mqtt:hems" and push.points[0].price_eur_per_kwh == 0.08
        operator.publish(f"{BASE}/cmd/prices", {**SERIES, "seq": 1, "source": "hems"})  # the same seq again
        assert _result(operator, command="prices", status="ignored")["error"] == "duplicate"
        operator.publish(f"{BASE}/cmd/prices", {"start": "2026-03-02T00:00:00", "prices_eur_per_kwh": [0.1]})  # no offset
        bad = _result(operator, command="prices", status="invalid")
        assert bad["field"] == "start"
        audits = [(e.data["what"], e.data["via"], e.data["result"]) for e in ctx.events.since(0) if e.kind == "audit"]
        assert audits == [("prices", "mqtt", "accepted")]
    finally:
        worker.stop(timeout_s=3)


def test_prices_are_refused_while_the_planner_is_off(mosquitto: LocalBroker, operator: Probe) -> None:  # noqa: F811
    worker, ctx = _rig(mosquitto)  # default: planner off
    try:
        operator.publish(f"{BASE}/cmd/prices", SERIES)
        res = _result(operator, command="prices")
        assert res["status"] == "refused" and res["error"] == "prices not used: planner.enabled is false"
        assert ctx.requests.pushes_since(0) == ()
        assert [e.data["result"] for e in ctx.events.since(0) if e.kind == "audit"] == ["refused"]
    finally:
        worker.stop(timeout_s=3)


def test_an_import_cap_is_set_and_cleared_over_mqtt(mosquitto: LocalBroker, operator: Probe) -> None:  # noqa: F811
    worker, ctx = _rig(mosquitto)
    try:
        operator.publish(f"{BASE}/cmd/import_cap", {"power_w": 4200, "ttl_s": 900, "reason": "14a", "source": "dso"})
        assert _result(operator, command="import_cap", status="accepted")["new"] == 4200
        cap = ctx.requests.import_cap()
        assert cap is not None and cap.power_w == 4200.0 and cap.source == "mqtt:dso"
        operator.publish(f"{BASE}/cmd/import_cap", {"power_w": -5})
        assert _result(operator, command="import_cap", status="invalid")["field"] == "power_w"
        operator.publish(f"{BASE}/cmd/import_cap", {"power_w": None})
        assert _result(operator, command="import_cap", status="accepted", new=None)["old"] == 4200.0
        assert ctx.requests.import_cap() is None
    finally:
        worker.stop(timeout_s=3)


def test_the_state_carries_the_plan_slot_and_the_expected_savings_and_home_assistant_sees_them(
    mosquitto: LocalBroker,  # noqa: F811
    operator: Probe,
) -> None:
    viewer = Probe(mosquitto, "viewer", client_id="viewer")  # the operator may not read homeassistant/# (ACL)
    assert viewer.wait_connected() == 0
    viewer.subscribe("homeassistant/#")
    worker, ctx = _rig(mosquitto)
    try:
        first = operator.wait_message(f"{BASE}/state", what="the first state").json()
        assert first["plan_slot"] is None and first["plan_savings_eur"] is None
        n = 8
        inputs = PlanInputs(0, 900, (500.0,) * n, (0.0,) * n, (0.1,) * 4 + (0.4,) * 4, (0.0,) * n, 10.0)
        plan = make_plan(inputs, PlannerConfig(), created_at_unix_s=0)
        ctx.plans.publish(plan, PlannerStatus("ok", "plan made", ctx.clock.monotonic()))
        cmd = Command(1, -2000.0, -2000.0, ctx.clock.monotonic())
        ctx.commands.publish(ControlStatus(cmd, State.SELF_CONSUMPTION, 0.0, (), None, None, (), 0, plan="plan:charge_from_grid:reserve"))
        ctx.clock.advance(1.0)  # type: ignore[attr-defined]  # past state_min_interval_s on the worker's (simulated) clock
        doc = operator.wait_message(f"{BASE}/state", lambda m: m.json()["plan_slot"] is not None, what="plan_slot in the state").json()
        assert doc["plan_slot"] == "charge_from_grid" and doc["planner_state"] == "ok"
        assert doc["plan_savings_eur"] == round(plan.savings_eur, 2) and doc["plan_savings_eur"] > 0
        slot = viewer.wait_message(f"homeassistant/sensor/ems_{SITE}/plan_slot/config").json()
        savings = viewer.wait_message(f"homeassistant/sensor/ems_{SITE}/plan_savings_eur/config").json()
        assert slot["state_topic"] == f"{BASE}/state" and "plan_slot" in slot["value_template"]
        assert savings["device_class"] == "monetary" and savings["unit_of_measurement"] == "EUR"
    finally:
        worker.stop(timeout_s=3)
        viewer.close()
