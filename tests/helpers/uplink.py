"""Helpers for the store and uplink tests: a trustme test CA, configs, a receiver, and a simulated
site that runs the store and the sender for days of simulated time without sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from threading import Event
from typing import Any

import trustme

from config.common import SecretRef
from config.store import StoreConfig
from config.uplink import UplinkConfig
from ems.clock import Clock, SimClock
from ems.context import EMSContext
from ems.model import Mode, Quantity
from interfaces.store import Store
from interfaces.uplink import Sender
from simulators.uplink_receiver import UplinkReceiver

TOKEN = "test-bearer-token"
HMAC_KEY = b"test-hmac-key-0123456789"
START_WALL = datetime(2026, 3, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Tls:
    ca_file: Path  # the CA that signed the receiver's certificate
    server_pem: Path  # the receiver's key + certificate chain
    other_ca_file: Path  # an unrelated CA (TLS must fail with it)


def make_tls(tmp: Path) -> Tls:
    ca, other = trustme.CA(), trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    tls = Tls(tmp / "ca.pem", tmp / "server.pem", tmp / "other-ca.pem")
    ca.cert_pem.write_to_path(str(tls.ca_file))
    cert.private_key_and_cert_chain_pem.write_to_path(str(tls.server_pem))
    other.cert_pem.write_to_path(str(tls.other_ca_file))
    return tls


def secret(value: str) -> SecretRef:
    return SecretRef(env="TEST_SECRET").model_copy(update={"value": value})


def uplink_cfg(url: str, ca_file: Path | None, **kw: Any) -> UplinkConfig:
    base: dict[str, Any] = {"enabled": True, "url": url, "ca_file": ca_file, "token": secret(TOKEN), "hmac_key": secret(HMAC_KEY.decode())}
    base.update(backoff_initial_s=2.0, backoff_max_s=600.0, backoff_jitter_s=1.0, timeout_s=5.0)
    base.update(kw)
    return UplinkConfig(**base)


def store_cfg(path: Path, **kw: Any) -> StoreConfig:
    return StoreConfig(enabled=True, path=path, **kw)


def make_store(cfg: StoreConfig, ctx: EMSContext, clock: Clock | None = None, *, site_id: str, outbox_enabled: bool) -> Store:
    """The store on `cfg`, handed the context parts it uses, as main.py does."""
    return Store(
        cfg=cfg,
        snapshot=ctx.snapshot,
        events=ctx.events,
        counters=ctx.counters,
        health=ctx.health,
        clock=clock or ctx.clock,
        site_id=site_id,
        outbox_enabled=outbox_enabled,
    )


def make_sender(cfg: UplinkConfig, store: Store, ctx: EMSContext, clock: Clock | None = None) -> Sender:
    """The uplink sender for `store`, handed the context parts it uses, as main.py does."""
    return Sender(cfg=cfg, store=store, health=ctx.health, events=ctx.events, counters=ctx.counters, clock=clock or ctx.clock)


def make_receiver(tls: Tls, *, clock: Callable[[], float] = time.time, **kw: Any) -> UplinkReceiver:
    return UplinkReceiver(token=TOKEN, hmac_key=HMAC_KEY, certfile=tls.server_pem, clock=clock, **kw).start()


class FastWallClock:
    """Real monotonic time, but a wall clock running `factor` times faster (5-minute windows close
    in seconds), for thread-level tests. Waits are real."""

    def __init__(self, *, factor: float, start_wall: datetime = START_WALL) -> None:
        self._factor = factor
        self._m0 = time.monotonic()
        self._w0 = start_wall

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> datetime:
        return self._w0 + timedelta(seconds=(time.monotonic() - self._m0) * self._factor)

    def wait_until(self, deadline_s: float, stop: Event) -> bool:
        return stop.wait(max(0.0, deadline_s - time.monotonic()))


class SimSite:
    """A store and a sender driven step by step in simulated time (no threads of their own)."""

    def __init__(
        self, db: Path, *, site_id: str = "site-t", uplink: UplinkConfig | None = None, grid_offset_w: float = 0.0, **store_kw: Any
    ) -> None:
        self.clock = SimClock(start_wall=START_WALL)
        self.ctx = EMSContext(clock=self.clock, start_mode=Mode.SELF_CONSUMPTION)
        self.store = make_store(store_cfg(db, **store_kw), self.ctx, site_id=site_id, outbox_enabled=True)
        self.sender = make_sender(uplink, self.store, self.ctx) if uplink is not None else None
        self.meter = self.ctx.readings.claim("test", [Quantity.GRID_POWER_W, Quantity.SOC_PCT])  # what `run` feeds (as `feed` would)
        self.grid_offset_w = grid_offset_w  # another site's data in the same windows
        self._next_flush_s = self.clock.monotonic()
        self.outcomes: list[str] = []

    def receiver_clock(self) -> float:
        return self.clock.wall().timestamp()

    def run(self, seconds: float, *, sample_every_s: float = 20.0, flush_every_s: float = 60.0, pump: bool = True) -> None:
        """Advance `seconds` of simulated time: measurements, samples, flushes, sender attempts."""
        end = self.clock.monotonic() + seconds
        while self.clock.monotonic() < end:
            now = self.clock.monotonic()
            minute = int(self.clock.wall().timestamp() // 60)
            self.meter.update({Quantity.GRID_POWER_W: float(minute % 1000) + self.grid_offset_w, Quantity.SOC_PCT: 50.0}, at_s=now)
            self.store.sample_once()
            if now >= self._next_flush_s:
                self.store.flush()
                self._next_flush_s = now + flush_every_s
            if pump:
                self.pump_all()
            self.clock.advance(sample_every_s)

    def pump_all(self) -> None:
        assert self.sender is not None
        while True:
            outcome = self.sender.pump()
            self.outcomes.append(outcome)
            if outcome not in ("delivered", "parked"):
                return

    def drain(self, *, max_sim_s: float = 86400.0) -> None:
        """Let the sender catch up (advancing simulated time through its backoff) until the outbox is empty."""
        assert self.sender is not None
        end = self.clock.monotonic() + max_sim_s
        while self.clock.monotonic() < end:
            self.pump_all()
            if self.outcomes[-1] == "idle":
                self.store.flush()  # commit the delivery marks
                if self.pending() == 0:
                    return
            self.clock.advance(max(1.0, self.sender.next_try_in_s))
        raise AssertionError(f"outbox not drained after {max_sim_s} simulated s ({self.pending()} pending)")

    def pending(self) -> int:
        return int(self.store._conn.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()[0])

    def outbox_ids(self, status: str | None = None) -> list[str]:
        sql = "SELECT batch_id FROM outbox" + (" WHERE status = ?" if status else "") + " ORDER BY id"
        return [r[0] for r in self.store._conn.execute(sql, (status,) if status else ())]
