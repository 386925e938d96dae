"""Root of the config: one model per YAML section (STYLE S8)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, model_validator

from config.api import ApiConfig
from config.can import CanConfig
from config.common import Section
from config.control import ControlConfig
from config.modbus import ModbusConfig
from config.mqtt import MqttConfig
from config.store import StoreConfig
from config.uplink import UplinkConfig

__all__ = ["EMSConfig", "LogFormat", "LoggingConfig", "SiteConfig"]


class LogFormat(StrEnum):
    AUTO = "auto"
    JSON = "json"
    CONSOLE = "console"


class SiteConfig(Section):
    id: str = Field(
        "site-001",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="site identifier used in uplink batches and MQTT topics",
    )
    name: str = Field("", max_length=200, description="human-readable site name")


class LoggingConfig(Section):
    format: LogFormat = Field(LogFormat.AUTO, description="auto = readable console on a TTY, JSON otherwise (e.g. under systemd)")
    level: str = Field(
        "info", pattern=r"^(?i:debug|info|warning|error|critical)$", description="minimum level: debug, info, warning, error, critical"
    )


class EMSConfig(Section):
    site: SiteConfig = Field(default_factory=SiteConfig, description="site identity")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="log output")
    control: ControlConfig = Field(default_factory=ControlConfig, description="state machine, control law and limits")
    modbus: ModbusConfig = Field(default_factory=ModbusConfig, description="Modbus devices (ESS, grid meter)")
    can: CanConfig = Field(default_factory=CanConfig, description="CAN BMS")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="MQTT")
    store: StoreConfig = Field(default_factory=StoreConfig, description="SQLite persistence")
    uplink: UplinkConfig = Field(default_factory=UplinkConfig, description="cloud uplink")
    api: ApiConfig = Field(default_factory=ApiConfig, description="REST API")

    @model_validator(mode="after")
    def _can_sources_required(self) -> EMSConfig:
        """With the CAN BMS on, a silent BMS must be a FAULT: its fields are required sources."""
        if self.can.enabled:
            missing = [q.value for q in self.can.required_sources if q not in self.control.required_sources]
            if missing:
                raise ValueError(
                    f"control.required_sources: with can.enabled, add {', '.join(missing)} (a silent BMS must mean FAULT; see docs/can.md)"
                )
        return self

    @model_validator(mode="after")
    def _uplink_needs_store(self) -> EMSConfig:
        """The uplink outbox lives in the SQLite store (docs/persistence.md)."""
        if self.uplink.enabled and not self.store.enabled:
            raise ValueError("uplink.enabled: needs store.enabled: true (the outbox lives in the store)")
        return self
