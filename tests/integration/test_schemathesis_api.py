"""Fuzz the REST API from its own OpenAPI document with schemathesis (every check), over real HTTP.

A bounded number of examples per operation and a fixed seed keep the run short and repeatable
(`EMS_SCHEMATHESIS_SEED=N` explores another seed).
The context runs on a SimClock with a healthy controller snapshot, so `health` answers 200 and
any 5xx is a real server error; history comes from a real SQLite store, so the fuzzed query
parameters reach the store reader. Any failure prints schemathesis's report (with curl reproducers).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.sources import StoreSource
from config.store import StoreConfig
from ems.clock import SimClock
from ems.context import EMSContext
from ems.model import Mode, Quantity, State
from interfaces.store import Store
from tests.helpers.api import TOKENS, RunningApi, api_config, running_api
from tests.helpers.context import feed, publish


@pytest.fixture
def healthy_api(tmp_path: Path) -> Iterator[tuple[RunningApi, EMSContext]]:
    """A healthy context with a minute of history in a real SQLite store behind the API."""
    clock = SimClock()
    ctx = EMSContext(clock=clock, start_mode=Mode.SELF_CONSUMPTION)
    store = Store(
        cfg=StoreConfig(path=tmp_path / "ems.db", finalize_lag_s=0.0),
        snapshot=ctx.snapshot,
        events=ctx.events,
        counters=ctx.counters,
        health=ctx.health,
        clock=clock,
        site_id="t",
        outbox_enabled=True,
    )
    ctx.health.register_thread("modbus-meter", ("meter",))
    ctx.health.register_device("meter", kind="modbus", where="127.0.0.1:5020 unit 1", thread="modbus-meter")
    try:
        for i in range(90):
            feed(ctx, {Quantity.GRID_POWER_W: 500.0 + i}, source="meter")
            feed(ctx, {Quantity.ESS_POWER_W: -200.0, Quantity.SOC_PCT: 55.0})
            ctx.health.ok("meter", at_s=clock.monotonic())
            ctx.health.beat("modbus-meter", at_s=clock.monotonic())
            publish(ctx, seq=i + 1, setpoint_w=700.0, written_w=0.0, state=State.SELF_CONSUMPTION, gate="control_disabled")
            store.sample_once()
            clock.advance(1.0)
        ctx.events.record("state", from_state="STANDBY", to_state="SELF_CONSUMPTION")
        store.flush()
    finally:
        store.close()
    ctx.health.set_info("meter", connected=True, map="meter")
    with running_api(api_config(), ctx, clock, store=StoreSource(tmp_path / "ems.db", clock)) as api:
        yield api, ctx


def _schemathesis(url: str, tmp_path: Path, *, examples: int, seed: int, headers: list[str]) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{url}/api/v1/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(examples),
        "--seed",
        str(seed),
        "--exclude-path",
        "/api/v1/stream",  # an open-ended stream (tests/integration/test_stream.py covers it)
    ]
    for h in headers:
        cmd += ["--header", h]
    env = {**os.environ, "SCHEMATHESIS_TELEMETRY": "false", "NO_COLOR": "1"}
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_schemathesis_finds_no_server_error_and_no_schema_violation_with_an_admin_token(
    healthy_api: tuple[RunningApi, EMSContext], tmp_path: Path
) -> None:
    api, ctx = healthy_api
    run = _schemathesis(
        api.url,
        tmp_path,
        examples=40,
        seed=int(os.environ.get("EMS_SCHEMATHESIS_SEED", "20261123")),
        headers=[f"Authorization: Bearer {TOKENS['admin']}"],
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "No issues found" in run.stdout
    assert any(e.kind == "audit" and e.data.get("result") == "accepted" for e in ctx.events.since(0))  # writes really happened


def test_schemathesis_without_a_token_sees_only_documented_refusals(healthy_api: tuple[RunningApi, EMSContext], tmp_path: Path) -> None:
    api, ctx = healthy_api
    run = _schemathesis(api.url, tmp_path, examples=10, seed=7, headers=[])
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    audits = [e.data for e in ctx.events.since(0) if e.kind == "audit"]
    assert audits and all(a["result"] == "refused" and a["status"] == 401 for a in audits)
