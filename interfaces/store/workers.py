"""The two persistence threads: a sampler (1 Hz snapshots into the bounded queue, never touches
SQLite) and the writer (the only SQLite writer: one transaction per flush, retention steps)."""

from __future__ import annotations

import sqlite3

from ems.clock import Clock
from ems.context import Health
from interfaces.store.store import DEVICE, Store
from interfaces.worker import Worker

__all__ = ["StoreSampler", "StoreWriter"]


class StoreSampler(Worker):
    critical = False  # never stops the battery

    def __init__(self, *, store: Store, health: Health, clock: Clock) -> None:
        super().__init__(name="store-sampler", health=health, clock=clock, period_s=store.cfg.sample_period_s, devices=(DEVICE,))
        self._store = store
        self._next_s = clock.monotonic()

    def iterate(self) -> None:
        self._store.sample_once()

    def wait_next(self) -> bool:
        """Absolute deadlines: no drift, one sample per period; a late tick skips, never bursts."""
        now = self._clock.monotonic()
        self._next_s += self.period_s
        if self._next_s <= now:
            self._next_s = now + self.period_s
        return self._clock.wait_until(self._next_s, self._stop_event)


class StoreWriter(Worker):
    critical = False  # never stops the battery
    expected_errors = (*Worker.expected_errors, sqlite3.Error)

    def __init__(self, *, store: Store, health: Health, clock: Clock) -> None:
        super().__init__(name="store", health=health, clock=clock, period_s=store.cfg.flush_interval_s, devices=(DEVICE,))
        health.register_device(DEVICE, kind="sqlite", where=str(store.path), thread=self.name)
        self._store = store
        self._next_retention_s = clock.monotonic() + store.cfg.retention.interval_s

    def wait_next(self) -> bool:
        """The flush period, or at once when an audit row waits for its commit (`store.flush_wanted`)."""
        self._store.flush_wanted.wait(self.period_s)
        return self._stop_event.is_set()

    def iterate(self) -> None:
        self._store.flush_wanted.clear()  # before the flush: a request that sets it later gets the next one
        self._store.flush()
        now = self._clock.monotonic()
        if now >= self._next_retention_s:
            self._next_retention_s = now + self._store.cfg.retention.interval_s
            self._store.retention_step()
        self.succeeded()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop_event.set()
        self._store.flush_wanted.set()  # wake the wait at once
        super().stop(timeout_s)

    def on_stop(self) -> None:
        try:
            self._store.flush()  # what the sampler queued since the last flush
        except sqlite3.Error as exc:
            self.log.warning("store_final_flush_failed", error=str(exc))
        self._store.close()
