"""The store: the one SQLite writer (DESIGN.md §6).

`sample_once()` (sampler thread, 1 Hz) turns a context snapshot into a sample and queues it;
the queue is bounded and drops its oldest sample when full (counted: `store_queue_drops`).
`flush()` (writer thread, every `flush_interval_s`) writes in ONE transaction: the queued
samples, the context's new events, the sender's delivery marks, the minutes that have closed,
the 5-minute windows that have closed (as outbox rows) and the outbox bound. Minutes and
windows are computed from committed samples, so a crash loses at most the queued samples.
`retention_step()` deletes a few old rows per table in its own short transaction.

Audit rows are not left to the flush window: `make_durable(event)` (the context's audit sink, called
by the request's thread) wakes the writer for a flush at once and waits, bounded by
`store.audit_commit_timeout_s`, for the commit that contains the event; it raises AuditNotDurable
when that commit fails, the store is closed or the time is up, and the request is then refused
(ems/context/requests.py). The writer thread stays the only writer.

Cloud commands (docs/uplink.md) go the same way: `record_command` (the sender's thread) waits for
the commit that holds the command's row, so its nonce is spent before it runs, across restarts;
`set_command_result` is written with the next flush; each batch the writer builds carries the
results not yet reported (`acks`).
"""

from __future__ import annotations

import gzip
import json
import secrets
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from config.store import StoreConfig
from ems.clock import Clock
from ems.context import AuditNotDurable, Counters, EventLog, Health
from ems.model import EventRecord, Snapshot
from ems.prices import PricePoint
from interfaces.store import commands as cloud
from interfaces.store.aggregate import (
    FIELDS,
    WINDOW_S,
    MinuteAgg,
    Sample,
    batch_payload,
    minute_aggregate,
    sample_from_snapshot,
    window_start,
)
from interfaces.store.schema import open_writer

__all__ = ["DEVICE", "CommandNotRecorded", "FlushResult", "SampleQueue", "Store"]

DEVICE = "store"

log = structlog.get_logger("interfaces.store")

_MAX_MINUTES_PER_FLUSH = 1440  # catching up after a long stop happens over several flushes
_MAX_WINDOWS_PER_FLUSH = 288
_DAY_S = 86400.0


def _stats_json(agg: MinuteAgg) -> str:
    """Minute stats as compact JSON; values rounded to 4 decimals (well below any meter's resolution)."""
    return json.dumps({f: [round(v, 4) for v in st[:4]] + [st[4]] for f, st in agg.stats.items()}, separators=(",", ":"))


def _installation_id(conn: sqlite3.Connection) -> str:
    """This database's identity (random, made once, kept in `meta`): in every batch id, so a replaced
    database never re-creates another's ids. A copy or a restored backup keeps it (its content digests differ)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('installation_id', ?)", (secrets.randbits(62),))
        value = int(conn.execute("SELECT value FROM meta WHERE key = 'installation_id'").fetchone()[0])
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return f"{value:016x}"


class CommandNotRecorded(Exception):
    """The command's row could not be committed in time: it must not run (it comes again)."""


class SampleQueue:
    """Bounded FIFO shared by the sampler and the writer; a put on a full queue drops the oldest."""

    def __init__(self, maxlen: int) -> None:
        self.maxlen = maxlen
        self._items: deque[Sample] = deque()
        self._lock = threading.Lock()

    def put(self, item: Sample) -> bool:
        """Queue `item`; True when the oldest sample had to be dropped for it."""
        with self._lock:
            dropped = len(self._items) >= self.maxlen
            if dropped:
                self._items.popleft()
            self._items.append(item)
        return dropped

    def drain(self) -> list[Sample]:
        with self._lock:
            items = list(self._items)
            self._items.clear()
        return items

    def requeue(self, items: Sequence[Sample]) -> int:
        """Put back items a failed flush took (in front, newest kept); returns how many were dropped."""
        with self._lock:
            merged = [*items, *self._items]
            keep = merged[-self.maxlen :]
            self._items = deque(keep)
        return len(merged) - len(keep)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


@dataclass(frozen=True, slots=True)
class _Mark:
    row_id: int
    status: str  # delivered | parked
    attempts: int
    at_ms: int
    error: str | None


@dataclass(frozen=True, slots=True)
class _PriceBatch:
    points: tuple[PricePoint, ...]
    source: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class FlushResult:
    samples: int = 0
    events: int = 0
    marks: int = 0
    minutes: int = 0
    batches: tuple[tuple[int, str], ...] = ()  # (outbox id, batch id) added
    outbox_dropped: int = 0
    outbox_depth: int = 0
    prices: int = 0  # price points written to the cache
    acks: int = 0  # cloud command results put into the batches added


class Store:
    """Owns the writing connection. `sample_once` may run on another thread than `flush`."""

    def __init__(
        self,
        *,
        cfg: StoreConfig,
        snapshot: Callable[[], Snapshot],
        events: EventLog,
        counters: Counters,
        health: Health,
        clock: Clock,
        site_id: str,
        outbox_enabled: bool,
    ) -> None:
        self.cfg = cfg
        self.path = cfg.path
        self._snapshot = snapshot
        self._events = events
        self._counters = counters
        self._health = health
        self._clock = clock
        self._site_id = site_id
        self.site_id = site_id  # the sender's (uplink topic, command URL)
        self._outbox_enabled = outbox_enabled
        self._conn = open_writer(cfg.path)
        self._queue = SampleQueue(cfg.queue_max)
        self._marks: deque[_Mark] = deque()
        self._marks_lock = threading.Lock()
        self._prices: deque[_PriceBatch] = deque(maxlen=16)  # the planner's price batches (a few per day)
        self._commands: deque[cloud.CommandRecord] = deque()  # cloud command rows to insert (their thread waits)
        self._results: deque[cloud.CommandResult] = deque()
        self._commands_queued = 0  # command rows handed in so far
        self._commands_durable = 0  # ... of which committed
        self._event_seq = 0
        self._flush_lock = threading.Lock()
        self.outbox_changed = threading.Event()  # set after a commit that added outbox rows (wakes the sender)
        self.flush_wanted = threading.Event()  # wakes the writer for a flush now (an audit row waits for it)
        self._durable = threading.Condition()
        self._durable_seq = 0  # every event up to this seq is committed
        self._failed_flushes = 0
        self._closed = False
        self.installation_id = _installation_id(self._conn)
        interrupted = cloud.interrupt_running(self._conn)  # autocommit: one statement
        if interrupted:
            log.warning("cloud_commands_interrupted", commands=interrupted, hint="they ran when the EMS stopped; acked as interrupted")
        meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        self._minute_cursor: int | None = meta.get("minute_cursor")
        self._window_cursor: int | None = meta.get("window_cursor")
        cols = ", ".join(FIELDS)
        marks = ", ".join("?" * (len(FIELDS) + 3))
        self._insert_sample = f"INSERT OR REPLACE INTO samples (ts_ms, state, mode, {cols}) VALUES ({marks})"
        self._select_minute = f"SELECT state, {cols} FROM samples WHERE ts_ms >= ? AND ts_ms < ? ORDER BY ts_ms"
        log.info(
            "store_opened",
            path=str(cfg.path),
            installation_id=self.installation_id,
            outbox=outbox_enabled,
            minute_cursor=self._minute_cursor,
            window_cursor=self._window_cursor,
        )

    # ---- producers (any thread) ------------------------------------------------------------
    def sample_once(self) -> Sample:
        """Snapshot the context into one queued sample (never blocks on the database)."""
        snap = self._snapshot()
        sample = sample_from_snapshot(snap, wall_ts=self._clock.wall().timestamp(), stale_after_s=self.cfg.stale_after_s)
        self.put(sample)
        return sample

    def put(self, sample: Sample) -> None:
        if self._queue.put(sample):
            self._count_drops(1)

    def _count_drops(self, n: int) -> None:
        if n <= 0:
            return
        total = self._counters.count("store_queue_drops", n)  # thread-safe: the sampler and the writer both drop
        if total == n or total % 1000 < n:  # the first drop, then one line per 1000
            log.warning("store_queue_overflowed", dropped_total=total, queue_max=self._queue.maxlen)

    def mark_delivered(self, row_id: int, *, attempts: int) -> None:
        self._add_mark(_Mark(row_id, "delivered", attempts, self._now_ms(), None))

    def mark_parked(self, row_id: int, *, attempts: int, error: str) -> None:
        self._add_mark(_Mark(row_id, "parked", attempts, self._now_ms(), error[:500]))

    def put_prices(self, points: Sequence[PricePoint], *, source: str) -> None:
        """Cache spot price points (the planner's); written with the next flush, replacing what their span overlaps."""
        if points:
            with self._marks_lock:
                self._prices.append(_PriceBatch(tuple(points), source[:64], self._now_ms()))

    def make_durable(self, event: EventRecord) -> None:
        """The audit sink: return once `event` is committed (accepted requests only; a refusal is
        written with the next flush). Raises AuditNotDurable when that cannot be confirmed in time."""
        if event.data.get("result") != "accepted":
            return
        timeout_s = self.cfg.audit_commit_timeout_s
        with self._durable:
            failed0 = self._failed_flushes
            self.flush_wanted.set()
            self._durable.wait_for(
                lambda: self._durable_seq >= event.seq or self._failed_flushes != failed0 or self._closed, timeout=timeout_s
            )
            if self._durable_seq >= event.seq:
                return
            why = (
                "the store is closed"
                if self._closed
                else "its commit failed"
                if self._failed_flushes != failed0
                else f"no commit within {timeout_s:g} s"
            )
        self._counters.count("audit_not_durable")
        log.error("audit_not_durable", event_seq=event.seq, what=event.data.get("what"), reason=why)
        raise AuditNotDurable(why)

    def record_command(self, record: cloud.CommandRecord) -> None:
        """Write a cloud command's row and return once it is committed (its nonce is then spent);
        raises CommandNotRecorded when that cannot be confirmed within `audit_commit_timeout_s`."""
        timeout_s = self.cfg.audit_commit_timeout_s
        with self._durable:
            with self._marks_lock:
                self._commands.append(record)
                self._commands_queued += 1
                mine = self._commands_queued
            failed0 = self._failed_flushes
            self.flush_wanted.set()
            self._durable.wait_for(
                lambda: self._commands_durable >= mine or self._failed_flushes != failed0 or self._closed, timeout=timeout_s
            )
            if self._commands_durable >= mine:
                return
            why = "the store is closed" if self._closed else "its commit failed" if self._failed_flushes != failed0 else "no commit in time"
        raise CommandNotRecorded(why)

    def set_command_result(self, result: cloud.CommandResult) -> None:
        """The result of a command recorded without one; written with the next flush, acked in the next batch."""
        with self._marks_lock:
            self._results.append(result)

    def _add_mark(self, mark: _Mark) -> None:
        with self._marks_lock:
            self._marks.append(mark)

    def _now_ms(self) -> int:
        return round(self._clock.wall().timestamp() * 1000)

    # ---- the writer ------------------------------------------------------------------------
    def flush(self) -> FlushResult:
        """One transaction: samples, events, marks, closed minutes/windows, outbox bound, cursors."""
        with self._flush_lock:
            return self._flush()

    def _flush(self) -> FlushResult:
        now_s = self._clock.wall().timestamp()
        samples = self._queue.drain()
        event_seq0, minute0, window0 = self._event_seq, self._minute_cursor, self._window_cursor
        events = self._take_events()
        with self._marks_lock:
            marks = list(self._marks)
            self._marks.clear()
            prices = list(self._prices)
            self._prices.clear()
            commands, results = list(self._commands), list(self._results)
            self._commands.clear()
            self._results.clear()
            commands_taken = self._commands_queued
        c = self._conn
        try:
            c.execute("BEGIN IMMEDIATE")  # inside the try: a busy database must also restore the queue
            if samples:
                c.executemany(self._insert_sample, [(s.ts_ms, s.state, s.mode, *(s.values.get(f) for f in FIELDS)) for s in samples])
            if events:
                c.executemany(
                    "INSERT INTO events (ts_ms, kind, seq, data) VALUES (?, ?, ?, ?)",
                    [
                        (round(e.wall_ts * 1000), e.kind, e.seq, json.dumps(dict(e.data), default=str, separators=(",", ":")))
                        for e in events
                    ],
                )
            for m in marks:
                c.execute(
                    "UPDATE outbox SET status = ?, attempts = attempts + ?, done_ms = ?, last_error = ? WHERE id = ? AND status = 'pending'",
                    (m.status, m.attempts, m.at_ms, m.error, m.row_id),
                )
            n_prices = self._write_prices(prices)
            if commands:
                cloud.insert_records(c, commands)
            if results:
                cloud.apply_results(c, results)
            n_minutes, done_until = self._close_minutes(now_s - self.cfg.finalize_lag_s)
            batches, n_acks = self._close_windows(done_until)
            dropped = self._bound_outbox()
            # Only when a cursor moved (once a minute): one page less per 5-s flush, less SD wear.
            moved = [
                (k, v)
                for k, v, v0 in (("minute_cursor", self._minute_cursor, minute0), ("window_cursor", self._window_cursor, window0))
                if v is not None and v != v0
            ]
            if moved:
                c.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", moved)
            depth = int(c.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()[0])
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            self._event_seq, self._minute_cursor, self._window_cursor = event_seq0, minute0, window0
            with self._durable:
                self._failed_flushes += 1
                self._durable.notify_all()
            self._count_drops(self._queue.requeue(samples))
            with self._marks_lock:
                self._marks.extendleft(reversed(marks))
                self._prices.extendleft(reversed(prices))
                self._commands.extendleft(reversed(commands))
                self._results.extendleft(reversed(results))
            raise
        with self._durable:
            self._durable_seq = self._event_seq
            self._commands_durable = commands_taken
            self._durable.notify_all()
        if dropped:
            self._counters.count("outbox_dropped", dropped)
            self._events.record("uplink_outbox_dropped", rows=dropped, outbox_max_rows=self.cfg.outbox_max_rows)
            log.warning("outbox_overflowed", dropped_rows=dropped, outbox_max_rows=self.cfg.outbox_max_rows)
        if self._outbox_enabled:
            self._health.set_info(DEVICE, path=str(self.path), outbox_depth=depth)
        if batches or marks:
            self.outbox_changed.set()
        return FlushResult(len(samples), len(events), len(marks), n_minutes, tuple(batches), dropped, depth, n_prices, n_acks)

    def _write_prices(self, batches: Sequence[_PriceBatch]) -> int:
        c = self._conn
        n = 0
        for b in batches:
            lo = min(p.start_unix_s for p in b.points)
            hi = max(p.end_unix_s for p in b.points)
            c.execute("DELETE FROM prices WHERE start_ts < ? AND end_ts > ?", (hi, lo))
            c.executemany(
                "INSERT OR REPLACE INTO prices (start_ts, end_ts, price_per_kwh, source, stored_ms) VALUES (?, ?, ?, ?, ?)",
                [(p.start_unix_s, p.end_unix_s, p.price_eur_per_kwh, b.source, b.at_ms) for p in b.points],
            )
            n += len(b.points)
        return n

    def _take_events(self) -> list[EventRecord]:
        out: list[EventRecord] = []
        while True:
            chunk = self._events.since(self._event_seq, limit=1000)
            if not chunk:
                return out
            lost = chunk[0].seq - self._event_seq - 1
            if lost > 0:
                self._counters.count("store_events_lost", lost)
                log.warning("store_events_lost", events=lost, after_seq=self._event_seq)
            out.extend(chunk)
            self._event_seq = chunk[-1].seq

    def _close_minutes(self, limit_s: float) -> tuple[int, float]:
        """Aggregate every minute with samples that ended before `limit_s`; returns (closed, done_until_s)."""
        c = self._conn
        closed = 0
        done_until = limit_s
        for _ in range(_MAX_MINUTES_PER_FLUSH):
            start_ms = (self._minute_cursor + 60) * 1000 if self._minute_cursor is not None else 0
            row = c.execute("SELECT ts_ms FROM samples WHERE ts_ms >= ? ORDER BY ts_ms LIMIT 1", (start_ms,)).fetchone()
            if row is None:
                break
            m = int(row[0] // 60000) * 60
            if m + 60 > limit_s:
                done_until = m
                break
            rows = c.execute(self._select_minute, (m * 1000, (m + 60) * 1000)).fetchall()
            agg = minute_aggregate(m, ((r[0], dict(zip(FIELDS, r[1:], strict=True))) for r in rows))
            c.execute(
                "INSERT OR REPLACE INTO minutes (ts, n, stats, states) VALUES (?, ?, ?, ?)",
                (m, agg.n, _stats_json(agg), json.dumps(agg.states, separators=(",", ":"))),
            )
            self._minute_cursor = m
            closed += 1
        else:
            assert self._minute_cursor is not None
            done_until = self._minute_cursor + 60
        return closed, done_until

    def _close_windows(self, done_until: float) -> tuple[list[tuple[int, str]], int]:
        """Every 5-minute window whose minutes are all closed becomes one outbox row, carrying the
        cloud command results not reported yet. Returns (outbox id, batch id) added and the acks."""
        c = self._conn
        added: list[tuple[int, str]] = []
        n_acks = 0
        for _ in range(_MAX_WINDOWS_PER_FLUSH):
            start = self._window_cursor + WINDOW_S if self._window_cursor is not None else 0
            row = c.execute("SELECT ts FROM minutes WHERE ts >= ? ORDER BY ts LIMIT 1", (start,)).fetchone()
            if row is None:
                break
            w = window_start(row[0])
            if w + WINDOW_S > done_until:
                break
            if self._outbox_enabled:
                mins = [
                    MinuteAgg(ts, n, {f: tuple(v) for f, v in json.loads(stats).items()}, json.loads(states))
                    for ts, n, stats, states in c.execute(
                        "SELECT ts, n, stats, states FROM minutes WHERE ts >= ? AND ts < ? ORDER BY ts", (w, w + WINDOW_S)
                    )
                ]
                kinds = dict(
                    c.execute(
                        "SELECT kind, count(*) FROM events WHERE ts_ms >= ? AND ts_ms < ? GROUP BY kind", (w * 1000, (w + WINDOW_S) * 1000)
                    ).fetchall()
                )
                acks = cloud.pending_acks(c)
                payload = batch_payload(
                    site_id=self._site_id,
                    installation_id=self.installation_id,
                    start_ts=w,
                    minutes=mins,
                    events_by_kind=kinds,
                    acks=[a for _, a in acks],
                )
                body = gzip.compress(json.dumps(payload, separators=(",", ":")).encode(), mtime=0)
                cur = c.execute(
                    "INSERT OR IGNORE INTO outbox (batch_id, window_start, created_ms, body) VALUES (?, ?, ?, ?)",
                    (payload["batch_id"], w, self._now_ms(), body),
                )
                if cur.rowcount == 1 and cur.lastrowid is not None:
                    added.append((cur.lastrowid, str(payload["batch_id"])))
                    cloud.attach_acks(c, [i for i, _ in acks], str(payload["batch_id"]))
                    n_acks += len(acks)
            self._window_cursor = w
        return added, n_acks

    def _bound_outbox(self) -> int:
        c = self._conn
        depth = int(c.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()[0])
        excess = depth - self.cfg.outbox_max_rows
        if excess <= 0:
            return 0
        c.execute("DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE status = 'pending' ORDER BY id LIMIT ?)", (excess,))
        return excess

    # ---- retention -------------------------------------------------------------------------
    def retention_step(self) -> dict[str, int]:
        """Delete at most `step_rows` rows per table past their age, then (if still over the size
        bound) the oldest samples, delivered outbox rows, minutes, events. One short transaction."""
        r = self.cfg.retention
        now = self._clock.wall().timestamp()
        step = r.step_rows
        c = self._conn
        deleted: dict[str, int] = {}
        with self._flush_lock:
            c.execute("BEGIN IMMEDIATE")
            try:
                by_age = (
                    (
                        "samples",
                        "DELETE FROM samples WHERE ts_ms IN (SELECT ts_ms FROM samples WHERE ts_ms < ? ORDER BY ts_ms LIMIT ?)",
                        (now - r.samples_days * _DAY_S) * 1000,
                    ),
                    (
                        "minutes",
                        "DELETE FROM minutes WHERE ts IN (SELECT ts FROM minutes WHERE ts < ? ORDER BY ts LIMIT ?)",
                        now - r.minutes_days * _DAY_S,
                    ),
                    (
                        "events",
                        "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE ts_ms < ? ORDER BY id LIMIT ?)",
                        (now - r.events_days * _DAY_S) * 1000,
                    ),
                    (
                        "outbox",
                        "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE status != 'pending' AND done_ms < ? ORDER BY id LIMIT ?)",
                        (now - r.delivered_days * _DAY_S) * 1000,
                    ),
                    (
                        "prices",
                        "DELETE FROM prices WHERE start_ts IN (SELECT start_ts FROM prices WHERE end_ts < ? ORDER BY start_ts LIMIT ?)",
                        now - r.events_days * _DAY_S,
                    ),
                    (  # a nonce is kept past any command's lifetime; a row whose ack has no batch yet is kept
                        "cloud_commands",
                        "DELETE FROM cloud_commands WHERE id IN (SELECT id FROM cloud_commands WHERE received_ms < ?"
                        " AND batch_id IS NOT NULL ORDER BY id LIMIT ?)",
                        (now - max(r.events_days * _DAY_S, cloud.NONCE_KEEP_MIN_S)) * 1000,
                    ),
                )
                for table, sql, cut in by_age:
                    n = c.execute(sql, (cut, step)).rowcount
                    if n:
                        deleted[table] = n
                if self._used_bytes() > r.max_db_mb * 1e6:
                    # Only samples already aggregated into minutes; never undelivered outbox rows.
                    cap_ms = (self._minute_cursor * 1000) if self._minute_cursor is not None else 0
                    by_size = (
                        (
                            "samples",
                            "DELETE FROM samples WHERE ts_ms IN (SELECT ts_ms FROM samples WHERE ts_ms < ? ORDER BY ts_ms LIMIT ?)",
                            cap_ms,
                        ),
                        (
                            "outbox",
                            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE status != 'pending' AND id > ? ORDER BY id LIMIT ?)",
                            -1,
                        ),
                        (
                            "minutes",
                            "DELETE FROM minutes WHERE ts IN (SELECT ts FROM minutes WHERE ts < ? ORDER BY ts LIMIT ?)",
                            self._window_cursor or 0,
                        ),
                        ("events", "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE id > ? ORDER BY id LIMIT ?)", -1),
                    )
                    for table, sql, arg in by_size:
                        n = c.execute(sql, (arg, step)).rowcount
                        if n:
                            deleted[f"{table}_by_size"] = n
                            break
                c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise
        if deleted:
            log.debug("store_retention_applied", **{f"{k}_rows": v for k, v in deleted.items()})
        return deleted

    def _used_bytes(self) -> int:
        c = self._conn
        page = int(c.execute("PRAGMA page_size").fetchone()[0])
        pages = int(c.execute("PRAGMA page_count").fetchone()[0])
        free = int(c.execute("PRAGMA freelist_count").fetchone()[0])
        return (pages - free) * page

    def close(self) -> None:
        with self._durable:
            self._closed = True
            self._durable.notify_all()
        with self._flush_lock:
            try:
                self._conn.execute("PRAGMA optimize")
            except sqlite3.Error as exc:
                log.warning("store_optimize_failed", error=str(exc))
            self._conn.close()
        log.info("store_closed", path=str(self.path))
