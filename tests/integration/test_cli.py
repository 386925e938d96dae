"""`emsctl` against real servers: the REST API on waitress (in-process), a pymodbus SunSpec simulator,
a python-can virtual bus. Each command's output, exit code and error message."""

from __future__ import annotations

import io
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ems.clock import SystemClock
from ems.context import EMSContext
from ems.controller import Controller
from ems.model import Mode, Quantity
from interfaces.can.codec import Codec
from interfaces.cli.client import EXIT_AUTH, EXIT_FAIL, EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE
from interfaces.cli.main import main as emsctl
from tests.helpers.api import TOKENS, api_config, running_api
from tests.helpers.can import BmsTx, virtual_bus, virtual_channel
from tests.helpers.common import REPO_ROOT, free_port, wait_for
from tests.helpers.context import feed, make_controller
from tests.helpers.modbus import LoopThread, SimDevice, pty_pair

FRESH = {Quantity.GRID_POWER_W: 800.0, Quantity.PV_POWER_W: 1500.0, Quantity.ESS_POWER_W: -300.0, Quantity.SOC_PCT: 55.0}
OWNER = {Quantity.GRID_POWER_W: "meter", Quantity.PV_POWER_W: "pv"}  # the rest: the inverter ("ess")


@dataclass
class Site:
    url: str
    ctx: EMSContext
    controller: Controller
    clock: SystemClock

    def cycle(self, readings: dict[Quantity, float] | None = None) -> None:
        """Each device delivers its readings (and says so), then one control cycle."""
        values = FRESH if readings is None else readings
        for source in dict.fromkeys(OWNER.get(q, "ess") for q in values):
            feed(self.ctx, {q: v for q, v in values.items() if OWNER.get(q, "ess") == source}, source=source)
            self.ctx.health.ok(source, at_s=self.clock.monotonic())
            self.ctx.health.beat(f"modbus-{source}", at_s=self.clock.monotonic())
        self.controller.cycle()

    def fail(self, device: str, times: int, reason: str) -> None:
        for _ in range(times):
            self.ctx.health.error(device, reason=reason, at_s=self.clock.monotonic())


@pytest.fixture
def site() -> Iterator[Site]:
    clock = SystemClock()
    cfg = api_config(control={"start_mode": "SELF_CONSUMPTION"})
    ctx = EMSContext(clock=clock, start_mode=Mode.SELF_CONSUMPTION, max_ttl_s=cfg.control.external_max_ttl_s)
    controller = make_controller(ctx, cfg, clock)
    with running_api(cfg, ctx, clock) as api:
        for name, where in (("ess", "127.0.0.1:5020 unit 1"), ("meter", "127.0.0.1:5020 unit 2"), ("pv", "127.0.0.1:5021 unit 3")):
            ctx.health.register_thread(f"modbus-{name}", (name,))
            ctx.health.register_device(name, kind="modbus", where=where, thread=f"modbus-{name}", actuator=name == "ess")
        s = Site(api.url, ctx, controller, clock)
        s.cycle()  # STOP -> STANDBY
        s.cycle()  # -> SELF_CONSUMPTION (the requested mode)
        yield s


def run(*args: str, url: str | None = None, role: str | None = "operator", env: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    environ = dict(env or {})
    if role is not None:
        environ["EMSCTL_TOKEN"] = TOKENS[role]
    argv = ["--url", url, *args] if url else list(args)
    rc = emsctl(argv, environ=environ, stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


def as_json(text: str) -> Any:
    return json.loads(text)


# ---- REST commands ------------------------------------------------------------------------------
def test_status_shows_one_screen_with_state_powers_soc_command_limits_and_workers(site: Site) -> None:
    rc, out, err = run("status", url=site.url, role=None)
    assert rc == EXIT_OK, err
    assert "EMS site-001 · state SELF_CONSUMPTION" in out
    assert "grid power +800 W (import)" in out and "pv power 1500.0 W" in out and "ess power -300 W (charge)" in out
    assert "load 2000 W" in out  # grid + pv + ess
    assert "soc 55.0 %" in out
    assert "NOT LIVE (control.enabled is false)" in out
    assert "command   #2 set-point" in out and "written +0 W" in out
    assert "gate control_disabled" in out  # the gate that keeps 0 W written, with why
    assert "faults    none" in out
    assert re.search(r"^devices   api (ok|starting)\b.* · ess ok \(.* · meter ok \(.* · pv ok \(", out, re.M), out
    assert "threads" not in out  # no thread is stale
    assert len(out.splitlines()) <= 24  # one screen


def test_status_json_is_the_api_document(site: Site) -> None:
    rc, out, _ = run("status", "--json", url=site.url)
    assert rc == EXIT_OK
    doc = as_json(out)
    assert doc["state"] == "SELF_CONSUMPTION" and doc["measurements"]["soc_pct"]["value"] == 55.0
    assert doc["command"]["seq"] == 2


def test_health_exits_0_when_healthy_and_1_with_the_problems_when_not(site: Site) -> None:
    rc, out, _ = run("health", url=site.url)
    assert rc == EXIT_OK, out
    assert out.startswith("healthy")
    site.cycle({Quantity.PV_POWER_W: 0.0})  # only pv: the required sources go stale -> FAULT once fault_timeout_s passes
    site.ctx.events.record("note")  # nothing else changes
    wait_for(
        lambda: (site.cycle({Quantity.PV_POWER_W: 0.0}), run("health", url=site.url)[0] == EXIT_FAIL)[1], timeout_s=10, what="unhealthy"
    )
    rc, out, _ = run("health", url=site.url)
    assert rc == EXIT_FAIL and out.startswith("UNHEALTHY: fault:stale:grid_power_w")
    rc, out, _ = run("health", "--json", url=site.url)
    assert rc == EXIT_FAIL and as_json(out)["healthy"] is False


def test_health_and_status_show_a_degraded_pv_device_and_health_still_exits_0(site: Site) -> None:
    streak = api_config().api.health_max_error_streak
    site.fail("pv", streak, "ConnectionRefusedError")  # pv owns no required source: degraded, not unhealthy
    rc, out, _ = run("health", url=site.url)
    assert rc == EXIT_OK, out
    assert out.startswith("healthy")
    assert f"pv DEGRADED x{streak}: ConnectionRefusedError (last ok" in out and "meter ok (" in out
    assert "degraded  device_failing:pv" in out
    rc, out, _ = run("health", "--json", url=site.url)
    doc = as_json(out)
    assert rc == EXIT_OK and doc["healthy"] is True and doc["degraded"] == ["device_failing:pv"]
    assert {d["name"]: d["status"] for d in doc["devices"]}["pv"] == "degraded"
    rc, out, _ = run("status", url=site.url)
    assert rc == EXIT_OK and f"pv DEGRADED x{streak}: ConnectionRefusedError" in out

    site.fail("meter", streak, "TimeoutError")  # the owner of grid_power_w: required
    rc, out, _ = run("health", url=site.url)
    assert rc == EXIT_FAIL and out.startswith("UNHEALTHY: device_failing:meter")
    assert f"meter FAILING x{streak}: TimeoutError" in out and "degraded  device_failing:pv" in out


def test_mode_show_and_set_with_an_operator_token(site: Site) -> None:
    rc, out, _ = run("mode", url=site.url)
    assert rc == EXIT_OK and out.startswith("requested SELF_CONSUMPTION, effective SELF_CONSUMPTION")
    rc, out, err = run("mode", "set", "charge_only", url=site.url)
    assert rc == EXIT_OK, err
    assert out.startswith("mode accepted: SELF_CONSUMPTION -> CHARGE_ONLY") and "inverter still gets 0 W" in out
    assert site.ctx.snapshot().requested_mode is Mode.CHARGE_ONLY
    rc, out, _ = run("mode", "--json", url=site.url)
    assert as_json(out)["requested_mode"] == "CHARGE_ONLY"


def test_writes_need_a_token_of_operator_role(site: Site) -> None:
    rc, _, err = run("mode", "set", "IDLE", url=site.url, role=None)
    assert rc == EXIT_USAGE and "needs an operator token" in err
    rc, _, err = run("mode", "set", "IDLE", url=site.url, role="viewer")
    assert rc == EXIT_AUTH and "role viewer" in err and "needs operator" in err
    rc, _, err = run("mode", "set", "IDLE", url=site.url, role=None, env={"EMSCTL_TOKEN": "wrong"})
    assert rc == EXIT_AUTH and "invalid bearer token" in err
    assert site.ctx.snapshot().requested_mode is Mode.SELF_CONSUMPTION


def test_token_from_a_file(site: Site, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKENS["operator"] + "\n", encoding="utf-8")
    rc, _, err = run("--token-file", str(token), "mode", "set", "IDLE", url=site.url, role=None)
    assert rc == EXIT_OK, err
    rc, _, err = run("mode", "set", "IDLE", url=site.url, role=None, env={"EMSCTL_TOKEN_FILE": str(tmp_path / "missing")})
    assert rc == EXIT_USAGE and "cannot read token file" in err


def test_setpoint_then_release(site: Site) -> None:
    rc, out, err = run("setpoint", "1500", "--ttl", "120", "--reason", "commissioning test", url=site.url)
    assert rc == EXIT_OK, err
    assert out.startswith("setpoint accepted")
    site.cycle()
    rc, out, _ = run("status", url=site.url)
    assert "setpoint  +1500 W for" in out and "operator-1: commissioning test" in out
    rc, out, _ = run("setpoint", "--json", "-500", "--ttl", "60", url=site.url)
    assert rc == EXIT_OK and as_json(out)["new"] == -500.0
    rc, out, err = run("release", "--mode", "idle", url=site.url)
    assert rc == EXIT_OK, err
    assert out.startswith("release accepted")
    snap = site.ctx.snapshot()
    assert snap.external_setpoint is None and snap.requested_mode is Mode.IDLE


def test_refused_setpoint_names_the_field(site: Site) -> None:
    rc, _, err = run("setpoint", "1000", "--ttl", "0", url=site.url)
    assert rc == EXIT_REFUSED and "ttl_s" in err
    assert site.ctx.snapshot().external_setpoint is None


def test_events_lists_audit_and_state_events_and_filters_by_kind(site: Site) -> None:
    run("mode", "set", "IDLE", url=site.url)
    run("mode", "set", "SELF_CONSUMPTION", url=site.url)
    rc, out, _ = run("events", url=site.url)
    assert rc == EXIT_OK
    assert "state" in out and "audit" in out and "new=IDLE" in out
    rc, out, _ = run("events", "--kind", "audit", "--json", "--limit", "1", url=site.url)
    lines = [as_json(line) for line in out.splitlines()]
    assert len(lines) == 1 and lines[0]["kind"] == "audit" and lines[0]["data"]["new"] == "SELF_CONSUMPTION"


def test_events_follow_prints_new_events_until_stopped(site: Site) -> None:
    out, err = io.StringIO(), io.StringIO()
    stop = threading.Event()
    result: list[int] = []
    argv = ["--url", site.url, "events", "--follow", "--kind", "audit", "--json", "--interval", "0.1"]
    t = threading.Thread(target=lambda: result.append(emsctl(argv, environ={}, stdout=out, stderr=err, stop=stop)), daemon=True)
    t.start()
    run("mode", "set", "DISCHARGE_ONLY", url=site.url)
    wait_for(lambda: "DISCHARGE_ONLY" in out.getvalue(), timeout_s=10, what="the audit event streamed")
    stop.set()
    t.join(10)
    assert result == [EXIT_OK], err.getvalue()
    rows = [as_json(line) for line in out.getvalue().splitlines()]
    assert rows[-1]["data"]["new"] == "DISCHARGE_ONLY" and rows[-1]["data"]["who"] == "operator-1"


def test_unreachable_api_exits_3_with_a_hint() -> None:
    rc, _, err = run("status", url=f"http://127.0.0.1:{free_port()}")
    assert rc == EXIT_UNREACHABLE and "cannot connect" in err and "api.enabled" in err


def test_bad_command_line_exits_2() -> None:
    assert run("mode", "set", "TURBO")[0] == EXIT_USAGE
    assert run("setpoint", "100")[0] == EXIT_USAGE  # --ttl is required


# ---- config check --------------------------------------------------------------------------------
def test_config_check_accepts_the_example_and_says_it_is_not_live() -> None:
    rc, out, _ = run("config", "check", str(REPO_ROOT / "config" / "ems.example.yaml"), role=None)
    assert rc == EXIT_OK and out.startswith("config ok:") and "not live" in out
    rc, out, _ = run("config", "check", "--json", str(REPO_ROOT / "config" / "ems.example.yaml"), role=None)
    assert as_json(out)["control"] == {"enabled": False, "dry_run": True, "live": False, "soc_min_pct": 10.0, "soc_max_pct": 95.0}


def test_config_check_names_every_bad_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("control:\n  soc_min_pct: 200\n  bogus: 1\n", encoding="utf-8")
    rc, out, _ = run("config", "check", str(bad), role=None)
    assert rc == EXIT_FAIL
    assert "config error: control.soc_min_pct:" in out and "config error: control.bogus: unknown key" in out
    rc, out, _ = run("config", "check", "--json", str(bad), role=None)
    keys = {p["key"] for p in as_json(out)["problems"]}
    assert keys == {"control.soc_min_pct", "control.bogus"}
    rc, out, _ = run("config", "check", str(tmp_path / "missing.yaml"), role=None)
    assert rc == EXIT_FAIL and "cannot read config file" in out


# ---- Modbus --------------------------------------------------------------------------------------
@pytest.fixture
def loop() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture
def ess(loop: LoopThread) -> Iterator[SimDevice]:
    dev = SimDevice(loop, "sunspec_ess", host="127.0.0.1", port=free_port(), device_id=3)
    dev.start()
    yield dev
    dev.stop()


def test_modbus_scan_lists_the_sunspec_models_identity_and_fitting_map_without_writing(ess: SimDevice) -> None:
    rc, out, err = run("modbus", "scan", f"127.0.0.1:{ess.server.port}", "--unit", "3", "--rate", "20", role=None)
    assert rc == EXIT_OK, err
    assert "marker 'SunS' at 40000" in out
    for model in (
        "model     1  Common",
        "model   103  Inverter (three phase)",
        "model   124  Storage",
        "model   802  Battery base",
        "64901",
    ):
        assert model in out
    assert "manufacturer=EMS project" in out and "serial_number=SIM0001" in out
    maps_line = next(line for line in out.splitlines() if line.startswith("maps      "))
    assert "sunspec_ess" in maps_line.removeprefix("maps      ").split(", ")
    assert ess.server.writes == 0  # read-only
    rc, out, _ = run("modbus", "scan", f"127.0.0.1:{ess.server.port}", "--unit", "3", "--rate", "20", "--json", role=None)
    doc = as_json(out)
    assert [m["id"] for m in doc["models"]] == [1, 103, 124, 802, 64901]
    # marker, each model header, end marker, identity; then one read per identification register of the profiles
    assert doc["requests"] == len(doc["models"]) + 3 + len(doc["probes"])
    assert ess.server.writes == 0


def test_modbus_scan_searches_a_register_range(ess: SimDevice) -> None:
    rc, out, err = run("modbus", "scan", f"127.0.0.1:{ess.server.port}", "--unit", "3", "--range", "39990-40010", "--rate", "20", role=None)
    assert rc == EXIT_OK, err
    assert "marker 'SunS' at 40000" in out


def test_modbus_scan_without_sunspec_identifies_by_vendor_registers_exits_1_on_nothing_and_3_unreachable(loop: LoopThread) -> None:
    meter = SimDevice(loop, "sdm630", host="127.0.0.1", port=free_port(), device_id=2)
    meter.start()
    try:
        rc, out, _ = run("modbus", "scan", f"127.0.0.1:{meter.server.port}", "--unit", "2", "--rate", "20", role=None)
    finally:
        meter.stop()
    assert rc == EXIT_OK and out.startswith("no SunSpec marker")
    assert "sdm630" in out and "meter_code holding 64514 uint16 = 112 (0x0070)" in out  # Eastron's meter code
    nothing = SimDevice(loop, "janitza_umg604", host="127.0.0.1", port=free_port(), device_id=1)  # no identification register
    nothing.start()
    try:
        rc, out, _ = run("modbus", "scan", f"127.0.0.1:{nothing.server.port}", "--unit", "1", "--rate", "20", role=None)
    finally:
        nothing.stop()
    assert rc == EXIT_FAIL and out.startswith("no SunSpec marker") and "no profile's identification matches" in out
    rc, _, err = run("modbus", "scan", f"127.0.0.1:{free_port()}", "--unit", "1", role=None)
    assert rc == EXIT_UNREACHABLE and "cannot connect" in err


def test_modbus_read_shows_raw_and_decoded_registers(ess: SimDevice) -> None:
    where = f"127.0.0.1:{ess.server.port}"
    rc, out, _ = run("modbus", "read", where, "--unit", "3", "40000", "--count", "2", "--type", "string", role=None)
    assert rc == EXIT_OK and "5375 6e53" in out and out.rstrip().endswith("string SunS")
    ess.set(ess_power_w=-1234.0)
    addr = ess.image.address_of("ess_power_w")
    rc, out, _ = run("modbus", "read", where, "--unit", "3", str(addr), "--type", "int16", "--json", role=None)
    assert rc == EXIT_OK and as_json(out)["values"] == [-1234.0]
    rc, _, err = run("modbus", "read", where, "--unit", "3", "9", role=None)
    assert rc == EXIT_FAIL and "refused" in err
    assert ess.server.writes == 0


def test_modbus_read_over_rtu_through_a_pty_pair(loop: LoopThread, tmp_path: Path) -> None:
    with pty_pair(tmp_path) as (server_end, client_end):
        meter = SimDevice(loop, "sdm630", transport="rtu", serial_port=server_end, baudrate=19200, device_id=4)
        meter.start()
        try:
            meter.set(grid_power_w=-2500.0)
            rc, out, err = run(
                "modbus", "read", client_end, "--unit", "4", "--baud", "19200", "52", "--type", "float32", "--input", role=None
            )
        finally:
            meter.stop()
    assert rc == EXIT_OK, err
    assert "@19200N1 unit 4 input 52+2" in out and out.rstrip().endswith("float32 -2500")


# ---- CAN -----------------------------------------------------------------------------------------
def test_can_decode_through_the_dbc() -> None:
    data = Codec().encode_limits(cvl_v=56.0, ccl_a=80.0, dcl_a=100.0, dvl_v=46.0)
    rc, out, _ = run("can", "decode", "351", data.hex(), role=None)
    assert rc == EXIT_OK
    assert "bms_cvl_v=56" in out and "bms_ccl_a=80" in out and "bms_dcl_a=100" in out and "bms_dvl_v=46" in out
    alarms = Codec().encode_alarms(protections=frozenset({"over_temperature"}), warnings=frozenset(), modules=2)
    rc, out, _ = run("can", "decode", "0x359", alarms.hex(" "), "--json", role=None)
    doc = as_json(out)
    assert doc["protections"] == ["over_temperature"] and doc["info"] == {"modules": 2}


def test_can_decode_errors() -> None:
    rc, out, _ = run("can", "decode", "123", "00", role=None)
    assert rc == EXIT_FAIL and "unknown_id" in out
    rc, _, err = run("can", "decode", "351", "zz", role=None)
    assert rc == EXIT_USAGE and "not hex bytes" in err


def test_can_dump_prints_decoded_frames_from_the_bus() -> None:
    channel = virtual_channel()
    tx = BmsTx(virtual_bus(channel))
    out, err = io.StringIO(), io.StringIO()
    result: list[int] = []
    argv = ["can", "dump", "--interface", "virtual", "--channel", channel, "--count", "2", "--json"]
    t = threading.Thread(target=lambda: result.append(emsctl(argv, environ={}, stdout=out, stderr=err)), daemon=True)
    t.start()
    soc = Codec().encode_soc(soc_pct=61, soh_pct=98)

    def dumped() -> bool:  # the dump opens its bus asynchronously: keep sending until it has seen two frames
        tx.send(0x355, soc)
        return not t.is_alive()

    wait_for(dumped, timeout_s=10, what="can dump to end after 2 frames")
    tx.bus.shutdown()
    assert result == [EXIT_OK], err.getvalue()
    rows = [as_json(line) for line in out.getvalue().splitlines()]
    assert len(rows) == 2 and rows[0]["name"] and rows[0]["values"] == {"soc_pct": 61.0, "soh_pct": 98.0}


def test_config_check_resolves_secrets_from_an_env_file_like_the_service(tmp_path: Path) -> None:
    cfg = tmp_path / "ems.yaml"
    cfg.write_text("api:\n  enabled: true\n  tokens:\n    - {name: ops, role: operator, secret: {env: EMS_TOKEN_OPS}}\n", encoding="utf-8")
    rc, out, _ = run("config", "check", str(cfg), role=None)
    assert rc == EXIT_FAIL and "api.tokens.0.secret" in out and "EMS_TOKEN_OPS" in out
    env_file = tmp_path / "ems.env"
    env_file.write_text("# secrets\nEMS_TOKEN_OPS='s3cret'\nEMS_CONTROL__SOC_MIN_PCT=15\n", encoding="utf-8")
    rc, out, _ = run("config", "check", "--json", str(cfg), "--env-file", str(env_file), role=None)
    assert rc == EXIT_OK, out
    assert as_json(out)["enabled"] == ["api"]
    env_file.write_text("not a line\n", encoding="utf-8")
    rc, _, err = run("config", "check", str(cfg), "--env-file", str(env_file), role=None)
    assert rc == EXIT_USAGE and "ems.env:1: expected KEY=VALUE" in err
