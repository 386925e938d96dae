"""The planner thread against a local price server: plans and status, late and missing days, a failing
source, a failed solve, pushed prices, an import cap, the price cache across a restart (real SQLite),
and the loop following (or not) what it publishes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ems.context import EMSContext
from ems.model import Quantity
from ems.plan import PlanStatus, SlotMode
from ems.prices import PricePoint
from interfaces.planner import StorePriceCache
from interfaces.store import prices
from tests.helpers.common import PYTHON, REPO_ROOT, wait_for
from tests.helpers.context import feed, make_controller
from tests.helpers.planner import DAY0, START_WALL, FakeHistory, H, make_planner, planner_config, price_server, spot_eur_per_mwh
from tests.helpers.uplink import make_store, store_cfg


def _soc(ctx: EMSContext, pct: float = 50.0) -> None:
    feed(ctx, {Quantity.SOC_PCT: pct}, source="bms")


def _controller_follows(ctx: EMSContext) -> str | None:
    """Run one control cycle (live, SELF_CONSUMPTION) and say which plan slot it followed."""
    cfg = planner_config(None).model_copy(
        update={"control": planner_config(None).control.model_copy(update={"enabled": True, "dry_run": False})}
    )
    feed(ctx, {Quantity.GRID_POWER_W: 300.0, Quantity.ESS_POWER_W: 0.0}, source="meter")
    _soc(ctx)
    ctl = make_controller(ctx, cfg, plans=ctx.plans)
    d = ctl.cycle()
    for _ in range(3):  # STOP -> STANDBY -> SELF_CONSUMPTION
        d = ctl.cycle()
    assert d.state.value == "SELF_CONSUMPTION", d
    return d.plan


def test_the_planner_fetches_prices_and_publishes_a_plan_and_its_status() -> None:
    with price_server() as server:
        worker, ctx, _clock = make_planner(planner_config(server.url))
        worker.iterate()
        plan, status = ctx.plans.snapshot()
        q = server.provider.requests[0].query
    assert (int(q["start"][0]) // 1000, int(q["end"][0]) // 1000) == (DAY0, DAY0 + 48 * H)  # today and tomorrow, local days
    assert status.state == "ok" and "tomorrow's prices not due yet" in status.reason, status
    assert plan is not None and plan.status is PlanStatus.OK
    assert len(plan.slots) == 14 * 4  # 10:00 to midnight in Brussels
    assert status.prices_until_unix_s == DAY0 + 24 * H and status.replans == 1
    first = plan.slots[0]
    assert first.start_unix_s == int(START_WALL.timestamp())
    assert first.price_import_eur_per_kwh == pytest.approx(1.06 * (spot_eur_per_mwh(first.start_unix_s) / 1000 + 0.14))
    dev = ctx.snapshot().device("planner")
    assert dev is not None and dev.kind == "planner" and dev.last_ok_s is not None and dev.error_streak == 0
    assert _controller_follows(ctx) is not None  # the loop follows the active slot


def test_a_late_day_is_stale_and_a_missing_day_withdraws_the_plan_to_plain_self_consumption() -> None:
    with price_server() as server:
        worker, ctx, clock = make_planner(planner_config(server.url))
        worker.iterate()
        clock.advance(5 * H)  # 15:00 Brussels: tomorrow was due at 13:00 and is not there
        _soc(ctx)
        worker.iterate()
        plan, status = ctx.plans.snapshot()
        assert status.state == "stale" and "2026-03-03 late (due 13:00)" in status.reason, status
        assert plan is not None and plan.slots and plan.end_unix_s == DAY0 + 24 * H  # still planning on what is left of today
        assert _controller_follows(ctx) is not None
        clock.advance(10 * H)  # 01:00 the next day: nothing covers now
        _soc(ctx)
        worker.iterate()
        plan, status = ctx.plans.snapshot()
        assert status.state == "no_prices" and "no price for now" in status.reason, status
        assert plan is not None and plan.slots == () and plan.status is PlanStatus.NO_PRICES
        assert _controller_follows(ctx) is None  # plain self-consumption
        assert ctx.snapshot().device("planner").error_streak == 1  # type: ignore[union-attr]
        kinds = [(e.data["from_state"], e.data["to_state"]) for e in ctx.events.since(0) if e.kind == "planner"]
        assert kinds == [("starting", "ok"), ("ok", "stale"), ("stale", "no_prices")]


def test_a_failing_source_keeps_the_last_good_prices_and_says_why() -> None:
    with price_server() as server:
        worker, ctx, clock = make_planner(planner_config(server.url, replan_s=900))
        worker.iterate()
        server.status = 503
        clock.advance(3600)
        _soc(ctx)
        worker.iterate()
        plan, status = ctx.plans.snapshot()
    assert status.state == "ok" and "the awattar source fails: http_error" in status.reason, status
    assert plan is not None and len(plan.slots) == 13 * 4  # the kept prices, one hour on


def test_without_any_prices_the_status_is_no_prices_with_the_source_error() -> None:
    with price_server() as server:
        server.status = 500
        worker, ctx, _ = make_planner(planner_config(server.url))
        worker.iterate()
        plan, status = ctx.plans.snapshot()
    assert status.state == "no_prices" and status.reason == "no price for now; the awattar source fails: http_error", status
    assert plan is not None and not plan.slots


def test_a_failed_solve_withdraws_the_plan_and_names_the_solver_status() -> None:
    with price_server() as server:
        worker, ctx, _ = make_planner(planner_config(server.url, solver_time_limit_s=1e-9))
        worker.iterate()
        plan, status = ctx.plans.snapshot()
    assert status.state == "failed" and status.reason == "solve failed: Time limit reached", status
    assert plan is not None and plan.status is PlanStatus.FAILED and not plan.slots
    assert _controller_follows(ctx) is None


def test_no_history_and_no_soc_are_reasons_not_crashes() -> None:
    with price_server() as server:
        worker, ctx, _ = make_planner(planner_config(server.url), history=FakeHistory(empty=True))
        worker.iterate()
        assert ctx.plans.snapshot()[1].reason == "no history: 0 quarter-hours of load in the store (at least 4 needed)"
        worker, ctx, clock = make_planner(planner_config(server.url))
        clock.advance(120)  # the SOC reading is two minutes old
        worker.iterate()
        _, status = ctx.plans.snapshot()
        assert (status.state, status.reason) == ("failed", "no fresh SOC reading")
        _soc(ctx)
        clock.advance(5)
        worker.iterate()  # not yet: retried 10 s after the failure, not only at the next quarter-hour
        assert ctx.plans.snapshot()[1].state == "failed"
        clock.advance(6)
        _soc(ctx)
        worker.iterate()
        assert ctx.plans.snapshot()[1].state == "ok"


def test_pushed_prices_make_a_plan_and_a_cheap_night_charges_from_the_grid() -> None:
    worker, ctx, clock = make_planner(planner_config(None), soc_pct=20.0)
    worker.iterate()
    assert ctx.plans.snapshot()[1].state == "no_prices" and ctx.plans.snapshot()[1].reason == "no prices pushed yet"
    clock.advance(12 * H)  # 22:00 Brussels
    _soc(ctx, 20.0)
    night = [PricePoint(t, t + H, -0.05 if 1 <= (t - DAY0) // H % 24 <= 4 else 0.30) for t in range(DAY0, DAY0 + 48 * H, H)]
    r = ctx.requests.push_prices(night, who="test", via="rest")
    assert r.accepted
    worker.iterate()
    plan, status = ctx.plans.snapshot()
    assert status.state == "ok" and plan is not None and plan.slots
    modes = {s.mode for s in plan.slots if DAY0 + 25 * H <= s.start_unix_s < DAY0 + 29 * H}
    assert SlotMode.CHARGE_FROM_GRID in modes  # negative import price in the night: charge from the grid
    audit = [e.data for e in ctx.events.since(0) if e.kind == "audit"]
    assert audit[-1]["what"] == "prices" and audit[-1]["result"] == "accepted" and audit[-1]["new"]["points"] == 48


def test_an_import_cap_re_plans_at_once_and_the_plan_keeps_under_it() -> None:
    worker, ctx, clock = make_planner(planner_config(None), soc_pct=10.0)
    clock.advance(15 * H)  # 01:00 the next night
    _soc(ctx, 10.0)
    ctx.requests.push_prices(
        [PricePoint(t, t + H, 0.0 if t < DAY0 + 30 * H else 0.40) for t in range(DAY0, DAY0 + 48 * H, H)], who="t", via="rest"
    )
    worker.iterate()
    before = ctx.plans.snapshot()[0]
    assert before is not None and max(s.planned_grid_w for s in before.slots) > 3000.0  # charges hard while cheap
    ctx.requests.set_import_cap(power_w=2000.0, ttl_s=2 * H, reason="14a", who="dso", via="rest")
    worker.iterate()
    after, status = ctx.plans.snapshot()
    assert after is not None and status.replans == 2
    capped = [s for s in after.slots if s.start_unix_s < clock.wall().timestamp() + 2 * H]
    assert capped and max(s.planned_grid_w for s in capped) <= 2000.0 + 1.0
    assert max(s.planned_grid_w for s in after.slots) > 2000.0  # after the cap lapses the plan imports more again


def test_cached_prices_survive_a_restart_on_the_real_store(tmp_path: Path) -> None:
    db = tmp_path / "ems.db"
    with price_server() as server:
        cfg = planner_config(server.url, store_path=str(db))
        worker, ctx, clock = make_planner(cfg)
        store = make_store(store_cfg(db), ctx, clock, site_id="s", outbox_enabled=False)
        worker._cache = StorePriceCache(store)  # as build_planner wires it
        worker.iterate()
        store.flush()  # the writer's next flush
        store.close()
        assert len(prices(db, from_ts=DAY0, to_ts=DAY0 + 24 * H)) == 24
        server.status = 503  # after the restart the source is down

        worker2, ctx2, clock2 = make_planner(cfg)
        store2 = make_store(store_cfg(db), ctx2, clock2, site_id="s", outbox_enabled=False)
        worker2._cache = StorePriceCache(store2)
        worker2.load_cache()
        worker2.iterate()
        plan, status = ctx2.plans.snapshot()
        store2.close()
    assert status.state == "ok" and "source fails: http_error" in status.reason
    assert plan is not None and len(plan.slots) == 14 * 4


def test_the_thread_publishes_on_its_own_and_stops_promptly() -> None:
    with price_server() as server:
        worker, ctx, _ = make_planner(planner_config(server.url))
        worker.start()
        try:
            wait_for(lambda: ctx.plans.snapshot()[1].state == "ok", timeout_s=20, what="a plan")
        finally:
            worker.stop(timeout_s=5)
        assert not worker.is_alive()
        assert any(t.name == "planner" and t.last_beat_s is not None for t in ctx.snapshot().threads)


def test_the_solver_banner_does_not_reach_stdout() -> None:
    code = "from interfaces.planner.solver import warm_up; b = warm_up(); print('banner captured:', 'HiGHS' in b)"
    out = subprocess.run([PYTHON, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True).stdout
    assert out == "banner captured: True\n"
