"""`emsctl plan` and the planner line of `emsctl status` against the real REST API (waitress, in-process)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from config.planner import PlannerConfig
from ems.clock import SimClock
from ems.context import EMSContext
from ems.model import Command, ControlStatus, Mode, State
from ems.plan import PlannerStatus
from ems.planner import PlanInputs, make_plan
from interfaces.cli.client import EXIT_FAIL, EXIT_OK
from interfaces.cli.main import main as emsctl
from tests.helpers.api import TOKENS, api_config, running_api

T0 = int(datetime(2026, 3, 2, 9, 0, tzinfo=UTC).timestamp())
PLANNER_ON = {
    "store": {"enabled": True, "path": "unused.db"},
    "tariff": {"import_price": {"kind": "dynamic", "formula": {"adder_eur_per_kwh": 0.14}}, "source": {"kind": "push"}},
    "planner": {"enabled": True},
}


def run(url: str, *args: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = emsctl(["--url", url, *args], environ={"EMSCTL_TOKEN": TOKENS["viewer"]}, stdout=out, stderr=err)
    return rc, out.getvalue() + err.getvalue()


@pytest.fixture
def site() -> Iterator[tuple[str, EMSContext]]:
    clock = SimClock(start_wall=datetime(2026, 3, 2, 9, 20, tzinfo=UTC))
    ctx = EMSContext(clock=clock, start_mode=Mode.SELF_CONSUMPTION)
    with running_api(api_config(**PLANNER_ON), ctx, clock) as api:
        yield api.url, ctx


def _publish(ctx: EMSContext) -> None:
    n = 12
    prices = (0.10,) * 6 + (0.40,) * 6
    plan = make_plan(PlanInputs(T0, 900, (500.0,) * n, (0.0,) * n, prices, (0.0,) * n, 10.0), PlannerConfig(), created_at_unix_s=T0)
    ctx.plans.publish(plan, PlannerStatus("ok", "tomorrow's prices not due yet; prices until 2026-03-03 00:00", ctx.clock.monotonic()))
    cmd = Command(7, -2000.0, -2000.0, ctx.clock.monotonic())
    ctx.commands.publish(ControlStatus(cmd, State.SELF_CONSUMPTION, 0.0, (), None, None, (), 0, plan="plan:charge_from_grid"))


def test_emsctl_plan_prints_the_table_from_now_with_the_active_slot_marked(site: tuple[str, EMSContext]) -> None:
    url, ctx = site
    rc, out = run(url, "plan")
    assert rc == EXIT_FAIL and "plan      none (no plan published yet)" in out  # no planner thread here: nothing published yet
    _publish(ctx)
    rc, out = run(url, "plan", "--limit", "4")
    lines = out.splitlines()
    assert rc == EXIT_OK, out
    assert lines[0] == "planner   ok: tomorrow's prices not due yet; prices until 2026-03-03 00:00 · following charge_from_grid"
    assert lines[1].startswith("plan      12 slots, 3.0 h from ") and "saves" in lines[1]
    rows = [ln for ln in lines if ln[:1] in ("*", " ") and ":" in ln[:12] and "slot" not in ln]
    assert len(rows) == 4 and rows[0].startswith("* ")  # from the active slot (09:15 UTC), four of them
    assert "... 7 more slots (--all)" in out
    rc, out = run(url, "plan", "--all")
    assert "more slots" not in out and sum(1 for ln in out.splitlines() if "self_consumption" in ln or "hold" in ln or "charge" in ln) >= 11
    rc, out = run(url, "plan", "--json")
    doc = json.loads(out)
    assert doc["active_slot"] == 1 and doc["followed"] == "plan:charge_from_grid" and len(doc["slots"]) == 12


def test_emsctl_status_shows_the_planner_state_line(site: tuple[str, EMSContext]) -> None:
    url, ctx = site
    rc, out = run(url, "status")
    assert rc == EXIT_OK and "planner   off: planner.enabled is false · not followed" in out  # the board before a thread reports
    ctx.plans.set_status(PlannerStatus("no_prices", "no prices pushed yet", ctx.clock.monotonic()))
    rc, out = run(url, "status")
    assert "planner   NO_PRICES: no prices pushed yet · not followed (plain self-consumption)" in out.splitlines()
    _publish(ctx)
    rc, out = run(url, "status", "--json")
    assert json.loads(out)["plan_followed"] == "plan:charge_from_grid" and json.loads(out)["planner"]["state"] == "ok"
