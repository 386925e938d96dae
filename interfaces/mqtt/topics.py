"""Topic layout and Home Assistant discovery documents (docs/mqtt.md). Pure functions of the config."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from config.mqtt import MqttConfig
from ems.model import Mode

__all__ = ["ENERGY_SENSORS", "Topics", "discovery_messages"]


@dataclass(frozen=True, slots=True)
class Topics:
    base: str
    availability: str
    state: str
    cmd_mode: str
    cmd_setpoint: str
    cmd_release: str
    cmd_prices: str
    cmd_import_cap: str
    cmd_result: str
    ha_status: str  # Home Assistant's birth/last-will topic: republish discovery on "online"
    node_id: str

    @classmethod
    def from_config(cls, cfg: MqttConfig, *, site_id: str) -> Topics:
        base = (cfg.base_topic or f"ems/{site_id}").rstrip("/")
        node = cfg.discovery.node_id or "ems_" + re.sub(r"[^A-Za-z0-9_-]", "_", site_id)
        return cls(
            base=base,
            availability=f"{base}/availability",
            state=f"{base}/state",
            cmd_mode=f"{base}/cmd/mode",
            cmd_setpoint=f"{base}/cmd/setpoint",
            cmd_release=f"{base}/cmd/release",
            cmd_prices=f"{base}/cmd/prices",
            cmd_import_cap=f"{base}/cmd/import_cap",
            cmd_result=f"{base}/cmd/result",
            ha_status=f"{cfg.discovery.prefix}/status",
            node_id=node,
        )

    def command_kinds(self) -> dict[str, str]:
        """Command topic -> command kind."""
        return {
            self.cmd_mode: "mode",
            self.cmd_setpoint: "setpoint",
            self.cmd_release: "release",
            self.cmd_prices: "prices",
            self.cmd_import_cap: "import_cap",
        }


# (state field = object id, name, device class, unit); each is a `measurement` sensor when it has a class
_SENSORS: tuple[tuple[str, str, str | None, str | None], ...] = (
    ("grid_power_w", "Grid power", "power", "W"),
    ("pv_power_w", "PV power", "power", "W"),
    ("ess_power_w", "Battery power", "power", "W"),
    ("load_power_w", "Load power", "power", "W"),
    ("soc_pct", "Battery SOC", "battery", "%"),
    ("setpoint_w", "Battery set-point", "power", "W"),
    ("written_w", "Battery command written", "power", "W"),
    ("state", "EMS state", None, None),
)
# Energy dashboard sensors (state field, name): device_class energy, state_class total_increasing, kWh
ENERGY_SENSORS: tuple[tuple[str, str], ...] = (
    ("grid_import_kwh", "Grid import energy"),
    ("grid_export_kwh", "Grid export energy"),
    ("battery_charge_kwh", "Battery charge energy"),
    ("battery_discharge_kwh", "Battery discharge energy"),
)


def discovery_messages(
    cfg: MqttConfig, topics: Topics, *, site_name: str, max_charge_w: float, max_discharge_w: float, currency: str = "EUR"
) -> list[tuple[str, str]]:
    """(topic, JSON payload) for every entity; published retained. An empty payload would remove one."""
    prefix, node = cfg.discovery.prefix, topics.node_id
    device = {"identifiers": [node], "name": site_name or node, "manufacturer": "EMS", "model": "EMS controller"}
    common: dict[str, object] = {
        "availability_topic": topics.availability,
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device,
    }
    out: list[tuple[str, str]] = []

    def add(component: str, object_id: str, doc: dict[str, object]) -> None:
        doc = {**doc, "unique_id": f"{node}_{object_id}", **common}
        out.append((f"{prefix}/{component}/{node}/{object_id}/config", json.dumps(doc, sort_keys=True)))

    for key, name, device_class, unit in _SENSORS:
        doc: dict[str, object] = {"name": name, "state_topic": topics.state, "value_template": f"{{{{ value_json.{key} }}}}"}
        if device_class is not None:
            doc |= {"device_class": device_class, "unit_of_measurement": unit, "state_class": "measurement"}
        add("sensor", key, doc)
    for key, name in ENERGY_SENSORS:  # a total that goes down (a restart without meter registers) counts as a reset
        add("sensor", key, {"name": name, "state_topic": topics.state, "value_template": f"{{{{ value_json.{key} }}}}",
                            "device_class": "energy", "state_class": "total_increasing", "unit_of_measurement": "kWh"})  # fmt: skip
    add(
        "sensor",
        "fault_causes",
        {
            "name": "Fault causes",
            "state_topic": topics.state,
            "value_template": "{{ value_json.fault_causes | join(',') if value_json.fault_causes else 'none' }}",
        },
    )
    add(
        "sensor",
        "plan_slot",
        {
            "name": "Plan slot followed",
            "state_topic": topics.state,
            "value_template": "{{ value_json.plan_slot if value_json.plan_slot is not none else 'none' }}",
            "icon": "mdi:calendar-clock",
        },
    )
    add(
        "sensor",
        "plan_savings_eur",
        {
            "name": "Plan expected savings",
            "state_topic": topics.state,
            "value_template": "{{ value_json.plan_savings_eur }}",
            "device_class": "monetary",
            "unit_of_measurement": currency,
        },
    )
    add(
        "select",
        "mode",
        {
            "name": "Run mode",
            "state_topic": topics.state,
            "value_template": "{{ value_json.mode }}",
            "command_topic": topics.cmd_mode,
            "command_template": '{"mode": "{{ value }}", "source": "home_assistant"}',
            "options": [m.value for m in Mode],
        },
    )
    ttl = cfg.discovery.setpoint_ttl_s
    add(
        "number",
        "external_setpoint",
        {
            "name": "External set-point",
            "state_topic": topics.state,
            # no set-point in force: "None" is the number's payload_reset, so Home Assistant shows "unknown", not 0 W
            "value_template": "{{ value_json.external_setpoint_w if value_json.external_setpoint_w is not none else 'None' }}",
            "payload_reset": "None",
            "command_topic": topics.cmd_setpoint,
            "command_template": (
                '{"power_w": {{ value }}, "ttl_s": ' + f"{ttl:g}" + ', "reason": "home_assistant", '
                '"seq": {{ (as_timestamp(now()) * 1000) | int }}, "source": "home_assistant"}'
            ),
            "min": -max_charge_w,
            "max": max_discharge_w,
            "step": 10,
            "mode": "box",
            "device_class": "power",
            "unit_of_measurement": "W",
        },
    )
    return out
