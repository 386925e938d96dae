"""The API server as a `main.Service`: waitress in a named daemon thread.

The thread runs waitress's I/O loop one poll at a time (at most `poll_s` each) so it can see its
stop flag and beat its heartbeat (the controller supervises every service); requests are served
by waitress's own worker threads (`api.threads`). `stop()` wakes the loop, which then closes the
listening socket and the worker threads itself.
"""

from __future__ import annotations

import threading
from typing import Any

import structlog
from waitress import create_server, wasyncore  # type: ignore[import-untyped]

from api.app import create_app
from api.sources import ReadSource
from config import EMSConfig
from ems.clock import Clock
from ems.context import EMSContext

__all__ = ["ApiServer"]

log = structlog.get_logger("api.server")


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
        self._server: Any = None
        self.port: int | None = None
        self._health.register_thread(name, (self.DEVICE,))  # the device itself once bound (its real port)

    @property
    def url(self) -> str:
        return f"http://{self._cfg.api.host}:{self.port}"

    def start(self) -> None:
        """Bind (so `port` is known when this returns), then run the loop in the thread."""
        api = self._cfg.api
        try:
            self._server = create_server(
                self.app,
                map=self._map,
                host=api.host,
                port=api.port,
                threads=api.threads,
                # the app answers 413 (JSON, audited) up to this; waitress itself (plain text) beyond
                max_request_body_size=4 * api.max_body_bytes + 65536,
                ident="ems",
                clear_untrusted_proxy_headers=True,
            )
        except OSError as exc:
            log.error("api_bind_failed", host=api.host, port=api.port, error=str(exc))
            raise
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
        try:
            while not self._stop_event.is_set():
                try:
                    wasyncore.loop(timeout=self._poll_s, map=self._map, use_poll=srv.adj.asyncore_use_poll, count=1)
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

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop_event.set()
        if self._server is not None and self.is_alive():
            try:
                self._server.pull_trigger()  # wake the poll at once
            except OSError as exc:  # the loop is closing: it sees the stop flag within poll_s anyway
                log.debug("api_wake_failed", error=str(exc))
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout_s)
