"""REST API over real HTTP: waitress on a random loopback port, the real context and controller."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from api.app import create_app
from api.models import EventInfo, MeasurementRow, Resolution
from api.server import ApiServer
from config import parse_config
from ems.clock import SimClock
from ems.context import EMSContext
from ems.controller import Controller
from ems.model import Command, Mode, Quantity, State
from main import build_services
from tests.helpers.api import TOKENS, RunningApi, api_config, running_api
from tests.helpers.common import wait_for

Q = Quantity


def _feed(ctx: EMSContext, clock: SimClock, grid_w: float = 1000.0) -> None:
    ctx.update_measurements({Q.GRID_POWER_W: grid_w, Q.ESS_POWER_W: 0.0, Q.SOC_PCT: 50.0}, at_s=clock.monotonic())


def _publish(
    ctx: EMSContext, clock: SimClock, state: State = State.SELF_CONSUMPTION, *, seq: int = 1, causes: tuple[str, ...] = ()
) -> None:
    cmd = Command(seq, state, 800.0, 0.0, ("soc_min", "control_disabled"), clock.monotonic())
    ctx.publish_command(cmd, fault_causes=causes, limits_bound=cmd.reasons)


def _audits(ctx: EMSContext) -> list[dict[str, Any]]:
    return [dict(e.data) for e in ctx.events_since(0) if e.kind == "audit"]


@pytest.fixture
def clock() -> SimClock:
    return SimClock()


@pytest.fixture
def ctx(clock: SimClock) -> EMSContext:
    return EMSContext(clock=clock, start_mode=Mode.SELF_CONSUMPTION)


@pytest.fixture
def api(ctx: EMSContext, clock: SimClock) -> Iterator[RunningApi]:
    with running_api(api_config(), ctx, clock) as running:
        yield running


# ---- health -------------------------------------------------------------------------------------
def test_health_is_503_starting_before_the_first_cycle_then_200(api: RunningApi, ctx: EMSContext, clock: SimClock) -> None:
    r = api.get("/api/v1/health")
    assert r.status_code == 503 and "starting" in r.json()["problems"]
    _feed(ctx, clock)
    _publish(ctx, clock)
    r = api.get("/api/v1/health")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["healthy"] is True and body["problems"] == [] and body["state"] == "SELF_CONSUMPTION"
    assert body["last_reading_age_s"] == 0.0 and body["controller_age_s"] == 0.0
    assert [w["name"] for w in body["workers"]] == ["api"]


def test_health_is_503_in_fault_naming_the_causes(api: RunningApi, ctx: EMSContext, clock: SimClock) -> None:
    _publish(ctx, clock, State.FAULT, causes=("stale:grid_power_w",))
    r = api.get("/api/v1/health")
    assert r.status_code == 503
    assert r.json()["healthy"] is False and "fault:stale:grid_power_w" in r.json()["problems"]


def test_health_is_503_for_a_stale_or_failing_worker(api: RunningApi, ctx: EMSContext, clock: SimClock) -> None:
    ctx.heartbeat("modbus", at_s=clock.monotonic())
    _publish(ctx, clock)
    assert api.get("/api/v1/health").status_code == 200
    for _ in range(3):
        ctx.mark_error("modbus", reason="TimeoutError", at_s=clock.monotonic())
    r = api.get("/api/v1/health")
    assert r.status_code == 503 and "worker_failing:modbus" in r.json()["problems"]
    ctx.mark_ok("modbus", at_s=clock.monotonic())
    clock.advance(11.0)  # > control.worker_stall_s
    _publish(ctx, clock, seq=2)
    r = api.get("/api/v1/health")
    assert r.status_code == 503 and "worker_stale:modbus" in r.json()["problems"]
    modbus = next(w for w in r.json()["workers"] if w["name"] == "modbus")
    assert modbus["stale"] is True and modbus["last_ok_age_s"] == 11.0 and modbus["errors_total"] == 3


def test_health_is_503_when_the_controller_stops_cycling(api: RunningApi, ctx: EMSContext, clock: SimClock) -> None:
    _publish(ctx, clock)
    clock.advance(6.0)  # > api.controller_stale_s
    ctx.heartbeat("api", at_s=clock.monotonic())
    r = api.get("/api/v1/health")
    assert r.status_code == 503 and "controller_stale" in r.json()["problems"]


# ---- status -------------------------------------------------------------------------------------
def test_status_shows_state_modes_measurements_with_ages_command_limits_and_flags(
    api: RunningApi, ctx: EMSContext, clock: SimClock
) -> None:
    _feed(ctx, clock, grid_w=1234.5)
    clock.advance(2.0)
    _publish(ctx, clock)
    ctx.update_bms_flags(protections=["cell_overvoltage"], warnings=["temp_high"], at_s=clock.monotonic())
    r = api.get("/api/v1/status")
    assert r.status_code == 200
    s = r.json()
    assert s["state"] == "SELF_CONSUMPTION" and s["requested_mode"] == "SELF_CONSUMPTION" and s["effective_mode"] == "SELF_CONSUMPTION"
    assert s["control"] == {"enabled": False, "dry_run": True, "live": False, "soc_min_pct": 10.0, "soc_max_pct": 95.0}
    grid = s["measurements"]["grid_power_w"]
    assert grid["value"] == 1234.5 and grid["age_s"] == 2.0 and grid["stale"] is False
    assert s["command"]["computed_w"] == 800.0 and s["command"]["written_w"] == 0.0 and s["command"]["acknowledged"] is False
    assert [lim["name"] for lim in s["limits"]] == ["soc_min", "control_disabled"]
    assert all(lim["why"] for lim in s["limits"])
    assert s["bms_protections"] == ["cell_overvoltage"] and s["bms_warnings"] == ["temp_high"]
    assert s["fault_causes"] == [] and s["cycles"] == 1 and s["site_id"] == "site-001"


def test_status_effective_mode_is_idle_in_fault(api: RunningApi, ctx: EMSContext, clock: SimClock) -> None:
    _publish(ctx, clock, State.FAULT, causes=("bms_protection:x",))
    s = api.get("/api/v1/status").json()
    assert s["state"] == "FAULT" and s["requested_mode"] == "SELF_CONSUMPTION" and s["effective_mode"] == "IDLE"
    assert s["fault_causes"] == ["bms_protection:x"]


# ---- measurements and events --------------------------------------------------------------------
def test_measurements_from_the_context_give_latest_values_of_the_asked_fields(api: RunningApi, ctx: EMSContext, clock: SimClock) -> None:
    _feed(ctx, clock, grid_w=-300.0)
    r = api.get("/api/v1/measurements", params={"fields": ["grid_power_w", "soc_pct"]})
    assert r.status_code == 200, r.text
    m = r.json()
    assert m["source"] == "context" and m["fields"] == ["grid_power_w", "soc_pct"] and m["resolution"] == "1s"
    assert m["rows"][0]["values"] == {"grid_power_w": -300.0, "soc_pct": 50.0} and m["next_from_ts"] is None
    assert api.get("/api/v1/measurements", params={"from_ts": 200, "to_ts": 100}).json()["rows"] == []
    now_ts = clock.wall().timestamp()
    # a to_ts set to "now" by a client (or the handler) a moment ago still gets the latest values
    assert len(api.get("/api/v1/measurements", params={"to_ts": now_ts - 1.0}).json()["rows"]) == 1
    assert api.get("/api/v1/measurements", params={"to_ts": now_ts - 10.0}).json()["rows"] == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"fields": "volts"}, "fields.0"),
        ({"limit": "0"}, "limit"),
        ({"resolution": "1h"}, "resolution"),
        ({"from_ts": "nan"}, "from_ts"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_query_parameters_get_422_naming_the_field(api: RunningApi, params: dict[str, str], field: str) -> None:
    r = api.get("/api/v1/measurements", params=params)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "validation_failed" and body["message"].startswith(f"{field}:")
    assert [f["field"] for f in body["fields"]] == [field]


class _FakeStore:
    """A ReadSource with history, as the persistence layer's reader provides it."""

    name = "store"

    def __init__(self) -> None:
        self.rows = [MeasurementRow(ts=1000.0 + i, values={"grid_power_w": float(i)}) for i in range(50)]

    def measurements(self, *, from_ts: float, to_ts: float, fields: Any, resolution: Resolution, limit: int) -> list[MeasurementRow]:
        return [r for r in self.rows if from_ts <= r.ts <= to_ts][:limit]

    def events(self, **kw: Any) -> list[EventInfo]:
        return [EventInfo(seq=7, kind="state", ts=1000.0, data={"to_state": "FAULT"})]


def test_measurements_page_through_a_store_reader(ctx: EMSContext, clock: SimClock) -> None:
    store = _FakeStore()
    with running_api(api_config({"max_page_rows": 20}), ctx, clock, store=store) as api:
        first = api.get("/api/v1/measurements", params={"from_ts": 1000, "to_ts": 2000, "limit": 500}).json()
        assert first["source"] == "store" and len(first["rows"]) == 20  # capped at api.max_page_rows
        assert first["next_from_ts"] > 1019.0
        seen, page, pages = [r["ts"] for r in first["rows"]], first, 1
        while page["next_from_ts"] is not None:
            page = api.get("/api/v1/measurements", params={"from_ts": page["next_from_ts"], "to_ts": 2000, "limit": 40}).json()
            seen += [r["ts"] for r in page["rows"]]
            pages += 1
        assert seen == [1000.0 + i for i in range(50)] and pages == 3
        ev = api.get("/api/v1/events").json()
        assert ev["source"] == "store" and ev["events"][0]["seq"] == 7


def test_events_filter_by_kind_and_page_by_seq(api: RunningApi, ctx: EMSContext) -> None:
    for i in range(5):
        ctx.record_event("state", n=i)
        ctx.record_event("limit", n=i)
    r = api.get("/api/v1/events", params={"kind": "state", "limit": 3})
    body = r.json()
    assert [e["data"]["n"] for e in body["events"]] == [0, 1, 2] and {e["kind"] for e in body["events"]} == {"state"}
    nxt = api.get("/api/v1/events", params={"kind": "state", "after_seq": body["next_after_seq"]}).json()
    assert [e["data"]["n"] for e in nxt["events"]] == [3, 4] and nxt["next_after_seq"] is None
    both = api.get("/api/v1/events", params={"kind": ["state", "limit"]}).json()
    assert len(both["events"]) == 10


def test_events_filter_by_time(api: RunningApi, ctx: EMSContext, clock: SimClock) -> None:
    ctx.record_event("state", n=0)
    clock.advance(100.0)
    ctx.record_event("state", n=1)
    t = clock.wall().timestamp()
    body = api.get("/api/v1/events", params={"from_ts": t - 1, "to_ts": t + 1}).json()
    assert [e["data"]["n"] for e in body["events"]] == [1]


# ---- security -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("headers", "status", "who"),
    [
        ({}, 401, "anonymous"),
        ({"Authorization": "Bearer wrong-token"}, 401, "invalid_token"),
        ({"Authorization": f"Basic {TOKENS['operator']}"}, 401, "invalid_token"),
        ({"Authorization": f"Bearer {TOKENS['viewer']}"}, 403, "viewer-1"),
    ],
)
def test_writes_without_a_good_enough_token_are_refused_and_audited(
    api: RunningApi, ctx: EMSContext, headers: dict[str, str], status: int, who: str
) -> None:
    r = api.put("/api/v1/mode", json={"mode": "IDLE"}, headers=headers)
    assert r.status_code == status, r.text
    assert r.json()["error"] == ("unauthorized" if status == 401 else "forbidden")
    if status == 401:
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert ctx.snapshot().requested_mode is Mode.SELF_CONSUMPTION
    (audit,) = _audits(ctx)
    assert audit == {
        "who": who, "via": "rest", "what": "mode", "old": "SELF_CONSUMPTION", "new": "IDLE",
        "result": "refused", "status": status, "message": r.json()["message"],
    }  # fmt: skip


@pytest.mark.parametrize("role", ["operator", "admin"])
def test_operator_and_admin_may_change_the_mode(api: RunningApi, ctx: EMSContext, role: str) -> None:
    r = api.put("/api/v1/mode", role, json={"mode": "CHARGE_ONLY"})
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] is True and r.json()["old"] == "SELF_CONSUMPTION" and r.json()["new"] == "CHARGE_ONLY"
    assert ctx.snapshot().requested_mode is Mode.CHARGE_ONLY
    (audit,) = _audits(ctx)
    assert audit["who"] == f"{role}-1" and audit["result"] == "accepted" and audit["new"] == "CHARGE_ONLY"


def test_config_needs_admin_and_redacts_secrets(api: RunningApi) -> None:
    assert api.get("/api/v1/config").status_code == 401
    assert api.get("/api/v1/config", "operator").status_code == 403
    r = api.get("/api/v1/config", "admin")
    assert r.status_code == 200
    body = r.json()
    assert body["config"]["api"]["tokens"][0]["secret"] == "***" and "api.tokens.0.secret" in body["redacted"]
    assert body["config"]["control"]["enabled"] is False
    for secret in TOKENS.values():
        assert secret not in r.text


def test_protected_reads_need_a_viewer_token_but_health_does_not(ctx: EMSContext, clock: SimClock) -> None:
    _publish(ctx, clock)
    with running_api(api_config({"protect_reads": True}), ctx, clock) as api:
        for path in ("/api/v1/status", "/api/v1/events", "/api/v1/measurements", "/api/v1/mode", "/api/v1/devices", "/metrics"):
            assert api.get(path).status_code == 401, path
            assert api.get(path, "viewer").status_code == 200, path
        assert api.get("/api/v1/health").status_code == 200
        assert api.get("/api/v1/openapi.json").status_code == 200
        spec = api.get("/api/v1/openapi.json").json()
        assert spec["paths"]["/api/v1/status"]["get"]["security"] == [{"bearerAuth": []}]


def test_reads_are_public_by_default(api: RunningApi) -> None:
    assert api.get("/api/v1/status").status_code == 200
    assert api.get("/api/v1/status", headers={"Authorization": "Bearer junk"}).status_code == 200


# ---- request bodies -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "status", "error", "field"),
    [
        ({"data": "{not json", "headers": {"Content-Type": "application/json"}}, 400, "bad_json", "body"),
        ({"json": ["IDLE"]}, 400, "bad_json", "body"),
        ({"data": "mode=IDLE", "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 415, "unsupported_media_type", "body"),
        ({"json": {"mode": "TURBO"}}, 422, "validation_failed", "mode"),
        ({"json": {}}, 422, "validation_failed", "mode"),
        ({"json": {"mode": "IDLE", "extra": 1}}, 422, "validation_failed", "extra"),
        ({"json": {"mode": "IDLE", "pad": "x" * 20000}}, 413, "body_too_large", "body"),
    ],
)
def test_bad_bodies_get_4xx_naming_the_field_and_are_audited(
    api: RunningApi, ctx: EMSContext, kwargs: dict[str, Any], status: int, error: str, field: str
) -> None:
    r = api.put("/api/v1/mode", "operator", **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["error"] == error and r.json()["message"].startswith(f"{field}:")
    assert ctx.snapshot().requested_mode is Mode.SELF_CONSUMPTION
    (audit,) = _audits(ctx)
    assert audit["result"] == "refused" and audit["status"] == status and audit["who"] == "operator-1"
    assert ctx.snapshot().counters["api_writes_refused"] == 1


def test_setpoint_with_nan_power_gets_422_naming_power_w(api: RunningApi) -> None:
    r = api.put("/api/v1/setpoint", "operator", data='{"power_w": NaN, "ttl_s": 10}', headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "power_w"


# ---- set-point ----------------------------------------------------------------------------------
def test_setpoint_put_then_delete(api: RunningApi, ctx: EMSContext, clock: SimClock) -> None:
    r = api.put("/api/v1/setpoint", "operator", json={"power_w": -2500, "ttl_s": 300, "reason": "tariff"})
    assert r.status_code == 200, r.text
    assert r.json()["new"] == -2500.0 and r.json()["requested_mode"] == "EXTERNAL"
    sp = ctx.snapshot().external_setpoint
    assert sp is not None and sp.power_w == -2500.0 and sp.source == "operator-1" and sp.expires_at_s == clock.monotonic() + 300
    mode = api.get("/api/v1/mode").json()
    assert mode["requested_mode"] == "EXTERNAL" and mode["external_setpoint"]["remaining_s"] == 300.0
    r = api.delete("/api/v1/setpoint", "operator")
    assert r.status_code == 200 and r.json()["old"] == -2500.0 and r.json()["requested_mode"] == "IDLE"
    assert ctx.snapshot().external_setpoint is None
    audits = _audits(ctx)
    assert [(a["what"], a["result"]) for a in audits] == [("setpoint", "accepted"), ("release", "accepted")]
    assert audits[0]["reason"] == "tariff" and audits[1]["new_mode"] == "IDLE"


def test_setpoint_release_to_a_chosen_mode(api: RunningApi, ctx: EMSContext) -> None:
    api.put("/api/v1/setpoint", "operator", json={"power_w": 100, "ttl_s": 30})
    r = api.delete("/api/v1/setpoint", "operator", params={"mode": "SELF_CONSUMPTION"})
    assert r.status_code == 200 and ctx.snapshot().requested_mode is Mode.SELF_CONSUMPTION


def test_setpoint_ttl_beyond_the_configured_maximum_is_refused_naming_ttl_s(api: RunningApi, ctx: EMSContext) -> None:
    r = api.put("/api/v1/setpoint", "operator", json={"power_w": 100, "ttl_s": 7200})  # control.external_max_ttl_s = 3600
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "ttl_s"
    assert ctx.snapshot().external_setpoint is None
    (audit,) = _audits(ctx)  # audited once, by the context
    assert audit["result"] == "refused" and audit["what"] == "setpoint" and audit["who"] == "operator-1"


def test_setpoint_delete_needs_operator(api: RunningApi, ctx: EMSContext) -> None:
    assert api.delete("/api/v1/setpoint", "viewer").status_code == 403
    assert _audits(ctx)[0]["what"] == "release" and _audits(ctx)[0]["status"] == 403


# ---- dual opt-in --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("control", "written_w", "note"), [({}, 0.0, "still gets 0 W"), ({"enabled": True, "dry_run": False}, 1500.0, "applies")]
)
def test_setpoint_obeys_the_dual_opt_in(ctx: EMSContext, clock: SimClock, control: dict[str, Any], written_w: float, note: str) -> None:
    cfg = api_config(control=control)
    controller = Controller(ctx=ctx, cfg=cfg.control, clock=clock)
    with running_api(cfg, ctx, clock) as api:
        r = api.put("/api/v1/setpoint", "operator", json={"power_w": 1500, "ttl_s": 60})
        assert r.status_code == 200 and note in r.json()["note"]
        assert r.json()["control"]["live"] is bool(control)
        for _ in range(3):
            _feed(ctx, clock)
            controller.cycle()
            clock.advance(1.0)
        s = api.get("/api/v1/status").json()
    assert s["state"] == "EXTERNAL" and s["effective_mode"] == "EXTERNAL"
    assert s["command"]["computed_w"] == 1500.0 and s["command"]["written_w"] == written_w
    assert ("control_disabled" in [lim["name"] for lim in s["limits"]]) is not bool(control)


def test_mode_change_with_control_disabled_is_accepted_and_says_0_w(api: RunningApi, ctx: EMSContext) -> None:
    r = api.put("/api/v1/mode", "operator", json={"mode": "DISCHARGE_ONLY"})
    assert r.status_code == 200 and r.json()["accepted"] is True
    assert r.json()["control"] == {"enabled": False, "dry_run": True, "live": False, "soc_min_pct": 10.0, "soc_max_pct": 95.0}
    assert "control.enabled is false" in r.json()["note"] and "0 W" in r.json()["note"]


def test_mode_change_in_dry_run_says_so(ctx: EMSContext, clock: SimClock) -> None:
    with running_api(api_config(control={"enabled": True}), ctx, clock) as api:
        r = api.put("/api/v1/mode", "operator", json={"mode": "IDLE"})
    assert r.status_code == 200 and "control.dry_run is true" in r.json()["note"]


# ---- devices, metrics, openapi ------------------------------------------------------------------
def test_devices_list_what_the_workers_report(api: RunningApi, ctx: EMSContext, clock: SimClock) -> None:
    ctx.set_status(
        "device:meter",
        {"worker": "modbus", "protocol": "modbus-tcp", "address": "127.0.0.1:5020/1", "map": "sunspec-meter", "model": "EM24"},
    )
    ctx.mark_ok("modbus", at_s=clock.monotonic())
    clock.advance(1.5)
    devices = {d["name"]: d for d in api.get("/api/v1/devices").json()["devices"]}
    meter = devices["meter"]
    assert (meter["protocol"], meter["address"], meter["map"]) == ("modbus-tcp", "127.0.0.1:5020/1", "sunspec-meter")
    assert meter["details"] == {"model": "EM24"} and meter["last_seen_age_s"] == 1.5 and meter["ok"] is True
    assert set(devices) == {"meter"}  # the modbus worker has a device; the api worker is no source


def test_devices_list_modbus_can_and_mqtt_sources_as_their_workers_report_them(api: RunningApi, ctx: EMSContext, clock: SimClock) -> None:
    ctx.set_status(
        "modbus.ess", {"connected": True, "where": "127.0.0.1:5020 unit 1", "map": "sunspec", "models": [1, 103], "identity": {"sn": "X1"}}
    )
    ctx.set_status("bms", {"name": "PYLON", "protections": [], "warnings": [], "silent": False})
    ctx.set_status("mqtt_link", "up")
    for w in ("modbus", "can", "mqtt"):
        ctx.mark_ok(w, at_s=clock.monotonic())
    devices = {d["name"]: d for d in api.get("/api/v1/devices").json()["devices"]}
    assert set(devices) == {"ess", "bms", "mqtt"}
    ess = devices["ess"]
    assert (ess["protocol"], ess["address"], ess["map"]) == ("modbus", "127.0.0.1:5020 unit 1", "sunspec")
    assert ess["details"]["identity"] == {"sn": "X1"} and ess["last_seen_age_s"] == 0.0
    assert devices["bms"]["protocol"] == "can" and devices["bms"]["details"]["name"] == "PYLON"
    assert devices["mqtt"]["address"] == "127.0.0.1:1883" and devices["mqtt"]["details"] == {"link": "up"}


def test_a_source_worker_without_a_device_entry_is_listed_by_worker_name(api: RunningApi, ctx: EMSContext, clock: SimClock) -> None:
    ctx.mark_error("can", reason="OSError", at_s=clock.monotonic())
    (dev,) = api.get("/api/v1/devices").json()["devices"]
    assert (dev["name"], dev["protocol"], dev["last_seen_age_s"], dev["last_error"]) == ("can", "can", None, "OSError")


def test_metrics_expose_state_command_limits_and_requests(api: RunningApi, ctx: EMSContext, clock: SimClock) -> None:
    _feed(ctx, clock)
    _publish(ctx, clock)
    ctx.count("store_queue_dropped", 4)
    api.get("/api/v1/status")
    r = api.get("/metrics")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    text = r.text
    for line in (
        'ems_state{state="SELF_CONSUMPTION"} 1.0',
        'ems_measurement{quantity="grid_power_w"} 1000.0',
        "ems_command_computed_watts 800.0",
        "ems_command_written_watts 0.0",
        'ems_limit_bound{limit="soc_min"} 1.0',
        "ems_control_live 0.0",
        "ems_control_overruns_total 0.0",
        'ems_events_total{name="store_queue_dropped"} 4.0',
        'ems_api_requests_total{endpoint="/api/v1/status",method="GET",status="200"} 1.0',
    ):
        assert line in text, line


def test_each_app_has_its_own_metrics_registry(ctx: EMSContext, clock: SimClock) -> None:
    cfg = api_config()
    one, two = create_app(cfg, ctx, clock).test_client(), create_app(cfg, ctx, clock).test_client()
    one.get("/api/v1/mode")
    assert 'endpoint="/api/v1/mode"' in one.get("/metrics").get_data(as_text=True)
    assert 'endpoint="/api/v1/mode"' not in two.get("/metrics").get_data(as_text=True)


def test_openapi_document_is_3_1_and_generated_from_the_models(api: RunningApi) -> None:
    spec = api.get("/api/v1/openapi.json").json()
    assert spec["openapi"] == "3.1.0"
    paths = spec["paths"]
    for path in ("health", "status", "measurements", "events", "mode", "setpoint", "devices", "config"):
        assert f"/api/v1/{path}" in paths, path
    assert set(paths["/api/v1/setpoint"]) == {"put", "delete"} and set(paths["/api/v1/mode"]) == {"get", "put"}
    assert "/metrics" in paths
    ttl = spec["components"]["schemas"]["SetpointRequest"]["properties"]["ttl_s"]
    assert ttl["exclusiveMinimum"] == 0
    put_mode = paths["/api/v1/mode"]["put"]
    assert put_mode["security"] == [{"bearerAuth": []}] and {"401", "403", "422"} <= set(put_mode["responses"])
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def test_unknown_path_and_method_get_json_errors(api: RunningApi) -> None:
    r = api.get("/api/v1/nothing")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = api.delete("/api/v1/mode", "admin")
    assert r.status_code == 405 and "PUT" in r.headers["Allow"]


# ---- server lifecycle ---------------------------------------------------------------------------
def test_server_binds_loopback_beats_and_stops(ctx: EMSContext, clock: SimClock) -> None:
    server = ApiServer(cfg=api_config(), ctx=ctx, clock=clock)
    server.start()
    try:
        assert server.name == "api" and server.is_alive() and server.url.startswith("http://127.0.0.1:")
        wait_for(lambda: any(w.name == "api" and w.last_beat_s is not None for w in ctx.snapshot().workers), what="api heartbeat")
    finally:
        server.stop(timeout_s=5.0)
    assert not server.is_alive()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", server.port or 0)) != 0  # nothing listens any more


def test_build_services_adds_the_api_only_when_enabled(ctx: EMSContext, clock: SimClock) -> None:
    assert not [s for s in build_services(parse_config({}, {}), ctx, clock) if isinstance(s, ApiServer)]
    services = build_services(api_config(), ctx, clock)
    assert [s.name for s in services if isinstance(s, ApiServer)] == ["api"]


def test_a_token_without_a_resolvable_secret_stops_the_config() -> None:
    with pytest.raises(Exception, match=r"api\.tokens\.0\.secret"):
        parse_config({"api": {"tokens": [{"name": "x", "role": "admin", "secret": {"env": "EMS_TEST_MISSING"}}]}}, {})


def test_two_tokens_with_the_same_secret_are_refused(ctx: EMSContext, clock: SimClock) -> None:
    cfg = api_config(
        {"tokens": [{"name": n, "role": r, "secret": {"env": "EMS_TEST_TOKEN_VIEWER"}} for n, r in (("a", "viewer"), ("b", "admin"))]}
    )
    with pytest.raises(ValueError, match="'a' and 'b' have the same secret"):
        create_app(cfg, ctx, clock)


def test_responses_are_plain_json(api: RunningApi) -> None:
    r = api.get("/api/v1/status")
    assert r.headers["Content-Type"] == "application/json" and isinstance(json.loads(r.text), dict)
