"""The MQTT worker thread (paho-mqtt 2.x, v2 callback API, MQTT 5) driving its own network loop.

MQTT 5, because MQTT 3.1.1 clears the retain flag of a message delivered to a live subscriber: a
retained command published while the EMS is connected would look live. The command topics are
subscribed with retain-as-published, so a retained command is refused whenever it arrives; ingest
topics keep the usual semantics (only the replay at subscribe time is flagged retained).

One thread owns the client: it connects (with backoff), runs `client.loop()`, and paho calls the
callbacks from this same thread, so nothing here is shared. Each pass also publishes the retained
state when it changed (at most once per `state_min_interval_s`) and heartbeats the context, so
the controller sees a live worker even while the broker is down.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from config.control import ControlConfig
from config.mqtt import MqttConfig
from ems.clock import Clock
from ems.context import Counters, Health, Readings, ReadingsWriter, Requests
from ems.model import Mode, Quantity, Snapshot, State
from interfaces.backoff import Backoff
from interfaces.logs import LogGate
from interfaces.mqtt.commands import CommandHandler
from interfaces.mqtt.ingest import IngestError, IngestRule, decode
from interfaces.mqtt.state import StateGate, state_payload
from interfaces.mqtt.topics import Topics, discovery_messages
from interfaces.worker import Worker

__all__ = ["DEVICE", "MqttWorker", "make_client"]

DEVICE = "broker"

_LOOP_S = 0.2  # longest block in client.loop(): bounds stop latency and the heartbeat period


def make_client(cfg: MqttConfig, *, client_id: str, will_topic: str) -> mqtt.Client:
    """A configured (not yet connected) client: credentials, TLS, last will `offline` retained."""
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.connect_timeout = cfg.connect_timeout_s
    client.max_queued_messages_set(200)
    if cfg.username is not None:
        client.username_pw_set(cfg.username, None if cfg.password is None else cfg.password.value)
    if cfg.tls.enabled:
        client.tls_set(
            ca_certs=None if cfg.tls.ca_file is None else str(cfg.tls.ca_file),
            certfile=None if cfg.tls.cert_file is None else str(cfg.tls.cert_file),
            keyfile=None if cfg.tls.key_file is None else str(cfg.tls.key_file),
            cert_reqs=ssl.CERT_REQUIRED,
        )
    client.will_set(will_topic, payload="offline", qos=1, retain=True)
    return client


class MqttWorker(Worker):
    """The broker link: state out, commands in, ingest topics in. Required only while an ingest
    topic owns a required source (then a dead broker is a FAULT, as a dead meter would be)."""

    critical = False
    expected_errors = (OSError,)  # ssl.SSLError and socket timeouts are OSErrors

    def __init__(
        self,
        *,
        cfg: MqttConfig,
        readings: Readings,
        requests: Requests,
        health: Health,
        counters: Counters,
        snapshot: Callable[[], Snapshot],
        clock: Clock,
        site_id: str,
        site_name: str = "",
        control: ControlConfig | None = None,
        name: str = "mqtt",
        prices_refused: str | None = "planner.enabled is false",
        currency: str = "EUR",
    ) -> None:
        """`prices_refused`: why `<base>/cmd/prices` is refused (None: pushes go to the planner)."""
        super().__init__(name=name, health=health, clock=clock, period_s=_LOOP_S, devices=(DEVICE,))
        health.register_device(DEVICE, kind="mqtt", where=f"{cfg.host}:{cfg.port}", thread=name)
        self._counters = counters
        self._snapshot = snapshot
        control = control or ControlConfig()
        self._cfg = cfg
        self.topics = Topics.from_config(cfg, site_id=site_id)
        self._discovery = discovery_messages(
            cfg,
            self.topics,
            site_name=site_name,
            max_charge_w=control.max_charge_w,
            max_discharge_w=control.max_discharge_w,
            currency=currency,
        )
        release_mode = Mode.SELF_CONSUMPTION if control.external_fallback is State.SELF_CONSUMPTION else Mode.IDLE
        self._commands = CommandHandler(
            requests=requests,
            counters=counters,
            max_ttl_s=control.external_max_ttl_s,
            release_mode=release_mode,
            prices_refused=prices_refused,
            seq_reset_s=cfg.seq_reset_s,
        )
        self._kinds = self.topics.command_kinds()
        self._rules: dict[str, list[IngestRule]] = {}
        for t in cfg.ingest:
            self._rules.setdefault(t.topic, []).append(IngestRule.from_config(t))
        self._writers: dict[str, ReadingsWriter] = {  # each ingest topic is a source that owns its quantities
            topic: readings.claim(f"mqtt:{topic}", [r.quantity for r in rules], device=DEVICE) for topic, rules in self._rules.items()
        }
        self._state = StateGate(cfg.state_min_interval_s)
        self._logs = LogGate(cfg.log_interval_s)
        self._client = make_client(cfg, client_id=cfg.client_id or f"ems-{site_id}", will_topic=self.topics.availability)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s, clean_start=True)  # reconnect() does the I/O
        self._broker = f"{cfg.host}:{cfg.port}"
        self._socket_open = False  # TCP (+TLS) up; CONNACK may still be pending
        self._link_up = False  # CONNACK accepted
        self._refused: str | None = None  # CONNACK refusal reason, until the connection is closed
        self._opened_at_s = 0.0
        self._backoff = Backoff.exponential(min_s=cfg.reconnect_min_s, max_s=cfg.reconnect_max_s)
        self._connects = 0
        health.set_info(DEVICE, link="down")

    # ---- the loop ----------------------------------------------------------------------------
    def iterate(self) -> None:
        now = self._clock.monotonic()
        if not self._socket_open:
            if self._backoff.due(now):
                self._open(now)
            return
        try:
            rc = self._client.loop(timeout=_LOOP_S)
        except OSError as exc:  # e.g. a TLS error mid-stream: the connection is gone
            self._lost(f"{type(exc).__name__}: {exc}", self._clock.monotonic())
            return
        now = self._clock.monotonic()
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._lost(mqtt.error_string(rc), now)
        elif not self._link_up and now - self._opened_at_s > 2 * self._cfg.connect_timeout_s:
            self._client.disconnect()
            self._lost("connack_timeout", now)
        elif self._link_up:
            self._publish_state(now)
            self.succeeded()

    def wait_next(self) -> bool:
        if self._socket_open:  # client.loop() already waited on the socket
            return self._stop_event.is_set()
        pause_s = min(self.period_s, max(0.0, self._backoff.next_at_s - self._clock.monotonic()))
        return self._stop_event.wait(pause_s)

    def _open(self, now: float) -> None:
        try:
            self._client.reconnect()
        except (OSError, ValueError) as exc:  # paho raises ValueError for a bad host name
            delay_s = self._backoff.failed(now, exc)
            self.failed("connect_failed", detail=f"{type(exc).__name__}: {exc}")
            self.log.debug("mqtt_connect_failed", broker=self._broker, error=str(exc)[:200], retry_in_s=round(delay_s, 2))
            return
        self._socket_open, self._opened_at_s = True, now

    def _lost(self, reason: str, now: float) -> None:
        if not self._socket_open:  # on_disconnect already told us
            return
        was_up = self._link_up
        self._socket_open = self._link_up = False
        delay_s = self._backoff.failed(now)
        self._health.set_info(DEVICE, link="down")
        if was_up:
            self._counters.count("mqtt_link_lost")
            self.log.warning("mqtt_link_lost", broker=self._broker, reason=reason, retry_in_s=round(delay_s, 2))
        self.failed("link_down" if was_up or self._refused is None else "connect_refused", detail=self._refused or reason)
        self._refused = None

    # ---- paho callbacks (called from this thread inside client.loop) -------------------------
    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason_code: Any, _props: Any) -> None:
        if reason_code.is_failure:
            self._counters.count("mqtt_connect_refused")
            self._refused = str(reason_code)  # the broker closes the connection next: _lost() reports it
            return
        self._link_up = True
        self._backoff.reset()
        self._connects += 1
        subs = [(t, SubscribeOptions(qos=1, retainAsPublished=True)) for t in self._kinds]  # a retained command stays flagged
        subs += [(t, SubscribeOptions(qos=0)) for t in self._rules]
        if self._cfg.discovery.enabled:
            subs.append((self.topics.ha_status, SubscribeOptions(qos=1)))
        client.subscribe(subs)
        client.publish(self.topics.availability, "online", qos=1, retain=True)
        self._publish_discovery()
        self._state.force()
        self._publish_state(self._clock.monotonic())
        self._health.set_info(DEVICE, link="up")
        if self._connects > 1:
            self._counters.count("mqtt_reconnects")
        self.log.info("mqtt_connected", broker=self._broker, connects=self._connects, tls=self._cfg.tls.enabled)
        self.succeeded()

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason_code: Any, _props: Any) -> None:
        if not self._stop_event.is_set():
            self._lost(str(reason_code), self._clock.monotonic())

    def _on_message(self, client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
            if topic in self._kinds:
                self._command(client, self._kinds[topic], msg)
            elif topic in self._rules:
                self._ingest(topic, msg)
            elif topic == self.topics.ha_status and msg.payload == b"online":
                self._publish_discovery()
        except Exception:  # a callback must never end the loop: loud, counted, alive
            self._counters.count("mqtt_message_failed")
            self.log.exception("mqtt_message_failed", topic=msg.topic)

    def _command(self, client: mqtt.Client, kind: str, msg: mqtt.MQTTMessage) -> None:
        result = self._commands.handle(kind, bytes(msg.payload), retained=bool(msg.retain), now_s=self._clock.monotonic())
        client.publish(self.topics.cmd_result, json.dumps(result), qos=1, retain=False)
        status = result["status"]
        if status == "accepted":
            self.log.info("mqtt_command_accepted", command=kind, seq=result["seq"], new=result.get("new"))
        else:
            held = self._logs.allow(f"cmd_{status}", self._clock.monotonic())
            if held is not None:
                self.log.warning(
                    "mqtt_command_rejected",
                    status=status,
                    command=kind,
                    seq=result.get("seq"),
                    field=result.get("field"),
                    error=result.get("error"),
                    held_back=held,
                )

    def _ingest(self, topic: str, msg: mqtt.MQTTMessage) -> None:
        now = self._clock.monotonic()
        values: dict[Quantity, float] = {}
        for rule in self._rules[topic]:
            if msg.retain and not rule.accept_retained:
                self._counters.count("mqtt_ingest_retained_ignored")
                continue
            try:
                values[rule.quantity] = decode(rule, bytes(msg.payload))
            except IngestError as exc:
                self._counters.count("mqtt_ingest_invalid")
                held = self._logs.allow(f"ingest:{topic}:{rule.quantity.value}", now)
                if held is not None:
                    self.log.warning("mqtt_ingest_invalid", topic=topic, quantity=rule.quantity.value, error=str(exc), held_back=held)
        if values:
            self._writers[topic].update(values, at_s=now)

    # ---- publishing --------------------------------------------------------------------------
    def _publish_discovery(self) -> None:
        if not self._cfg.discovery.enabled:
            return
        for topic, payload in self._discovery:
            self._client.publish(topic, payload, qos=1, retain=True)

    def _publish_state(self, now: float) -> None:
        doc = state_payload(self._snapshot(), stale_s=self._cfg.state_stale_s)
        if self._state.due(doc, now):
            self._client.publish(self.topics.state, json.dumps(doc), qos=0, retain=True)
            self._state.sent(doc, now)

    def on_stop(self) -> None:
        """Say `offline` (retained) before a clean disconnect; a clean disconnect sends no last will."""
        if self._link_up:
            info = self._client.publish(self.topics.availability, "offline", qos=1, retain=True)
            for _ in range(10):
                if info.is_published() or self._client.loop(timeout=0.1) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
        self._socket_open = self._link_up = False
        self._client.disconnect()
        self._health.set_info(DEVICE, link="down")
