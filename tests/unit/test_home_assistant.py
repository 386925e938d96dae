"""Home Assistant discovery and state as HA reads them (issue 19): every key is one HA documents for the
component, Energy-dashboard sensors (energy, total_increasing, kWh), the set-point number 'unknown'
without a set-point, and a command seq that survives a client clock stepped back."""

from __future__ import annotations

import json

import jinja2
import pytest

from config import parse_config
from ems.clock import SimClock
from ems.context import EMSContext
from ems.model import Mode, Quantity
from interfaces.mqtt.commands import CommandHandler
from interfaces.mqtt.state import state_payload
from interfaces.mqtt.topics import ENERGY_SENSORS, Topics, discovery_messages
from tests.helpers.context import feed

# Keys of the MQTT discovery payloads as the Home Assistant docs list them (integrations/sensor.mqtt,
# number.mqtt, select.mqtt; the shared availability/device keys), full names (abbreviations unused).
_COMMON = {"availability_topic", "payload_available", "payload_not_available", "device", "name", "unique_id", "object_id",
           "state_topic", "value_template", "json_attributes_topic", "json_attributes_template", "entity_category", "icon",
           "enabled_by_default", "availability_mode", "availability_template", "qos", "encoding", "expire_after"}  # fmt: skip
HA_KEYS = {
    "sensor": _COMMON
    | {
        "device_class",
        "state_class",
        "unit_of_measurement",
        "suggested_display_precision",
        "force_update",
        "last_reset_value_template",
        "options",
    },
    "number": _COMMON
    | {
        "command_topic",
        "command_template",
        "min",
        "max",
        "step",
        "mode",
        "device_class",
        "unit_of_measurement",
        "payload_reset",
        "optimistic",
        "retain",
    },
    "select": _COMMON | {"command_topic", "command_template", "options", "optimistic", "retain"},
}
HA_DEVICE_KEYS = {"identifiers", "connections", "name", "manufacturer", "model", "sw_version", "hw_version", "configuration_url",
                  "suggested_area", "via_device", "serial_number", "model_id"}  # fmt: skip
# HA: a sensor with device_class energy and state_class total_increasing needs one of these units
HA_ENERGY_UNITS = {"Wh", "kWh", "MWh", "GWh", "J", "kJ", "MJ", "GJ"}


def _messages() -> dict[str, dict[str, object]]:
    cfg = parse_config({"site": {"id": "s1"}, "mqtt": {}}, {})
    topics = Topics.from_config(cfg.mqtt, site_id=cfg.site.id)
    return {t: json.loads(p) for t, p in discovery_messages(cfg.mqtt, topics, site_name="", max_charge_w=3000, max_discharge_w=3000)}


def _render(template: str, value_json: dict[str, object]) -> str:
    """HA renders value templates with Jinja2 (its `none` test and filters are Jinja2's)."""
    return jinja2.Environment(autoescape=False).from_string(template).render(value_json=value_json)


def test_every_discovery_key_is_one_home_assistant_documents() -> None:
    for topic, doc in _messages().items():
        component = topic.split("/")[1]
        assert set(doc) <= HA_KEYS[component], (topic, set(doc) - HA_KEYS[component])
        assert set(doc["device"]) <= HA_DEVICE_KEYS  # type: ignore[arg-type]


def test_energy_sensors_fit_the_energy_dashboard() -> None:
    msgs = _messages()
    for key, _name in ENERGY_SENSORS:
        doc = msgs[f"homeassistant/sensor/ems_s1/{key}/config"]
        assert (doc["device_class"], doc["state_class"]) == ("energy", "total_increasing")
        assert doc["unit_of_measurement"] in HA_ENERGY_UNITS and doc["unit_of_measurement"] == "kWh"
    assert {k for k, _ in ENERGY_SENSORS} == {"grid_import_kwh", "grid_export_kwh", "battery_charge_kwh", "battery_discharge_kwh"}


def test_the_state_carries_energy_totals_in_kwh_from_the_meter_or_integrated() -> None:
    clock = SimClock()
    ctx = EMSContext(clock=clock)
    for _ in range(3601):  # an hour at 1 Hz: 2 kW import, 1 kW discharge
        feed(ctx, {Quantity.GRID_POWER_W: 2000.0, Quantity.ESS_POWER_W: 1000.0})
        clock.advance(1.0)
    doc = state_payload(ctx.snapshot(), stale_s=3600)
    assert (doc["grid_import_kwh"], doc["grid_export_kwh"], doc["battery_discharge_kwh"], doc["battery_charge_kwh"]) == (2.0, 0.0, 1.0, 0.0)
    feed(ctx, {Quantity.GRID_IMPORT_WH: 123_456.0}, source="meter")
    assert state_payload(ctx.snapshot(), stale_s=3600)["grid_import_kwh"] == 123.456  # the meter's register wins
    tpl = str(_messages()["homeassistant/sensor/ems_s1/grid_import_kwh/config"]["value_template"])
    assert _render(tpl, doc) == "2.0"


def test_the_setpoint_number_is_unknown_without_a_setpoint_not_0_w() -> None:
    doc = _messages()["homeassistant/number/ems_s1/external_setpoint/config"]
    tpl = str(doc["value_template"])
    assert _render(tpl, {"external_setpoint_w": None}) == doc["payload_reset"] == "None"  # HA: payload_reset -> unknown
    assert _render(tpl, {"external_setpoint_w": -1500.0}) == "-1500.0"


@pytest.fixture
def handler() -> tuple[CommandHandler, EMSContext]:
    ctx = EMSContext(clock=SimClock(), max_ttl_s=3600)
    h = CommandHandler(requests=ctx.requests, counters=ctx.counters, max_ttl_s=3600, release_mode=Mode.IDLE, seq_reset_s=60)
    return h, ctx


def _sp(seq: int, power_w: float) -> bytes:
    return json.dumps({"power_w": power_w, "ttl_s": 60, "reason": "ha", "seq": seq, "source": "home_assistant"}).encode()


def test_a_client_clock_step_back_is_accepted_after_the_reset_window(handler: tuple[CommandHandler, EMSContext]) -> None:
    h, ctx = handler
    t_ms = 1_767_225_600_000  # Home Assistant's seq: its clock in ms
    assert h.handle("setpoint", _sp(t_ms, 1000), now_s=0.0)["status"] == "accepted"
    assert h.handle("setpoint", _sp(t_ms, 1000), now_s=1.0)["error"] == "duplicate"  # a re-delivery stays ignored
    stepped = t_ms - 3_600_000  # the client's clock went back an hour (NTP fix, restart with a wrong RTC)
    assert h.handle("setpoint", _sp(stepped, 1200), now_s=30.0)["error"] == "out_of_order"  # inside the window
    r = h.handle("setpoint", _sp(stepped + 50_000, 1300), now_s=61.0)  # the window has passed: a new stream
    assert r["status"] == "accepted"
    sp = ctx.snapshot().external_setpoint
    assert sp is not None and sp.power_w == 1300
    assert h.handle("setpoint", _sp(stepped + 10_000, 900), now_s=62.0)["error"] == "out_of_order"  # and it holds again
