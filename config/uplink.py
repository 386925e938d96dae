"""`uplink:` section: 5-minute batches posted over HTTPS or published to an MQTT broker, and the
cloud's signed command queue (DESIGN.md §6, docs/persistence.md, docs/uplink.md)."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path

from pydantic import Field, model_validator

from config.common import SecretRef, Section
from config.mqtt import TlsConfig

__all__ = ["UplinkCommandsConfig", "UplinkConfig", "UplinkMqttConfig", "UplinkTlsConfig", "UplinkTransport"]

_TOPIC_PREFIX = re.compile(r"^[A-Za-z0-9_./-]+$")


class UplinkTransport(StrEnum):
    HTTPS = "https"
    MQTT = "mqtt"


class UplinkCommandsConfig(Section):
    enabled: bool = Field(
        False,
        description="fetch the receiver's signed commands (mode, set-point, release, prices, import cap) and execute them through the audited request path (https transport)",
    )
    url: str = Field(
        "",
        max_length=2000,
        description="GET endpoint of this site's queued commands (empty = <uplink.url without its last segment>/sites/<site.id>/commands)",
    )
    poll_s: float = Field(
        30.0, ge=0.1, le=3600, description="fetch commands this often (also with each batch exchange: the POST answer carries them), s"
    )
    max_skew_s: float = Field(300.0, ge=0, le=3600, description="clock difference to the receiver tolerated on issued_at / expires_at, s")
    max_age_s: float = Field(
        3600.0,
        gt=0,
        le=7 * 86400,
        description="a command issued longer ago than this is expired whatever its expires_at (bounds how long nonces matter), s",
    )
    max_per_poll: int = Field(20, ge=1, le=200, description="at most this many commands are handled per answer (the rest come next time)")


class UplinkTlsConfig(TlsConfig):
    enabled: bool = Field(True, description="connect with TLS (required for the uplink; the broker's certificate is always verified)")


class UplinkMqttConfig(Section):
    host: str = Field("", max_length=253, description="broker host name or address (uplink.transport mqtt)")
    port: int = Field(8883, ge=1, le=65535, description="broker TCP port (TLS)")
    username: str = Field(
        "", max_length=128, description="this site's broker user (empty = site.id); the broker's ACL lets it write its own topic only"
    )
    password: SecretRef | None = Field(None, description="this site's broker password: {env: NAME} or {file: PATH}")
    tls: UplinkTlsConfig = Field(
        default_factory=UplinkTlsConfig, description="TLS to the broker (required: the broker's certificate is verified)"
    )
    client_id: str = Field("", max_length=64, description="MQTT client id, the persistent session's name (empty = ems-uplink-<site.id>)")
    topic_prefix: str = Field("ems", min_length=1, max_length=200, description="batches go to <topic_prefix>/<site.id>/batches")
    keepalive_s: int = Field(60, ge=5, le=3600, description="MQTT keep-alive, s")
    session_expiry_s: int = Field(
        7 * 86400, ge=0, le=2**32 - 1, description="the broker keeps this client's session this long after a disconnect (MQTT 5), s"
    )

    @model_validator(mode="after")
    def _valid(self) -> UplinkMqttConfig:
        if not _TOPIC_PREFIX.match(self.topic_prefix) or self.topic_prefix.startswith("/") or self.topic_prefix.endswith("/"):
            raise ValueError(f"topic_prefix: letters, digits, _ . - and inner / only (got {self.topic_prefix!r})")
        return self


class UplinkConfig(Section):
    enabled: bool = Field(False, description="build 5-minute batches into the outbox and start the sender (needs store.enabled)")
    transport: UplinkTransport = Field(
        UplinkTransport.HTTPS,
        description="https: POST each batch to uplink.url; mqtt: publish it (QoS 1, same body and signature) to uplink.mqtt's broker",
    )
    url: str = Field("", max_length=2000, description="receiver endpoint, https://host[:port]/path; batches are POSTed here")
    ca_file: Path | None = Field(
        None, description="PEM CA bundle to verify the receiver with (null = the system CAs, e.g. /etc/ssl/certs/ca-certificates.crt)"
    )
    token: SecretRef | None = Field(None, description="bearer token sent as `Authorization: Bearer`: {env: NAME} or {file: PATH}")
    hmac_key: SecretRef | None = Field(
        None, description="key of the X-EMS-Signature HMAC-SHA256 (and of the commands' signatures): {env: NAME} or {file: PATH}"
    )
    timeout_s: float = Field(
        5.0,
        gt=0,
        le=60,
        description="connect and read timeout of one POST (or one publish's PUBACK); keep it well under control.worker_stall_s, s",
    )
    backoff_initial_s: float = Field(2.0, gt=0, le=3600, description="first retry delay after a network error, 5xx, 408 or 429, s")
    backoff_max_s: float = Field(600.0, gt=0, le=86400, description="longest retry delay (exponential backoff stops growing here), s")
    backoff_jitter_s: float = Field(2.0, ge=0, le=3600, description="random extra delay added to each retry (0..this), s")
    retry_after_max_s: float = Field(3600.0, gt=0, le=86400, description="a receiver's Retry-After is honoured up to this, s")
    idle_poll_s: float = Field(
        5.0, gt=0, le=600, description="with nothing to send, look at the outbox this often (new batches also wake the sender), s"
    )
    mqtt: UplinkMqttConfig = Field(default_factory=UplinkMqttConfig, description="the broker of uplink.transport mqtt")
    commands: UplinkCommandsConfig = Field(default_factory=UplinkCommandsConfig, description="the cloud's command queue")

    @model_validator(mode="after")
    def _complete(self) -> UplinkConfig:
        if not self.enabled:
            return self
        if self.hmac_key is None:
            raise ValueError("hmac_key: required when uplink.enabled ({env: NAME} or {file: PATH})")
        if self.transport is UplinkTransport.MQTT:
            m = self.mqtt
            if not m.host:
                raise ValueError("mqtt.host: required with uplink.transport mqtt")
            if m.password is None:
                raise ValueError("mqtt.password: required with uplink.transport mqtt (the site's own broker credentials)")
            if not m.tls.enabled:
                raise ValueError("mqtt.tls.enabled: must be true with uplink.transport mqtt (batches travel only over verified TLS)")
            if self.commands.enabled:
                raise ValueError("commands.enabled: the command queue needs uplink.transport https (not available over mqtt yet)")
            return self
        if not self.url.startswith("https://"):
            raise ValueError(f"url: must be an https:// URL when uplink.enabled (got {self.url!r})")
        if self.token is None:
            raise ValueError("token: required when uplink.enabled ({env: NAME} or {file: PATH})")
        if self.commands.url and not self.commands.url.startswith("https://"):
            raise ValueError(f"commands.url: must be an https:// URL (got {self.commands.url!r})")
        return self
