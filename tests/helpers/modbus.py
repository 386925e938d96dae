"""Modbus test helpers: simulated register devices (and a whole simulated site) served from an asyncio loop
in a thread, the EMS's Modbus links built and run as main.py runs them, socat pty pairs."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from config.modbus import ModbusConfig
from ems.clock import Clock
from ems.context import EMSContext
from ems.model import DeviceHealth
from interfaces.modbus.pointmap import load_map
from interfaces.modbus.worker import ModbusLink, build_modbus_links
from simulators.config import SimulatorConfig
from simulators.modbus_server import DeviceServer, RegisterImage
from simulators.site import Simulator
from tests.helpers.common import wait_for

T = TypeVar("T")


class LoopThread:
    """An asyncio loop in a daemon thread; `run(coro)` / `call(fn)` execute in it and wait for the result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-modbus-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Awaitable[T], timeout_s: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)  # type: ignore[arg-type]

    def call(self, fn: Callable[[], T], timeout_s: float = 10.0) -> T:
        async def _call() -> T:
            return fn()

        return self.run(_call(), timeout_s)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


class SimDevice:
    """One simulated device (register image + pymodbus server) and the writes it received."""

    def __init__(self, loop: LoopThread, map_name: str, **server_kw: Any) -> None:
        self.loop = loop
        self.writes: list[tuple[str, float]] = []
        self.image = RegisterImage(load_map(map_name), on_write=lambda n, v: self.writes.append((n, v)))
        self.server = DeviceServer(map_name, self.image, **server_kw)

    def start(self) -> None:
        self.loop.run(self.server.start())

    def stop(self) -> None:
        self.loop.run(self.server.stop())

    def set(self, **values: float) -> None:
        self.loop.call(lambda: self.image.set_values(values))

    def value(self, name: str) -> float | str:
        return self.loop.call(lambda: self.image.value(name))

    def words(self, name: str) -> list[int] | None:
        """The raw registers of point `name`, as the EMS's last write left them."""
        count = next(p.count for p in self.image.map.all_points() if p.name == name)
        addr = self.image.address_of(name)
        return self.loop.call(lambda: self.image.read(addr, count))

    def override(self, name: str, words: list[int] | None) -> None:
        self.loop.call(lambda: self.image.override(name, words))


@contextmanager
def serving(cfg: SimulatorConfig, *, plant_time: bool = True) -> Iterator[tuple[LoopThread, Simulator]]:
    """The simulated site of `cfg` with its Modbus devices served on loopback from an event-loop thread for the
    block (then stopped, the loop closed). `plant_time`: the devices' own timers (revert watchdogs) run on the
    plant's simulated time, which the test steps, instead of real time."""
    loop = LoopThread()
    sim = Simulator(cfg, device_clock=(lambda: sim.plant.t_s) if plant_time else None)

    async def start() -> None:
        for dev in sim.devices.values():
            await dev.start()

    async def stop() -> None:
        for dev in sim.devices.values():
            await dev.stop()

    try:
        loop.run(start())
        yield loop, sim
    finally:
        loop.run(stop())
        loop.close()


def build_links(cfg: ModbusConfig, ctx: EMSContext, clock: Clock) -> list[ModbusLink]:
    """The Modbus links (one thread per TCP device, one per serial line), handed the context parts main.py hands them."""
    return build_modbus_links(
        cfg,
        readings=ctx.readings,
        health=ctx.health,
        commands=ctx.commands,
        events=ctx.events,
        counters=ctx.counters,
        clock=clock,
    )


@contextmanager
def running_links(cfg: ModbusConfig, ctx: EMSContext, clock: Clock) -> Iterator[list[ModbusLink]]:
    """Build and start the links; on exit stop them all and check that every thread ended."""
    links = build_links(cfg, ctx, clock)
    for link in links:
        link.start()
    try:
        yield links
    finally:
        for link in links:
            link.stop()
        assert not [link.name for link in links if link.is_alive()]


def device(ctx: EMSContext, name: str) -> DeviceHealth:
    """The health of device `name` (it is registered when its link is built)."""
    dev = ctx.snapshot().device(name)
    assert dev is not None, f"device {name} not registered"
    return dev


def info(ctx: EMSContext, name: str) -> dict[str, object]:
    """Device `name`'s info (connected, map, models, identity / error) as a plain dict; {} before the first edge."""
    dev = ctx.snapshot().device(name)
    return {} if dev is None else dict(dev.info)


@contextmanager
def pty_pair(tmp: Path) -> Iterator[tuple[str, str]]:
    """Two linked pseudo-terminals made by socat (RTU tests); skips when socat is missing."""
    import pytest

    socat = shutil.which("socat")
    if socat is None:
        pytest.skip("socat not installed (make test installs it)")
    a, b = tmp / "pty-a", tmp / "pty-b"
    proc = subprocess.Popen(
        [socat, "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: a.exists() and b.exists(), timeout_s=5, what="socat pty pair")
        yield str(a), str(b)
    finally:
        proc.terminate()
        proc.wait(5)
