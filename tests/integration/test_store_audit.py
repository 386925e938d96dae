"""Audit rows are committed before a request is reported accepted (DESIGN §6, issue 18).

The store is the context's audit sink: an accepted request wakes the one writer thread for a flush
and returns once the commit holds its audit row. When no commit can be confirmed (no writer, the
store closed, a failing database) the request is refused and not applied.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from ems.clock import SimClock
from ems.context import EMSContext
from ems.model import Mode
from interfaces.store.workers import StoreWriter
from tests.helpers.uplink import make_store, store_cfg


def _audit_rows(db: Path) -> list[dict[str, object]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [json.loads(d) for (d,) in conn.execute("SELECT data FROM events WHERE kind = 'audit' ORDER BY id")]
    finally:
        conn.close()


def test_an_accepted_request_returns_after_the_commit_of_its_audit_row_well_inside_the_flush_window(tmp_path: Path) -> None:
    clock = SimClock()
    ctx = EMSContext(clock=clock, start_mode=Mode.IDLE)
    store = make_store(store_cfg(tmp_path / "ems.db", flush_interval_s=60.0), ctx, site_id="t", outbox_enabled=False)
    ctx.requests.set_audit_sink(store.make_durable)
    writer = StoreWriter(store=store, health=ctx.health, clock=clock)
    writer.start()
    try:
        t0 = time.monotonic()
        for i in range(5):
            r = ctx.requests.set_external_setpoint(power_w=100.0 * i, ttl_s=60.0, reason=f"r{i}", who="agg", via="mqtt")
            assert r.accepted
            rows = _audit_rows(tmp_path / "ems.db")  # committed already: read by another connection
            assert rows[-1]["reason"] == f"r{i}" and rows[-1]["result"] == "accepted"
        assert time.monotonic() - t0 < 5.0  # five commits, not five 60-s flush periods
    finally:
        writer.stop(timeout_s=5.0)


def test_without_a_confirmed_commit_the_request_is_refused_and_not_applied(tmp_path: Path) -> None:
    clock = SimClock()
    ctx = EMSContext(clock=clock, start_mode=Mode.IDLE)
    store = make_store(store_cfg(tmp_path / "ems.db", audit_commit_timeout_s=0.2), ctx, site_id="t", outbox_enabled=False)
    ctx.requests.set_audit_sink(store.make_durable)
    # no writer thread: nobody commits
    r = ctx.requests.request_mode(Mode.SELF_CONSUMPTION, who="op-1", via="rest")
    assert not r.accepted and r.not_durable and "no commit within 0.2 s" in r.message
    assert ctx.snapshot().requested_mode is Mode.IDLE
    assert ctx.counters.snapshot()["audit_not_durable"] == 1
    store.close()
    t0 = time.monotonic()
    r = ctx.requests.request_mode(Mode.SELF_CONSUMPTION, who="op-1", via="rest")
    assert r.not_durable and "closed" in r.message and time.monotonic() - t0 < 0.2
    t0 = time.monotonic()
    bad = ctx.requests.set_external_setpoint(power_w=1.0, ttl_s=0.0, reason="", who="op-1", via="rest")
    assert not bad.accepted and not bad.not_durable and time.monotonic() - t0 < 0.1  # a refusal never waits for a commit
    audits = [e.data for e in ctx.events.since(0) if e.kind == "audit"]
    assert [a["result"] for a in audits] == ["accepted", "refused", "accepted", "refused", "refused"]
    assert audits[1]["withdraws"] is not None and "could not be committed" in str(audits[1]["message"])


def test_rest_answers_503_and_mqtt_refused_when_the_audit_cannot_be_committed(tmp_path: Path) -> None:
    from interfaces.mqtt.commands import CommandHandler
    from tests.helpers.api import api_config, bearer, running_api

    clock = SimClock()
    ctx = EMSContext(clock=clock, start_mode=Mode.IDLE)
    store = make_store(store_cfg(tmp_path / "ems.db", audit_commit_timeout_s=0.1), ctx, site_id="t", outbox_enabled=False)
    ctx.requests.set_audit_sink(store.make_durable)  # and no writer
    with running_api(api_config(), ctx, clock) as api:
        r = api.put("/api/v1/mode", "operator", json={"mode": "SELF_CONSUMPTION"})
        assert r.status_code == 503 and r.json()["error"] == "audit_not_durable", r.text
        r = api.put("/api/v1/setpoint", "operator", json={"power_w": 100.0, "ttl_s": 60.0, "reason": "x"})
        assert r.status_code == 503
        assert api.session.delete(api.url + "/api/v1/setpoint", headers=bearer("operator"), timeout=10).status_code == 503
    handler = CommandHandler(requests=ctx.requests, counters=ctx.counters, max_ttl_s=3600.0, release_mode=Mode.IDLE)
    res = handler.handle("mode", b'{"mode": "SELF_CONSUMPTION", "seq": 1}')
    assert res["status"] == "refused" and "could not be committed" in str(res["error"])
    assert ctx.snapshot().requested_mode is Mode.IDLE
