"""GET /api/v1/stream with a real SSE client (sseclient-py over requests) against the real waitress server:
status and events pushed at once, ids that resume with Last-Event-ID, heartbeats, bounded duration and
client count, auth as for reads."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import requests
import sseclient

from ems.clock import SystemClock
from ems.context import EMSContext
from ems.model import Mode, Quantity
from tests.helpers.api import RunningApi, api_config, bearer, running_api
from tests.helpers.context import feed, publish

STREAM = "/api/v1/stream"


@pytest.fixture
def ctx() -> EMSContext:
    return EMSContext(clock=SystemClock(), start_mode=Mode.SELF_CONSUMPTION)


@pytest.fixture
def api(ctx: EMSContext) -> Iterator[RunningApi]:
    cfg = api_config({"threads": 4, "stream_max_clients": 2, "stream_heartbeat_s": 0.5, "stream_max_s": 30})
    with running_api(cfg, ctx, ctx.clock) as running:
        yield running


def _open(api: RunningApi, **headers: str) -> tuple[requests.Response, Iterator[sseclient.Event]]:
    r = api.session.get(api.url + STREAM, stream=True, timeout=10, headers=headers)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    return r, sseclient.SSEClient(r).events()


def test_status_then_each_event_arrives_at_once_with_its_seq_as_id(api: RunningApi, ctx: EMSContext) -> None:
    feed(ctx, {Quantity.GRID_POWER_W: 800.0, Quantity.ESS_POWER_W: -200.0, Quantity.SOC_PCT: 50.0})
    publish(ctx, seq=1, setpoint_w=-200.0, written_w=0.0)
    r, events = _open(api)
    with r:
        first = next(events)
        assert first.event == "status"
        doc = __import__("json").loads(first.data)
        assert doc["state"] == "SELF_CONSUMPTION" and doc["grid_power_w"] == 800.0 and doc["load_power_w"] == 600.0
        t0 = time.monotonic()
        seq = ctx.requests.request_mode(Mode.IDLE, who="op", via="rest").event_seq
        got = next(e for e in events if e.event == "event")
        assert time.monotonic() - t0 < 1.0  # pushed, not behind the store's 5-s flush
        assert got.id == str(seq)
        body = __import__("json").loads(got.data)
        assert body["seq"] == seq and body["kind"] == "audit" and body["data"]["new"] == "IDLE"


def test_a_reconnect_with_last_event_id_gets_what_it_missed(api: RunningApi, ctx: EMSContext) -> None:
    a = ctx.events.record("state", to="STANDBY")
    b = ctx.events.record("fault", raised=["stale:grid_power_w"])
    c = ctx.events.record("state", to="FAULT")
    r, events = _open(api, **{"Last-Event-ID": str(a)})
    with r:
        got = [e for _, e in zip(range(2), (e for e in events if e.event == "event"), strict=False)]
    assert [e.id for e in got] == [str(b), str(c)]


def test_heartbeats_keep_an_idle_stream_alive_and_it_ends_after_its_maximum(ctx: EMSContext) -> None:
    cfg = api_config({"threads": 2, "stream_max_clients": 1, "stream_heartbeat_s": 0.2, "stream_max_s": 1.5})
    with running_api(cfg, ctx, ctx.clock) as api:
        t0 = time.monotonic()
        with api.session.get(api.url + STREAM, stream=True, timeout=10) as r:
            lines = [ln for ln in r.iter_lines(decode_unicode=True)]
        took = time.monotonic() - t0
    assert 1.4 <= took < 5.0  # ended by the server (stream_max_s), the client reconnects
    assert lines[0] == "retry: 3000" and lines.count(": heartbeat") >= 4


def test_streams_are_capped_and_the_extra_one_is_told_to_retry(api: RunningApi, ctx: EMSContext) -> None:
    r1, _ = _open(api)
    r2, _ = _open(api)
    with r1, r2:
        r3 = api.get(STREAM)
        assert r3.status_code == 503 and r3.headers["Retry-After"] == "5" and r3.json()["error"] == "too_many_streams"
        assert api.get("/api/v1/status").status_code == 200  # a thread stays free for everything else
    r1.close()
    r2.close()
    # the slots are given back once the server notices (at its next heartbeat write)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        r = api.get(STREAM, stream=True)
        if r.status_code == 200:
            r.close()
            break
        r.close()
        threading.Event().wait(0.1)
    else:
        raise AssertionError("stream slots were not released after the clients left")


def test_a_closed_client_frees_its_thread(api: RunningApi, ctx: EMSContext) -> None:
    for _ in range(5):  # more streams than the cap, one after the other
        r, events = _open(api)
        assert next(events).event == "status"
        r.close()
        hub = api.server.app.extensions["ems_stream"]
        deadline = time.monotonic() + 5
        while hub.open and time.monotonic() < deadline:
            threading.Event().wait(0.05)
        assert hub.open == 0


def test_with_protected_reads_the_stream_needs_a_viewer_token(ctx: EMSContext) -> None:
    with running_api(api_config({"protect_reads": True, "threads": 2}), ctx, ctx.clock) as api:
        assert api.get(STREAM).status_code == 401
        with api.session.get(api.url + STREAM, headers=bearer("viewer"), stream=True, timeout=10) as r:
            assert r.status_code == 200
