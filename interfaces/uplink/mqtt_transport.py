"""The uplink over MQTT (uplink.transport mqtt, docs/uplink.md): the same signed gzip batches,
published QoS 1 to `<topic_prefix>/<site.id>/batches` on a fleet broker.

MQTT 5 (paho-mqtt 2), TLS with the broker's certificate verified, the site's own user and password
(the broker's ACL lets it write its own topic only), a persistent session (`clean_start` false, a
session expiry). The batch's signature travels as user properties: `X-EMS-Timestamp`,
`X-EMS-Signature` (the same HMAC over timestamp + "." + body as over HTTPS), `X-EMS-Batch-Id`,
`Content-Encoding: gzip`; content type `application/json`; the payload is the outbox body as is.

One message in flight: a row is delivered only when its PUBACK arrives with a success code (the
sender then goes to the next row), so order is the outbox's. The sender's thread drives the client
(`client.loop()` here, no paho thread). On any link failure the client is dropped and a fresh one
connects for the next attempt, so paho keeps no hidden queue of its own: the outbox is the only one,
and a batch whose PUBACK was lost is published again (at least once; the backend drops duplicates
by batch id, as the HTTPS receiver does). A PUBACK timeout on a live link waits for that same
message again rather than publishing a copy.
"""

from __future__ import annotations

import contextlib
import ssl
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from config.uplink import UplinkConfig
from ems.clock import Clock
from interfaces.uplink.signing import BATCH_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from interfaces.uplink.transport import Outcome, TransientError

__all__ = ["MqttTransport", "batch_topic"]

_STEP_S = 0.05  # longest block in one client.loop()
_RETRY_CODES = frozenset({0x80, 0x83, 0x97})  # unspecified, implementation specific, quota exceeded: try again later


def batch_topic(prefix: str, site_id: str) -> str:
    return f"{prefix}/{site_id}/batches"


class MqttTransport:
    kind = "mqtt"
    status_key = "mqtt_reason_code"

    def __init__(self, cfg: UplinkConfig, *, site_id: str, clock: Clock) -> None:
        m = cfg.mqtt
        if cfg.hmac_key is None or cfg.hmac_key.value is None or m.password is None or m.password.value is None:
            raise ValueError("uplink.hmac_key and uplink.mqtt.password must be resolved secrets")
        self.cfg = cfg
        self.topic = batch_topic(m.topic_prefix, site_id)
        self.where = f"{m.host}:{m.port}/{self.topic}"
        self._client_id = m.client_id or f"ems-uplink-{site_id}"
        self._username = m.username or site_id
        self._password = m.password.value
        self._key = cfg.hmac_key.value.encode()
        self._clock = clock
        self._steps = max(1, round(cfg.timeout_s / _STEP_S))  # a wait's budget in loop steps (real time; the clock may be simulated)
        self._client: mqtt.Client | None = None
        self._connected = False
        self._refused: str | None = None  # CONNACK refusal
        self._lost: str | None = None  # why the link went down
        self._inflight: tuple[str, int] | None = None  # (batch id, mid) published on this client, PUBACK not seen
        self._acks: dict[int, Any] = {}  # mid -> PUBACK reason code

    # ---- the link -------------------------------------------------------------------------
    def _new_client(self) -> mqtt.Client:
        m = self.cfg.mqtt
        c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=self._client_id, protocol=mqtt.MQTTv5)
        c.connect_timeout = self.cfg.timeout_s
        c.username_pw_set(self._username, self._password)
        c.tls_set(
            ca_certs=None if m.tls.ca_file is None else str(m.tls.ca_file),
            certfile=None if m.tls.cert_file is None else str(m.tls.cert_file),
            keyfile=None if m.tls.key_file is None else str(m.tls.key_file),
            cert_reqs=ssl.CERT_REQUIRED,
        )
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = m.session_expiry_s
        c.connect_async(m.host, m.port, keepalive=m.keepalive_s, clean_start=False, properties=props)  # no I/O yet
        return c

    def _on_connect(self, _c: mqtt.Client, _u: Any, _f: Any, reason_code: Any, _p: Any) -> None:
        if reason_code.is_failure:
            self._refused = str(reason_code)
        else:
            self._connected = True

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason_code: Any, _p: Any) -> None:
        self._connected = False
        self._lost = str(reason_code)

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, reason_code: Any, _p: Any) -> None:
        self._acks[mid] = reason_code

    def _reset(self) -> None:
        """Drop the client (and whatever it held); the next attempt connects a fresh one."""
        c, self._client = self._client, None
        self._connected, self._inflight, self._refused = False, None, None
        self._acks.clear()
        if c is not None:
            with contextlib.suppress(OSError, ValueError):  # it is going anyway
                c.disconnect()
                c.loop(timeout=0)  # writes the DISCONNECT (paho then closes the socket) or finds it dead (closes it too)

    def _connect(self) -> Outcome | None:
        """Connected, or the retry outcome saying why not."""
        if self._client is not None and self._connected:
            return None
        self._reset()
        self._client = c = self._new_client()
        self._lost = None
        try:
            c.reconnect()  # TCP + TLS handshake + CONNECT
        except (OSError, ValueError) as exc:  # refused, unreachable, TLS verification, a bad host name
            self._reset()
            return Outcome("retry", reason=type(exc).__name__, detail=str(exc))
        for _ in range(self._steps):
            if self._connected or self._refused is not None:
                break
            if c.loop(timeout=_STEP_S) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
        if not self._connected:
            why = f"connect_refused: {self._refused}" if self._refused else ("link_lost" if self._lost else "connack_timeout")
            detail = self._refused or self._lost or ""
            self._reset()
            return Outcome("retry", reason=why.split(":")[0], detail=why if not detail else f"{why} ({detail})")
        return None

    # ---- Transport --------------------------------------------------------------------------
    def send(self, batch_id: str, body: bytes) -> Outcome:
        if self._inflight is not None and self._inflight[0] != batch_id:
            self._inflight = None  # another row now (the last one was given up on): never mix their PUBACKs
        failed = self._connect()
        if failed is not None:
            return failed
        c = self._client
        assert c is not None
        if self._inflight is None:
            ts = str(int(self._clock.wall().timestamp()))
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.UserProperty = [
                (TIMESTAMP_HEADER, ts),
                (SIGNATURE_HEADER, sign(self._key, ts, body)),
                (BATCH_HEADER, batch_id),
                ("Content-Encoding", "gzip"),
            ]
            props.ContentType = "application/json"
            info = c.publish(self.topic, body, qos=1, retain=False, properties=props)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._reset()
                return Outcome("retry", reason="publish_failed", detail=mqtt.error_string(info.rc))
            self._inflight = (batch_id, info.mid)
        mid = self._inflight[1]
        for _ in range(self._steps):
            if mid in self._acks:
                break
            if c.loop(timeout=_STEP_S) != MQTTErrorCode.MQTT_ERR_SUCCESS or not self._connected:
                lost = self._lost or "link_lost"
                self._reset()
                return Outcome("retry", reason="link_lost", detail=lost)
        code = self._acks.pop(mid, None)
        if code is None:
            return Outcome("retry", reason="puback_timeout", detail=f"no PUBACK within {self.cfg.timeout_s:g} s")
        self._inflight = None
        if not code.is_failure:
            return Outcome("delivered", status=int(code.value))
        if int(code.value) in _RETRY_CODES:
            return Outcome("retry", reason=f"puback_{int(code.value):#04x}", detail=str(code), status=int(code.value))
        return Outcome("refused", detail=f"PUBACK {code} ({int(code.value):#04x})", status=int(code.value))

    def fetch_commands(self) -> tuple[object, ...]:
        raise TransientError("commands_not_supported")  # the config refuses uplink.commands with transport mqtt

    def service(self) -> None:
        """Keep-alive between sends (PINGREQ when due); a dead link is dropped here."""
        c = self._client
        if c is None or not self._connected:
            return
        try:
            rc = c.loop(timeout=0)
        except OSError:
            rc = MQTTErrorCode.MQTT_ERR_CONN_LOST
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or not self._connected:
            self._reset()

    def close(self) -> None:
        self._reset()
