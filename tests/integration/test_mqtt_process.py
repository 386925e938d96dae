"""The real main.py process with MQTT on a real mosquitto: meters in over MQTT, a set-point with a TTL
drives EXTERNAL and lapses back, the state topic follows, SIGTERM leaves `offline` behind."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import yaml

from simulators.broker import LocalBroker
from tests.helpers.mosquitto import SITE, Probe, mosquitto  # noqa: F401  (fixture)
from tests.helpers.proc import LoggedProcess

pytestmark = pytest.mark.system
BASE = f"ems/{SITE}"


class Meters:
    """Grid, battery and SOC published every 0.2 s by an external device."""

    def __init__(self, probe: Probe) -> None:
        self._probe = probe
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-meters", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self._probe.client.publish("meters/grid", "250", qos=0)
            self._probe.client.publish("meters/battery", '{"p": {"w": 0}, "soc": 0.6}', qos=0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def test_main_process_follows_an_mqtt_setpoint_until_its_ttl_lapses(mosquitto: LocalBroker, tmp_path: Path) -> None:  # noqa: F811
    cfg = {
        "site": {"id": SITE},
        "control": {"period_s": 0.2, "external_fallback": "STANDBY"},
        "mqtt": {
            "enabled": True,
            "host": mosquitto.host,
            "port": mosquitto.port,
            "username": "ems",
            "password": {"env": "T_MQTT_PW"},
            "reconnect_min_s": 0.1,
            "state_min_interval_s": 0.2,
            "ingest": [
                {"topic": "meters/grid", "quantity": "grid_power_w"},
                {"topic": "meters/battery", "quantity": "ess_power_w", "json_path": "p.w"},
                {"topic": "meters/battery", "quantity": "soc_pct", "json_path": "soc", "unit": "ratio"},
            ],
        },
    }
    config_file = tmp_path / "ems.yaml"
    config_file.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    meter, viewer, operator = (Probe(mosquitto, u, client_id=f"t-{u}") for u in ("meter", "viewer", "operator"))
    viewer.subscribe(f"{BASE}/#")
    operator.subscribe(f"{BASE}/cmd/result")
    meters = Meters(meter)
    p = LoggedProcess(["main.py", "--config", str(config_file), "--log-format", "json"], env={"T_MQTT_PW": "ems-pw"})
    try:
        p.wait_event(lambda e: e.get("event") == "mqtt_connected", timeout_s=30, what="mqtt_connected")
        state = viewer.wait_message(
            f"{BASE}/state", lambda m: m.json()["state"] == "SELF_CONSUMPTION", timeout_s=30, what="SELF_CONSUMPTION"
        )
        assert state.json()["grid_power_w"] == 250 and state.json()["soc_pct"] == 60.0
        operator.publish(f"{BASE}/cmd/setpoint", {"power_w": 1000, "ttl_s": 2, "reason": "system-test", "seq": 1})
        assert operator.wait_message(f"{BASE}/cmd/result").json()["status"] == "accepted"
        ext = viewer.wait_message(f"{BASE}/state", lambda m: m.json()["state"] == "EXTERNAL", what="EXTERNAL").json()
        assert ext["external_setpoint_w"] == 1000 and ext["setpoint_w"] == 1000 and ext["written_w"] == 0  # example safety: not live
        viewer.wait_message(f"{BASE}/state", lambda m: m.json()["state"] == "STANDBY" and m.json()["mode"] == "EXTERNAL", what="TTL lapsed")
        lapsed = p.wait_event(lambda e: e.get("event") == "state_changed" and e.get("from_state") == "EXTERNAL", timeout_s=10, what="lapse")
        assert lapsed["reason"] == "setpoint_ttl_lapsed"
        assert p.terminate_and_wait(timeout_s=30) == 0
        viewer.wait_message(f"{BASE}/availability", lambda m: m.payload == b"offline", what="offline after SIGTERM")
    finally:
        p.kill()
        meters.stop()
        for probe in (meter, viewer, operator):
            probe.close()
