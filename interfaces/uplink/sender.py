"""The uplink sender thread (DESIGN.md §6): outbox rows, oldest first, through one transport.

One row at a time, in id order: gzip JSON (stored ready in the outbox), signed (HMAC over timestamp
+ body). The transport (interfaces/uplink/transport.py) is HTTPS (POST, TLS verified, bearer token)
or MQTT (QoS 1 publish, TLS, per-site credentials; interfaces/uplink/mqtt_transport.py). Delivered
(2xx, a successful PUBACK) marks the row delivered; a network error, 5xx, 408, 429 (or no PUBACK)
retries the SAME row after a tenacity backoff (exponential with jitter, or the receiver's
Retry-After); any other answer parks the row (an event is recorded) and the sender goes on. 409 is
a conflict (the receiver holds other content under this batch id): the row is parked too, so it is
kept, never marked delivered, and logged as such. Delivery marks go to the store's writer thread,
which is the only writer; until they are committed the sender remembers the last id it finished,
and after a crash a re-sent batch is dropped by the receiver by its batch id.

With `uplink.commands.enabled` the sender also fetches the receiver's signed commands (from each
POST's answer, and every `commands.poll_s`) and hands them to `CloudCommands` (commands.py), which
runs them through the audited request path; their results go back in the next batch's `acks`.

The thread never blocks for long: backoff is a deadline on the injected clock, checked at least
once a second, so heartbeats continue and tests can drive `pump()` in simulated time.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import requests
import tenacity
from tenacity.wait import wait_base

from config.uplink import UplinkConfig, UplinkTransport
from ems.clock import Clock
from ems.context import Counters, EventLog, Health
from interfaces.backoff import Backoff
from interfaces.store.schema import open_readonly
from interfaces.uplink.transport import HttpsTransport, Outcome, TransientError, Transport, parse_retry_after, system_cas
from interfaces.worker import Worker

if TYPE_CHECKING:
    from interfaces.uplink.commands import CloudCommands

__all__ = ["DEVICE", "DeliveryLog", "Sender", "TransientError", "make_transport", "parse_retry_after", "system_cas"]

DEVICE = "uplink"

_ROWS_PER_ITERATION = 50
_MAX_WAIT_CHUNK_S = 1.0  # the thread looks at its deadline (and heartbeats) at least this often


class DeliveryLog(Protocol):
    """What the sender needs from the store: where the outbox is, and how to record outcomes."""

    path: Path
    site_id: str
    outbox_changed: threading.Event

    def mark_delivered(self, row_id: int, *, attempts: int) -> None: ...

    def mark_parked(self, row_id: int, *, attempts: int, error: str) -> None: ...


class _WaitRetryAfter(wait_base):
    """Honour the receiver's Retry-After (capped); otherwise the fallback backoff."""

    def __init__(self, fallback: wait_base, cap_s: float) -> None:
        self._fallback = fallback
        self._cap_s = cap_s

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome is not None else None
        if isinstance(exc, TransientError) and exc.retry_after_s is not None:
            return min(exc.retry_after_s, self._cap_s)
        return float(self._fallback(retry_state))


def make_transport(cfg: UplinkConfig, *, site_id: str, clock: Clock, session: requests.Session | None = None) -> Transport:
    if cfg.transport is UplinkTransport.MQTT:
        from interfaces.uplink.mqtt_transport import MqttTransport

        return MqttTransport(cfg, site_id=site_id, clock=clock)
    return HttpsTransport(cfg, site_id=site_id, clock=clock, session=session)


class Sender(Worker):
    critical = False  # its failure degrades the EMS but never stops the battery (ems/controller.py)
    expected_errors = (*Worker.expected_errors, sqlite3.Error)

    def __init__(
        self,
        *,
        cfg: UplinkConfig,
        store: DeliveryLog,
        health: Health,
        events: EventLog,
        counters: Counters,
        clock: Clock,
        session: requests.Session | None = None,
        transport: Transport | None = None,
        commands: CloudCommands | None = None,
    ) -> None:
        """`transport`: built from `cfg` when None; `commands`: the cloud command queue (None: off)."""
        super().__init__(name="uplink", health=health, clock=clock, period_s=_MAX_WAIT_CHUNK_S, devices=(DEVICE,))
        self.transport = transport or make_transport(cfg, site_id=store.site_id, clock=clock, session=session)
        health.register_device(DEVICE, kind=self.transport.kind, where=self.transport.where, thread=self.name)
        self._events = events
        self._counters = counters
        self.cfg = cfg
        self._store = store
        self._commands = commands
        self._next_command_poll_s = -math.inf
        self._poll_failing = False
        self._conn: sqlite3.Connection | None = None
        self._after_id = 0  # every row up to this id is finished (delivered or parked) in this process
        self._attempts = 0  # attempts at the current row
        self._next_poll_s = float("-inf")
        self._last_success_s: float | None = None
        self._published_link: str | None = None
        self._backoff = Backoff(
            _WaitRetryAfter(
                tenacity.wait_exponential_jitter(multiplier=cfg.backoff_initial_s, max=cfg.backoff_max_s, jitter=cfg.backoff_jitter_s),
                cfg.retry_after_max_s,
            )
        )

    # ---- one step (also driven directly by simulated-time tests) ---------------------------
    def pump(self) -> str:
        """Try the oldest unfinished row once if due: 'delivered', 'parked', 'retry', 'waiting' or 'idle'."""
        now = self._clock.monotonic()
        if not self._backoff.due(now):
            return "waiting"
        row = self._next_row()
        if row is None:
            return "idle"
        row_id, batch_id, body = row
        self._attempts += 1
        out = self.transport.send(batch_id, body)
        if out.kind == "delivered":
            outcome = self._delivered(row_id, batch_id)
            self._run_commands(out.commands)
            return outcome
        if out.kind == "retry":
            return self._transient(TransientError(out.reason, retry_after_s=out.retry_after_s), batch_id, detail=out.detail)
        return self._parked(row_id, batch_id, out)

    # ---- cloud commands ----------------------------------------------------------------------
    def poll_commands(self) -> int:
        """Fetch the receiver's queued commands once and run them; returns how many were handled."""
        if self._commands is None:
            return 0
        self._next_command_poll_s = self._clock.monotonic() + self._commands.cfg.poll_s
        try:
            envelopes = self.transport.fetch_commands()
        except TransientError as exc:
            self._counters.count("uplink_command_poll_failures")
            if not self._poll_failing:
                self._poll_failing = True
                self.log.warning("uplink_command_poll_failed", reason=exc.reason, retry_in_s=self._commands.cfg.poll_s)
            return 0
        if self._poll_failing:
            self._poll_failing = False
            self.log.info("uplink_command_poll_recovered")
        return self._run_commands(envelopes)

    def _run_commands(self, envelopes: Sequence[object]) -> int:
        if self._commands is None or not envelopes:
            return 0
        n = 0
        for env in envelopes[: self._commands.cfg.max_per_poll]:
            self.beat()  # each may wait for its commit
            n += self._commands.handle(env) is not None
        return n

    def _delivered(self, row_id: int, batch_id: str) -> str:
        self._store.mark_delivered(row_id, attempts=self._attempts)
        if self._backoff.failures:
            self.log.info("uplink_recovered", failed_attempts=self._backoff.failures, batch_id=batch_id)
        self._finish_row(row_id)
        self._last_success_s = self._clock.monotonic()
        self._counters.count("uplink_delivered")
        self.succeeded()
        return "delivered"

    def _parked(self, row_id: int, batch_id: str, out: Outcome) -> str:
        key, text = self.transport.status_key, out.detail[:200]
        error = f"{key.removesuffix('_status').removesuffix('_reason_code')}_{out.status}: {text}"
        self._store.mark_parked(row_id, attempts=self._attempts, error=error)
        self._counters.count("uplink_parked")
        self._events.record("uplink_parked", batch_id=batch_id, **{key: out.status}, message=text)
        if out.kind == "conflict":  # the receiver has other content under this id: keep ours (parked) for an operator
            self._counters.count("uplink_conflicts")
            self.log.error("uplink_batch_conflict", batch_id=batch_id, message=text, kept="outbox row parked")
        else:
            self.log.warning("uplink_batch_parked", batch_id=batch_id, **{key: out.status}, message=text)
        self._finish_row(row_id)
        return "parked"

    def _finish_row(self, row_id: int) -> None:
        self._after_id = row_id
        self._attempts = 0
        self._backoff.reset()

    def _transient(self, exc: TransientError, batch_id: str, *, detail: str) -> str:
        delay_s = self._backoff.failed(self._clock.monotonic(), exc)
        self._counters.count("uplink_failures")
        self._health.error(DEVICE, reason=exc.reason, at_s=self._clock.monotonic())
        if self._backoff.failures == 1:
            self.log.warning("uplink_post_failed", reason=exc.reason, batch_id=batch_id, retry_in_s=round(delay_s, 1), detail=detail[:300])
        else:
            self.log.debug(
                "uplink_post_failed", reason=exc.reason, batch_id=batch_id, retry_in_s=round(delay_s, 1), failures=self._backoff.failures
            )
        return "retry"

    def _next_row(self) -> tuple[int, str, bytes] | None:
        if self._conn is None:
            self._conn = open_readonly(self._store.path)
        rows = self._conn.execute(
            "SELECT id, batch_id, body FROM outbox WHERE status = 'pending' AND id > ? ORDER BY id LIMIT 1", (self._after_id,)
        ).fetchall()
        return (int(rows[0][0]), str(rows[0][1]), bytes(rows[0][2])) if rows else None

    @property
    def next_try_in_s(self) -> float:
        """Seconds until the current row may be retried (0 when due)."""
        return max(0.0, self._backoff.next_at_s - self._clock.monotonic())

    # ---- the thread ------------------------------------------------------------------------
    def iterate(self) -> None:
        now = self._clock.monotonic()
        woken = self._store.outbox_changed.is_set()
        if woken or now >= self._next_poll_s:
            self._store.outbox_changed.clear()
            for _ in range(_ROWS_PER_ITERATION):
                self.beat()  # alive up to one POST ago
                outcome = self.pump()
                if outcome not in ("delivered", "parked") or self._stop_event.is_set():
                    break
            if outcome == "idle":
                self._next_poll_s = self._clock.monotonic() + self.cfg.idle_poll_s
            elif outcome in ("delivered", "parked"):
                self._next_poll_s = float("-inf")  # more to send: go on at once
            else:
                self._next_poll_s = self._backoff.next_at_s
            if outcome == "idle" and not self._backoff.failures:
                self.succeeded()  # nothing to send and the link is not failing
        if self._commands is not None and self._clock.monotonic() >= self._next_command_poll_s and not self._stop_event.is_set():
            self.poll_commands()
        self.transport.service()
        self._publish_status()

    def _publish_status(self) -> None:
        failures = self._backoff.failures
        link = "down" if failures else ("up" if self._last_success_s is not None else "unknown")
        if link != self._published_link:
            self._health.set_info(DEVICE, link=link)
            self._published_link = link

    def wait_next(self) -> bool:
        due_s = min(self._next_poll_s, self._next_command_poll_s if self._commands is not None else math.inf)
        delay_s = min(_MAX_WAIT_CHUNK_S, max(0.0, due_s - self._clock.monotonic()))
        if delay_s > 0:
            self._store.outbox_changed.wait(delay_s)
        return self._stop_event.is_set()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop_event.set()
        self._store.outbox_changed.set()
        super().stop(timeout_s)

    def on_stop(self) -> None:
        self.transport.close()
        if self._commands is not None:
            self._commands.close()
        if self._conn is not None:
            self._conn.close()
