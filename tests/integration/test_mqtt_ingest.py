"""MQTT measurement ingest against a real mosquitto: decoding, units, and staleness in a live controller."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from config import parse_config
from ems.clock import SimClock, SystemClock
from ems.context import EMSContext
from ems.controller import Controller
from ems.model import Mode, Quantity, State
from interfaces.mqtt import LocalBroker, MqttWorker
from tests.helpers.common import wait_for
from tests.helpers.mosquitto import SITE, Probe, mosquitto, mqtt_section  # noqa: F401  (fixture)

INGEST = [
    {"topic": "meters/pv/power", "quantity": "pv_power_w", "unit": "kW"},
    {"topic": "meters/grid/state", "quantity": "grid_power_w", "json_path": "power.total", "invert": True},
    {"topic": "meters/grid/energy", "quantity": "grid_import_wh", "json_path": "phases.1", "unit": "kWh"},
]


def mqtt_cfg(broker: LocalBroker, **over: Any) -> dict[str, Any]:
    return mqtt_section(broker, **{"ingest": INGEST, **over})


@pytest.fixture
def meter(mosquitto: LocalBroker) -> Iterator[Probe]:  # noqa: F811
    p = Probe(mosquitto, "meter", client_id="meter")
    assert p.wait_connected() == 0
    yield p
    p.close()


def test_ingest_decodes_plain_numbers_and_json_paths_in_the_declared_units(mosquitto: LocalBroker, meter: Probe) -> None:  # noqa: F811
    cfg = parse_config({"site": {"id": SITE}, "mqtt": mqtt_cfg(mosquitto)}, {"T_MQTT_PW": "ems-pw"})
    clock = SimClock()
    ctx = EMSContext(clock=clock)
    worker = MqttWorker(cfg=cfg.mqtt, ctx=ctx, clock=clock, site_id=SITE, control=cfg.control)
    worker.start()
    try:
        wait_for(lambda: ctx.snapshot().status.get("mqtt_link") == "up", what="the worker to connect")
        clock.advance(5)
        meter.publish("meters/pv/power", "2.5")
        meter.publish("meters/grid/state", {"power": {"total": 340.0}, "v": 230})
        meter.publish("meters/grid/energy", {"phases": [1.0, 12.5]})
        snap = wait_for(lambda: (s := ctx.snapshot()) and len(s.measurements) == 3 and s, what="three ingested values")
        assert snap.reading(Quantity.PV_POWER_W).value == 2500.0  # kW -> W
        assert snap.reading(Quantity.GRID_POWER_W).value == -340.0  # invert: the meter counts export positive
        assert snap.reading(Quantity.GRID_IMPORT_WH).value == 12500.0
        assert snap.reading(Quantity.PV_POWER_W).at_s == clock.monotonic()  # stamped on receipt
        for bad in ("", "abc", "NaN", '{"power": {"sum": 1}}', '{"power": {"total": "12"}}', "true"):
            meter.publish("meters/grid/state", bad)
        wait_for(lambda: ctx.snapshot().counters.get("mqtt_ingest_invalid") == 6, what="6 invalid payloads counted")
        assert ctx.snapshot().reading(Quantity.GRID_POWER_W).value == -340.0  # bad input changed nothing
        assert worker.is_alive()
    finally:
        worker.stop(timeout_s=3)


def test_retained_measurements_are_ignored_unless_configured(mosquitto: LocalBroker, meter: Probe) -> None:  # noqa: F811
    meter.publish("meters/pv/power", "9.9", retain=True)  # an old value with unknown age
    ingest = [INGEST[0] | {"topic": "meters/pv/power"}, {"topic": "meters/soc", "quantity": "soc_pct", "accept_retained": True}]
    meter.publish("meters/soc", "55", retain=True)
    cfg = parse_config({"site": {"id": SITE}, "mqtt": mqtt_cfg(mosquitto, ingest=ingest)}, {"T_MQTT_PW": "ems-pw"})
    clock = SimClock()
    ctx = EMSContext(clock=clock)
    worker = MqttWorker(cfg=cfg.mqtt, ctx=ctx, clock=clock, site_id=SITE, control=cfg.control)
    worker.start()
    try:
        wait_for(lambda: ctx.snapshot().reading(Quantity.SOC_PCT), what="the retained SOC (accept_retained)")
        wait_for(lambda: ctx.snapshot().counters.get("mqtt_ingest_retained_ignored") == 1, what="the retained PV value ignored")
        assert ctx.snapshot().reading(Quantity.PV_POWER_W) is None
    finally:
        worker.stop(timeout_s=3)


class Publisher:
    """An external meter publishing the grid power every `period_s` until stopped."""

    def __init__(self, probe: Probe, period_s: float = 0.1) -> None:
        self._probe, self._period_s = probe, period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-meter", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._period_s):
            self._probe.client.publish("meters/grid/state", '{"power": {"total": -150}}', qos=0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def test_ingested_measurement_goes_stale_when_its_publisher_stops(mosquitto: LocalBroker, meter: Probe) -> None:  # noqa: F811
    raw = {
        "site": {"id": SITE},
        "control": {"period_s": 0.1, "fault_timeout_s": 0.6, "recover_s": 0.0, "required_sources": ["grid_power_w"], "start_mode": "IDLE"},
        "mqtt": mqtt_cfg(mosquitto, state_stale_s=0.6),
    }
    cfg = parse_config(raw, {"T_MQTT_PW": "ems-pw"})
    clock = SystemClock()
    ctx = EMSContext(clock=clock, start_mode=Mode.IDLE)
    worker = MqttWorker(cfg=cfg.mqtt, ctx=ctx, clock=clock, site_id=SITE, control=cfg.control)
    controller = Controller(ctx=ctx, cfg=cfg.control, clock=clock, workers=[worker])
    stop = threading.Event()
    loop = threading.Thread(target=controller.run, args=(stop,), name="test-controller", daemon=True)
    viewer = Probe(mosquitto, "viewer", client_id="viewer")
    publisher = Publisher(meter)
    worker.start()
    loop.start()
    try:
        viewer.subscribe(f"ems/{SITE}/state")
        wait_for(lambda: ctx.snapshot().reading(Quantity.GRID_POWER_W), what="the first MQTT grid reading")
        wait_for(lambda: ctx.snapshot().state is State.STANDBY, what="STANDBY with a live MQTT grid meter")
        assert ctx.snapshot().reading(Quantity.GRID_POWER_W).value == 150.0
        viewer.wait_message(f"ems/{SITE}/state", lambda m: m.json()["grid_power_w"] == 150, what="grid power on the state topic")
        publisher.stop()
        snap = wait_for(lambda: (s := ctx.snapshot()).state is State.FAULT and s, what="FAULT once the meter goes quiet")
        assert "stale:grid_power_w" in snap.fault_causes
        assert worker.is_alive() and not any(c.startswith("worker_") for c in snap.fault_causes)  # the worker itself is fine
        doc = viewer.wait_message(f"ems/{SITE}/state", lambda m: m.json()["state"] == "FAULT", what="FAULT on the state topic").json()
        assert doc["grid_power_w"] is None and doc["fault_causes"] == ["stale:grid_power_w"]
        publisher = Publisher(meter)  # the meter comes back: the fault clears (recover_s = 0)
        wait_for(lambda: ctx.snapshot().state is State.STANDBY, what="back to STANDBY")
    finally:
        publisher.stop()
        stop.set()
        loop.join(5)
        worker.stop(timeout_s=3)
        viewer.close()
