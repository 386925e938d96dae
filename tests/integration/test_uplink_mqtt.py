"""The fleet uplink (uplink.transport mqtt, ISSUE 19) against a real mosquitto with TLS (trustme), per-site
passwords and a per-site ACL (`pattern write fleet/%u/batches`): the same signed batches, QoS 1, a
row marked delivered only on its PUBACK, in outbox order; days offline drain in order, once.

The store and the sender run step by step in simulated time (SimSite); the broker, TLS and PUBACKs
are real.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import trustme
from paho.mqtt.enums import CallbackAPIVersion

from interfaces.uplink import verify
from simulators.broker import BrokerTls, LocalBroker, start_local_broker
from tests.helpers.common import wait_for
from tests.helpers.mosquitto import require_mosquitto
from tests.helpers.uplink import HMAC_KEY, SimSite, secret, uplink_cfg

DAY_S = 86400.0
USERS = {"site-m": "site-m-pw", "site-x": "site-x-pw", "fleet": "fleet-pw"}
ACL = """
pattern write fleet/%u/batches

user fleet
topic read fleet/#
"""


@dataclass(frozen=True)
class Certs:
    ca_file: Path
    broker: BrokerTls


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"
    ca.cert_pem.write_to_path(str(ca_file))
    server.cert_chain_pems[0].write_to_path(str(cert_file))
    server.private_key_pem.write_to_path(str(key_file))
    return Certs(ca_file, BrokerTls(ca_file, cert_file, key_file))


@pytest.fixture
def broker(tmp_path: Path, certs: Certs) -> Iterator[LocalBroker]:
    require_mosquitto()
    b = start_local_broker(workdir=tmp_path / "mosquitto", users=USERS, acl=ACL, tls=certs.broker)
    try:
        yield b
    finally:
        b.stop()


class Fleet:
    """The fleet backend: subscribes to every site's batches (QoS 1, TLS), again after each reconnect."""

    def __init__(self, broker: LocalBroker, ca_file: Path) -> None:
        self.messages: list[tuple[str, bytes, dict[str, str], str | None]] = []  # topic, payload, user properties, content type
        self.connects = 0
        self._lock = threading.Lock()
        c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="fleet-backend", protocol=mqtt.MQTTv5)
        c.username_pw_set("fleet", USERS["fleet"])
        c.tls_set(ca_certs=str(ca_file))
        c.reconnect_delay_set(min_delay=1, max_delay=1)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.connect(broker.host, broker.port, keepalive=30)
        c.loop_start()
        self.client = c
        wait_for(lambda: self.connects >= 1, what="the fleet backend connected")

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason_code: Any, _p: Any) -> None:
        if not reason_code.is_failure:
            client.subscribe("fleet/+/batches", qos=1)
            with self._lock:
                self.connects += 1

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        props = dict(getattr(msg.properties, "UserProperty", []) or [])
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), props, getattr(msg.properties, "ContentType", None)))

    def batch_ids(self) -> list[str]:
        with self._lock:
            return [p["X-EMS-Batch-Id"] for _, _, p, _ in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def fleet(broker: LocalBroker, certs: Certs) -> Iterator[Fleet]:
    f = Fleet(broker, certs.ca_file)
    wait_for(lambda: f.client.is_connected(), what="subscribed")
    yield f
    f.close()


def mqtt_site(db: Path, broker: LocalBroker, ca_file: Path, *, site_id: str = "site-m", username: str = "", **kw: Any) -> SimSite:
    password = USERS.get(username or site_id, "nope")
    section = {
        "host": broker.host,
        "port": broker.port,
        "username": username,
        "password": secret(password),
        "tls": {"enabled": True, "ca_file": str(ca_file)},
        "topic_prefix": "fleet",
    }
    return SimSite(db, site_id=site_id, uplink=uplink_cfg("", None, transport="mqtt", mqtt=section, timeout_s=5.0, **kw))


def test_batches_are_published_signed_qos1_in_outbox_order_and_marked_delivered_on_puback(
    tmp_path: Path, broker: LocalBroker, certs: Certs, fleet: Fleet
) -> None:
    site = mqtt_site(tmp_path / "ems.db", broker, certs.ca_file)
    try:
        site.run(1800)
        site.store.flush()
        ids = site.outbox_ids()
        assert len(ids) >= 5 and site.outbox_ids("delivered") == ids  # every PUBACK seen
        wait_for(lambda: len(fleet.batch_ids()) == len(ids), what="every batch at the fleet backend")
        assert fleet.batch_ids() == ids
        for topic, payload, props, content_type in fleet.messages:
            assert topic == "fleet/site-m/batches" and content_type == "application/json" and props["Content-Encoding"] == "gzip"
            assert verify(HMAC_KEY, props["X-EMS-Timestamp"], payload, props["X-EMS-Signature"])  # the HTTPS signature, as is
            assert json.loads(gzip.decompress(payload))["batch_id"] == props["X-EMS-Batch-Id"]
        uplink = site.ctx.snapshot().device("uplink")
        assert uplink is not None and uplink.kind == "mqtt" and uplink.where == f"{broker.host}:{broker.port}/fleet/site-m/batches"
    finally:
        assert site.sender is not None
        site.sender.transport.close()
        site.store.close()


def test_three_days_with_the_broker_down_drain_in_order_with_no_duplicates(
    tmp_path: Path, broker: LocalBroker, certs: Certs, fleet: Fleet
) -> None:
    site = mqtt_site(tmp_path / "ems.db", broker, certs.ca_file)
    try:
        site.run(3600)  # an hour online
        online = fleet.batch_ids()
        wait_for(lambda: len(fleet.batch_ids()) == len(site.outbox_ids()) >= 11, what="the first hour delivered")
        online = fleet.batch_ids()
        broker.stop()  # the broker is gone for three days
        site.run(3 * DAY_S, sample_every_s=30.0, flush_every_s=300.0)
        assert site.sender is not None and site.sender.next_try_in_s <= 600.0 + 2.0  # backoff capped at backoff_max_s
        assert site.pending() >= 3 * 288 - 1 and fleet.batch_ids() == online
        assert "retry" in site.outcomes and site.ctx.snapshot().device("uplink").error_streak > 0  # type: ignore[union-attr]
        broker.start()  # back on the same port (a fresh broker: no session kept)
        wait_for(lambda: fleet.connects >= 2, timeout_s=20, what="the fleet backend back and subscribed")
        site.drain()
        ids = site.outbox_ids()
        wait_for(lambda: len(fleet.batch_ids()) >= len(ids), timeout_s=30, what="the backlog at the fleet backend")
        got = fleet.batch_ids()
        assert got == ids == site.outbox_ids("delivered")  # in order, each once
        assert len(got) == len(set(got)) >= 12 + 3 * 288 - 1
    finally:
        assert site.sender is not None
        site.sender.transport.close()
        site.store.close()


def test_a_site_cannot_publish_under_another_sites_topic(tmp_path: Path, broker: LocalBroker, certs: Certs, fleet: Fleet) -> None:
    """site-x's credentials on site-m's topic: the ACL refuses (PUBACK not authorized), the row is parked, the fleet sees nothing."""
    site = mqtt_site(tmp_path / "ems.db", broker, certs.ca_file, username="site-x")
    try:
        site.run(600)
        site.store.flush()
        assert site.outbox_ids("parked") == site.outbox_ids() and site.outbox_ids()
        assert site.outbox_ids("delivered") == [] and fleet.batch_ids() == []
        assert site.ctx.counters.snapshot()["uplink_parked"] == len(site.outbox_ids())
    finally:
        assert site.sender is not None
        site.sender.transport.close()
        site.store.close()


def test_a_wrong_password_or_an_unknown_ca_delivers_nothing_and_keeps_every_row(tmp_path: Path, broker: LocalBroker, certs: Certs) -> None:
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    for name, site in (
        ("password", mqtt_site(tmp_path / "a.db", broker, certs.ca_file, site_id="site-q")),  # no such user
        ("ca", mqtt_site(tmp_path / "b.db", broker, other_ca)),
    ):
        try:
            site.run(900)
            site.store.flush()
            assert site.outbox_ids("pending") == site.outbox_ids() and site.outbox_ids(), name
            assert "delivered" not in site.outcomes and "retry" in site.outcomes, name
        finally:
            assert site.sender is not None
            site.sender.transport.close()
            site.store.close()
