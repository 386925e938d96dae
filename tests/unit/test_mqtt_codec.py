"""Pure parts of the MQTT interface: command schema and ordering, ingest decoding, state document, discovery."""

from __future__ import annotations

import json

import pytest

from config import ConfigError, parse_config
from config.mqtt import IngestTopic
from ems.clock import SimClock
from ems.context import EMSContext
from ems.model import Mode, Quantity, State
from interfaces.logs import LogGate
from interfaces.mqtt.commands import CommandError, CommandHandler, SeqGate, SetpointCommand, parse_command
from interfaces.mqtt.ingest import IngestError, IngestRule, decode
from interfaces.mqtt.state import StateGate, state_payload
from interfaces.mqtt.topics import Topics, discovery_messages
from tests.helpers.context import feed, publish


def sp(**kw: object) -> bytes:
    return json.dumps({"power_w": 1000, "ttl_s": 60, "reason": "r", "seq": 1} | kw).encode()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b"\xff\xfe", "payload"),
        (b"[]", "payload"),
        (sp(power_w=None), "power_w"),
        (sp(power_w=True), "power_w"),
        (sp(power_w=2e7), "power_w"),
        (sp(ttl_s=0), "ttl_s"),
        (sp(ttl_s=7200), "ttl_s"),  # above the configured maximum
        (sp(reason="x" * 201), "reason"),
        (sp(seq=-1), "seq"),
        (sp(seq=1.5), "seq"),
        (sp(source="a b"), "source"),
        (sp(colour="red"), "colour"),
    ],
)
def test_setpoint_schema_names_the_bad_field(payload: bytes, field: str) -> None:
    err = parse_command("setpoint", payload, max_ttl_s=3600)
    assert isinstance(err, CommandError) and err.field == field


def test_a_good_setpoint_parses_and_a_bad_one_keeps_its_seq_for_the_reply() -> None:
    ok = parse_command("setpoint", sp(power_w=-2500.5, seq=9), max_ttl_s=3600)
    assert isinstance(ok, SetpointCommand) and ok.power_w == -2500.5 and ok.seq == 9
    bad = parse_command("setpoint", sp(ttl_s=-1, seq=12), max_ttl_s=3600)
    assert isinstance(bad, CommandError) and bad.seq == 12


def test_seq_gate_ignores_duplicates_and_older_commands_per_stream() -> None:
    gate = SeqGate()
    assert gate.verdict("setpoint:", 5) is None
    gate.accept("setpoint:", 5)
    assert gate.verdict("setpoint:", 5) == "duplicate"
    assert gate.verdict("setpoint:", 4) == "out_of_order"
    assert gate.verdict("setpoint:", 6) is None
    assert gate.verdict("setpoint:other", 1) is None  # another sender has its own sequence
    assert gate.verdict("setpoint:", None) is None


def test_command_handler_goes_through_the_audited_context_methods() -> None:
    clock = SimClock()
    ctx = EMSContext(clock=clock, start_mode=Mode.SELF_CONSUMPTION)
    h = CommandHandler(requests=ctx.requests, counters=ctx.counters, max_ttl_s=600, release_mode=Mode.SELF_CONSUMPTION)
    assert h.handle("setpoint", sp(seq=1, source="agg"))["status"] == "accepted"
    sp_now = ctx.snapshot().external_setpoint
    assert sp_now is not None and sp_now.power_w == 1000.0 and sp_now.seq == 1 and sp_now.source == "mqtt:agg"
    assert h.handle("setpoint", sp(seq=1, source="agg"))["status"] == "ignored"
    assert h.handle("release", b'{"seq": 1, "source": "agg"}')["error"] == "duplicate"  # release shares the set-point stream
    assert h.handle("release", b'{"seq": 2, "source": "agg"}')["status"] == "accepted"
    snap = ctx.snapshot()
    assert snap.external_setpoint is None and snap.requested_mode is Mode.SELF_CONSUMPTION
    assert h.handle("mode", b'{"mode": "IDLE"}', retained=True)["field"] == "retain"
    assert [e.data["what"] for e in ctx.events.since(0) if e.kind == "audit"] == ["setpoint", "release"]
    assert snap.counters["mqtt_cmd_accepted"] == 2 and snap.counters["mqtt_cmd_ignored"] == 2


def rule(**kw: object) -> IngestRule:
    return IngestRule.from_config(IngestTopic.model_validate({"topic": "t", "quantity": "pv_power_w"} | kw))


def test_ingest_decodes_units_paths_and_sign() -> None:
    assert decode(rule(), b"1500") == 1500.0
    assert decode(rule(unit="kW"), b" 1.5\n") == 1500.0
    assert decode(rule(json_path="a.b"), b'{"a": {"b": 7}}') == 7.0
    assert decode(rule(json_path="l.1", unit="kW", invert=True), b'{"l": [0, 2]}') == -2000.0
    assert IngestRule.from_config(IngestTopic(topic="s", quantity=Quantity.SOC_PCT, unit="ratio")).factor == 100.0


@pytest.mark.parametrize("payload", [b"", b"x", b"NaN", b"Infinity", b"true", b'"12"', b"{}", b"\xff"])
def test_ingest_refuses_what_is_not_a_finite_number(payload: bytes) -> None:
    with pytest.raises(IngestError):
        decode(rule(json_path="a" if payload == b"{}" else None), payload)


def test_ingest_config_refuses_wildcards_and_units_that_do_not_fit() -> None:
    with pytest.raises(ConfigError, match=r"mqtt\.ingest\.0\.unit: 'kWh' does not fit pv_power_w"):
        parse_config({"mqtt": {"ingest": [{"topic": "a", "quantity": "pv_power_w", "unit": "kWh"}]}}, {})
    with pytest.raises(ConfigError, match=r"mqtt\.ingest\.0\.topic"):
        parse_config({"mqtt": {"ingest": [{"topic": "a/+/b", "quantity": "pv_power_w"}]}}, {})
    with pytest.raises(ConfigError, match=r"mqtt\.ingest: quantity fed by more than one entry: pv_power_w"):
        parse_config({"mqtt": {"ingest": [{"topic": "a", "quantity": "pv_power_w"}, {"topic": "b", "quantity": "pv_power_w"}]}}, {})
    two = parse_config({"mqtt": {"ingest": [{"topic": "a", "quantity": "pv_power_w"}, {"topic": "a", "quantity": "soc_pct"}]}}, {})
    assert len(two.mqtt.ingest) == 2  # one topic may feed several quantities
    with pytest.raises(ConfigError, match=r"mqtt\.tls\.cert_file"):
        parse_config({"mqtt": {"tls": {"cert_file": "/c.pem"}}}, {})


def test_state_document_nulls_stale_values_and_derives_load() -> None:
    clock = SimClock()
    ctx = EMSContext(clock=clock, start_mode=Mode.SELF_CONSUMPTION)
    feed(ctx, {Quantity.GRID_POWER_W: 300.0, Quantity.ESS_POWER_W: 1200.0, Quantity.SOC_PCT: 55.55})
    publish(ctx, seq=1, setpoint_w=1250.0, written_w=0.0, state=State.SELF_CONSUMPTION, limits=("soc_window",), gate="dry_run")
    doc = state_payload(ctx.snapshot(), stale_s=3)
    assert doc["load_power_w"] == 1500 and doc["soc_pct"] == 55.5 and doc["pv_power_w"] is None  # no PV meter: counted as 0 W
    assert doc["state"] == "SELF_CONSUMPTION" and doc["setpoint_w"] == 1250 and doc["written_w"] == 0
    assert doc["limits"] == ["soc_window"]  # limits only: the dry-run gate is not a limit
    feed(ctx, {Quantity.PV_POWER_W: 500.0}, at_s=clock.monotonic() - 10)
    doc = state_payload(ctx.snapshot(), stale_s=3)
    assert doc["pv_power_w"] is None and doc["load_power_w"] is None  # a PV meter that went stale: load unknown
    clock.advance(4)
    assert state_payload(ctx.snapshot(), stale_s=3)["grid_power_w"] is None


def test_state_gate_publishes_on_change_at_most_once_per_interval() -> None:
    gate = StateGate(min_interval_s=1.0)
    a, b = {"x": 1}, {"x": 2}
    assert gate.due(a, 0.0)
    gate.sent(a, 0.0)
    assert not gate.due(a, 5.0)  # unchanged: nothing
    assert not gate.due(b, 0.5)  # changed, too soon
    assert gate.due(b, 1.0)
    gate.force()
    assert gate.due(a, 1.1)


def test_log_gate_lets_one_line_through_per_interval_and_counts_the_rest() -> None:
    gate = LogGate(interval_s=10)
    assert gate.allow("k", 0.0) == 0
    assert gate.allow("k", 1.0) is None and gate.allow("k", 2.0) is None
    assert gate.allow("other", 2.0) == 0
    assert gate.allow("k", 10.0) == 2


def test_discovery_covers_sensors_select_and_number_with_valid_ids() -> None:
    cfg = parse_config({"site": {"id": "plant.7"}, "mqtt": {"discovery": {"setpoint_ttl_s": 120}}}, {})
    topics = Topics.from_config(cfg.mqtt, site_id=cfg.site.id)
    assert topics.base == "ems/plant.7" and topics.node_id == "ems_plant_7"
    msgs = dict(discovery_messages(cfg.mqtt, topics, site_name="", max_charge_w=3000, max_discharge_w=4000))
    comps = {t.split("/")[1] for t in msgs}
    assert comps == {"sensor", "select", "number"}
    for topic, payload in msgs.items():
        doc = json.loads(payload)
        assert topic.startswith("homeassistant/") and topic.endswith("/config")
        assert doc["availability_topic"] == "ems/plant.7/availability" and doc["unique_id"].startswith("ems_plant_7_")
    number = json.loads(msgs["homeassistant/number/ems_plant_7/external_setpoint/config"])
    assert (number["min"], number["max"]) == (-3000, 4000) and '"ttl_s": 120' in number["command_template"]
    rendered = number["command_template"].replace("{{ value }}", "1500").replace("{{ (as_timestamp(now()) * 1000) | int }}", "17")
    assert isinstance(parse_command("setpoint", rendered.encode(), max_ttl_s=3600), SetpointCommand)  # HA's payload passes our schema
    select = json.loads(msgs["homeassistant/select/ems_plant_7/mode/config"])
    assert parse_command("mode", select["command_template"].replace("{{ value }}", "IDLE").encode(), max_ttl_s=1) == parse_command(
        "mode", b'{"mode": "IDLE", "source": "home_assistant"}', max_ttl_s=1
    )
