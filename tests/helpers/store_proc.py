"""The writer process of the crash test: store + sender, as fast as it can in simulated time.

    python -m tests.helpers.store_proc --db PATH --url URL --ca CA_FILE

Prints `committed <outbox id> <batch id>` on stdout after each commit that added batches; the
test kills it with SIGKILL at an arbitrary moment."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ems.clock import SimClock
from ems.context import EMSContext
from ems.model import Quantity
from interfaces.logs import configure_logging
from tests.helpers.uplink import START_WALL, make_sender, make_store, store_cfg, uplink_cfg


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--db", required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--ca", required=True)
    args = p.parse_args()
    configure_logging(fmt="json", level="warning", stream=sys.stderr)
    clock = SimClock(start_wall=START_WALL)
    ctx = EMSContext(clock=clock)
    store = make_store(store_cfg(Path(args.db), queue_max=100_000), ctx, site_id="crash", outbox_enabled=True)
    sender = make_sender(uplink_cfg(args.url, Path(args.ca), idle_poll_s=0.05), store, ctx)
    meter = ctx.readings.claim("test", [Quantity.GRID_POWER_W, Quantity.SOC_PCT])
    sender.start()
    i = 0
    while True:
        meter.update({Quantity.GRID_POWER_W: float(i % 997), Quantity.SOC_PCT: 50.0}, at_s=clock.monotonic())
        store.sample_once()
        if i % 5 == 4:
            for row_id, batch_id in store.flush().batches:
                print(f"committed {row_id} {batch_id}", flush=True)
        clock.advance(1.0)
        i += 1


if __name__ == "__main__":
    sys.exit(main())
