"""The uplink sender thread (DESIGN.md §6): outbox rows, oldest first, POSTed over HTTPS.

One row at a time, in id order: gzip JSON (stored ready in the outbox), TLS verified (system CAs or
`ca_file`), `Authorization: Bearer`, an HMAC signature over timestamp + body. A 2xx marks the row
delivered; a network error, 5xx, 408 or 429 retries the SAME row after a tenacity backoff
(exponential with jitter, or the receiver's Retry-After); any other status parks the row (an event
is recorded) and the sender goes on. 409 is a conflict (the receiver holds other content under
this batch id): the row is parked too, so it is kept, never marked delivered, and logged as such. Delivery marks go to the store's writer thread, which is the
only writer; until they are committed the sender remembers the last id it finished, and after a
crash a re-sent batch is dropped by the receiver by its batch id.

The thread never blocks for long: backoff is a deadline on the injected clock, checked at least
once a second, so heartbeats continue and tests can drive `pump()` in simulated time.
"""

from __future__ import annotations

import email.utils
import os
import sqlite3
import ssl
import threading
from datetime import datetime
from pathlib import Path
from typing import Protocol

import requests
import tenacity
from tenacity.wait import wait_base

from config.uplink import UplinkConfig
from ems.clock import Clock
from ems.context import Counters, EventLog, Health
from interfaces.backoff import Backoff
from interfaces.store.schema import open_readonly
from interfaces.uplink.signing import BATCH_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from interfaces.worker import Worker

__all__ = ["DEVICE", "DeliveryLog", "Sender", "TransientError", "parse_retry_after", "system_cas"]

DEVICE = "uplink"

_ROWS_PER_ITERATION = 50
_MAX_WAIT_CHUNK_S = 1.0  # the thread looks at its deadline (and heartbeats) at least this often


class DeliveryLog(Protocol):
    """What the sender needs from the store: where the outbox is, and how to record outcomes."""

    path: Path
    outbox_changed: threading.Event

    def mark_delivered(self, row_id: int, *, attempts: int) -> None: ...

    def mark_parked(self, row_id: int, *, attempts: int, error: str) -> None: ...


class TransientError(Exception):
    """A failure worth retrying: network/TLS error, 5xx, 408, 429."""

    def __init__(self, reason: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


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


def system_cas() -> str | bool:
    """The operating system's CA bundle (what OpenSSL uses), not requests' bundled certifi list;
    True (certifi) only when the system has none."""
    paths = ssl.get_default_verify_paths()
    for f in (paths.cafile, paths.openssl_cafile):
        if f and os.path.isfile(f):
            return f
    if paths.capath and os.path.isdir(paths.capath):
        return paths.capath
    return True


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Retry-After as delay-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    v = value.strip()
    if v.isdigit():
        return float(v)
    try:
        when = email.utils.parsedate_to_datetime(v)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - now).total_seconds())


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
    ) -> None:
        super().__init__(name="uplink", health=health, clock=clock, period_s=_MAX_WAIT_CHUNK_S, devices=(DEVICE,))
        health.register_device(DEVICE, kind="https", where=str(cfg.url), thread=self.name)
        self._events = events
        self._counters = counters
        if cfg.token is None or cfg.token.value is None or cfg.hmac_key is None or cfg.hmac_key.value is None:
            raise ValueError("uplink.token and uplink.hmac_key must be resolved secrets")
        self.cfg = cfg
        self._store = store
        self._token = cfg.token.value
        self._key = cfg.hmac_key.value.encode()
        self._verify: str | bool = str(cfg.ca_file) if cfg.ca_file is not None else system_cas()
        self._session = session or requests.Session()
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
        try:
            status, text, retry_after = self._post(batch_id, body)
        except requests.RequestException as exc:
            return self._transient(TransientError(type(exc).__name__), batch_id, detail=str(exc))
        if 200 <= status < 300:
            return self._delivered(row_id, batch_id)
        if status in (408, 429) or status >= 500:
            return self._transient(TransientError(f"http_{status}", retry_after_s=retry_after), batch_id, detail=text[:200])
        return self._parked(row_id, batch_id, status, text)

    def _post(self, batch_id: str, body: bytes) -> tuple[int, str, float | None]:
        ts = str(int(self._clock.wall().timestamp()))
        headers = {
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "Authorization": f"Bearer {self._token}",
            TIMESTAMP_HEADER: ts,
            SIGNATURE_HEADER: sign(self._key, ts, body),
            BATCH_HEADER: batch_id,
            "User-Agent": "ems-uplink/1",
        }
        resp = self._session.post(
            self.cfg.url, data=body, headers=headers, timeout=self.cfg.timeout_s, verify=self._verify, allow_redirects=False
        )
        with resp:
            return resp.status_code, resp.text, parse_retry_after(resp.headers.get("Retry-After"), now=self._clock.wall())

    def _delivered(self, row_id: int, batch_id: str) -> str:
        self._store.mark_delivered(row_id, attempts=self._attempts)
        if self._backoff.failures:
            self.log.info("uplink_recovered", failed_attempts=self._backoff.failures, batch_id=batch_id)
        self._finish_row(row_id)
        self._last_success_s = self._clock.monotonic()
        self._counters.count("uplink_delivered")
        self.succeeded()
        return "delivered"

    def _parked(self, row_id: int, batch_id: str, status: int, text: str) -> str:
        error = f"http_{status}: {text[:200]}"
        self._store.mark_parked(row_id, attempts=self._attempts, error=error)
        self._counters.count("uplink_parked")
        self._events.record("uplink_parked", batch_id=batch_id, http_status=status, message=text[:200])
        if status == 409:  # the receiver has other content under this id: keep ours (parked) for an operator
            self._counters.count("uplink_conflicts")
            self.log.error("uplink_batch_conflict", batch_id=batch_id, message=text[:200], kept="outbox row parked")
        else:
            self.log.warning("uplink_batch_parked", batch_id=batch_id, http_status=status, message=text[:200])
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
        self._publish_status()

    def _publish_status(self) -> None:
        failures = self._backoff.failures
        link = "down" if failures else ("up" if self._last_success_s is not None else "unknown")
        if link != self._published_link:
            self._health.set_info(DEVICE, link=link)
            self._published_link = link

    def wait_next(self) -> bool:
        delay_s = min(_MAX_WAIT_CHUNK_S, max(0.0, self._next_poll_s - self._clock.monotonic()))
        if delay_s > 0:
            self._store.outbox_changed.wait(delay_s)
        return self._stop_event.is_set()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop_event.set()
        self._store.outbox_changed.set()
        super().stop(timeout_s)

    def on_stop(self) -> None:
        self._session.close()
        if self._conn is not None:
            self._conn.close()
