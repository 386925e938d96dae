"""Modbus test helpers: simulated register devices served from an asyncio loop in a thread, socat pty pairs."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from interfaces.modbus.pointmap import load_map
from simulators.modbus_server import DeviceServer, RegisterImage
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

    def override(self, name: str, words: list[int] | None) -> None:
        self.loop.call(lambda: self.image.override(name, words))


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
