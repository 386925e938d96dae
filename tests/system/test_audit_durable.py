"""Every control request's audit survives a crash (issue 18): the real main.py, SIGKILL right after the reply.

Samples may be lost in the flush window (store.flush_interval_s, 5 s here); audit events may not:
an accepted mode or set-point change is committed to SQLite before REST or MQTT reports it
accepted. Each round starts main.py on the same database, sends one request, kills the process
with SIGKILL the moment the reply is in, and finds the audit row in the database.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from simulators.broker import LocalBroker
from tests.helpers.mosquitto import PASSWORD_ENV, SITE, Probe, mosquitto  # noqa: F401  (fixture)
from tests.helpers.proc import LoggedProcess

pytestmark = pytest.mark.system

TOKEN = "tok-operator-audit-5d1e"
ROUNDS = 3


def _config(tmp_path: Path, port: int, mqtt: dict[str, Any] | None = None) -> Path:
    cfg: dict[str, Any] = {
        "site": {"id": SITE},
        "control": {"period_s": 0.5},
        "store": {"enabled": True, "path": str(tmp_path / "ems.db"), "flush_interval_s": 5.0},
        "api": {"enabled": True, "port": port, "tokens": [{"name": "op-1", "role": "operator", "secret": {"env": "T_OP_TOKEN"}}]},
    }
    if mqtt is not None:
        cfg["mqtt"] = mqtt
    path = tmp_path / "ems.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def _start(config: Path) -> LoggedProcess:
    ems = LoggedProcess(["main.py", "--config", str(config), "--log-format", "json"], env={"T_OP_TOKEN": TOKEN, **PASSWORD_ENV})
    ems.wait_event(lambda e: e.get("event") == "api_started", timeout_s=30, what="api_started")
    return ems


def _kill(ems: LoggedProcess) -> None:
    ems.proc.send_signal(signal.SIGKILL)
    ems.proc.wait(10)
    assert ems.proc.returncode == -signal.SIGKILL


def _audits(db: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return [json.loads(d) for (d,) in conn.execute("SELECT data FROM events WHERE kind = 'audit' ORDER BY id")]
    finally:
        conn.close()


def test_an_accepted_rest_request_is_in_the_database_when_the_process_is_killed_right_after_the_reply(tmp_path: Path) -> None:
    from tests.helpers.common import free_port

    port = free_port()
    config = _config(tmp_path, port)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    sent: list[str] = []
    for i in range(ROUNDS):
        ems = _start(config)
        try:
            reason = f"round-{i}-{uuid.uuid4().hex[:8]}"
            if i % 2 == 0:
                r = requests.put(f"http://127.0.0.1:{port}/api/v1/setpoint", json={"power_w": -100.0 * (i + 1), "ttl_s": 60, "reason": reason},
                                 headers=headers, timeout=10)  # fmt: skip
            else:
                r = requests.put(f"http://127.0.0.1:{port}/api/v1/mode", json={"mode": "SELF_CONSUMPTION"}, headers=headers, timeout=10)
                reason = "mode"
            assert r.status_code == 200 and r.json()["accepted"], r.text
            _kill(ems)  # at once: well inside the 5 s flush window
        finally:
            ems.kill()
        sent.append(reason)
        rows = [a for a in _audits(tmp_path / "ems.db") if a.get("result") == "accepted"]
        assert len(rows) == i + 1, rows
        last = rows[-1]
        assert last["what"] == ("setpoint" if i % 2 == 0 else "mode") and last["who"] == "op-1" and last["via"] == "rest", last
        if i % 2 == 0:
            assert last["reason"] == reason and last["new"] == -100.0 * (i + 1)


def test_an_accepted_mqtt_command_is_in_the_database_when_the_process_is_killed_right_after_the_result(
    mosquitto: LocalBroker,  # noqa: F811
    tmp_path: Path,
) -> None:
    from tests.helpers.common import free_port

    mqtt = {
        "enabled": True,
        "host": mosquitto.host,
        "port": mosquitto.port,
        "username": "ems",
        "password": {"env": "T_MQTT_PW"},
        "reconnect_min_s": 0.1,
    }
    config = _config(tmp_path, free_port(), mqtt)
    operator = Probe(mosquitto, "operator", client_id="t-operator")
    operator.subscribe(f"ems/{SITE}/cmd/result")
    try:
        for i in range(2):
            ems = _start(config)
            try:
                ems.wait_event(lambda e: e.get("event") == "mqtt_connected", timeout_s=20, what="mqtt_connected")
                operator.clear()
                reason = f"mqtt-{i}-{uuid.uuid4().hex[:8]}"
                operator.publish(f"ems/{SITE}/cmd/setpoint", {"power_w": 250.0, "ttl_s": 30, "reason": reason, "seq": 10 + i})
                seq = 10 + i
                res = operator.wait_message(f"ems/{SITE}/cmd/result", lambda m, s=seq: m.json().get("seq") == s, what="the command result")
                assert res.json()["status"] == "accepted", res.json()
                _kill(ems)
            finally:
                ems.kill()
            rows = [a for a in _audits(tmp_path / "ems.db") if a.get("result") == "accepted" and a.get("reason") == reason]
            assert len(rows) == 1 and rows[0]["via"] == "mqtt", rows
    finally:
        operator.close()
