"""simulators.schedule: the year execution reproduces the issue's figures and follows plans as the loop would."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from ems.planner import PlanInputs, make_plan
from ems.tariff import slot_prices
from simulators.schedule.execute import Battery, SelfConsumption, execute, no_battery_cost
from simulators.schedule.planners import PlanFollower, PriceVisibility
from simulators.schedule.run import ISSUE_TARIFF, Options, planner_config
from simulators.schedule.year import Year, load_year


@pytest.fixture(scope="module")
def year() -> tuple[Year, tuple[float, ...], tuple[float, ...]]:
    y = load_year()
    sp = slot_prices(ISSUE_TARIFF, y.prices, start_unix_s=y.start_unix_s, n_slots=y.n, slot_s=y.slot_s)
    return y, tuple(p or 0.0 for p in sp.import_eur_per_kwh), tuple(p or 0.0 for p in sp.export_eur_per_kwh)


def test_no_battery_and_greedy_self_consumption_match_the_issue(year: tuple[Year, tuple[float, ...], tuple[float, ...]]) -> None:
    y, imp, exp = year
    assert y.n == 35040
    assert no_battery_cost(y.load_w, y.pv_w, imp, exp, slot_s=900).cost_eur == pytest.approx(220.6, abs=0.05)
    greedy = execute(y.load_w, y.pv_w, imp, exp, Battery(), SelfConsumption(), slot_s=900)
    assert greedy.cost_eur == pytest.approx(-30.2, abs=0.05)


def test_following_a_plan_under_its_own_forecast_costs_what_it_planned(year: tuple[Year, tuple[float, ...], tuple[float, ...]]) -> None:
    y, imp, exp = year
    a, b = 150 * 96, 152 * 96  # two days in June
    cfg = planner_config(Options(), end_value="zero")
    plan = make_plan(PlanInputs(y.t(a), 900, y.load_w[a:b], y.pv_w[a:b], imp[a:b], exp[a:b], 50.0), cfg, created_at_unix_s=y.t(a))
    done = execute(y.load_w, y.pv_w, imp, exp, Battery(), PlanFollower(y, plan, 1e9), slot_s=900, first=a, last=b)
    greedy = execute(y.load_w, y.pv_w, imp, exp, Battery(), SelfConsumption(), slot_s=900, first=a, last=b)
    assert done.cost_eur == pytest.approx(plan.expected_cost_eur, abs=0.05)
    assert done.cost_eur < greedy.cost_eur


def test_prices_become_visible_at_12_45_brussels_time() -> None:
    vis = PriceVisibility(ZoneInfo("Europe/Brussels"))
    bru = ZoneInfo("Europe/Brussels")
    before = int(datetime(2023, 6, 1, 12, 30, tzinfo=bru).timestamp())
    after = int(datetime(2023, 6, 1, 12, 45, tzinfo=bru).timestamp())
    assert vis.visible_until(before) == int(datetime(2023, 6, 2, tzinfo=bru).timestamp())
    assert vis.visible_until(after) == int(datetime(2023, 6, 3, tzinfo=bru).timestamp())
    assert datetime.fromtimestamp(vis.visible_until(after), UTC).hour == 22  # midnight CEST
