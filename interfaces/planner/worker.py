"""The planner thread (DESIGN.md §1: the planner advises, the loop decides; docs/scheduling.md).

An edge of the process: it fetches prices (and a PV forecast when a provider is configured), reads
the load and PV history from the store, solves the LP (ems.planner, HiGHS imported here, inside the
thread) and publishes the `Plan` and a `PlannerStatus` on the plan board. The 1 Hz loop only reads
the board; nothing here can delay a control cycle beyond sharing the GIL for a few milliseconds.

It re-plans every `planner.replan_s` (on wall-clock multiples, a little after the slot's minutes
are in the store) and at once when new prices are fetched or pushed, a new PV forecast arrives or
the import cap changes. The last good prices are kept (and cached in the store, so a restart plans
at once); a failing source is a reason in the status, never a crash. No prices for now, a failed
solve, no history or no SOC reading withdraw the plan: the loop is back in plain self-consumption
and the status says why. One log line per re-plan (`plan_made`), state changes on their edges.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time as _time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

import requests

from config.planner import PlannerConfig, PvSource
from config.tariff import PriceSourceKind, TariffConfig
from ems.clock import Clock
from ems.context import Counters, EMSContext, EventLog, Health, PlanBoard, Readings, Requests
from ems.forecast import LoadModel, PvModel, fit_load_model, fit_pv_model, forecast_load, forecast_pv
from ems.model import Quantity
from ems.plan import Plan, PlannerStatus, PlanStatus
from ems.planner import PlanInputs, make_plan, no_price_plan
from ems.prices import PricePoint, merge_points, prune_points
from ems.tariff import slot_prices
from interfaces.backoff import Backoff
from interfaces.forecast import ForecastError, PowerPoint, slot_means
from interfaces.planner.inputs import cap_per_slot, hhmm, history_series, price_state
from interfaces.planner.solver import captured_stdout, warm_up
from interfaces.prices.fetch import PriceFetch, PriceSourceError, fetch_prices
from interfaces.store.query import HistorySlot
from interfaces.worker import Worker

__all__ = ["DEVICE", "History", "PlannerWorker", "PriceCache", "PriceFetcher", "PvFetcher"]

DEVICE = "planner"
DAY_S = 86400
_UNIT_MAX_S = 2.0  # longest wait between units (heartbeat, stop latency)
_REPLAN_AFTER_SLOT_S = 10.0  # re-plan this long after a slot boundary: its last minute is in the store by then
_MIN_LOAD_SLOTS = 4  # quarter-hours of measured load needed before the first plan
_SOC_MAX_AGE_S = 60.0
_RETRY_S = 10.0  # after a plan could not be made (no SOC yet, no history, a failed solve): try again this soon

PriceFetcher = Callable[[TariffConfig, int, int], PriceFetch]
PvFetcher = Callable[[PlannerConfig, int, int], tuple[PowerPoint, ...]]


class History(Protocol):
    def slots(self, *, from_ts: float, to_ts: float) -> list[HistorySlot]: ...


class PriceCache(Protocol):
    def save(self, points: tuple[PricePoint, ...], *, source: str) -> None: ...

    def load(self, *, from_ts: float, to_ts: float) -> tuple[PricePoint, ...]: ...


def _fetch(cfg: TariffConfig, start: int, end: int) -> PriceFetch:
    return fetch_prices(cfg, start_unix_s=start, end_unix_s=end, session=requests.Session())


@dataclass(slots=True)
class _Models:
    day: object = None  # the local day the models were fitted on
    load: LoadModel | None = None
    pv: PvModel | None = None
    load_slots: int = 0  # measured quarter-hours of load they were fitted on


class PlannerWorker(Worker):
    critical = False  # never stops the battery: no plan means plain self-consumption

    def __init__(
        self,
        *,
        planner: PlannerConfig,
        tariff: TariffConfig,
        readings: Readings,
        requests: Requests,
        plans: PlanBoard,
        health: Health,
        events: EventLog,
        counters: Counters,
        clock: Clock,
        history: History,
        cache: PriceCache | None = None,
        fetch: PriceFetcher = _fetch,
        pv_fetch: PvFetcher | None = None,
    ) -> None:
        super().__init__(name="planner", health=health, clock=clock, period_s=_UNIT_MAX_S, devices=(DEVICE,))
        src = tariff.source
        health.register_device(
            DEVICE, kind="planner", where=src.endpoint or (str(src.path) if src.path else src.kind.value), thread=self.name
        )
        self._cfg, self._tariff = planner, tariff
        self._tz = ZoneInfo(tariff.timezone)
        self._readings, self._requests, self._plans = readings, requests, plans
        self._events, self._counters = events, counters
        self._history, self._cache = history, cache
        self._fetch, self._pv_fetch = fetch, pv_fetch
        self._wake = threading.Event()
        requests.add_listener(self._wake)
        self._points: tuple[PricePoint, ...] = ()
        self._push_seq = 0
        self._source_error: str | None = None
        self._fetch_backoff = Backoff.exponential(min_s=30.0, max_s=src.refresh_s)
        self._next_fetch_s = -math.inf
        self._pv_points: tuple[PowerPoint, ...] = ()
        self._next_pv_s = -math.inf
        self._pv_backoff = Backoff.exponential(min_s=60.0, max_s=planner.forecast.pv.refresh_s)
        self._models = _Models()
        self._next_replan_unix_s = -math.inf
        self._dirty: str | None = "start"  # why the next unit re-plans at once (None: only on schedule)
        self._cap_key: tuple[float, float] | None = None
        self._state = "starting"
        self._replans = 0
        self._last_solve_s: float | None = None
        self._warm = False
        plans.set_status(PlannerStatus("starting", "planner thread starting", clock.monotonic()))

    # ---- the loop ------------------------------------------------------------------------------

    @classmethod
    def on(
        cls,
        ctx: EMSContext,
        *,
        planner: PlannerConfig,
        tariff: TariffConfig,
        clock: Clock,
        history: History,
        cache: PriceCache | None = None,
        pv_fetch: PvFetcher | None = None,
    ) -> PlannerWorker:
        """A planner handed the parts of `ctx` it uses (main.py's services and the tests build it so)."""
        return cls(
            planner=planner,
            tariff=tariff,
            readings=ctx.readings,
            requests=ctx.requests,
            plans=ctx.plans,
            health=ctx.health,
            events=ctx.events,
            counters=ctx.counters,
            clock=clock,
            history=history,
            cache=cache,
            pv_fetch=pv_fetch,
        )

    def wait_next(self) -> bool:
        self._wake.wait(self.period_s)
        self._wake.clear()
        return self._stop_event.is_set()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop_event.set()
        self._wake.set()
        super().stop(timeout_s)

    def iterate(self) -> None:
        now_s, now_unix = self._clock.monotonic(), self._clock.wall().timestamp()
        if not self._warm:
            self._warm_up()
        self._take_pushes()
        self._maybe_fetch(now_s, now_unix)
        self._maybe_fetch_pv(now_s, now_unix)
        cap = self._requests.import_cap()
        cap_key = None if cap is None or not cap.active(now_s) else (cap.power_w, cap.expires_at_s)
        if cap_key != self._cap_key:
            self._cap_key = cap_key
            self._dirty = self._dirty or "import_cap"
        if self._dirty is None and now_unix < self._next_replan_unix_s:
            return
        trigger, self._dirty = self._dirty or "schedule", None
        self._next_replan_unix_s = (now_unix // self._cfg.replan_s + 1) * self._cfg.replan_s + _REPLAN_AFTER_SLOT_S
        self._replan(trigger, now_s, now_unix)

    def _warm_up(self) -> None:
        t0 = _time.perf_counter()
        banner = warm_up()
        self._warm = True
        self.log.info("planner_solver_loaded", import_s=round(_time.perf_counter() - t0, 3))
        if banner:
            self.log.debug("planner_solver_banner", text=banner[:500])

    # ---- prices ---------------------------------------------------------------------------------
    def load_cache(self) -> None:
        """The cached prices (called once before the thread starts: a restart plans at once)."""
        if self._cache is None:
            return
        now = self._clock.wall().timestamp()
        try:
            got = self._cache.load(from_ts=now - DAY_S, to_ts=now + 3 * DAY_S)
        except sqlite3.Error as exc:
            self.log.warning("planner_price_cache_unreadable", error=str(exc)[:200])
            return
        if got:
            self._points = merge_points(self._points, got)
            self.log.info("planner_prices_restored", points=len(got), until=hhmm(got[-1].end_unix_s, self._tz))

    def _merge(self, points: tuple[PricePoint, ...], *, source: str) -> None:
        if not points:
            return
        merged = merge_points(self._points, points)
        if merged != self._points:
            self._points = merged
            self._dirty = self._dirty or "prices"
            if self._cache is not None:
                self._cache.save(points, source=source)

    def _take_pushes(self) -> None:
        for push in self._requests.pushes_since(self._push_seq):
            self._push_seq = push.seq
            self._merge(push.points, source=f"push:{push.via}")
            self._counters.count("planner_prices_pushed")

    def _window(self, now_unix: float) -> tuple[int, int]:
        day = datetime.fromtimestamp(now_unix, self._tz).replace(hour=0, minute=0, second=0, microsecond=0)
        return int(day.timestamp()), int((day + timedelta(days=2)).timestamp())

    def _maybe_fetch(self, now_s: float, now_unix: float) -> None:
        kind = self._tariff.source.kind
        if kind in (PriceSourceKind.NONE, PriceSourceKind.PUSH) or now_s < self._next_fetch_s or not self._fetch_backoff.due(now_s):
            return
        start, end = self._window(now_unix)
        try:
            got = self._fetch(self._tariff, start, end)
        except PriceSourceError as exc:
            delay_s = self._fetch_backoff.failed(now_s, exc)
            if self._source_error is None:
                self.log.warning(
                    "planner_prices_failed", source=kind.value, reason=exc.reason, detail=exc.detail[:200], retry_in_s=round(delay_s)
                )
            self._source_error = exc.reason
            self._counters.count("planner_price_fetch_failed")
            return
        if self._source_error is not None:
            self.log.info("planner_prices_recovered", source=kind.value, points=len(got.points))
            self._source_error = None
        self._fetch_backoff.reset()
        self._next_fetch_s = now_s + self._tariff.source.refresh_s
        self._merge(got.points, source=kind.value)

    def _maybe_fetch_pv(self, now_s: float, now_unix: float) -> None:
        if self._pv_fetch is None or self._cfg.forecast.pv.source is PvSource.LOCAL:
            return
        if now_s < self._next_pv_s or not self._pv_backoff.due(now_s):
            return
        start = int(now_unix // self._cfg.slot_s * self._cfg.slot_s)
        try:
            got = self._pv_fetch(self._cfg, start, start + int(self._cfg.horizon_h * 3600))
        except ForecastError as exc:
            self._pv_backoff.failed(now_s, exc)
            self.log.warning("planner_pv_forecast_failed", source=self._cfg.forecast.pv.source.value, reason=exc.reason)
            return
        self._pv_backoff.reset()
        self._next_pv_s = now_s + self._cfg.forecast.pv.refresh_s
        if got != self._pv_points:
            self._pv_points = got
            self._dirty = self._dirty or "pv_forecast"

    # ---- one re-plan ----------------------------------------------------------------------------
    def _replan(self, trigger: str, now_s: float, now_unix: float) -> None:
        cfg, slot_s = self._cfg, self._cfg.slot_s
        start = int(now_unix // slot_s * slot_s)
        self._points = prune_points(self._points, before_unix_s=now_unix - DAY_S)
        if self._tariff.needs_spot:
            src = self._tariff.source
            ps = price_state(
                self._points,
                now_unix_s=now_unix,
                tz=self._tz,
                publish_local_time=src.publish_local_time,
                source=src.kind.value,
                source_error=self._source_error,
            )
        else:
            ps = None
        if ps is not None and ps.state == "no_prices":
            self._withdraw("no_prices", ps.reason, now_s, soc_pct=0.0, until=ps.known_until_unix_s)
            return
        n_max = cfg.horizon_slots
        sp = slot_prices(self._tariff, self._points, start_unix_s=start, n_slots=n_max, slot_s=slot_s)
        n = sp.known_slots
        soc = self._soc(now_s)
        if soc is None:
            self._retry(now_unix)
            self._withdraw("failed", "no fresh SOC reading", now_s, soc_pct=0.0, until=start + n * slot_s)
            return
        load, pv, why = self._forecast(start, n, now_unix)
        if load is None or pv is None:
            self._retry(now_unix)
            self._withdraw("failed", why, now_s, soc_pct=soc, until=start + n * slot_s)
            return
        inputs = PlanInputs(
            start_unix_s=start,
            slot_s=slot_s,
            load_w=load,
            pv_w=pv,
            import_eur_per_kwh=tuple(float(p) for p in sp.import_eur_per_kwh[:n] if p is not None),
            export_eur_per_kwh=tuple(float(p) for p in sp.export_eur_per_kwh[:n] if p is not None),
            soc_pct=soc,
            import_cap_w=cap_per_slot(
                self._requests.import_cap(), now_s=now_s, now_unix_s=now_unix, start_unix_s=start, n_slots=n, slot_s=slot_s
            ),
        )
        t0 = _time.perf_counter()
        out: list[str] = []
        with captured_stdout(out):
            plan = make_plan(inputs, cfg, created_at_unix_s=now_unix)
        solve_s = _time.perf_counter() - t0
        self._replans += 1
        self._last_solve_s = solve_s
        self._counters.count("planner_replans")
        self.log.info(
            "plan_made",
            trigger=trigger,
            status=plan.status.value,
            slots=len(plan.slots),
            horizon_h=round(len(plan.slots) * slot_s / 3600.0, 2),
            expected_cost_eur=round(plan.expected_cost_eur, 3),
            self_consumption_cost_eur=round(plan.self_consumption_cost_eur, 3),
            savings_eur=round(plan.savings_eur, 3),
            solve_s=round(solve_s, 4),
            soc_pct=round(soc, 1),
        )
        if plan.status is not PlanStatus.OK:
            self._retry(now_unix)
            self._publish(plan, "failed", f"solve failed: {plan.reason}", now_s, until=inputs.start_unix_s + n * slot_s)
            return
        state, reason = ("ok", "plan made") if ps is None else (ps.state, ps.reason)
        self._publish(plan, state, reason, now_s, until=plan.end_unix_s)

    def _retry(self, now_unix: float) -> None:
        self._next_replan_unix_s = min(self._next_replan_unix_s, now_unix + _RETRY_S)

    def _soc(self, now_s: float) -> float | None:
        measurements, _flags = self._readings.snapshot()
        r = measurements.get(Quantity.SOC_PCT)
        return r.value if r is not None and r.fresh(now_s=now_s, max_age_s=_SOC_MAX_AGE_S) else None

    def _forecast(self, start: int, n: int, now_unix: float) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None, str]:
        f, slot_s = self._cfg.forecast, self._cfg.slot_s
        day = datetime.fromtimestamp(now_unix, self._tz).date()
        m = self._models
        try:
            if m.day != day or m.load_slots < 96:  # once a day (and until a day of history is there)
                days = max(f.load.history_days, f.pv.history_days)
                rows = self._history.slots(from_ts=start - days * DAY_S, to_ts=start)
                load_h, pv_h = history_series(rows, start_unix_s=start - days * DAY_S, end_unix_s=start, slot_s=slot_s)
                m.day, m.load_slots = day, sum(v is not None for v in load_h.values_w)
                m.load = fit_load_model(load_h, cfg=f.load, timezone=self._tariff.timezone)
                m.pv = fit_pv_model(pv_h, cfg=f.pv) if any(v is not None for v in pv_h.values_w) else None
            recent_rows = self._history.slots(from_ts=start - 8 * slot_s, to_ts=start)
        except sqlite3.Error as exc:
            return None, None, f"no history: the store is not readable ({type(exc).__name__})"
        if m.load is None or m.load_slots < _MIN_LOAD_SLOTS:
            return None, None, f"no history: {m.load_slots} quarter-hours of load in the store (at least {_MIN_LOAD_SLOTS} needed)"
        recent_load, recent_pv = history_series(recent_rows, start_unix_s=start - 8 * slot_s, end_unix_s=start, slot_s=slot_s)
        load = forecast_load(m.load, start_unix_s=start, n_slots=n, cfg=f.load, recent=recent_load)
        pv = forecast_pv(m.pv, start_unix_s=start, n_slots=n, cfg=f.pv, recent=recent_pv) if m.pv is not None else (0.0,) * n
        if self._pv_points:  # a provider's forecast where it covers the slot, the local model elsewhere
            provided = slot_means(self._pv_points, start_unix_s=start, n_slots=n, slot_s=slot_s)
            pv = tuple(p if p is not None else q for p, q in zip(provided, pv, strict=True))
        return load, tuple(v * f.pv.planning_factor for v in pv), ""

    # ---- publishing -----------------------------------------------------------------------------
    def _withdraw(self, state: str, reason: str, now_s: float, *, soc_pct: float, until: float | None) -> None:
        plan = no_price_plan(created_at_unix_s=self._clock.wall().timestamp(), soc_pct=soc_pct, reason=reason, cfg=self._cfg)
        self._publish(plan, state, reason, now_s, until=until)

    def _publish(self, plan: Plan, state: str, reason: str, now_s: float, *, until: float | None) -> None:
        status = PlannerStatus(state, reason, now_s, prices_until_unix_s=until, replans=self._replans, last_solve_s=self._last_solve_s)
        self._plans.publish(plan, status)
        if state in ("ok", "stale"):
            ended = self._health.ok(DEVICE, at_s=now_s)
            if ended:
                self.log.info("worker_recovered", device=DEVICE, failed_iterations=ended)
        else:
            self._health.error(DEVICE, reason=f"{state}: {reason}"[:300], at_s=now_s)
        if state != self._state:
            level = self.log.info if state in ("ok", "starting") else self.log.warning
            effect = "the loop follows the plan" if plan.slots else "plain self-consumption"
            level("planner_state_changed", from_state=self._state, to_state=state, reason=reason, effect=effect)
            self._events.record("planner", from_state=self._state, to_state=state, reason=reason)
            self._state = state
