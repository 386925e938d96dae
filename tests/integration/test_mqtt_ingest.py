"""MQTT measurement ingest against a real mosquitto: decoding, units, and staleness in a live controller."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from config import EMSConfig, parse_config
from ems.clock import SimClock, SystemClock
from ems.context import EMSContext
from ems.model import Mode, Quantity, State
from simulators.broker import LocalBroker
from tests.helpers.common import wait_for
from tests.helpers.context import make_controller
from tests.helpers.mosquitto import SITE, Probe, link_state, mosquitto, mqtt_section, mqtt_worker  # noqa: F401  (fixture)

INGEST = [
    {"topic": "meters/pv/power", "quantity": "pv_power_w", "unit": "kW"},
    {"topic": "meters/grid/state", "quantity": "grid_power_w", "json_path": "power.total", "invert": True},
    {"topic": "meters/grid/energy", "quantity": "grid_import_wh", "json_path": "phases.1", "unit": "kWh"},
]


def mqtt_cfg(broker: LocalBroker, **over: Any) -> dict[str, Any]:
    return mqtt_section(broker, **{"ingest": INGEST, **over})


def ems_cfg(broker: LocalBroker, **over: Any) -> EMSConfig:
    return parse_config({"site": {"id": SITE}, "mqtt": mqtt_cfg(broker, **over)}, {"T_MQTT_PW": "ems-pw"})


@pytest.fixture
def meter(mosquitto: LocalBroker) -> Iterator[Probe]:  # noqa: F811
    p = Probe(mosquitto, "meter", client_id="meter")
    assert p.wait_connected() == 0
    yield p
    p.close()


def test_ingest_decodes_plain_numbers_and_json_paths_in_the_declared_units(mosquitto: LocalBroker, meter: Probe) -> None:  # noqa: F811
    cfg = ems_cfg(mosquitto)
    clock = SimClock()
    ctx = EMSContext(clock=clock)
    worker = mqtt_worker(cfg, ctx)
    worker.start()
    try:
        wait_for(lambda: link_state(ctx) == "up", what="the worker to connect")
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


def test_an_ingest_topic_cannot_take_a_quantity_another_source_already_owns(mosquitto: LocalBroker, meter: Probe) -> None:  # noqa: F811
    clock = SimClock()
    ctx = EMSContext(clock=clock)
    grid_meter = ctx.readings.claim("meter", [Quantity.GRID_POWER_W])  # e.g. a Modbus meter, built before MQTT
    written_at_s = clock.monotonic()
    assert grid_meter.update({Quantity.GRID_POWER_W: 420.0}, at_s=written_at_s) == 0
    worker = mqtt_worker(ems_cfg(mosquitto), ctx)  # INGEST feeds grid_power_w from meters/grid/state too
    worker.start()
    try:
        wait_for(lambda: link_state(ctx) == "up", what="the worker to connect")
        assert ctx.snapshot().counters.get("readings_refused", 0) == 0
        clock.advance(5)
        meter.publish("meters/grid/state", {"power": {"total": 340.0}})
        wait_for(lambda: ctx.snapshot().counters.get("readings_refused", 0) >= 1, what="the MQTT grid value refused")
        snap = ctx.snapshot()
        grid = snap.reading(Quantity.GRID_POWER_W)
        assert grid is not None and (grid.value, grid.source, grid.at_s) == (420.0, "meter", written_at_s)  # unchanged
        assert snap.counters["readings_refused"] == 1
        assert ctx.owners()[Quantity.GRID_POWER_W] == "meter"
        broker = snap.device("broker")
        assert broker is not None and Quantity.GRID_POWER_W not in broker.owns
        meter.publish("meters/pv/power", "2.5")  # the ingest's other quantities still flow
        pv = wait_for(lambda: ctx.snapshot().reading(Quantity.PV_POWER_W), what="the ingested PV value")
        assert (pv.value, pv.source) == (2500.0, "mqtt:meters/pv/power")
        assert ctx.snapshot().reading(Quantity.GRID_POWER_W) == grid
        assert worker.is_alive()
    finally:
        worker.stop(timeout_s=3)


def test_retained_measurements_are_ignored_unless_configured(mosquitto: LocalBroker, meter: Probe) -> None:  # noqa: F811
    meter.publish("meters/pv/power", "9.9", retain=True)  # an old value with unknown age
    ingest = [INGEST[0] | {"topic": "meters/pv/power"}, {"topic": "meters/soc", "quantity": "soc_pct", "accept_retained": True}]
    meter.publish("meters/soc", "55", retain=True)
    cfg = ems_cfg(mosquitto, ingest=ingest)
    clock = SimClock()
    ctx = EMSContext(clock=clock)
    worker = mqtt_worker(cfg, ctx)
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
    ctx = EMSContext(clock=clock, start_mode=Mode.IDLE, required_sources=cfg.control.required_sources)
    worker = mqtt_worker(cfg, ctx)
    controller = make_controller(ctx, cfg, workers=[worker])
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
