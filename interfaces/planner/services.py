"""What `main.build_services()` starts for `planner:`: the thread, its history and its price cache, both on the store."""

from __future__ import annotations

import math
from pathlib import Path

from config import EMSConfig
from config.planner import PlannerConfig, PvSource
from ems.clock import Clock
from ems.context import EMSContext
from ems.prices import PricePoint
from interfaces.forecast import PowerPoint
from interfaces.planner.worker import PlannerWorker, PvFetcher
from interfaces.store import Store, load_pv_history, prices
from interfaces.store.query import HistorySlot

__all__ = ["StoreHistory", "StorePriceCache", "build_planner"]


class StoreHistory:
    """Quarter-hour load and PV means from the store's minutes (read-only connection per call)."""

    def __init__(self, path: Path, *, slot_s: int) -> None:
        self._path, self._slot_s = path, slot_s

    def slots(self, *, from_ts: float, to_ts: float) -> list[HistorySlot]:
        return load_pv_history(self._path, from_ts=from_ts, to_ts=to_ts, slot_s=self._slot_s)


class StorePriceCache:
    """Saved through the store's one writer (with its next flush), read back with a read-only connection."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def save(self, points: tuple[PricePoint, ...], *, source: str) -> None:
        self._store.put_prices(points, source=source)

    def load(self, *, from_ts: float, to_ts: float) -> tuple[PricePoint, ...]:
        return prices(self._store.path, from_ts=from_ts, to_ts=to_ts)


_PV_URLS = {PvSource.OPEN_METEO: "https://api.open-meteo.com/v1/forecast", PvSource.FORECAST_SOLAR: "https://api.forecast.solar"}


def _pv_fetcher(cfg: PlannerConfig) -> PvFetcher | None:
    """The configured PV forecast provider (None: the local model only)."""
    if cfg.forecast.pv.source is PvSource.LOCAL:
        return None

    def fetch(c: PlannerConfig, start: int, end: int) -> tuple[PowerPoint, ...]:
        p = c.forecast.pv
        assert p.latitude_deg is not None and p.longitude_deg is not None and p.peak_w is not None  # validated in config
        url = p.url or _PV_URLS[p.source]
        lat, lon, tilt, az = p.latitude_deg, p.longitude_deg, p.tilt_deg, p.azimuth_deg
        if p.source is PvSource.OPEN_METEO:
            from interfaces.forecast.open_meteo import fetch_open_meteo

            days = max(1, min(16, math.ceil((end - start) / 86400) + 1))
            got = fetch_open_meteo(
                url, latitude_deg=lat, longitude_deg=lon, tilt_deg=tilt, azimuth_deg=az, peak_w=p.peak_w, efficiency=p.system_efficiency_pct / 100.0, variable=p.irradiance,
                forecast_days=days, timeout_s=p.timeout_s,
            )  # fmt: skip
        else:
            from interfaces.forecast.forecast_solar import fetch_forecast_solar

            key = None if p.api_key is None else p.api_key.value
            got = fetch_forecast_solar(
                url, latitude_deg=lat, longitude_deg=lon, tilt_deg=tilt, azimuth_deg=az, peak_w=p.peak_w, api_key=key, timeout_s=p.timeout_s
            )
        return tuple(pt for pt in got.points if pt.end_unix_s > start and pt.start_unix_s < end)

    return fetch


def build_planner(cfg: EMSConfig, ctx: EMSContext, clock: Clock, *, store: Store | None) -> PlannerWorker:
    worker = PlannerWorker.on(
        ctx,
        planner=cfg.planner,
        tariff=cfg.tariff,
        clock=clock,
        history=StoreHistory(cfg.store.path, slot_s=cfg.planner.slot_s),
        cache=None if store is None else StorePriceCache(store),
        pv_fetch=_pv_fetcher(cfg.planner),
    )
    worker.load_cache()
    return worker
