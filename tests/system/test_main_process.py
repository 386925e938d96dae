"""The real main.py process: with no devices it reaches FAULT naming each stale source, and stops cleanly."""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.helpers.proc import LoggedProcess

pytestmark = pytest.mark.system


def test_no_devices_reaches_fault_naming_each_stale_source_and_exits_0_on_sigterm() -> None:
    p = LoggedProcess(["main.py", "--config", "config/ems.example.yaml", "--log-format", "json"])
    try:
        fault = p.wait_event(
            lambda e: e.get("event") == "state_changed" and e.get("to_state") == "FAULT", timeout_s=30, what="state_changed to FAULT"
        )
        assert fault["reason"] == "stale:grid_power_w,stale:ess_power_w,stale:soc_pct"
        assert fault["level"] == "warning" and fault["setpoint_w"] == 0.0
        warn = p.wait_event(lambda e: e.get("event") == "control_not_live", timeout_s=5, what="control_not_live")
        assert warn["enabled"] is False
        rc = p.terminate_and_wait(timeout_s=30)  # generous for a loaded CI box; the 5 s contract is checked below
    finally:
        p.kill()
    assert rc == 0
    stopped = [e for e in p.events if e.get("event") == "state_changed" and e.get("to_state") == "STOP"]
    assert stopped and stopped[-1]["reason"] == "shutdown"
    assert p.events[-1]["event"] == "ems_stopped"
    frozen = next(e for e in p.events if e.get("event") == "gc_frozen")  # start-up objects kept out of the cyclic GC
    assert frozen["objects"] > 10_000
    asked = next(e for e in p.events if e.get("event") == "shutdown_requested")
    assert asked["signal"] == "SIGTERM"
    names = [e.get("event") for e in p.events]
    assert names.index("shutdown_requested") < names.index("controller_stopped")  # why, then what
    handled_s = datetime.fromisoformat(p.events[-1]["timestamp"]) - datetime.fromisoformat(asked["timestamp"])
    assert handled_s.total_seconds() < 5.0
    # no 1 Hz noise at info: a handful of lines for a few seconds of running
    assert len([e for e in p.events if e.get("event") == "cycle"]) == 0
