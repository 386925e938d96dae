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
from ems.model import Mode, Quantity, State
from main import build_services
from tests.helpers.api import TOKENS, RunningApi, api_config, running_api
from tests.helpers.common import wait_for
from tests.helpers.context import feed, make_controller, publish

Q = Quantity
STREAK = api_config().api.health_max_error_streak  # errors in a row that make a device failing (or degraded)


def _feed(ctx: EMSContext, clock: SimClock, grid_w: float = 1000.0) -> None:
    feed(ctx, {Q.GRID_POWER_W: grid_w, Q.ESS_POWER_W: 0.0, Q.SOC_PCT: 50.0}, at_s=clock.monotonic())


def _publish(
    ctx: EMSContext, clock: SimClock, state: State = State.SELF_CONSUMPTION, *, seq: int = 1, causes: tuple[str, ...] = ()
) -> None:
    """A cycle as the controller publishes it with control disabled: 800 W computed, soc_min bound, 0 W written."""
    publish(
        ctx, seq=seq, setpoint_w=800.0, written_w=0.0, state=state, limits=("soc_min",), gate="control_disabled",
        fault_causes=causes, at_s=clock.monotonic(),
    )  # fmt: skip


def _device(ctx: EMSContext, clock: SimClock, name: str, owns: dict[Quantity, float], *, where: str = "127.0.0.1:5020") -> None:
    """A Modbus device with its own link thread that owns (and has just delivered) `owns`."""
    thread = f"modbus-{name}"
    ctx.health.register_thread(thread, (name,))
    ctx.health.register_device(name, kind="modbus", where=where, thread=thread)
    feed(ctx, owns, at_s=clock.monotonic(), source=name)
    ctx.health.beat(thread, at_s=clock.monotonic())
    ctx.health.ok(name, at_s=clock.monotonic())


def _fail(ctx: EMSContext, clock: SimClock, name: str, times: int = STREAK, reason: str = "ConnectionError") -> None:
    for _ in range(times):
        ctx.health.error(name, reason=reason, at_s=clock.monotonic())


def _by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in items}


DEVICE_FIELDS = ("name", "kind", "address", "required", "status", "owns", "last_ok_age_s", "error_streak", "errors_total", "last_error")


def _fields(d: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """The named fields of `d`, each of which must be there (models may grow optional fields)."""
    return {n: d[n] for n in names}


def _audits(ctx: EMSContext) -> list[dict[str, Any]]:
    return [dict(e.data) for e in ctx.events.since(0) if e.kind == "audit"]


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
    assert body["healthy"] is True and body["problems"] == [] and body["degraded"] == [] and body["state"] == "SELF_CONSUMPTION"
    assert body["last_reading_age_s"] == 0.0 and body["controller_age_s"] == 0.0
    assert [w["name"] for w in body["workers"]] == ["api"]
    assert [(d["name"], d["kind"], d["required"]) for d in body["devices"]] == [("api", "http", False)]


def test_health_is_503_in_fault_naming_the_causes(api: RunningApi, ctx: EMSContext, clock: SimClock) -> None:
    _publish(ctx, clock, State.FAULT, causes=("stale:grid_power_w",))
    r = api.get("/api/v1/health")
    assert r.status_code == 503
    assert r.json()["healthy"] is False and "fault:stale:grid_power_w" in r.json()["problems"]


def test_health_is_503_for_a_failing_required_device_or_its_stale_thread(api: RunningApi, ctx: EMSContext, clock: SimClock) -> None:
    _device(ctx, clock, "meter", {Q.GRID_POWER_W: 1000.0})
    _publish(ctx, clock)
    assert api.get("/api/v1/health").status_code == 200
    _fail(ctx, clock, "meter", reason="TimeoutError")
    r = api.get("/api/v1/health")
    assert r.status_code == 503 and "device_failing:meter" in r.json()["problems"]
    meter = _by_name(r.json()["devices"])["meter"]
    assert (meter["status"], meter["required"], meter["owns"]) == ("failing", True, ["grid_power_w"])
    assert (meter["error_streak"], meter["last_error"]) == (STREAK, "TimeoutError")
    ctx.health.ok("meter", at_s=clock.monotonic())
    clock.advance(11.0)  # > control.worker_stall_s
    ctx.health.beat("api", at_s=clock.monotonic())  # the API's own thread is not what this test is about
    _publish(ctx, clock, seq=2)
    r = api.get("/api/v1/health")
    assert r.status_code == 503 and "worker_stale:modbus-meter" in r.json()["problems"]
    assert "device_failing:meter" not in r.json()["problems"]
    link = _by_name(r.json()["workers"])["modbus-meter"]
    assert (link["stale"], link["ok"], link["required"], link["devices"], link["last_beat_age_s"]) == (True, False, True, ["meter"], 11.0)
    meter = _by_name(r.json()["devices"])["meter"]
    assert meter["last_ok_age_s"] == 11.0 and meter["errors_total"] == STREAK and meter["error_streak"] == 0


def test_a_failing_optional_device_only_degrades_health_while_a_failing_required_one_is_503(
    api: RunningApi, ctx: EMSContext, clock: SimClock
) -> None:
    _device(ctx, clock, "meter", {Q.GRID_POWER_W: 1000.0})  # owns a required source: required
    _device(ctx, clock, "pv", {Q.PV_POWER_W: 1500.0})  # owns nothing the control needs: optional
    _publish(ctx, clock)
    _fail(ctx, clock, "pv", times=STREAK - 1)
    r = api.get("/api/v1/health")
    assert r.status_code == 200 and r.json()["degraded"] == []  # one error short of the streak
    assert _by_name(r.json()["devices"])["pv"]["status"] == "ok"

    _fail(ctx, clock, "pv", times=1)
    r = api.get("/api/v1/health")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["healthy"] is True and body["problems"] == [] and body["degraded"] == ["device_failing:pv"]
    pv = _by_name(body["devices"])["pv"]
    assert (pv["status"], pv["required"], pv["owns"]) == ("degraded", False, ["pv_power_w"])
    assert (pv["error_streak"], pv["errors_total"], pv["last_error"]) == (STREAK, STREAK, "ConnectionError")
    assert _by_name(body["devices"])["meter"]["status"] == "ok"

    _fail(ctx, clock, "meter")  # the same streak on the device that owns grid_power_w
    r = api.get("/api/v1/health")
    assert r.status_code == 503, r.text
    body = r.json()
    assert body["healthy"] is False and body["problems"] == ["device_failing:meter"] and body["degraded"] == ["device_failing:pv"]
    meter = _by_name(body["devices"])["meter"]
    assert (meter["status"], meter["required"], meter["error_streak"]) == ("failing", True, STREAK)


def test_health_is_503_when_the_controller_stops_cycling(api: RunningApi, ctx: EMSContext, clock: SimClock) -> None:
    _publish(ctx, clock)
    clock.advance(6.0)  # > api.controller_stale_s
    ctx.health.beat("api", at_s=clock.monotonic())
    r = api.get("/api/v1/health")
    assert r.status_code == 503 and "controller_stale" in r.json()["problems"]


# ---- status -------------------------------------------------------------------------------------
def test_status_shows_state_modes_measurements_with_ages_command_limits_and_flags(
    api: RunningApi, ctx: EMSContext, clock: SimClock
) -> None:
    _feed(ctx, clock, grid_w=1234.5)
    clock.advance(2.0)
    _publish(ctx, clock)
    bms = ctx.readings.claim("bms", (), bms_flags=True)
    bms.set_bms_flags(protections=["cell_overvoltage"], warnings=["temp_high"], at_s=clock.monotonic())
    r = api.get("/api/v1/status")
    assert r.status_code == 200
    s = r.json()
    assert s["state"] == "SELF_CONSUMPTION" and s["requested_mode"] == "SELF_CONSUMPTION" and s["effective_mode"] == "SELF_CONSUMPTION"
    assert s["control"] == {"enabled": False, "dry_run": True, "live": False, "soc_min_pct": 10.0, "soc_max_pct": 95.0}
    grid = s["measurements"]["grid_power_w"]
    assert grid["value"] == 1234.5 and grid["age_s"] == 2.0 and grid["stale"] is False
    cmd = s["command"]
    assert cmd["setpoint_w"] == 800.0 and cmd["written_w"] == 0.0 and cmd["acknowledged"] is False and "state" not in cmd
    assert cmd["gate"] == "control_disabled" and cmd["hold"] is None and cmd["reasons"] == ["soc_min", "control_disabled"]
    assert [lim["name"] for lim in s["limits"]] == ["soc_min"]  # limits only: the gate is in the command
    assert all(lim["why"] for lim in s["limits"])
    assert s["bms_protections"] == ["cell_overvoltage"] and s["bms_warnings"] == ["temp_high"]
    assert s["fault_causes"] == [] and s["cycles"] == 1 and s["site_id"] == "site-001"


def test_status_lists_health_per_device(api: RunningApi, ctx: EMSContext, clock: SimClock) -> None:
    _device(ctx, clock, "meter", {Q.GRID_POWER_W: 1000.0}, where="127.0.0.1:5020 unit 2")
    ctx.health.register_thread("modbus-pv", ("pv",))
    ctx.health.register_device("pv", kind="modbus", where="127.0.0.1:5021 unit 3", thread="modbus-pv")
    feed(ctx, {Q.PV_POWER_W: 0.0}, at_s=clock.monotonic(), source="pv")  # claimed; the device has not answered yet
    clock.advance(2.0)
    ctx.health.beat("api", at_s=clock.monotonic())
    ctx.health.error("pv", reason="ConnectionRefusedError", at_s=clock.monotonic())
    _publish(ctx, clock)
    s = api.get("/api/v1/status").json()
    devices = _by_name(s["devices"])
    assert set(devices) == {"api", "meter", "pv"}
    assert _fields(devices["meter"], DEVICE_FIELDS) == {
        "name": "meter", "kind": "modbus", "address": "127.0.0.1:5020 unit 2", "required": True, "status": "ok",
        "owns": ["grid_power_w"], "last_ok_age_s": 2.0, "error_streak": 0, "errors_total": 0, "last_error": None,
    }  # fmt: skip
    assert _fields(devices["pv"], DEVICE_FIELDS) == {
        "name": "pv", "kind": "modbus", "address": "127.0.0.1:5021 unit 3", "required": False, "status": "starting",
        "owns": ["pv_power_w"], "last_ok_age_s": None, "error_streak": 1, "errors_total": 1, "last_error": "ConnectionRefusedError",
    }  # fmt: skip
    assert devices["api"]["kind"] == "http" and devices["api"]["required"] is False
    workers = _by_name(s["workers"])
    assert (workers["modbus-meter"]["required"], workers["modbus-meter"]["devices"]) == (True, ["meter"])
    assert (workers["modbus-pv"]["required"], workers["modbus-pv"]["devices"]) == (False, ["pv"])


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
        ctx.events.record("state", n=i)
        ctx.events.record("limit", n=i)
    r = api.get("/api/v1/events", params={"kind": "state", "limit": 3})
    body = r.json()
    assert [e["data"]["n"] for e in body["events"]] == [0, 1, 2] and {e["kind"] for e in body["events"]} == {"state"}
    nxt = api.get("/api/v1/events", params={"kind": "state", "after_seq": body["next_after_seq"]}).json()
    assert [e["data"]["n"] for e in nxt["events"]] == [3, 4] and nxt["next_after_seq"] is None
    both = api.get("/api/v1/events", params={"kind": ["state", "limit"]}).json()
    assert len(both["events"]) == 10


def test_events_filter_by_time(api: RunningApi, ctx: EMSContext, clock: SimClock) -> None:
    ctx.events.record("state", n=0)
    clock.advance(100.0)
    ctx.events.record("state", n=1)
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
    ("control", "written_w", "gate", "note"),
    [({}, 0.0, "control_disabled", "still gets 0 W"), ({"enabled": True, "dry_run": False}, 1500.0, None, "applies")],
)
def test_setpoint_obeys_the_dual_opt_in(
    ctx: EMSContext, clock: SimClock, control: dict[str, Any], written_w: float, gate: str | None, note: str
) -> None:
    cfg = api_config(control=control)
    controller = make_controller(ctx, cfg, clock)
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
    assert s["command"]["setpoint_w"] == 1500.0 and s["command"]["written_w"] == written_w
    # the opt-in gate is the command's gate (and one of its reasons), never a limit
    assert s["command"]["gate"] == gate and ("control_disabled" in s["command"]["reasons"]) is not bool(control)
    assert "control_disabled" not in [lim["name"] for lim in s["limits"]]


def test_mode_change_with_control_disabled_is_accepted_and_says_0_w(api: RunningApi, ctx: EMSContext) -> None:
    r = api.put("/api/v1/mode", "operator", json={"mode": "DISCHARGE_ONLY"})
    assert r.status_code == 200 and r.json()["accepted"] is True
    assert r.json()["control"] == {"enabled": False, "dry_run": True, "live": False, "soc_min_pct": 10.0, "soc_max_pct": 95.0}
    assert "control.enabled is false" in r.json()["note"] and "0 W" in r.json()["note"]


def test_mode_change_in_dry_run_says_so(ctx: EMSContext, clock: SimClock) -> None:
    with running_api(api_config(control={"enabled": True}), ctx, clock) as api:
        r = api.put("/api/v1/mode", "operator", json={"mode": "IDLE"})
    assert r.status_code == 200 and "control.dry_run is true" in r.json()["note"]


def test_mode_external_without_a_setpoint_says_setpoint_missing(ctx: EMSContext, clock: SimClock) -> None:
    with running_api(api_config(control={"enabled": True, "dry_run": False}), ctx, clock) as api:
        r = api.put("/api/v1/mode", "operator", json={"mode": "EXTERNAL"})
    assert r.status_code == 200 and r.json()["requested_mode"] == "EXTERNAL"
    assert "no set-point (setpoint_missing)" in r.json()["note"] and "STANDBY" in r.json()["note"]


# ---- devices, metrics, openapi ------------------------------------------------------------------
def test_devices_list_what_the_workers_report(api: RunningApi, ctx: EMSContext, clock: SimClock) -> None:
    ctx.health.register_device("meter", kind="modbus-tcp", where="127.0.0.1:5020/1", thread="modbus-meter")
    ctx.health.set_info("meter", map="sunspec-meter", model="EM24")
    ctx.health.ok("meter", at_s=clock.monotonic())
    clock.advance(1.5)
    devices = _by_name(api.get("/api/v1/devices").json()["devices"])
    meter = devices["meter"]
    assert (meter["protocol"], meter["address"], meter["map"]) == ("modbus-tcp", "127.0.0.1:5020/1", "sunspec-meter")
    assert meter["details"] == {"model": "EM24"} and meter["last_seen_age_s"] == 1.5 and meter["ok"] is True
    # every device with health is listed: the meter, and the API server itself (it has no readings)
    assert set(devices) == {"meter", "api"}
    assert (devices["api"]["protocol"], devices["api"]["owns"], devices["api"]["address"]) == ("http", [], api.url.removeprefix("http://"))
    assert devices["api"]["details"] == {"url": api.url}


def test_devices_list_modbus_can_and_mqtt_sources_as_their_workers_report_them(api: RunningApi, ctx: EMSContext, clock: SimClock) -> None:
    ctx.health.register_device("ess", kind="modbus", where="127.0.0.1:5020 unit 1", thread="modbus-ess", actuator=True)
    ctx.health.set_info("ess", connected=True, map="sunspec", models=[1, 103], identity={"sn": "X1"})
    ctx.health.register_device("bms", kind="can", where="virtual:vcan0", thread="can")
    ctx.health.set_info("bms", name="PYLON", protections=[], warnings=[], silent=False)
    ctx.health.register_device("broker", kind="mqtt", where="127.0.0.1:1883", thread="mqtt")
    ctx.health.set_info("broker", link="up")
    for device in ("ess", "bms", "broker"):
        ctx.health.ok(device, at_s=clock.monotonic())
    devices = _by_name(api.get("/api/v1/devices").json()["devices"])
    assert set(devices) == {"ess", "bms", "broker", "api"}
    ess = devices["ess"]
    assert (ess["protocol"], ess["address"], ess["map"]) == ("modbus", "127.0.0.1:5020 unit 1", "sunspec")
    assert ess["details"]["identity"] == {"sn": "X1"} and ess["details"]["models"] == [1, 103] and ess["last_seen_age_s"] == 0.0
    assert ess["required"] is True  # the actuator
    assert devices["bms"]["protocol"] == "can" and devices["bms"]["details"]["name"] == "PYLON"
    assert devices["broker"]["address"] == "127.0.0.1:1883" and devices["broker"]["details"] == {"link": "up"}


def test_a_device_nobody_registered_is_still_listed_when_it_reports(api: RunningApi, ctx: EMSContext, clock: SimClock) -> None:
    ctx.health.error("bms", reason="OSError", at_s=clock.monotonic())
    dev = _by_name(api.get("/api/v1/devices").json()["devices"])["bms"]
    assert (dev["name"], dev["protocol"], dev["last_seen_age_s"], dev["last_error"], dev["error_streak"]) == (
        "bms", "unknown", None, "OSError", 1,
    )  # fmt: skip


def test_metrics_expose_state_command_limits_and_requests(api: RunningApi, ctx: EMSContext, clock: SimClock) -> None:
    _feed(ctx, clock)
    _publish(ctx, clock)
    ctx.counters.count("store_queue_dropped", 4)
    api.get("/api/v1/status")
    r = api.get("/metrics")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    text = r.text
    for line in (
        'ems_state{state="SELF_CONSUMPTION"} 1.0',
        "ems_grid_power_watts 1000.0",
        "ems_setpoint_watts 800.0",
        "ems_written_watts 0.0",
        'ems_limit_bound{limit="soc_min"} 1.0',
        'ems_command_held{reason="control_disabled"} 1.0',
        "ems_control_live 0.0",
        "ems_control_overruns_total 0.0",
        'ems_events_total{name="store_queue_dropped"} 4.0',
        'ems_api_requests_total{endpoint="/api/v1/status",method="GET",status="200"} 1.0',
    ):
        assert line in text, line
    assert 'ems_limit_bound{limit="control_disabled"}' not in text  # a gate, not a limit


def test_metrics_expose_health_per_device(api: RunningApi, ctx: EMSContext, clock: SimClock) -> None:
    _device(ctx, clock, "meter", {Q.GRID_POWER_W: 1000.0})
    _device(ctx, clock, "pv", {Q.PV_POWER_W: 1500.0})
    clock.advance(2.0)
    ctx.health.beat("api", at_s=clock.monotonic())
    _fail(ctx, clock, "pv")
    _publish(ctx, clock)
    text = api.get("/metrics").text
    for line in (
        f'ems_device_error_streak{{device="pv"}} {STREAK:.1f}',
        'ems_device_error_streak{device="meter"} 0.0',
        f'ems_device_errors_total{{device="pv"}} {STREAK:.1f}',
        'ems_device_errors_total{device="meter"} 0.0',
        'ems_device_required{device="meter"} 1.0',
        'ems_device_required{device="pv"} 0.0',
        'ems_device_last_ok_age_seconds{device="meter"} 2.0',
        'ems_device_last_ok_age_seconds{device="pv"} 2.0',
        'ems_worker_heartbeat_age_seconds{worker="modbus-pv"} 2.0',
    ):
        assert line in text, line
    streaks = [line.split("{")[1].split("}")[0] for line in text.splitlines() if line.startswith("ems_device_error_streak{")]
    assert sorted(streaks) == ['device="api"', 'device="meter"', 'device="pv"']  # one per device


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
        wait_for(lambda: any(w.name == "api" and w.last_beat_s is not None for w in ctx.snapshot().threads), what="api heartbeat")
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
