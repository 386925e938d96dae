"""`python -m simulators --config FILE`: ESS + meter Modbus servers (and the CAN BMS when enabled),
all driven by one plant model and a day profile, in real time or sped up (DESIGN §7).

    python -m simulators --config config/simulators.yaml [--speed 10] [--start-time 12:00]
                         [--profile winter] [--log-format json|console] [--log-level info]

Stops on SIGINT/SIGTERM. Rehearsal commands: docs/simulator.md (`python -m simulators.ctl`).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from typing import Any

from interfaces.logs import configure_logging
from simulators.config import SimConfigError, load_sim_config
from simulators.site import Simulator


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m simulators", description="Simulated site: ESS + grid meter (Modbus), CAN BMS, one plant model"
    )
    p.add_argument("--config", help="simulator YAML (see config/simulators.yaml); defaults when omitted")
    p.add_argument("--speed", type=float, help="override plant.speed (simulated s per real s)")
    p.add_argument("--start-time", help="override plant.start_time (HH:MM)")
    p.add_argument("--profile", help="override plant.profile (name or CSV path)")
    p.add_argument("--log-format", choices=("json", "console"), help="override logging.format")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="override logging.level")
    return p.parse_args(argv)


async def _run(sim: Simulator) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await sim.run(stop)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    overrides: dict[str, Any] = {}
    for key, value in (("plant.speed", args.speed), ("plant.start_time", args.start_time), ("plant.profile", args.profile)):
        if value is not None:
            overrides[key] = value
    try:
        cfg = load_sim_config(args.config, overrides)
        configure_logging(fmt=args.log_format or cfg.logging.format, level=args.log_level or cfg.logging.level)
        sim = Simulator(cfg)
    except (SimConfigError, ValueError) as exc:
        for line in str(exc).splitlines():
            print(f"config error: {line}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_run(sim))
    except OSError as exc:  # e.g. a port in use
        print(f"simulators: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
