"""Benchmark: GET /api/v1/status latency under load while the control loop runs (issue 7).

This process runs the real controller loop (`Controller.run`, period `BENCH_API_PERIOD_S`,
default 0.1 s: ten times the production rate, so an overrun would show) on a real context fed every
cycle, and the real API server (waitress, loopback, random port). A second process sends GET
/api/v1/status at a bounded rate over one keep-alive connection and reports latencies. Printed:
p50/p99/max per rate, and the control loop's overrun count during the load (expect 0).

    python -m bench.bench_api            # ~25 s (BENCH_QUICK=1: ~10 s)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

from bench.common import REPO_ROOT, emit, free_port, stats_ms

RATES_PER_S = (20, 100)
SECONDS_PER_RATE = 10.0


def client(url: str, rate_per_s: float, duration_s: float) -> dict[str, Any]:
    """The second process: GET `url` on absolute deadlines (no burst when late), time each request."""
    import requests

    session = requests.Session()
    latencies: list[float] = []
    errors = late = 0
    period_s = 1.0 / rate_per_s
    start = time.perf_counter()
    deadline = start
    while deadline - start < duration_s:
        now = time.perf_counter()
        if now < deadline:
            time.sleep(deadline - now)
        elif now - deadline > period_s:
            late += 1
            deadline = now  # skip, never burst
        t0 = time.perf_counter()
        try:
            r = session.get(url, timeout=5)
            ok = r.status_code == 200 and b'"state"' in r.content
        except requests.RequestException:
            ok = False
        latencies.append(time.perf_counter() - t0)
        errors += 0 if ok else 1
        deadline += period_s
    wall_s = time.perf_counter() - start
    return {
        "rate_per_s": rate_per_s,
        "requests": len(latencies),
        "achieved_per_s": round(len(latencies) / wall_s, 1),
        "errors": errors,
        "late": late,
        **stats_ms(latencies),
    }


def _run_client(url: str, rate: float, duration_s: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.bench_api", "--client", url, "--rate", str(rate), "--duration", str(duration_s)]
    out = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=duration_s + 30, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    from api.server import ApiServer
    from config import parse_config
    from ems.clock import SystemClock
    from ems.context import EMSContext
    from ems.controller import Controller, CycleReport
    from ems.model import Mode, Quantity
    from interfaces.logs import configure_logging

    configure_logging(fmt="json", level="error", stream=sys.stderr)
    period_s = float(os.environ.get("BENCH_API_PERIOD_S", "0.1"))
    cfg = parse_config({"control": {"period_s": period_s, "summary_interval_s": 0}, "api": {"enabled": True, "port": free_port()}}, {})
    clock = SystemClock()
    ctx = EMSContext(clock=clock, start_mode=Mode.SELF_CONSUMPTION, required_sources=cfg.control.required_sources)
    readings = {Quantity.GRID_POWER_W: 800.0, Quantity.ESS_POWER_W: 0.0, Quantity.PV_POWER_W: 1500.0, Quantity.SOC_PCT: 60.0}
    source = ctx.readings.claim("bench", readings)  # the one source of every reading (no bench/ import of tests/)

    def feed(_report: CycleReport | None = None) -> None:
        source.update(readings, at_s=clock.monotonic())

    feed()
    server = ApiServer(cfg=cfg, ctx=ctx, clock=clock)
    server.start()
    controller = Controller.on(ctx, cfg.controller(), clock, workers=[server], on_cycle=[feed])
    stop = threading.Event()
    loop = threading.Thread(target=controller.run, args=(stop,), name="control-loop", daemon=True)
    loop.start()
    url = f"{server.url}/api/v1/status"
    try:
        _run_client(url, 5, 1.0)  # warm-up (imports, first requests)
        results = []
        seconds = 4.0 if os.environ.get("BENCH_QUICK") == "1" else SECONDS_PER_RATE
        for rate in RATES_PER_S:
            before = ctx.snapshot()
            res = _run_client(url, rate, seconds)
            after = ctx.snapshot()
            res["loop_overruns"] = after.overruns - before.overruns
            res["loop_cycles"] = after.cycles - before.cycles
            results.append(res)
        final = ctx.snapshot()
    finally:
        stop.set()
        loop.join(5.0)
        server.stop(timeout_s=5.0)
    emit(
        {
            "bench": "api",
            "endpoint": "GET /api/v1/status",
            "control_period_s": period_s,
            "api_threads": cfg.api.threads,
            "client": "separate process, one keep-alive connection, bounded rate",
            "by_rate": results,
            "p50_ms": results[-1].get("p50_ms"),
            "p99_ms": results[-1].get("p99_ms"),
            "loop_overruns_during_load": sum(r["loop_overruns"] for r in results),
            "loop_cycles_during_load": sum(r["loop_cycles"] for r in results),
            "state_at_end": final.state.value,
        }
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="bench.bench_api")
    p.add_argument("--client", metavar="URL", help="run as the load-generating client process")
    p.add_argument("--rate", type=float, default=20.0)
    p.add_argument("--duration", type=float, default=10.0)
    args = p.parse_args()
    if args.client:
        emit(client(args.client, args.rate, args.duration))
    else:
        main()
