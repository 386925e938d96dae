"""Benchmark 3: command latency, from `ctx.commands.publish` to the value in a real pymodbus server's register.

The real Modbus links (interfaces/modbus: one thread per TCP device, built by `build_modbus_links`
as main.py builds them) poll a simulated SunSpec ESS and SDM630 meter (simulators.modbus_server,
pymodbus on 127.0.0.1, random ports) in this process; the bench publishes N commands at random
phases relative to the poll and times each until the server's register decodes to the new
set-point. `BENCH_QUICK=1`: 50 commands instead of 300.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from functools import partial

from bench.common import emit, free_port, stats_ms


def _unavailable(reason: str) -> None:
    emit({"available": False, "reason": reason})


def main() -> None:
    try:
        from config.modbus import ModbusConfig
        from ems.clock import SystemClock
        from ems.context import EMSContext
        from ems.model import Command, ControlStatus, Mode, State
        from interfaces.modbus.pointmap import load_map
        from interfaces.modbus.worker import build_modbus_links
        from simulators.modbus_server import DeviceServer, RegisterImage
    except ImportError as exc:
        _unavailable(f"Modbus links or simulated devices not importable: {exc}")
        return
    n = 50 if os.environ.get("BENCH_QUICK") == "1" else 300
    loop = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever, name="bench-modbus-loop", daemon=True)
    loop_thread.start()

    def in_loop(coro: object) -> object:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(10)  # type: ignore[arg-type]

    arrived: dict[float, float] = {}
    cond = threading.Condition()

    def on_write(name: str, value: float) -> None:
        if name == "setpoint_w":
            with cond:
                arrived.setdefault(value, time.perf_counter())
                cond.notify_all()

    ess_img = RegisterImage(load_map("sunspec_ess"), on_write=on_write)
    meter_img = RegisterImage(load_map("sdm630"))
    ess = DeviceServer("sunspec_ess", ess_img, port=free_port(), device_id=1)
    meter = DeviceServer("sdm630", meter_img, port=free_port(), device_id=2)

    async def _setup() -> None:
        ess_img.set_values(
            {
                "ess_power_w": 0.0,
                "soc_pct": 50.0,
                "soh_pct": 99.0,
                "bms_voltage_v": 52.0,
                "bms_current_a": 0.0,
                "bms_ccl_a": 100.0,
                "bms_dcl_a": 100.0,
                "ess_max_charge_w": 5000.0,
                "ess_max_discharge_w": 5000.0,
                "ess_status": 4,
            }
        )
        meter_img.set_values({"grid_power_w": 100.0, "grid_voltage_v": 230.0, "grid_frequency_hz": 50.0})
        await ess.start()
        await meter.start()

    in_loop(_setup())
    clock = SystemClock()
    ctx = EMSContext(clock=clock, start_mode=Mode.SELF_CONSUMPTION)
    cfg = ModbusConfig.model_validate(
        {
            "enabled": True,
            "ess": {"port": ess.port, "device_id": 1, "map": "auto", "poll_period_s": 1.0, "timeout_s": 1.0},
            "meter": {"port": meter.port, "device_id": 2, "map": "sdm630", "poll_period_s": 1.0, "timeout_s": 1.0},
        }
    )
    links = build_modbus_links(
        cfg, readings=ctx.readings, health=ctx.health, commands=ctx.commands, events=ctx.events, counters=ctx.counters, clock=clock
    )
    for link in links:
        link.start()

    def ess_connected() -> bool:
        dev = ctx.snapshot().device("ess")
        return dev is not None and dev.info.get("connected") is True

    latencies: list[float] = []
    missed = 0
    rng = random.Random(7)
    pause = threading.Event()
    try:
        deadline = time.monotonic() + 15
        while not ess_connected() and time.monotonic() < deadline:
            pause.wait(0.05)
        for seq in range(1, n + 1):
            value = float(10 * (seq % 400) - 2000 + 10)  # distinct, on the register's resolution
            with cond:
                arrived.pop(value, None)
            pause.wait(rng.uniform(0.0, 0.05))  # random phase against the 1 s poll
            t0 = time.perf_counter()
            now_s = clock.monotonic()
            ctx.commands.publish(ControlStatus(Command(seq, value, value, now_s), State.SELF_CONSUMPTION, now_s, (), None, None, (), 0))
            with cond:
                ok = cond.wait_for(partial(dict.__contains__, arrived, value), 2.0)
                if ok:
                    latencies.append(arrived[value] - t0)
                else:
                    missed += 1
    finally:
        for link in links:
            link.stop()
        in_loop(ess.stop())
        in_loop(meter.stop())
        loop.call_soon_threadsafe(loop.stop)
        loop_thread.join(5)
    if not latencies:
        _unavailable(f"no command reached the register ({missed} missed)")
        return
    emit(
        {
            "available": True,
            "commands": n,
            "missed": missed,
            "latency": stats_ms(latencies),
            "poll_period_s": 1.0,
            "path": "ctx.commands.publish -> ModbusLink modbus-ess -> pymodbus TCP -> simulated SunSpec register",
        }
    )


if __name__ == "__main__":
    main()
