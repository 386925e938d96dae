"""Root of the config: one model per YAML section (STYLE S8)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from enum import StrEnum
from typing import Any

from pydantic import Field, model_validator

from config.api import ApiConfig
from config.can import CanConfig
from config.common import Section
from config.control import ControlConfig
from config.modbus import ModbusConfig
from config.mqtt import MqttConfig
from config.planner import PlannerConfig
from config.plausibility import PlausibilityConfig
from config.store import StoreConfig
from config.tariff import TariffConfig
from config.uplink import UplinkConfig
from ems.controller import ControllerConfig
from ems.core import CoreConfig
from ems.model import Quantity
from ems.plausibility import Window

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


# planner section -> (its key, the control key it defaults from)
_FROM_CONTROL: dict[str, tuple[tuple[str, str], ...]] = {
    "battery": (
        ("soc_min_pct", "soc_min_pct"),
        ("soc_max_pct", "soc_max_pct"),
        ("max_charge_w", "max_charge_w"),
        ("max_discharge_w", "max_discharge_w"),
    ),
    "grid": (("import_max_w", "max_import_w"), ("export_max_w", "max_export_w")),
}


class EMSConfig(Section):
    site: SiteConfig = Field(default_factory=SiteConfig, description="site identity")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="log output")
    control: ControlConfig = Field(default_factory=ControlConfig, description="state machine, control law and limits")
    plausibility: PlausibilityConfig = Field(
        default_factory=PlausibilityConfig, description="the site facts readings are checked against (implausible = no reading)"
    )
    modbus: ModbusConfig = Field(default_factory=ModbusConfig, description="Modbus devices (ESS, grid meter)")
    can: CanConfig = Field(default_factory=CanConfig, description="CAN BMS")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="MQTT")
    store: StoreConfig = Field(default_factory=StoreConfig, description="SQLite persistence")
    uplink: UplinkConfig = Field(default_factory=UplinkConfig, description="cloud uplink")
    api: ApiConfig = Field(default_factory=ApiConfig, description="REST API")
    tariff: TariffConfig = Field(default_factory=TariffConfig, description="import and export prices, price source (docs/scheduling.md)")
    planner: PlannerConfig = Field(
        default_factory=PlannerConfig, description="price- and forecast-aware schedule (off by default; docs/scheduling.md)"
    )

    @model_validator(mode="before")
    @classmethod
    def _planner_defaults(cls, data: Any) -> Any:
        """The planner's battery window and power limits (and grid caps) default from `control:`."""
        if not isinstance(data, dict):
            return data
        planner = data.get("planner")
        control = data.get("control")
        control = control if isinstance(control, dict) else {}
        if planner is not None and not isinstance(planner, dict):
            return data  # the type error is reported by the field itself
        planner = dict(planner or {})

        def ctl(key: str) -> Any:
            return control.get(key, ControlConfig.model_fields[key].default)

        lo, hi = ctl("soc_min_pct"), ctl("soc_max_pct")
        window_ok = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lo, hi)) and lo < hi
        for section, pairs in _FROM_CONTROL.items():
            sub = planner.get(section)
            if sub is not None and not isinstance(sub, dict):
                continue
            sub = dict(sub or {})
            for key, control_key in pairs:
                if key in sub or (key.startswith("soc_") and not window_ok):  # a bad control window is reported once, there
                    continue
                value = ctl(control_key)
                if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
                    sub[key] = value
            planner[section] = sub
        return {**data, "planner": planner}

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
    def _planner_consistent(self) -> EMSConfig:
        """The plan may only be narrower than the loop's limits (the limits apply after it anyway)."""
        if not self.planner.enabled:
            return self
        c, b, g = self.control, self.planner.battery, self.planner.grid
        checks = (
            (
                b.soc_min_pct < c.soc_min_pct,
                f"planner.battery.soc_min_pct: must be >= control.soc_min_pct (got {b.soc_min_pct:g} < {c.soc_min_pct:g}; the loop does not discharge below it)",
            ),
            (
                b.soc_max_pct > c.soc_max_pct,
                f"planner.battery.soc_max_pct: must be <= control.soc_max_pct (got {b.soc_max_pct:g} > {c.soc_max_pct:g}; the loop does not charge above it)",
            ),
            (
                b.max_charge_w > c.max_charge_w,
                f"planner.battery.max_charge_w: must be <= control.max_charge_w (got {b.max_charge_w:g} > {c.max_charge_w:g})",
            ),
            (
                b.max_discharge_w > c.max_discharge_w,
                f"planner.battery.max_discharge_w: must be <= control.max_discharge_w (got {b.max_discharge_w:g} > {c.max_discharge_w:g})",
            ),
            (
                c.max_import_w is not None and (g.import_max_w is None or g.import_max_w > c.max_import_w),
                f"planner.grid.import_max_w: must be set and <= control.max_import_w ({c.max_import_w})",
            ),
            (
                c.max_export_w is not None and (g.export_max_w is None or g.export_max_w > c.max_export_w),
                f"planner.grid.export_max_w: must be set and <= control.max_export_w ({c.max_export_w})",
            ),
            (
                self.planner.max_plan_age_s <= self.planner.replan_s,
                f"planner.max_plan_age_s: must be > planner.replan_s (got {self.planner.max_plan_age_s:g} <= {self.planner.replan_s:g}; a plan would lapse before the next one)",
            ),
            (
                not self.store.enabled,
                "planner.enabled: needs store.enabled: true (the load and PV forecasts are fitted on the store's history; prices are cached there)",
            ),
        )
        for bad, message in checks:
            if bad:
                raise ValueError(message)
        return self

    def core(self) -> CoreConfig:
        """The pure core's config with the site's cross-checks (control: + plausibility:)."""
        return replace(self.control.core(), cross_checks=self.plausibility.checks())

    def controller(self) -> ControllerConfig:
        return replace(self.control.controller(), core=self.core())

    def windows(self) -> Mapping[Quantity, Window]:
        return self.plausibility.site_windows(max_charge_w=self.control.max_charge_w, max_discharge_w=self.control.max_discharge_w)

    @model_validator(mode="after")
    def _uplink_needs_store(self) -> EMSConfig:
        """The uplink outbox lives in the SQLite store (docs/persistence.md)."""
        if self.uplink.enabled and not self.store.enabled:
            raise ValueError("uplink.enabled: needs store.enabled: true (the outbox lives in the store)")
        return self
