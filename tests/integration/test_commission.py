"""Commissioning inside the EMS, in one process: the real controller (a thread at 10 Hz), the real
commissioning thread and REST API, and a fake site standing in for the ESS link and the plant (it
takes each command, applies it after a dead time through a first-order lag, and reports the
inverter's and the meter's power at the poll period the fast-poll request asks for). Also: the
Modbus link honours a fast-poll request and goes back to its own period afterwards."""

from __future__ import annotations

import io
import json
import math
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from api.app import create_app
from config import EMSConfig
from config.modbus import ModbusConfig
from ems.clock import SystemClock
from ems.context import EMSContext
from ems.controller import Controller
from ems.jsonable import jsonable
from ems.model import Mode, Quantity, State
from interfaces.cli.commission import report_text
from interfaces.cli.main import main as emsctl
from interfaces.commission import build_commissioner
from interfaces.modbus.worker import build_modbus_links
from tests.helpers.api import TOKENS, api_config, bearer, running_api
from tests.helpers.common import free_port, wait_for
from tests.helpers.context import feed, publish
from tests.helpers.modbus import LoopThread, SimDevice

Q = Quantity
TAU_S = 0.4
DEAD_S = 0.3
LOAD_W = 800.0
FAST = {"min_hold_s": 1.0, "quiet_s": 0.5, "max_hold_s": 8.0, "ttl_s": 2.0}  # a short run: small plant constants


class FakeSite(threading.Thread):
    """The ESS link and the plant in one thread: every command acknowledged at once, applied `dead_s`
    later through a first-order lag `tau_s`; readings at the poll period (fast while asked)."""

    def __init__(self, ctx: EMSContext, *, tau_s: float, dead_s: float, poll_s: float = 0.25) -> None:
        super().__init__(name="fake-site", daemon=True)
        self.ctx, self.tau_s, self.dead_s, self.poll_s = ctx, tau_s, dead_s, poll_s
        ctx.commands.register_consumer()
        self._ess = ctx.readings.claim("ess", [Q.ESS_POWER_W, Q.SOC_PCT])
        self._meter = ctx.readings.claim("meter", [Q.GRID_POWER_W])
        for dev in ("ess", "meter"):
            ctx.health.register_device(dev, kind="fake", where="test", thread="fake-site", actuator=dev == "ess")
        ctx.health.set_info("ess", connected=True)
        ctx.health.register_thread("fake-site", ("ess", "meter"))
        self.meter_silent = threading.Event()
        self.stop_event = threading.Event()
        self.power_w = 0.0
        self.written: list[float] = []
        self._pending: deque[tuple[float, float]] = deque()

    def run(self) -> None:
        clock = self.ctx.clock
        last_s = clock.monotonic()
        seq, active_w = 0, 0.0
        next_poll = {"ess": last_s, "meter": last_s}
        while not self.stop_event.is_set():
            cmd = self.ctx.commands.wait_command(after_seq=seq, timeout_s=0.005)
            now = clock.monotonic()
            if cmd is not None:
                seq = cmd.seq
                self.written.append(cmd.written_w)
                self._pending.append((now + self.dead_s, cmd.written_w))
                self.ctx.commands.ack(cmd.seq)
            while self._pending and self._pending[0][0] <= now:
                active_w = self._pending.popleft()[1]
            self.power_w += (active_w - self.power_w) * (1.0 - math.exp(-(now - last_s) / self.tau_s))
            last_s = now
            for dev in ("ess", "meter"):
                if now < next_poll[dev]:
                    continue
                next_poll[dev] = now + (self.ctx.polling.period_s(dev, now_s=now) or self.poll_s)
                if dev == "ess":
                    self._ess.update({Q.ESS_POWER_W: self.power_w, Q.SOC_PCT: 50.0}, at_s=now)
                elif not self.meter_silent.is_set():
                    self._meter.update({Q.GRID_POWER_W: LOAD_W - self.power_w}, at_s=now)
                else:
                    continue
                self.ctx.health.ok(dev, at_s=now)
            self.ctx.health.beat("fake-site", at_s=now)


@dataclass
class Site:
    cfg: EMSConfig
    ctx: EMSContext
    fake: FakeSite


@pytest.fixture
def site() -> Iterator[Site]:
    clock = SystemClock()
    cfg = api_config(control={"enabled": True, "dry_run": False, "period_s": 0.1, "fault_timeout_s": 0.6, "recover_s": 0.0})
    ctx = EMSContext(clock=clock, start_mode=Mode.IDLE, required_sources=cfg.control.required_sources)
    fake = FakeSite(ctx, tau_s=TAU_S, dead_s=DEAD_S)
    commissioner = build_commissioner(cfg, ctx, clock)
    controller = Controller.on(ctx, cfg.controller(), clock)
    stop = threading.Event()
    loop = threading.Thread(target=controller.run, args=(stop,), name="test-controller", daemon=True)
    fake.start()
    commissioner.start()
    loop.start()
    try:
        wait_for(lambda: ctx.snapshot().state is State.STANDBY, timeout_s=10, what="STANDBY")
        yield Site(cfg, ctx, fake)
    finally:
        commissioner.stop()
        stop.set()
        loop.join(5)
        fake.stop_event.set()
        fake.join(5)


def _run(site: Site, **params: object) -> int:
    req = site.ctx.commission.submit(
        who="operator-1",
        via="test",
        params={"step_w": 1000.0, **FAST, **params},
        prev_mode=Mode.IDLE,
        now_s=site.ctx.clock.monotonic(),
    )
    assert req is not None
    return req.run


def _finished(site: Site, run: int, *, timeout_s: float = 40.0, touch: bool = True) -> dict[str, object]:
    """Wait for the run's end, polling as its client would (unless `touch` is False)."""
    board = site.ctx.commission
    deadline_s = site.ctx.clock.monotonic() + timeout_s
    while not board.wait_finished(run, timeout_s=0.3):
        if touch:
            board.touch(run, now_s=site.ctx.clock.monotonic())
        assert site.ctx.clock.monotonic() < deadline_s, f"run {run} did not finish within {timeout_s} s: {board.snapshot()}"
    report = jsonable(board.snapshot().report)
    assert isinstance(report, dict)
    return report


def test_a_run_recovers_the_inverters_dead_time_and_time_constant_and_ends_at_0_w_in_the_mode_it_found(site: Site) -> None:
    run = _run(site)
    r = _finished(site, run)
    assert r["result"] == "done", r.get("reason")
    inv = r["inverter"]
    assert isinstance(inv, dict)
    assert inv["tau_s"] == pytest.approx(TAU_S, rel=0.2) and inv["dead_time_s"] == pytest.approx(DEAD_S, rel=0.2), inv
    assert inv["gain"] == pytest.approx(1.0, abs=0.02) and inv["responded"] == 4 and inv["rate_limited"] is False
    meter = r["meter"]
    assert isinstance(meter, dict) and meter["verdict"] == "ok" and meter["ratio"] == pytest.approx(1.0, abs=0.05)
    assert r["steps_planned"] == [1000.0, 0.0, -1000.0, 0.0]
    assert r["suggested_config"]["control.inverter_tau_s"] == pytest.approx(TAU_S, rel=0.2)  # type: ignore[index]
    assert r["end"] == {
        "restored": True,
        "mode": "IDLE",
        "release": "accepted",
        "ess_power_w": pytest.approx(0.0, abs=30),
        "at_zero": True,
    }
    assert max(site.fake.written) == 1000.0 and min(site.fake.written) == -1000.0  # it reached the inverter, inside its limits
    # every set-point of the run went through the audited external path, under the operator's name
    audits = [e.data for e in site.ctx.events.since(0) if e.kind == "audit" and e.data.get("via") == "commission"]
    assert {a["what"] for a in audits} == {"setpoint", "release"} and all(a["who"] == "operator-1" for a in audits)
    assert all(a["result"] == "accepted" for a in audits)
    assert site.ctx.requests.snapshot() == (Mode.IDLE, None)
    assert site.ctx.polling.period_s("ess", now_s=site.ctx.clock.monotonic()) is None  # the fast poll is withdrawn
    done = [e.data for e in site.ctx.events.since(0) if e.kind == "commission"]
    assert done and done[-1]["result"] == "done" and done[-1]["meter"] == "ok"


def test_a_fault_during_a_step_aborts_the_run_at_0_w_and_restores_the_mode(site: Site) -> None:
    run = _run(site)
    wait_for(lambda: site.ctx.commission.snapshot().phase.startswith("step 2"), timeout_s=20, what="step 2")
    site.fake.meter_silent.set()  # the grid reading goes stale: FAULT after fault_timeout_s
    r = _finished(site, run)
    assert r["result"] == "aborted" and "FAULT" in str(r["reason"]) and "grid_power_w" in str(r["reason"])
    assert site.fake.written[-1] == 0.0 and abs(site.fake.power_w) < 30.0
    end = r["end"]
    assert isinstance(end, dict) and end["restored"] is True and end["at_zero"] is True
    assert site.ctx.requests.snapshot() == (Mode.IDLE, None)
    steps = r["steps"]
    assert isinstance(steps, list) and steps[0]["ess"] is not None  # the step measured before the fault is in the report
    assert r["suggested_yaml"] == []  # no suggestion from an aborted run


def test_a_run_whose_client_stops_polling_ends_itself(site: Site) -> None:
    run = _run(site, client_timeout_s=1.0)
    r = _finished(site, run, touch=False)
    assert r["result"] == "aborted" and "stopped polling" in str(r["reason"])
    assert site.fake.written[-1] == 0.0 and site.ctx.requests.snapshot() == (Mode.IDLE, None)


def test_another_request_during_the_run_wins_and_the_run_leaves_it_alone(site: Site) -> None:
    run = _run(site)
    wait_for(lambda: site.ctx.commission.snapshot().phase.startswith("step 1"), timeout_s=20, what="step 1")
    site.ctx.requests.request_mode(Mode.SELF_CONSUMPTION, who="operator-2", via="test")
    r = _finished(site, run)
    assert r["result"] == "aborted" and "another request" in str(r["reason"])
    assert site.ctx.requests.snapshot() == (Mode.SELF_CONSUMPTION, None)  # not overwritten with the run's previous mode


def test_the_api_starts_follows_and_aborts_a_run(site: Site) -> None:
    with running_api(site.cfg, site.ctx, site.ctx.clock) as api:
        r = api.session.post(f"{api.url}/api/v1/commission", json={"confirm": True, "step_w": 500}, headers=bearer("operator"), timeout=10)
        assert r.status_code == 202, r.text
        run = r.json()["run"]
        assert r.json()["state"] in ("queued", "running") and "poll GET /api/v1/commission?run=" in r.json()["note"]
        busy = api.session.post(f"{api.url}/api/v1/commission", json={"confirm": True}, headers=bearer("operator"), timeout=10)
        assert busy.status_code == 409 and "in progress" in busy.json()["message"]
        wait_for(lambda: api.get(f"/api/v1/commission?run={run}").json()["phase"].startswith("step 1"), timeout_s=20, what="step 1")
        assert api.get("/api/v1/commission").json()["progress"]["steps"] == 4
        stop = api.delete("/api/v1/commission", role="operator")
        assert stop.status_code == 200 and stop.json()["abort_requested"].startswith("aborted over the API")
        view = wait_for(
            lambda: (v := api.get(f"/api/v1/commission?run={run}").json())["state"] == "aborted" and v, timeout_s=20, what="aborted"
        )
        assert "aborted by request" in view["report"]["reason"]
        assert view["report"]["end"]["restored"] is True and site.fake.written[-1] == 0.0
        assert api.delete("/api/v1/commission", role="operator").status_code == 409  # nothing to abort now
    audits = [(e.data["what"], e.data["result"]) for e in site.ctx.events.since(0) if e.kind == "audit" and e.data.get("via") == "rest"]
    assert ("commission", "accepted") in audits and ("commission", "refused") in audits


def _app_client(cfg: EMSConfig, ctx: EMSContext):  # type: ignore[no-untyped-def]
    return create_app(cfg, ctx, ctx.clock).test_client()


def _post(client, role: str = "operator", **body: object):  # type: ignore[no-untyped-def]
    return client.post("/api/v1/commission", json={"confirm": True, **body}, headers=bearer(role))


def _ready_ctx(cfg: EMSConfig, state: State = State.SELF_CONSUMPTION, **kw: object) -> EMSContext:
    ctx = EMSContext(clock=SystemClock(), start_mode=Mode.SELF_CONSUMPTION)
    ctx.health.register_device("ess", kind="fake", where="test", thread="t", actuator=True)
    ctx.health.set_info("ess", connected=True)
    feed(ctx, {Q.GRID_POWER_W: 100.0, Q.ESS_POWER_W: 0.0, Q.SOC_PCT: 50.0})
    publish(ctx, seq=1, setpoint_w=0.0, state=state, **kw)  # type: ignore[arg-type]
    return ctx


LIVE = {"enabled": True, "dry_run": False}


@pytest.mark.parametrize(
    ("control", "why"),
    [({}, "control is not live"), ({"enabled": True}, "dry_run=true"), ({"enabled": True, "dry_run": False}, None)],
)
def test_the_api_refuses_a_run_without_both_control_opt_ins(control: dict[str, object], why: str | None) -> None:
    cfg = api_config(control=control)
    ctx = _ready_ctx(cfg)
    r = _post(_app_client(cfg, ctx))
    if why is None:
        assert r.status_code == 202 and ctx.commission.busy()
        return
    assert r.status_code == 409 and why in r.get_json()["message"] and not ctx.commission.busy()
    refused = [e.data for e in ctx.events.since(0) if e.kind == "audit"]
    assert refused[-1]["what"] == "commission" and refused[-1]["result"] == "refused"


def test_the_api_refuses_a_run_in_fault() -> None:
    cfg = api_config(control=LIVE)
    ctx = _ready_ctx(cfg, state=State.FAULT, fault_causes=("stale:grid_power_w",))
    r = _post(_app_client(cfg, ctx))
    assert r.status_code == 409 and "FAULT (stale:grid_power_w)" in r.get_json()["message"]


def test_the_api_refuses_a_run_while_an_external_setpoint_is_in_force_or_the_inverter_is_not_connected() -> None:
    cfg = api_config(control=LIVE)
    ctx = _ready_ctx(cfg)
    ctx.requests.set_external_setpoint(power_w=300.0, ttl_s=60.0, reason="aggregator", who="x", via="mqtt")
    assert "external set-point" in _post(_app_client(cfg, ctx)).get_json()["message"]
    ctx2 = _ready_ctx(cfg)
    ctx2.health.set_info("ess", connected=False)
    assert "not connected" in _post(_app_client(cfg, ctx2)).get_json()["message"]


def test_the_api_needs_confirmation_and_an_operator_token() -> None:
    cfg = api_config(control=LIVE)
    ctx = _ready_ctx(cfg)
    client = _app_client(cfg, ctx)
    no = client.post("/api/v1/commission", json={"confirm": False}, headers=bearer("operator"))
    assert no.status_code == 422 and "confirm" in no.get_json()["message"]
    assert _post(client, role="viewer").status_code == 403
    assert client.post("/api/v1/commission", json={"confirm": True}).status_code == 401
    assert client.post("/api/v1/commission", json={"confirm": True, "step_w": -5}, headers=bearer("operator")).status_code == 422
    audits = [e.data for e in ctx.events.since(0) if e.kind == "audit" and e.data.get("what") == "commission"]
    assert len(audits) == 4 and all(a["result"] == "refused" for a in audits)
    assert not ctx.commission.busy()


def test_the_modbus_link_polls_faster_while_asked_and_at_its_own_period_afterwards() -> None:
    loop = LoopThread()
    meter = SimDevice(loop, "sdm630", port=free_port(), device_id=2)
    meter.set(grid_power_w=100.0, grid_voltage_v=230.0, grid_frequency_hz=50.0)
    meter.start()
    clock = SystemClock()
    ctx = EMSContext(clock=clock)
    cfg = ModbusConfig.model_validate(
        {
            "enabled": True,
            "ess": {"enabled": False},
            "meter": {"port": meter.server.port, "device_id": 2, "map": "sdm630", "poll_period_s": 1.0},
        }
    )
    seen: list[float] = []

    def polls_since(t0: float) -> int:
        r = ctx.snapshot().reading(Q.GRID_POWER_W)
        if r is not None and (not seen or r.at_s != seen[-1]):
            seen.append(r.at_s)
        return sum(1 for t in seen if t >= t0)

    links = build_modbus_links(
        cfg,
        readings=ctx.readings,
        health=ctx.health,
        commands=ctx.commands,
        events=ctx.events,
        counters=ctx.counters,
        clock=clock,
        polling=ctx.polling,
    )
    for link in links:
        link.start()
    try:
        wait_for(lambda: polls_since(0.0) >= 1, timeout_s=5, what="first poll")
        t0 = clock.monotonic()
        ctx.polling.request(("meter",), period_s=0.1, duration_s=1.5, now_s=t0, who="test")
        wait_for(lambda: polls_since(t0) >= 8, timeout_s=3, interval_s=0.01, what="fast polls")
        t1 = t0 + 1.6  # the request has expired by then
        wait_for(lambda: clock.monotonic() > t1 and polls_since(t1) >= 2, timeout_s=5, interval_s=0.01, what="polls after")
        after = [t for t in seen if t >= t1]
        assert after[1] - after[0] == pytest.approx(1.0, abs=0.15)
    finally:
        for link in links:
            link.stop()
        meter.stop()
        loop.close()


def test_emsctl_commission_follows_the_run_and_ctrl_c_aborts_it_at_0_w(site: Site, tmp_path: Path) -> None:
    """The CLI end to end in this process: POST, follow, Ctrl-C (its stop event) -> DELETE, wait for the
    EMS to be back at 0 W, write the report, exit 1 (aborted)."""
    out, err = io.StringIO(), io.StringIO()
    stop = threading.Event()
    report_file = tmp_path / "r.json"
    with running_api(site.cfg, site.ctx, site.ctx.clock) as api:
        env = {"EMSCTL_TOKEN": TOKENS["operator"]}
        argv = ["commission", "--yes", "--url", api.url, "--step", "600", "--directions", "discharge", "-o", str(report_file)]
        rc: list[int] = []
        cli = threading.Thread(target=lambda: rc.append(emsctl(argv, environ=env, stdout=out, stderr=err, stop=stop)), daemon=True)
        cli.start()
        wait_for(lambda: site.ctx.commission.snapshot().phase.startswith("step 1"), timeout_s=20, what="step 1")
        stop.set()
        cli.join(30)
    assert rc == [1], err.getvalue()
    assert "aborting" in err.getvalue() and "step 1/2: +0 -> +600 W" in err.getvalue()
    text = out.getvalue()
    assert "ABORTED" in text and "aborted by request" in text and "end: battery at 0 W" in text and f"wrote {report_file}" in text
    saved = json.loads(report_file.read_text(encoding="utf-8"))
    assert saved["result"] == "aborted" and saved["end"]["restored"] is True and site.fake.written[-1] == 0.0


def test_emsctl_commission_wants_a_confirmation() -> None:
    err = io.StringIO()
    rc = emsctl(["commission", "--url", "http://127.0.0.1:9"], environ={"EMSCTL_TOKEN": "x"}, stdout=io.StringIO(), stderr=err)
    assert rc == 2 and "--yes" in err.getvalue()


def test_the_report_reads_as_text() -> None:
    report = {
        "run": 3,
        "who": "op",
        "site": "s1",
        "result": "done",
        "duration_s": 31.5,
        "profile": "sunspec_ess",
        "poll_period_s": 0.1,
        "steps_planned": [1000.0, 0.0],
        "checks": [{"name": "grid_power_w", "status": "ok", "detail": "+500 W from meter"}],
        "steps": [
            {"index": 1, "from_w": 0.0, "to_w": 1000.0, "ess": {"dead_time_s": 0.5, "tau_s": 1.0, "gain": 1.0, "r2": 0.999}, "grid": None}
        ],
        "inverter": {"dead_time_s": 0.5, "tau_s": 1.0, "gain": 1.0, "ramp_w_per_s": None, "steps": 2, "responded": 2, "settled": True},
        "meter": {"verdict": "ok", "detail": "the meter sees the battery's step", "refresh_s": 1.0, "delay_after_inverter_s": 0.4},
        "suggested_yaml": ["control:", "  inverter_tau_s: 1.00"],
        "end": {"restored": True, "at_zero": True, "ess_power_w": 2.0, "mode": "IDLE"},
    }
    text = report_text(report)
    for part in (
        "run 3 by op on site s1: DONE",
        "dead time      0.50 s",
        "time constant  1.00 s",
        "not rate-limited",
        "inverter_tau_s: 1.00",
    ):
        assert part in text, text
    assert "end: battery at 0 W (+2 W), mode IDLE restored" in text
