"""EMS controller entry point (DESIGN.md §7).

    python main.py --config FILE [--log-format json|console] [--log-level LEVEL] [--check-config]

Exit status: 0 after a clean stop (SIGTERM/SIGINT), 2 for a bad config or command line.
"""

from __future__ import annotations

import argparse
import gc
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from types import FrameType
from typing import TYPE_CHECKING, Protocol

import structlog

from config import ConfigError, EMSConfig, load_config
from ems.clock import Clock, SystemClock
from ems.context import EMSContext
from ems.controller import Controller, CycleReport
from interfaces.logs import configure_logging
from interfaces.systemd import SystemdNotifier, notify_stopping

if TYPE_CHECKING:
    from interfaces.store import Store

__all__ = ["CycleHook", "HookFactory", "Service", "build_services", "main"]

CycleHook = Callable[[CycleReport], None]
HookFactory = Callable[[SystemdNotifier], Sequence[CycleHook]]  # extra hooks (tests wrap main with these)

log = structlog.get_logger("main")


class Service(Protocol):
    """A daemon thread the process starts, supervises and stops (workers, API server, ...)."""

    @property
    def name(self) -> str: ...

    def start(self) -> None: ...

    def is_alive(self) -> bool: ...

    def stop(self, timeout_s: float = 2.0) -> None: ...


def build_services(cfg: EMSConfig, ctx: EMSContext, clock: Clock) -> list[Service]:
    """Every enabled part, in start order, each handed the context parts it uses. Sources claim
    their readings as they are built (ems/context/readings.py): the CAN BMS before the inverter,
    whose battery readings are optional copies, and the MQTT ingest topics last."""
    services: list[Service] = []
    if cfg.can.enabled:
        from interfaces.can.worker import CanWorker

        services.append(
            CanWorker(
                cfg=cfg.can,
                readings=ctx.readings,
                health=ctx.health,
                events=ctx.events,
                counters=ctx.counters,
                clock=clock,
                fault_timeout_s=cfg.control.fault_timeout_s,
            )
        )
    if cfg.modbus.enabled:
        from interfaces.modbus.worker import build_modbus_links

        services.extend(
            build_modbus_links(
                cfg.modbus,
                readings=ctx.readings,
                health=ctx.health,
                commands=ctx.commands,
                events=ctx.events,
                counters=ctx.counters,
                clock=clock,
                fault_timeout_s=cfg.control.fault_timeout_s,
                polling=ctx.polling,
            )
        )
    if cfg.mqtt.enabled:
        from interfaces.mqtt import MqttWorker
        from interfaces.prices.push import push_refused

        services.append(
            MqttWorker(
                cfg=cfg.mqtt,
                readings=ctx.readings,
                requests=ctx.requests,
                health=ctx.health,
                counters=ctx.counters,
                snapshot=ctx.snapshot,
                clock=clock,
                site_id=cfg.site.id,
                site_name=cfg.site.name,
                control=cfg.control,
                prices_refused=push_refused(cfg.planner, cfg.tariff),
                currency=cfg.tariff.currency,
            )
        )
    store: Store | None = None
    if cfg.store.enabled:  # SQLite writer + sampler (+ uplink sender when uplink.enabled)
        from interfaces.store.services import build_store_services, open_store

        store = open_store(cfg, ctx, clock)
        services.extend(build_store_services(cfg, ctx, clock, store=store))
    if cfg.planner.enabled:  # prices, forecasts, the LP: publishes plans the loop follows in SELF_CONSUMPTION
        from interfaces.planner import build_planner

        services.append(build_planner(cfg, ctx, clock, store=store))
    if cfg.api.enabled and cfg.modbus.enabled and cfg.modbus.ess.enabled:  # `emsctl commission` runs inside the EMS (the API starts it)
        from interfaces.commission import build_commissioner

        services.append(build_commissioner(cfg, ctx, clock))
    if cfg.api.enabled:  # last: it serves what the parts above produce
        from api.server import ApiServer
        from api.sources import StoreSource

        store_reader = StoreSource(cfg.store.path, clock) if cfg.store.enabled else None  # history; else latest values only
        services.append(ApiServer(cfg=cfg, ctx=ctx, clock=clock, store=store_reader))
    return services


def build_cycle_hooks(extra: HookFactory | None = None) -> list[CycleHook]:
    """Called after every control cycle: the systemd watchdog ping (READY, WATCHDOG while on time),
    then any extra hooks (tests only: `extra` is never set by `main.py` itself)."""
    notifier = SystemdNotifier()
    hooks: list[CycleHook] = [notifier.on_cycle]
    if extra is not None:
        hooks.extend(extra(notifier))
    return hooks


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="main.py", description="On-site EMS controller")
    p.add_argument("--config", required=True, help="YAML config file (see config/ems.example.yaml)")
    p.add_argument("--log-format", choices=("json", "console"), help="override logging.format (default: console on a TTY, JSON otherwise)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="override logging.level")
    p.add_argument("--check-config", action="store_true", help="validate the config, print the result and exit (0 ok, 2 bad)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None, *, extra_hooks: HookFactory | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        print(f"config error: {args.config}: {len(exc.problems)} problem(s); not starting", file=sys.stderr)
        return 2
    if args.check_config:
        print(f"config ok: {args.config} (control enabled={cfg.control.enabled} dry_run={cfg.control.dry_run})")
        return 0
    configure_logging(fmt=args.log_format or cfg.logging.format.value, level=args.log_level or cfg.logging.level)
    return run(cfg, config_path=args.config, extra_hooks=extra_hooks)


def run(cfg: EMSConfig, *, config_path: str, extra_hooks: HookFactory | None = None) -> int:
    # The control thread shares the GIL with the API/worker threads: a 1 ms switch interval (default 5 ms)
    # lets it take the GIL sooner when its deadline comes (bench: loop lateness p99 15 -> 5.5 ms under API load).
    sys.setswitchinterval(0.001)
    clock = SystemClock()
    ctx = EMSContext(
        clock=clock,
        start_mode=cfg.control.start_mode,
        max_ttl_s=cfg.control.external_max_ttl_s,
        required_sources=cfg.control.required_sources,
        windows=cfg.windows(),
    )
    stop = threading.Event()

    received: list[str] = []

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        # Only set flags here: logging from a signal handler can deadlock on the log writer's lock.
        received.append(signal.Signals(signum).name)
        stop.set()

    announced = threading.Event()  # the loop ends on this, so the log reads "requested" before "stopped"

    def _announce_stop() -> None:
        stop.wait()
        try:
            notify_stopping()  # systemd: STOPPING=1 (no-op outside systemd)
            log.info("shutdown_requested", signal=received[0] if received else "none")
        finally:
            announced.set()

    announcer = threading.Thread(target=_announce_stop, name="stop-announcer", daemon=True)
    announcer.start()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    log.info("ems_starting", config=config_path, site=cfg.site.id, enabled=cfg.control.enabled, dry_run=cfg.control.dry_run)
    if not cfg.control.live:
        log.warning(
            "control_not_live",
            enabled=cfg.control.enabled,
            dry_run=cfg.control.dry_run,
            hint="commands are computed and logged; 0 W is written until control.enabled=true and control.dry_run=false",
        )
    services = build_services(cfg, ctx, clock)
    for svc in services:
        svc.start()
    controller = Controller.on(
        ctx,
        replace(cfg.controller(), plan_max_age_s=cfg.planner.max_plan_age_s),
        clock,
        workers=services,
        on_cycle=build_cycle_hooks(extra_hooks),
    )
    # What exists now (modules, config, the app, DBC, maps) lives as long as the process: take it out of
    # the cyclic GC's reach. A full collection holds the GIL while it walks every object (11-14 ms here
    # with ~64k objects, several times that on a Pi); after freeze() it walks only what came later.
    gc.collect()
    gc.freeze()
    log.info("gc_frozen", objects=gc.get_freeze_count())
    try:
        controller.run(announced)
    finally:
        stop.set()  # also when the loop ended by an exception
        announcer.join(1.0)
        for svc in reversed(services):
            svc.stop(timeout_s=1.0)
    log.info("ems_stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
