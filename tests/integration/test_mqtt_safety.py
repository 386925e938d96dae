"""MQTT command safety (issue 18), against a real mosquitto.

- A retained command is refused also when it is published while the EMS is connected: MQTT 3.1.1
  clears the retain flag for live subscribers, so the EMS speaks MQTT 5 and subscribes to its
  command topics with retain-as-published.
- The `make run` broker lets no anonymous client in: the EMS and an operator get generated
  passwords and an ACL, as the tests' broker has.
- REST and MQTT require the same command fields.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import BaseModel

from api.models import ImportCapRequest, ModeRequest, SetpointRequest
from config import load_config
from ems.clock import SimClock
from ems.context import EMSContext
from ems.model import Mode
from interfaces.mqtt.commands import ImportCapCommand, ModeCommand, SetpointCommand, parse_command
from simulators.broker import LocalBroker, demo_broker, free_port
from tests.helpers.common import REPO_ROOT, wait_for
from tests.helpers.mosquitto import SITE, Probe, ems_mqtt_config, link_state, mosquitto, mqtt_worker, require_mosquitto  # noqa: F401

CMD = f"ems/{SITE}/cmd"


@pytest.fixture
def operator(mosquitto: LocalBroker) -> Iterator[Probe]:  # noqa: F811
    p = Probe(mosquitto, "operator", client_id="operator")
    assert p.wait_connected() == 0
    p.subscribe(f"{CMD}/result")
    yield p
    p.close()


def test_a_retained_command_published_while_the_ems_is_connected_is_refused(mosquitto: LocalBroker, operator: Probe) -> None:  # noqa: F811
    ctx = EMSContext(clock=SimClock(), start_mode=Mode.SELF_CONSUMPTION)
    worker = mqtt_worker(ems_mqtt_config(mosquitto), ctx)
    worker.start()
    try:
        wait_for(lambda: link_state(ctx) == "up", what="the worker to connect")
        operator.publish(f"{CMD}/mode", {"mode": "IDLE", "seq": 1}, retain=True)  # live, retained
        res = operator.wait_message(f"{CMD}/result", lambda m: m.json().get("command") == "mode").json()
        assert res["status"] == "invalid" and res["field"] == "retain", res
        assert ctx.snapshot().requested_mode is Mode.SELF_CONSUMPTION
        operator.clear()
        operator.publish(f"{CMD}/mode", {"mode": "IDLE", "seq": 2})  # the same, not retained: applied
        res = operator.wait_message(f"{CMD}/result", lambda m: m.json().get("seq") == 2).json()
        assert res["status"] == "accepted" and ctx.snapshot().requested_mode is Mode.IDLE
    finally:
        worker.stop(timeout_s=3)


def _required(model: type[BaseModel]) -> set[str]:
    return {name for name, f in model.model_fields.items() if f.is_required()}


@pytest.mark.parametrize(
    ("rest", "mqtt_cmd"), [(ModeRequest, ModeCommand), (SetpointRequest, SetpointCommand), (ImportCapRequest, ImportCapCommand)]
)
def test_rest_and_mqtt_require_the_same_command_fields(rest: type[BaseModel], mqtt_cmd: type[BaseModel]) -> None:
    transport = {"seq", "source"}  # MQTT's ordering and sender fields: REST has HTTP order and the token's name
    common = set(rest.model_fields) & (set(mqtt_cmd.model_fields) - transport)
    assert common == set(rest.model_fields)  # every REST field exists on MQTT too
    assert _required(rest) & common == _required(mqtt_cmd) & common
    assert isinstance(parse_command("setpoint", b'{"power_w": 500, "ttl_s": 60, "seq": 1}', max_ttl_s=3600), SetpointCommand)


def _client(port: int, user: str | None, password: str | None) -> tuple[mqtt.Client, threading.Event, list[Any]]:
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"t-{user}", protocol=mqtt.MQTTv5)
    if user is not None:
        c.username_pw_set(user, password)
    done, codes = threading.Event(), []
    c.on_connect = lambda _c, _u, _f, rc, _p: (codes.append(rc), done.set())
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c, done, codes


def test_the_make_run_broker_has_generated_passwords_and_an_acl_and_refuses_anonymous_clients(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_mosquitto()
    from simulators import demo

    for var in (demo.MQTT_PASSWORD_ENV, demo.MQTT_OPERATOR_PASSWORD_ENV):
        monkeypatch.setenv(var, "")  # unset: `make run` makes them (restored after the test)
    monkeypatch.setenv(demo.DEMO_TOKEN_ENV, "tok-demo-test")
    creds = demo.demo_mqtt_credentials()  # what `make run` does before it loads the config
    cfg = load_config(REPO_ROOT / "config" / "sim.yaml")
    mq = cfg.mqtt.model_copy(update={"port": free_port()})
    assert mq.username == "ems" and mq.password is not None and mq.password.value == creds["ems"]
    with demo_broker(mq, base_topic=f"ems/{cfg.site.id}", operator_password=creds["operator"]) as broker:
        assert broker is not None
        clients = []
        try:
            for user, pw, ok in (
                (None, None, False),
                ("ems", "wrong", False),
                ("ems", creds["ems"], True),
                ("operator", creds["operator"], True),
            ):
                c, done, codes = _client(broker.port, user, pw)
                clients.append(c)
                assert done.wait(10), user
                assert (not codes[0].is_failure) is ok, (user, codes[0])
            acl = (broker.workdir / "acl").read_text(encoding="utf-8")
            assert f"user operator\ntopic write ems/{cfg.site.id}/cmd/#" in acl and "topic readwrite #" not in acl
        finally:
            for c in clients:
                c.loop_stop()
                c.disconnect()
