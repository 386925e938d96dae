"""`mqtt:` section: MQTT broker, commands, ingest and state publishing (issue: MQTT).

Topic layout (docs/mqtt.md): everything lives under `base_topic` (default `ems/<site.id>`):
`<base>/availability`, `<base>/state`, `<base>/cmd/{mode,setpoint,release}`, `<base>/cmd/result`.
Measurement ingest topics are free (another device's topics); one topic may feed several quantities
(one entry each, e.g. two JSON paths of one payload), a quantity comes from one entry only.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, model_validator

from config.common import SecretRef, Section
from ems.model import Quantity

__all__ = ["UNITS", "DiscoveryConfig", "IngestTopic", "MqttConfig", "TlsConfig"]

# Accepted units per quantity suffix, as the factor to the SI unit of the quantity name (DESIGN §2).
UNITS: dict[str, dict[str, float]] = {
    "_w": {"W": 1.0, "kW": 1000.0, "MW": 1e6},
    "_wh": {"Wh": 1.0, "kWh": 1000.0, "MWh": 1e6},
    "_pct": {"%": 1.0, "ratio": 100.0},
    "_v": {"V": 1.0, "kV": 1000.0},
    "_a": {"A": 1.0, "mA": 0.001},
    "_degc": {"degC": 1.0, "°C": 1.0},
    "_hz": {"Hz": 1.0},
}
_TOPIC_CHARS = re.compile(r"^[^#+\x00]+$")


def unit_factor(quantity: Quantity, unit: str | None) -> float | None:
    """Factor from `unit` to the SI unit of `quantity` (None = already SI); None when they do not fit."""
    if unit is None:
        return 1.0
    for suffix, table in sorted(UNITS.items(), key=lambda kv: -len(kv[0])):
        if quantity.value.endswith(suffix):
            return table.get(unit)
    return None  # unitless quantities (flags, status codes) take no unit


class TlsConfig(Section):
    enabled: bool = Field(False, description="connect with TLS (the broker's certificate is always verified)")
    ca_file: Path | None = Field(None, description="CA bundle that signed the broker certificate (null = system CAs)")
    cert_file: Path | None = Field(None, description="client certificate for mutual TLS (optional)")
    key_file: Path | None = Field(None, description="client private key for mutual TLS (optional)")

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file: give both cert_file and key_file for mutual TLS, or neither")
        return self


class DiscoveryConfig(Section):
    enabled: bool = Field(True, description="publish Home Assistant MQTT discovery configs (retained)")
    prefix: str = Field(
        "homeassistant", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_/-]+$", description="Home Assistant discovery prefix"
    )
    node_id: str = Field("", max_length=64, pattern=r"^[A-Za-z0-9_-]*$", description="discovery node id (empty = ems_<site.id>)")
    setpoint_ttl_s: float = Field(900.0, gt=0, le=86400, description="TTL sent with a set-point from the Home Assistant number entity, s")


class IngestTopic(Section):
    topic: str = Field(..., min_length=1, max_length=256, description="MQTT topic to subscribe to (no wildcards)")
    quantity: Quantity = Field(..., description="context field fed by this topic (e.g. pv_power_w, grid_power_w)")
    json_path: str | None = Field(
        None, max_length=200, description="dotted path into a JSON payload (e.g. power.total); null = the payload is a plain number"
    )
    unit: str | None = Field(
        None,
        description="unit of the published number (W, kW, Wh, kWh, %, ratio, V, A, degC, Hz); converted to the quantity's SI unit (null = already SI)",
    )
    invert: bool = Field(False, description="flip the sign (e.g. a meter that publishes export as positive)")
    accept_retained: bool = Field(False, description="also use retained messages (their age is unknown, so off by default)")

    @model_validator(mode="after")
    def _valid(self) -> IngestTopic:
        if not _TOPIC_CHARS.match(self.topic):
            raise ValueError(f"topic: must be a plain topic without wildcards (got {self.topic!r})")
        if unit_factor(self.quantity, self.unit) is None:
            raise ValueError(f"unit: {self.unit!r} does not fit {self.quantity.value}")
        return self


class MqttConfig(Section):
    enabled: bool = Field(False, description="start this part")
    host: str = Field("127.0.0.1", min_length=1, description="broker host name or address")
    port: int = Field(1883, ge=1, le=65535, description="broker TCP port (8883 is usual with TLS)")
    client_id: str = Field("", max_length=64, description="MQTT client id (empty = ems-<site.id>)")
    username: str | None = Field(None, description="user name (null = anonymous)")
    password: SecretRef | None = Field(None, description="password: {env: NAME} or {file: PATH}")
    tls: TlsConfig = Field(default_factory=TlsConfig, description="TLS to the broker")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keep-alive; the broker publishes the last will after 1.5x this, s")
    connect_timeout_s: float = Field(5.0, gt=0, le=60, description="TCP/TLS connect timeout, s")
    reconnect_min_s: float = Field(1.0, gt=0, le=600, description="first reconnect delay; doubles after each failure, s")
    reconnect_max_s: float = Field(60.0, gt=0, le=3600, description="longest reconnect delay, s")
    base_topic: str = Field("", max_length=200, description="root of the EMS topics (empty = ems/<site.id>)")
    state_min_interval_s: float = Field(1.0, ge=0.1, le=3600, description="retained state is published on change, at most once per this, s")
    state_stale_s: float = Field(3.0, gt=0, le=3600, description="a measurement older than this is published as null, s")
    seq_reset_s: float = Field(
        60.0,
        gt=0,
        le=86400,
        description="a command seq at or below the last accepted one is ignored while that one is younger than this; later a lower seq is accepted (a restarted client, a clock stepped back), s",
    )
    log_interval_s: float = Field(30.0, ge=0, le=3600, description="at most one log line per kind of bad input per this, s")
    discovery: DiscoveryConfig = Field(default_factory=DiscoveryConfig, description="Home Assistant discovery")
    ingest: tuple[IngestTopic, ...] = Field((), description="measurement topics that feed context fields")

    @model_validator(mode="after")
    def _consistent(self) -> MqttConfig:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(f"reconnect_min_s: must be <= reconnect_max_s (got {self.reconnect_min_s:g} > {self.reconnect_max_s:g})")
        if self.base_topic and not _TOPIC_CHARS.match(self.base_topic):
            raise ValueError(f"base_topic: must not contain wildcards (got {self.base_topic!r})")
        if self.password is not None and self.username is None:
            raise ValueError("username: a password is set but no username")
        fed = [t.quantity.value for t in self.ingest]
        dup = sorted({q for q in fed if fed.count(q) > 1})
        if dup:
            raise ValueError(f"ingest: quantity fed by more than one entry: {', '.join(dup)}")
        return self
