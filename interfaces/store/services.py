"""What `main.build_services()` starts for `store:` and `uplink:` (in start order)."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from config import EMSConfig
from ems.clock import Clock
from ems.context import EMSContext
from ems.model import Mode, State
from interfaces.store.store import Store
from interfaces.store.workers import StoreSampler, StoreWriter
from interfaces.worker import Worker

if TYPE_CHECKING:
    from interfaces.uplink.commands import CloudCommands

__all__ = ["build_store_services", "cloud_commands", "open_store"]


def open_store(cfg: EMSConfig, ctx: EMSContext, clock: Clock) -> Store:
    """The store (the one SQLite writer) on `store.path`, handed the context parts it uses."""
    try:
        return Store(
            cfg=cfg.store,
            snapshot=ctx.snapshot,
            events=ctx.events,
            counters=ctx.counters,
            health=ctx.health,
            clock=clock,
            site_id=cfg.site.id,
            outbox_enabled=cfg.uplink.enabled,
        )
    except (OSError, sqlite3.Error, RuntimeError) as exc:
        raise RuntimeError(f"store.path: cannot open the database {cfg.store.path}: {exc}") from exc


def build_store_services(cfg: EMSConfig, ctx: EMSContext, clock: Clock, *, store: Store | None = None) -> list[Worker]:
    """Writer first, then the sampler, then (uplink.enabled) the sender: stopped in reverse, so the
    writer's final flush sees the sampler's last samples and the sender's last delivery marks.
    `store`: one opened already (main.py shares it with the planner's price cache)."""
    store = store if store is not None else open_store(cfg, ctx, clock)
    ctx.requests.set_audit_sink(store.make_durable)  # accepted requests are committed before they are reported (DESIGN §6)
    services: list[Worker] = [
        StoreWriter(store=store, health=ctx.health, clock=clock),
        StoreSampler(store=store, health=ctx.health, clock=clock),
    ]
    if cfg.store.export.enabled:  # hourly Parquet files: reads on its own connection, pyarrow only in that thread
        from interfaces.store.hourly import HourlyExport

        services.append(HourlyExport(cfg=cfg.store.export, db_path=store.path, site_id=cfg.site.id, health=ctx.health, clock=clock))
    if cfg.uplink.enabled:
        from interfaces.uplink.sender import Sender

        commands = cloud_commands(cfg, ctx, clock, store=store) if cfg.uplink.commands.enabled else None
        services.append(
            Sender(cfg=cfg.uplink, store=store, health=ctx.health, events=ctx.events, counters=ctx.counters, clock=clock, commands=commands)
        )
    return services


def cloud_commands(cfg: EMSConfig, ctx: EMSContext, clock: Clock, *, store: Store) -> CloudCommands:
    """The cloud command queue's site side: the same audited requests as REST and MQTT (docs/uplink.md)."""
    from interfaces.prices.push import push_refused
    from interfaces.uplink.commands import CloudCommands

    assert cfg.uplink.hmac_key is not None and cfg.uplink.hmac_key.value is not None
    return CloudCommands(
        cfg=cfg.uplink.commands,
        key=cfg.uplink.hmac_key.value.encode(),
        requests=ctx.requests,
        store=store,
        counters=ctx.counters,
        clock=clock,
        release_mode=Mode.SELF_CONSUMPTION if cfg.control.external_fallback is State.SELF_CONSUMPTION else Mode.IDLE,
        prices_refused=push_refused(cfg.planner, cfg.tariff),
    )
