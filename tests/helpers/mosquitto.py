"""A real mosquitto for the MQTT tests: random loopback port, password file, ACL, optional TLS.

Users (password = "<user>-pw"):
- `ems`      the EMS worker: everything under ems/ and homeassistant/, reads meters/
- `operator` may command: writes ems/<site>/cmd/#, reads ems/#
- `viewer`   read-only: reads ems/# and homeassistant/# (its commands are refused by the ACL)
- `meter`    an external meter: writes meters/#
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from config import EMSConfig, parse_config
from ems.clock import Clock
from ems.context import EMSContext
from interfaces.mqtt import MqttWorker
from simulators.broker import BrokerTls, LocalBroker, find_mosquitto, start_local_broker
from tests.helpers.common import wait_for

SITE = "test"
MISSING = "mosquitto not installed: `make test` installs it (Debian package mosquitto); MQTT tests skipped"

ACL = f"""
user ems
topic readwrite ems/#
topic readwrite homeassistant/#
topic read meters/#

user operator
topic write ems/{SITE}/cmd/#
topic read ems/#

user viewer
topic read ems/#
topic read homeassistant/#

user meter
topic write meters/#
"""
USERS = {u: f"{u}-pw" for u in ("ems", "operator", "viewer", "meter")}
PASSWORD_ENV = {"T_MQTT_PW": USERS["ems"]}  # the env the EMS config's password reference reads


def mqtt_section(broker: LocalBroker, **over: Any) -> dict[str, Any]:
    """The `mqtt:` section for the EMS user on `broker`, with fast reconnects and state publishing."""
    return {
        "enabled": True,
        "host": broker.host,
        "port": broker.port,
        "username": "ems",
        "password": {"env": "T_MQTT_PW"},
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.5,
        "state_min_interval_s": 0.1,
        **over,
    }


def ems_mqtt_config(broker: LocalBroker, *, control: dict[str, Any] | None = None, **mqtt_over: Any) -> EMSConfig:
    """A whole EMS config: site `SITE`, the MQTT section above, and an optional `control:` section."""
    raw: dict[str, Any] = {"site": {"id": SITE, "name": "Test site"}, "mqtt": mqtt_section(broker, **mqtt_over)}
    if control is not None:
        raw["control"] = control
    return parse_config(raw, PASSWORD_ENV)


def mqtt_worker(cfg: EMSConfig, ctx: EMSContext, clock: Clock | None = None, **kw: Any) -> MqttWorker:
    """The EMS's MQTT worker for `cfg` (site `SITE`), handed the context parts it uses, as main.py does."""
    return MqttWorker(
        cfg=cfg.mqtt,
        readings=ctx.readings,
        requests=ctx.requests,
        health=ctx.health,
        counters=ctx.counters,
        snapshot=ctx.snapshot,
        clock=clock or ctx.clock,
        site_id=SITE,
        site_name=cfg.site.name,
        control=cfg.control,
        **kw,
    )


def link_state(ctx: EMSContext) -> object:
    """The broker link as the worker reports it: "up" or "down" (None before the worker exists)."""
    dev = ctx.snapshot().device("broker")
    return None if dev is None else dev.info.get("link")


def require_mosquitto() -> None:
    if find_mosquitto() is None:
        print(f"SKIP: {MISSING}", file=sys.stderr)
        pytest.skip(MISSING)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[LocalBroker]:
    require_mosquitto()
    broker = start_local_broker(workdir=tmp_path / "mosquitto", users=USERS, acl=ACL)
    try:
        yield broker
    finally:
        broker.stop()


def tls_broker(workdir: Path, tls: BrokerTls) -> LocalBroker:
    require_mosquitto()
    return start_local_broker(workdir=workdir, users=USERS, acl=ACL, tls=tls)


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


class Probe:
    """A test-side MQTT client (paho, its own loop thread) that records what it receives."""

    def __init__(
        self, broker: LocalBroker, user: str | None, *, client_id: str, protocol: int = mqtt.MQTTv311, tls_ca: Path | None = None
    ) -> None:
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
        if user is not None:
            self.client.username_pw_set(user, USERS[user])
        if tls_ca is not None:
            self.client.tls_set(ca_certs=str(tls_ca))
        self.messages: list[Received] = []
        self.connect_result: Any = None
        self.puback_codes: dict[int, Any] = {}
        self._lock = threading.Lock()
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason_code: Any, _p: Any) -> None:
        self.connect_result = reason_code

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason_code: Any, _p: Any) -> None:
        with self._lock:
            self.puback_codes[mid] = reason_code

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain)))

    def wait_connected(self) -> Any:
        wait_for(lambda: self.connect_result is not None, timeout_s=10, what="CONNACK")
        return self.connect_result

    def subscribe(self, *topics: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *_a: done.set()
        self.client.subscribe([(t, 1) for t in topics])
        assert done.wait(10), f"no SUBACK for {topics}"

    def publish(self, topic: str, payload: object, *, retain: bool = False, qos: int = 1) -> int:
        data = payload if isinstance(payload, str | bytes) else json.dumps(payload)
        info = self.client.publish(topic, data, qos=qos, retain=retain)
        info.wait_for_publish(10)
        return info.mid

    def received(self, topic: str, where: Callable[[Received], bool] = lambda _m: True) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic and where(m)]

    def wait_message(
        self, topic: str, where: Callable[[Received], bool] = lambda _m: True, *, timeout_s: float = 10.0, what: str = ""
    ) -> Received:
        found = wait_for(lambda: self.received(topic, where), timeout_s=timeout_s, what=what or f"a message on {topic}")
        return found[-1]

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
