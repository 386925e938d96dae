"""MQTT commands against a real mosquitto: mode, set-point with TTL, ordering, bad payloads, ACL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import structlog

from config import EMSConfig
from ems.clock import SimClock
from ems.context import EMSContext
from ems.model import Mode, Quantity, State
from simulators.broker import LocalBroker
from tests.helpers.common import wait_for
from tests.helpers.context import feed, make_controller
from tests.helpers.mosquitto import SITE, Probe, ems_mqtt_config, link_state, mosquitto, mqtt_worker  # noqa: F401  (fixture)

CMD = f"ems/{SITE}/cmd"


def ems_config(broker: LocalBroker, **mqtt: Any) -> EMSConfig:
    return ems_mqtt_config(broker, control={"enabled": True, "dry_run": False, "external_fallback": "STANDBY"}, **mqtt)


class Rig:
    """A SimClock context, the MQTT worker on the real broker, and a controller stepped by hand."""

    def __init__(self, broker: LocalBroker, **mqtt: Any) -> None:
        self.cfg = ems_config(broker, **mqtt)
        self.clock = SimClock()
        self.ctx = EMSContext(
            clock=self.clock,
            start_mode=Mode.SELF_CONSUMPTION,
            max_ttl_s=self.cfg.control.external_max_ttl_s,
            required_sources=self.cfg.control.required_sources,
        )
        self.worker = mqtt_worker(self.cfg, self.ctx)
        self.controller = make_controller(self.ctx, self.cfg, workers=[self.worker])
        self.worker.start()
        wait_for(lambda: link_state(self.ctx) == "up", what="the worker to connect")

    def feed(self) -> None:
        """Fresh required sources at the current simulated time."""
        feed(self.ctx, {Quantity.GRID_POWER_W: 200.0, Quantity.ESS_POWER_W: 0.0, Quantity.SOC_PCT: 50.0}, at_s=self.clock.monotonic())

    def cycle(self, advance_s: float = 1.0) -> State:
        self.clock.advance(advance_s)
        self.feed()
        return self.controller.cycle().state

    def counter(self, name: str) -> int:
        return self.ctx.snapshot().counters.get(name, 0)


@pytest.fixture
def rig(mosquitto: LocalBroker) -> Iterator[Rig]:  # noqa: F811
    r = Rig(mosquitto)
    yield r
    r.worker.stop(timeout_s=3)


@pytest.fixture
def operator(mosquitto: LocalBroker) -> Iterator[Probe]:  # noqa: F811
    p = Probe(mosquitto, "operator", client_id="operator")
    assert p.wait_connected() == 0
    p.subscribe(f"ems/{SITE}/#")
    yield p
    p.close()


def result(p: Probe, **match: object) -> dict[str, Any]:
    msg = p.wait_message(f"{CMD}/result", lambda m: all(m.json().get(k) == v for k, v in match.items()), what=f"a result with {match}")
    doc: dict[str, Any] = msg.json()
    return doc


def test_mode_command_changes_the_requested_mode_and_the_state_machine_follows(rig: Rig, operator: Probe) -> None:
    assert rig.cycle() is State.STANDBY  # STOP -> STANDBY
    assert rig.cycle() is State.SELF_CONSUMPTION
    operator.publish(f"{CMD}/mode", {"mode": "IDLE", "source": "op1"})
    res = result(operator, command="mode")
    assert res["status"] == "accepted" and res["old"] == "SELF_CONSUMPTION" and res["new"] == "IDLE"
    snap = rig.ctx.snapshot()
    assert snap.requested_mode is Mode.IDLE
    audit = [e for e in rig.ctx.events.since(0) if e.kind == "audit"]
    assert audit[-1].data["via"] == "mqtt" and audit[-1].data["who"] == "mqtt:op1" and audit[-1].data["new"] == "IDLE"
    assert rig.cycle() is State.STANDBY
    assert rig.counter("mqtt_cmd_accepted") == 1


def test_setpoint_with_ttl_drives_external_then_lapses_back_to_the_fallback(rig: Rig, operator: Probe) -> None:
    rig.cycle()
    assert rig.cycle() is State.SELF_CONSUMPTION
    operator.publish(f"{CMD}/setpoint", {"power_w": 1500, "ttl_s": 5, "reason": "dr-event", "seq": 1})
    assert result(operator, command="setpoint")["status"] == "accepted"
    assert rig.cycle() is State.EXTERNAL
    assert rig.ctx.snapshot().command.written_w == 1500.0
    state = operator.wait_message(f"ems/{SITE}/state", lambda m: m.json()["state"] == "EXTERNAL", what="state EXTERNAL on MQTT").json()
    assert state["external_setpoint_w"] == 1500 and state["setpoint_w"] == 1500 and state["mode"] == "EXTERNAL"
    assert rig.cycle(advance_s=2.0) is State.EXTERNAL  # 3 s into a 5 s TTL
    assert rig.cycle(advance_s=2.5) is State.STANDBY  # lapsed -> configured fallback
    states = [e.data for e in rig.ctx.events.since(0) if e.kind == "state"]
    assert states[-1] == {"from_state": "EXTERNAL", "to_state": "STANDBY", "reason": "setpoint_ttl_lapsed"}
    assert rig.ctx.snapshot().command.written_w == 0.0
    operator.wait_message(f"ems/{SITE}/state", lambda m: m.json()["state"] == "STANDBY" and m.json()["external_setpoint_w"] is None)


def test_release_drops_the_setpoint_and_requests_the_fallback_mode(rig: Rig, operator: Probe) -> None:
    operator.publish(f"{CMD}/setpoint", {"power_w": -800, "ttl_s": 60, "reason": "charge", "seq": 10})
    assert result(operator, command="setpoint")["status"] == "accepted"
    operator.publish(f"{CMD}/release", {"seq": 11})
    assert result(operator, command="release")["status"] == "accepted"
    snap = rig.ctx.snapshot()
    assert snap.external_setpoint is None and snap.requested_mode is Mode.IDLE  # fallback STANDBY -> IDLE


def test_duplicate_and_out_of_order_setpoints_are_ignored(rig: Rig, operator: Probe) -> None:
    operator.publish(f"{CMD}/setpoint", {"power_w": 1000, "ttl_s": 60, "reason": "a", "seq": 5})
    assert result(operator, seq=5)["status"] == "accepted"
    operator.publish(f"{CMD}/setpoint", {"power_w": 2000, "ttl_s": 60, "reason": "b", "seq": 5})
    operator.publish(f"{CMD}/setpoint", {"power_w": 3000, "ttl_s": 60, "reason": "c", "seq": 3})
    dup = result(operator, seq=5, status="ignored")
    old = result(operator, seq=3)
    assert dup["error"] == "duplicate" and old["status"] == "ignored" and old["error"] == "out_of_order"
    assert rig.ctx.snapshot().external_setpoint.power_w == 1000.0
    assert rig.counter("mqtt_cmd_ignored") == 2
    operator.publish(f"{CMD}/setpoint", {"power_w": 1200, "ttl_s": 60, "reason": "d", "seq": 6})
    assert result(operator, seq=6)["status"] == "accepted"
    assert rig.ctx.snapshot().external_setpoint.power_w == 1200.0


def test_invalid_payloads_get_a_result_naming_the_field_are_counted_and_logged_once(mosquitto: LocalBroker, operator: Probe) -> None:  # noqa: F811
    with structlog.testing.capture_logs() as logs:
        rig = Rig(mosquitto, log_interval_s=60)
        try:
            bad = [
                ("setpoint", b"{not json", "payload"),
                ("setpoint", {"power_w": 100, "ttl_s": -1, "reason": "x", "seq": 1}, "ttl_s"),
                ("setpoint", {"power_w": 100, "ttl_s": 10, "reason": "x" * 201, "seq": 2}, "reason"),  # optional, at most 200
                ("setpoint", {"power_w": "lots", "ttl_s": 10, "reason": "x", "seq": 3}, "power_w"),
                ("setpoint", {"power_w": 100, "ttl_s": 1e6, "reason": "x", "seq": 4}, "ttl_s"),
                ("mode", {"mode": "TURBO"}, "mode"),
                ("mode", {"mode": "IDLE", "extra": 1}, "extra"),
            ]
            for kind, payload, _field in bad:
                operator.publish(f"{CMD}/{kind}", payload)
            results = wait_for(
                lambda: (
                    [m.json() for m in operator.received(f"{CMD}/result")] if len(operator.received(f"{CMD}/result")) >= len(bad) else None
                ),
                what="one result per bad command",
            )
            assert [(r["status"], r["field"]) for r in results] == [("invalid", f) for _k, _p, f in bad]
            assert rig.counter("mqtt_cmd_invalid") == len(bad)
            assert rig.ctx.snapshot().external_setpoint is None and rig.ctx.snapshot().requested_mode is Mode.SELF_CONSUMPTION
            assert rig.worker.is_alive()
            operator.publish(f"{CMD}/mode", {"mode": "CHARGE_ONLY"})  # the thread still serves good commands
            assert result(operator, command="mode", status="accepted")["new"] == "CHARGE_ONLY"
        finally:
            rig.worker.stop(timeout_s=3)
    rejected = [e for e in logs if e["event"] == "mqtt_command_rejected"]
    assert len(rejected) == 1 and rejected[0]["field"] == "payload"  # rate-limited: one line per log_interval_s


def test_an_unauthorised_clients_command_is_refused_by_the_broker_acl(rig: Rig, operator: Probe, mosquitto: LocalBroker) -> None:  # noqa: F811
    viewer = Probe(mosquitto, "viewer", client_id="viewer", protocol=mqtt.MQTTv5)
    try:
        assert not viewer.wait_connected().is_failure
        mid = viewer.publish(f"{CMD}/mode", {"mode": "IDLE"})
        code = wait_for(lambda: viewer.puback_codes.get(mid), what="PUBACK for the viewer's command")
        assert code.is_failure and code.getName() == "Not authorized"
    finally:
        viewer.close()
    operator.publish(f"{CMD}/mode", {"mode": "DISCHARGE_ONLY"})  # a command that passes the ACL, after it
    result(operator, command="mode", new="DISCHARGE_ONLY")
    assert [m.json()["new"] for m in operator.received(f"{CMD}/result")] == ["DISCHARGE_ONLY"]  # the viewer's never arrived
    audit = [e.data["new"] for e in rig.ctx.events.since(0) if e.kind == "audit"]
    assert audit == ["DISCHARGE_ONLY"]


def test_anonymous_clients_are_refused(mosquitto: LocalBroker) -> None:  # noqa: F811
    anon = Probe(mosquitto, None, client_id="anon")
    try:
        assert anon.wait_connected() != 0
    finally:
        anon.close()


def test_a_retained_command_is_not_applied(mosquitto: LocalBroker, operator: Probe) -> None:  # noqa: F811
    operator.publish(f"{CMD}/mode", {"mode": "IDLE"}, retain=True)
    rig = Rig(mosquitto)
    try:
        res = result(operator, command="mode")
        assert res["status"] == "invalid" and res["field"] == "retain"
        assert rig.ctx.snapshot().requested_mode is Mode.SELF_CONSUMPTION
    finally:
        rig.worker.stop(timeout_s=3)
