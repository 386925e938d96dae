"""Planner test rig: a local aWATTar-style price server whose published days the test controls, a
history of load and PV, and a planner worker on a SimClock driven one unit at a time (no sleeps)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from config import EMSConfig, parse_config
from ems.clock import SimClock
from ems.context import EMSContext
from ems.model import Mode, Quantity
from interfaces.planner import PlannerWorker
from interfaces.planner.worker import PriceCache
from interfaces.store.query import HistorySlot
from tests.helpers.context import feed
from tests.helpers.http_fake import FakeProvider, Request, fake_provider

START_WALL = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # 10:00 in Brussels, before the 13:00 publication
DAY0 = int(datetime(2026, 3, 1, 23, 0, tzinfo=UTC).timestamp())  # 2026-03-02 00:00 Brussels
H = 3600


def spot_eur_per_mwh(t_unix_s: int) -> float:
    """Cheap at night, dear in the evening: 40 EUR/MWh at 03:00, 160 at 19:00 (Brussels)."""
    hour = ((t_unix_s - DAY0) // H) % 24
    return 100.0 - 60.0 * math.cos((hour - 3) / 24 * 2 * math.pi)


@dataclass
class PriceServer:
    """aWATTar JSON for the days the test says are published (day 0 = 2026-03-02 local)."""

    provider: FakeProvider
    days: set[int] = field(default_factory=lambda: {0})
    status: int = 200

    @property
    def url(self) -> str:
        return self.provider.base_url + "/v1/marketdata"

    def answer(self, req: Request) -> tuple[int, str, bytes]:
        if self.status != 200:
            return self.status, "text/plain", b"unavailable"
        start, end = int(req.query["start"][0]) // 1000, int(req.query["end"][0]) // 1000
        rows = []
        for t in range(start // H * H, end, H):
            day = (t - DAY0) // (24 * H)
            if day in self.days:
                rows.append(
                    {"start_timestamp": t * 1000, "end_timestamp": (t + H) * 1000, "marketprice": spot_eur_per_mwh(t), "unit": "Eur/MWh"}
                )
        return 200, "application/json", json.dumps({"object": "list", "data": rows}).encode()


@contextmanager
def price_server() -> Iterator[PriceServer]:
    holder: dict[str, PriceServer] = {}
    with fake_provider({"/v1/marketdata": lambda req: holder["s"].answer(req)}) as fp:
        holder["s"] = PriceServer(fp)
        yield holder["s"]


def planner_config(url: str | None, *, store_path: str = "ems.db", **planner: Any) -> EMSConfig:
    source: dict[str, Any] = {"kind": "awattar", "url": url} if url else {"kind": "push"}
    return parse_config(
        {
            "store": {"enabled": True, "path": store_path},
            "tariff": {
                "timezone": "Europe/Brussels",
                "import_price": {"kind": "dynamic", "formula": {"adder_eur_per_kwh": 0.14, "vat_pct": 6}},
                "export_price": {"kind": "dynamic", "formula": {"adder_eur_per_kwh": -0.01}},
                "source": source,
            },
            "planner": {"enabled": True, **planner},
        },
        {},
    )


class FakeHistory:
    """Two weeks of a household: 400 W load, 600 W more from 18:00 to 21:00 UTC; PV 3 kW peak at noon UTC."""

    def __init__(self, *, empty: bool = False) -> None:
        self.empty = empty
        self.calls = 0

    def slots(self, *, from_ts: float, to_ts: float) -> list[HistorySlot]:
        self.calls += 1
        if self.empty:
            return []
        out = []
        for t in range(int(from_ts) // 900 * 900, int(to_ts), 900):
            hour = (t % 86400) / 3600
            load = 400.0 + (600.0 if 18 <= hour < 21 else 0.0)
            pv = max(0.0, 3000.0 * math.cos((hour - 12) / 12 * math.pi)) if 6 <= hour <= 18 else 0.0
            out.append(HistorySlot(t, load, pv, 15))
        return out


def make_planner(
    cfg: EMSConfig,
    *,
    clock: SimClock | None = None,
    history: FakeHistory | None = None,
    cache: PriceCache | None = None,
    soc_pct: float = 50.0,
) -> tuple[PlannerWorker, EMSContext, SimClock]:
    clock = clock or SimClock(start_wall=START_WALL)
    ctx = EMSContext(clock=clock, start_mode=Mode.SELF_CONSUMPTION)
    feed(ctx, {Quantity.SOC_PCT: soc_pct}, source="bms")
    worker = PlannerWorker.on(ctx, planner=cfg.planner, tariff=cfg.tariff, clock=clock, history=history or FakeHistory(), cache=cache)
    return worker, ctx, clock
