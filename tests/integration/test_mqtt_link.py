"""The MQTT link against a real mosquitto: availability, discovery, broker restart, last will, TLS."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from config import EMSConfig, parse_config
from ems.clock import SystemClock
from ems.context import EMSContext
from ems.model import DeviceHealth, Mode, ThreadHealth
from interfaces.mqtt.worker import make_client
from simulators.broker import BrokerTls, LocalBroker, demo_broker
from tests.helpers.common import free_port, wait_for
from tests.helpers.mosquitto import (  # noqa: F401  (fixture)
    ACL,
    SITE,
    USERS,
    Probe,
    ems_mqtt_config,
    link_state,
    mosquitto,
    mqtt_worker,
    require_mosquitto,
    tls_broker,
)

BASE = f"ems/{SITE}"
NODE = f"ems_{SITE}"


class Ems:
    def __init__(self, cfg: EMSConfig) -> None:
        self.ctx = EMSContext(clock=SystemClock(), start_mode=Mode.SELF_CONSUMPTION)
        self.worker = mqtt_worker(cfg, self.ctx, SystemClock())
        self.worker.start()

    def link(self) -> object:
        return link_state(self.ctx)

    def broker(self) -> DeviceHealth:
        """Health of the device the worker serves."""
        dev = self.ctx.snapshot().device("broker")
        assert dev is not None
        return dev

    def thread(self) -> ThreadHealth:
        """Liveness of the worker's thread."""
        return next(t for t in self.ctx.snapshot().threads if t.name == self.worker.name)


@pytest.fixture
def ems(mosquitto: LocalBroker) -> Iterator[Ems]:  # noqa: F811
    e = Ems(ems_mqtt_config(mosquitto))
    wait_for(lambda: e.link() == "up", what="the worker to connect")
    yield e
    e.worker.stop(timeout_s=3)


def viewer_of(broker: LocalBroker, client_id: str = "viewer") -> Probe:
    p = Probe(broker, "viewer", client_id=client_id)
    assert p.wait_connected() == 0
    p.subscribe(f"{BASE}/#", "homeassistant/#")
    return p


def discovery(p: Probe, component: str, object_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = p.wait_message(
        f"homeassistant/{component}/{NODE}/{object_id}/config", what=f"{component} {object_id} discovery"
    ).json()
    return doc


def test_worker_publishes_availability_discovery_and_state_retained(ems: Ems, mosquitto: LocalBroker) -> None:  # noqa: F811
    viewer = viewer_of(mosquitto)  # subscribes after the fact: everything below must be retained
    try:
        avail = viewer.wait_message(f"{BASE}/availability")
        assert avail.payload == b"online" and avail.retain
        grid = discovery(viewer, "sensor", "grid_power_w")
        assert grid["device_class"] == "power" and grid["unit_of_measurement"] == "W" and grid["state_topic"] == f"{BASE}/state"
        assert grid["availability_topic"] == f"{BASE}/availability" and grid["unique_id"] == f"{NODE}_grid_power_w"
        assert grid["device"]["identifiers"] == [NODE] and grid["device"]["name"] == "Test site"
        soc = discovery(viewer, "sensor", "soc_pct")
        assert soc["device_class"] == "battery" and soc["unit_of_measurement"] == "%"
        select = discovery(viewer, "select", "mode")
        assert select["options"] == [m.value for m in Mode] and select["command_topic"] == f"{BASE}/cmd/mode"
        number = discovery(viewer, "number", "external_setpoint")
        assert number["command_topic"] == f"{BASE}/cmd/setpoint" and number["unit_of_measurement"] == "W"
        assert number["min"] == -5000.0 and number["max"] == 5000.0
        state = viewer.wait_message(f"{BASE}/state")
        assert state.retain and state.json()["mode"] == "SELF_CONSUMPTION" and state.json()["state"] == "STOP"
    finally:
        viewer.close()


def test_state_is_published_on_change_and_not_repeated_when_unchanged(ems: Ems, mosquitto: LocalBroker) -> None:  # noqa: F811
    viewer = viewer_of(mosquitto)
    try:
        viewer.wait_message(f"{BASE}/state")
        ems.ctx.requests.request_mode(Mode.CHARGE_ONLY, who="test", via="test")
        viewer.wait_message(f"{BASE}/state", lambda m: m.json()["mode"] == "CHARGE_ONLY", what="the mode change on the state topic")
        ems.ctx.requests.request_mode(Mode.IDLE, who="test", via="test")
        viewer.wait_message(f"{BASE}/state", lambda m: m.json()["mode"] == "IDLE", what="the second change")
        states = viewer.received(f"{BASE}/state")
        assert [m.json()["mode"] for m in states] == ["SELF_CONSUMPTION", "CHARGE_ONLY", "IDLE"]  # one message per change
    finally:
        viewer.close()


def test_home_assistant_birth_message_triggers_discovery_again(ems: Ems, mosquitto: LocalBroker) -> None:  # noqa: F811
    viewer = viewer_of(mosquitto)
    ha = Probe(mosquitto, "ems", client_id="home-assistant")  # HA's own user may publish its status
    try:
        topic = f"homeassistant/select/{NODE}/mode/config"
        viewer.wait_message(topic)
        viewer.clear()
        ha.publish("homeassistant/status", "online")
        again = viewer.wait_message(topic, what="discovery republished after HA's birth message")
        assert not again.retain  # a live republish, not the retained copy
    finally:
        ha.close()
        viewer.close()


def test_broker_restart_is_survived_and_availability_and_discovery_republished(ems: Ems, mosquitto: LocalBroker) -> None:  # noqa: F811
    mosquitto.stop()  # no persistence: every retained message is gone with it
    wait_for(lambda: ems.link() == "down", what="the worker to notice the broker is gone")
    assert ems.ctx.snapshot().counters.get("mqtt_link_lost") == 1
    mosquitto.start()
    wait_for(lambda: ems.link() == "up", timeout_s=15, what="the worker to reconnect")
    viewer = viewer_of(mosquitto, "viewer-after-restart")
    operator = Probe(mosquitto, "operator", client_id="operator")
    try:
        assert viewer.wait_message(f"{BASE}/availability").payload == b"online"
        assert discovery(viewer, "number", "external_setpoint")["device_class"] == "power"
        viewer.wait_message(f"{BASE}/state")
        operator.publish(f"{BASE}/cmd/mode", {"mode": "IDLE"})  # subscriptions are back too
        wait_for(lambda: ems.ctx.snapshot().requested_mode is Mode.IDLE, what="a command after the restart")
        assert ems.ctx.snapshot().counters.get("mqtt_reconnects") == 1
        assert ems.worker.is_alive()
    finally:
        operator.close()
        viewer.close()


def test_clean_stop_publishes_offline(mosquitto: LocalBroker) -> None:  # noqa: F811
    e = Ems(ems_mqtt_config(mosquitto))
    wait_for(lambda: e.link() == "up", what="the worker to connect")
    e.worker.stop(timeout_s=3)
    assert not e.worker.is_alive()
    viewer = viewer_of(mosquitto)
    try:
        assert viewer.wait_message(f"{BASE}/availability").payload == b"offline"
    finally:
        viewer.close()


def test_last_will_marks_the_ems_offline_when_its_connection_drops(mosquitto: LocalBroker) -> None:  # noqa: F811
    cfg = ems_mqtt_config(mosquitto)
    viewer = viewer_of(mosquitto)
    client = make_client(cfg.mqtt, client_id="ems-lwt", will_topic=f"{BASE}/availability")
    try:
        client.connect(mosquitto.host, mosquitto.port, keepalive=30)
        client.loop_start()
        client.publish(f"{BASE}/availability", "online", qos=1, retain=True).wait_for_publish(10)
        viewer.wait_message(f"{BASE}/availability", lambda m: m.payload == b"online")
        sock = client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)  # the process "dies": no DISCONNECT packet
        msg = viewer.wait_message(f"{BASE}/availability", lambda m: m.payload == b"offline", what="the last will")
        assert msg.payload == b"offline"
    finally:
        client.loop_stop()
        viewer.close()


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def test_tls_connects_with_a_verified_broker_certificate_and_refuses_an_unknown_ca(tmp_path: Path, ca: trustme.CA) -> None:
    server = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"
    ca.cert_pem.write_to_path(str(ca_file))
    server.cert_chain_pems[0].write_to_path(str(cert_file))
    server.private_key_pem.write_to_path(str(key_file))
    broker = tls_broker(tmp_path / "mosquitto", BrokerTls(ca_file, cert_file, key_file))
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    good = Ems(ems_mqtt_config(broker, tls={"enabled": True, "ca_file": str(ca_file)}))
    bad = Ems(ems_mqtt_config(broker, tls={"enabled": True, "ca_file": str(other_ca)}, client_id="ems-bad"))
    try:
        wait_for(lambda: good.link() == "up", what="a TLS connection")
        viewer = Probe(broker, "viewer", client_id="viewer", tls_ca=ca_file)
        try:
            assert viewer.wait_connected() == 0
            viewer.subscribe(f"{BASE}/availability")
            assert viewer.wait_message(f"{BASE}/availability").payload == b"online"
        finally:
            viewer.close()
        health = wait_for(lambda: (d := bad.broker()).error_streak >= 2 and d, what="the unknown CA refused, twice")
        assert health.last_error == "connect_failed" and bad.link() == "down"
    finally:
        good.worker.stop(timeout_s=3)
        bad.worker.stop(timeout_s=3)
        broker.stop()


@pytest.mark.parametrize("with_user", [True, False])
def test_demo_broker_started_from_the_ems_config_lets_the_worker_in(with_user: bool) -> None:
    require_mosquitto()
    port = free_port()
    raw: dict[str, Any] = {"enabled": True, "port": port, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5}
    if with_user:
        raw |= {"username": "ems", "password": {"env": "T_MQTT_PW"}}
    cfg = parse_config({"site": {"id": SITE}, "mqtt": raw}, {"T_MQTT_PW": "demo-pw"})
    if not with_user:  # no anonymous clients: without a user and password there is no demo broker
        with demo_broker(cfg.mqtt, base_topic=f"ems/{SITE}") as none:
            assert none is None
        return
    with demo_broker(cfg.mqtt, base_topic=f"ems/{SITE}") as broker:
        assert broker is not None and broker.port == port
        e = Ems(cfg)
        try:
            wait_for(lambda: e.link() == "up", what="the worker on the demo broker")
        finally:
            e.worker.stop(timeout_s=3)
    assert not broker.running
    with demo_broker(cfg.mqtt.model_copy(update={"enabled": False}), base_topic=f"ems/{SITE}") as none:
        assert none is None


def test_worker_started_before_the_broker_keeps_heartbeating_and_connects_when_it_appears(tmp_path: Path) -> None:
    require_mosquitto()
    broker = LocalBroker(workdir=tmp_path / "late-broker", port=free_port(), users=USERS, acl=ACL)  # not started yet
    e = Ems(ems_mqtt_config(broker))
    try:
        health = wait_for(lambda: (d := e.broker()).error_streak >= 3 and d, what="three failed attempts")
        assert health.last_error == "connect_failed" and e.link() == "down"
        first_beat = e.thread().last_beat_s
        assert first_beat is not None
        wait_for(lambda: (e.thread().last_beat_s or 0.0) > first_beat, what="heartbeats while the broker is down")
        broker.start()
        wait_for(lambda: e.link() == "up", timeout_s=15, what="the first connection once the broker is up")
        assert e.broker().error_streak == 0
    finally:
        e.worker.stop(timeout_s=3)
        broker.stop()


def test_a_wrong_password_is_refused_counted_and_retried_with_backoff(mosquitto: LocalBroker) -> None:  # noqa: F811
    cfg = parse_config(
        {
            "site": {"id": SITE},
            "mqtt": {
                "enabled": True,
                "host": mosquitto.host,
                "port": mosquitto.port,
                "username": "ems",
                "password": {"env": "T_MQTT_PW"},
                "reconnect_min_s": 0.1,
                "reconnect_max_s": 0.2,
            },
        },
        {"T_MQTT_PW": "wrong"},
    )
    e = Ems(cfg)
    try:
        wait_for(lambda: e.ctx.snapshot().counters.get("mqtt_connect_refused", 0) >= 2, what="two refused CONNECTs")
        assert e.link() == "down" and e.worker.is_alive()
        health = e.broker()
        assert health.last_error == "connect_refused" and health.last_ok_s is None
    finally:
        e.worker.stop(timeout_s=3)
