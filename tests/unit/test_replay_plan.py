"""The 1 s replay of the planner's plan (simulators/schedule/replay_plan.py) on two hours of the shipped year."""

from __future__ import annotations

from simulators.schedule.replay_plan import FLOOR_WH, SlotRecord, _live_control, replay_plan
from simulators.schedule.year import load_year


def test_the_core_following_a_perfect_forecast_plan_delivers_the_planned_energy_per_slot() -> None:
    year = load_year()
    first = 28 * 96 + 64  # 29 January 2023, 16:00 UTC: the evening peak
    res = replay_plan(year, first=first, last=first + 8, control=_live_control(), perfect_forecast=True)
    assert len(res.slots) == 8 and res.cycles == 8 * 900
    free = [s for s in res.slots if s.free]
    assert free and all(s.within for s in free), [(s.mode, round(s.planned_battery_wh), round(s.battery_wh), s.limits) for s in res.slots]
    doc = res.summary()
    assert doc["within_5pct_pct"] == 100.0 and doc["slots"] == 8


def test_a_slot_is_within_by_share_or_by_the_idle_floor() -> None:
    rec = SlotRecord(0, "self_consumption", 1000.0, 1049.0, 0.0, 0.0, (), False)
    assert rec.within and rec.free
    assert not SlotRecord(0, "hold", 1000.0, 1051.0, 0.0, 0.0, (), False).within
    assert SlotRecord(0, "hold", 0.0, FLOOR_WH, 0.0, 0.0, (), False).within
    assert not SlotRecord(0, "hold", 0.0, 0.0, 0.0, 0.0, ("soc_min",), False).free
