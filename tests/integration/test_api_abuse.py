"""The API cannot be locked out (issue 18): idle and slow-header connections, busy worker threads.

waitress stops accepting at `connection_limit` (its default 100) and closes idle channels only after
`channel_timeout`; a client that trickles its headers is never idle. The API server takes both
from the config, closes idle connections and requests that do not arrive in time, makes room for
a new connection by closing the longest-idle one, and serves /api/v1/health on its own thread, so
health answers while every worker thread is busy. Bounded: loopback, a few seconds.
"""

from __future__ import annotations

import resource
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from typing import Any

import pytest
import requests

from api.models import EventInfo, MeasurementRow, Resolution
from ems.clock import SimClock
from ems.context import EMSContext
from ems.model import Mode
from tests.helpers.api import api_config, running_api
from tests.helpers.common import wait_for

IDLE, SLOW = 500, 200
_SLOW_HEAD = b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


class _BlockingStore:
    """A ReadSource whose queries block until released (bounded): keeps the worker threads busy."""

    name = "store"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)

    def measurements(self, *, from_ts: float, to_ts: float, fields: Any, resolution: Resolution, limit: int) -> list[MeasurementRow]:
        self.entered.release()
        self.release.wait(20.0)
        return []

    def events(self, **kw: Any) -> list[EventInfo]:
        return []


def _fds_for(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        if hard != resource.RLIM_INFINITY and hard < n:
            pytest.skip(f"needs {n} file descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5.0)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


@contextmanager
def _trickling(socks: list[socket.socket], every_s: float) -> Iterator[None]:
    """Send one more header byte on each socket every `every_s` (a slowloris client)."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(every_s):
            for s in socks:
                with suppress(OSError):  # closed by the server: that is the point
                    s.send(b"a")

    t = threading.Thread(target=run, name="slow-headers", daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(5.0)


def _health_s(url: str) -> float:
    t0 = time.perf_counter()
    r = requests.get(f"{url}/api/v1/health", timeout=3.0, headers={"Connection": "close"})
    assert r.status_code in (200, 503) and "healthy" in r.json()
    return time.perf_counter() - t0


def _closed_by_server(s: socket.socket, timeout_s: float) -> bool:
    """True when the server ends the connection within `timeout_s` (EOF, or an error reply before it)."""
    s.settimeout(timeout_s)
    try:
        s.recv(4096)
        return True
    except TimeoutError:
        return False
    except OSError:
        return True


def test_health_answers_with_500_idle_and_200_slow_header_connections_and_busy_workers() -> None:
    _fds_for(4 * (IDLE + SLOW) + 256)
    clock = SimClock()
    ctx = EMSContext(clock=clock, start_mode=Mode.IDLE)
    store = _BlockingStore()
    cfg = api_config({"threads": 2})
    with ExitStack() as stack, running_api(cfg, ctx, clock, store=store) as api:
        port = api.server.port
        assert port is not None
        socks: list[socket.socket] = []
        stack.callback(lambda: [s.close() for s in socks])

        def slow_query() -> None:
            with suppress(requests.RequestException):  # the server may close it at the end of the test
                requests.get(f"{api.url}/api/v1/measurements", params={"from_ts": 0, "to_ts": 10}, timeout=25)

        busy = [threading.Thread(target=slow_query, daemon=True) for _ in range(cfg.api.threads)]
        stack.callback(lambda: [t.join(25) for t in busy])
        stack.callback(store.release.set)
        for t in busy:
            t.start()
        for _ in busy:  # every worker thread is inside a query now
            assert store.entered.acquire(timeout=5.0)
        idle = [_connect(port) for _ in range(IDLE)]
        socks += idle
        slow = [_connect(port) for _ in range(SLOW)]
        socks += slow
        for s in slow:
            s.sendall(_SLOW_HEAD)
        with _trickling(slow, every_s=0.2):
            latencies = [_health_s(api.url) for _ in range(20)]
        assert max(latencies) < 1.0, latencies
        # the connections were really open all along (nothing cut at these defaults)
        assert all(not _closed_by_server(s, 0.001) for s in idle[:20])


def test_idle_and_slow_header_clients_are_closed_in_time() -> None:
    _fds_for(1024)
    clock = SimClock()
    ctx = EMSContext(clock=clock, start_mode=Mode.IDLE)
    cfg = api_config({"threads": 2, "idle_timeout_s": 1.0, "request_timeout_s": 1.0})
    with ExitStack() as stack, running_api(cfg, ctx, clock) as api:
        port = api.server.port
        assert port is not None
        idle = [_connect(port) for _ in range(10)]
        slow = [_connect(port) for _ in range(10)]
        stack.callback(lambda: [s.close() for s in idle + slow])
        for s in slow:
            s.sendall(_SLOW_HEAD)
        t0 = time.monotonic()
        with _trickling(slow, every_s=0.1):  # never idle, but the request never completes
            assert all(_closed_by_server(s, 4.0) for s in idle)
            assert all(_closed_by_server(s, 4.0) for s in slow)
        assert time.monotonic() - t0 < 4.0
        assert _health_s(api.url) < 1.0
        counters = ctx.counters.snapshot()
        assert counters.get("api_connections_idle_closed", 0) >= 10 and counters.get("api_connections_slow_closed", 0) >= 10


def test_a_full_server_closes_the_longest_idle_connections_to_let_a_new_client_in() -> None:
    _fds_for(1024)
    clock = SimClock()
    ctx = EMSContext(clock=clock, start_mode=Mode.IDLE)
    cfg = api_config({"threads": 2, "connection_limit": 50})
    with ExitStack() as stack, running_api(cfg, ctx, clock) as api:
        port = api.server.port
        assert port is not None
        old = [_connect(port) for _ in range(50)]
        stack.callback(lambda: [s.close() for s in old])
        wait_for(lambda: api.server.open_connections() == 50, timeout_s=5, what="50 connections accepted")
        flood = [_connect(port) for _ in range(150)]
        stack.callback(lambda: [s.close() for s in flood])
        assert _health_s(api.url) < 1.0  # it got in although 200 connections were opened at a limit of 50
        assert all(_closed_by_server(s, 3.0) for s in old)  # the longest idle went first
        wait_for(lambda: api.server.open_connections() <= 50, timeout_s=5, what="back at the limit")
        assert ctx.counters.snapshot().get("api_connections_evicted", 0) >= 150
