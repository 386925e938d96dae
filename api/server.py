"""The API server as a `main.Service`: waitress in a named daemon thread.

The thread runs waitress's I/O loop one poll at a time (at most `poll_s` each) so it can see its
stop flag and beat its heartbeat (the controller supervises every service); requests are served
by waitress's own worker threads (`api.threads`), /api/v1/health on a thread of its own. Between
polls the loop closes idle, slow and surplus connections (api/guard.py: `api.connection_limit`,
`idle_timeout_s`, `request_timeout_s`). `stop()` wakes the loop, which then closes the listening
socket and the worker threads itself.
"""

from __future__ import annotations

import resource
import threading
from typing import Any

import structlog
from waitress import create_server, wasyncore  # type: ignore[import-untyped]

from api.app import create_app
from api.guard import NET_CLOCK, GuardedChannel, LaneDispatcher, enforce
from api.sources import ReadSource
from config import EMSConfig
from ems.clock import Clock
from ems.context import EMSContext
from interfaces.logs import LogGate

__all__ = ["ApiServer"]

log = structlog.get_logger("api.server")
_GUARD_EVERY_S = 0.1  # the connection guard's pass, s
_ACCEPT_HEADROOM = 64  # waitress's own limit, above ours: it only stops a burst between two guard passes
_SPARE_FDS = 256  # file descriptors the rest of the process may need beside the API's connections


class ApiServer(threading.Thread):
    critical = False  # its failure degrades the EMS but never stops the battery (ems/controller.py)
    DEVICE = "api"

    def __init__(
        self,
        *,
        cfg: EMSConfig,
        ctx: EMSContext,
        clock: Clock,
        store: ReadSource | None = None,
        name: str = "api",
        poll_s: float = 0.5,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self._cfg = cfg
        self._clock = clock
        self._poll_s = poll_s
        self._stop_event = threading.Event()
        self._map: dict[int, Any] = {}
        self.app = create_app(cfg, ctx, clock, store)
        self._health = ctx.health
        self._counters = ctx.counters
        self._gate = LogGate(60.0)
        self._limit = cfg.api.connection_limit
        self._server: Any = None
        self.port: int | None = None
        self._health.register_thread(name, (self.DEVICE,))  # the device itself once bound (its real port)

    @property
    def url(self) -> str:
        return f"http://{self._cfg.api.host}:{self.port}"

    def start(self) -> None:
        """Bind (so `port` is known when this returns), then run the loop in the thread."""
        api = self._cfg.api
        self._limit = _room_for(api.connection_limit)
        try:
            self._server = create_server(
                self.app,
                map=self._map,
                _dispatcher=_dispatcher(api.threads),
                host=api.host,
                port=api.port,
                threads=api.threads,
                connection_limit=self._limit + _ACCEPT_HEADROOM,
                channel_timeout=api.idle_timeout_s,
                asyncore_use_poll=True,  # select() cannot watch more than 1024 descriptors
                # the app answers 413 (JSON, audited) up to this; waitress itself (plain text) beyond
                max_request_body_size=4 * api.max_body_bytes + 65536,
                ident="ems",
                clear_untrusted_proxy_headers=True,
            )
        except OSError as exc:
            log.error("api_bind_failed", host=api.host, port=api.port, error=str(exc))
            raise
        self._server.channel_class = GuardedChannel
        self.port = int(self._server.effective_port)
        self._health.register_device(self.DEVICE, kind="http", where=f"{api.host}:{self.port}", thread=self.name)
        self._health.set_info(self.DEVICE, url=self.url)
        super().start()

    def run(self) -> None:
        srv = self._server
        log.info(
            "api_started",
            host=self._cfg.api.host,
            port=self.port,
            threads=self._cfg.api.threads,
            protect_reads=self._cfg.api.protect_reads,
            tokens=len(self._cfg.api.tokens),
        )
        if not self._cfg.api.tokens:
            log.warning("api_without_tokens", hint="no api.tokens configured: every write is refused with 401")
        next_guard_s = 0.0
        try:
            while not self._stop_event.is_set():
                try:
                    wasyncore.loop(timeout=self._poll_s, map=self._map, use_poll=srv.adj.asyncore_use_poll, count=1)
                    full = len(self._map) >= srv.adj.connection_limit  # waitress would stop accepting: make room now
                    if (now := NET_CLOCK.monotonic()) >= next_guard_s or full:
                        next_guard_s = now + _GUARD_EVERY_S
                        self._guard(now)
                except Exception:
                    self._health.error(self.DEVICE, reason="unexpected", at_s=self._clock.monotonic())
                    log.exception("api_loop_failed")
                else:
                    self._health.ok(self.DEVICE, at_s=self._clock.monotonic())
                self._health.beat(self.name, at_s=self._clock.monotonic())
        finally:
            srv.task_dispatcher.shutdown(timeout=2)
            wasyncore.close_all(self._map)
            log.info("api_stopped")

    def open_connections(self) -> int:
        """Client connections open now (for tests and the bench)."""
        return sum(1 for d in list(self._map.values()) if isinstance(d, GuardedChannel) and not d.will_close)

    def _guard(self, now_s: float) -> None:
        api = self._cfg.api
        closed = enforce(self._map, now_s=now_s, limit=self._limit, idle_s=api.idle_timeout_s, request_s=api.request_timeout_s)
        if not closed:
            return
        for name, n in (("idle_closed", closed.idle), ("slow_closed", closed.slow), ("evicted", closed.evicted)):
            if n:
                self._counters.count(f"api_connections_{name}", n)
        held = self._gate.allow("closed", now_s)
        if held is not None and (closed.slow or closed.evicted):  # idle ones are routine: counted only
            log.warning(
                "api_connections_closed", slow=closed.slow, evicted=closed.evicted, idle=closed.idle, open=closed.open, suppressed=held
            )
        self._pulled()

    def _pulled(self) -> None:
        """Wake the poll so the marked connections are closed now, not after poll_s."""
        try:
            self._server.pull_trigger()
        except OSError as exc:
            log.debug("api_wake_failed", error=str(exc))

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop_event.set()
        if self._server is not None and self.is_alive():
            try:
                self._server.pull_trigger()  # wake the poll at once
            except OSError as exc:  # the loop is closing: it sees the stop flag within poll_s anyway
                log.debug("api_wake_failed", error=str(exc))
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout_s)


def _dispatcher(threads: int) -> LaneDispatcher:
    d = LaneDispatcher()
    d.set_thread_count(threads)
    return d


def _room_for(limit: int) -> int:
    """The connection limit the process's file descriptors allow: raise the soft RLIMIT_NOFILE toward
    what `limit` needs (up to the hard limit), else lower the limit (logged)."""
    need = limit + _ACCEPT_HEADROOM + _SPARE_FDS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("api_fd_limit_not_raised", soft=soft, hard=hard, wanted=need, error=str(exc))
    room = limit if soft == resource.RLIM_INFINITY else min(limit, int(soft) - _ACCEPT_HEADROOM - _SPARE_FDS)
    if room < limit:
        log.warning("api_connection_limit_lowered", configured=limit, effective=room, fd_limit=soft)
    return max(room, 10)
