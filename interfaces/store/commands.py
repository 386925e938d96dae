"""The cloud command log in SQLite (docs/uplink.md): each command the receiver sent, its nonce and
its result, and which batch carries the result back (the ack).

A row is written before its command runs (so a nonce is spent across restarts even if the process
dies while it runs), its result when it has one; the writer attaches the results that have no batch
yet to the next 5-minute batch it builds (`acks`) in the same transaction. Functions here run on the
writer's connection inside its transaction, or (`command_seen`, `nonce_seen`) on a reader's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ACK_LIMIT",
    "NONCE_KEEP_MIN_S",
    "CommandRecord",
    "CommandResult",
    "apply_results",
    "attach_acks",
    "command_seen",
    "insert_records",
    "interrupt_running",
    "nonce_seen",
    "pending_acks",
]

ACK_LIMIT = 200  # acks per batch; more wait for the next one
NONCE_KEEP_MIN_S = 8 * 86400.0  # retention keeps a nonce at least this long (longer than uplink.commands.max_age_s can be)


@dataclass(frozen=True, slots=True)
class CommandRecord:
    command_id: str
    nonce: str | None  # None: not trusted (bad signature) or a replay (the nonce belongs to an earlier row)
    issuer: str | None
    kind: str | None
    issued_ts: int | None
    expires_ts: int | None
    received_ms: int
    result: str | None  # None: it runs now (set by a CommandResult)
    message: str = ""
    event_seq: int | None = None


@dataclass(frozen=True, slots=True)
class CommandResult:
    nonce: str
    result: str
    message: str
    event_seq: int | None


def insert_records(conn: sqlite3.Connection, records: Sequence[CommandRecord]) -> None:
    conn.executemany(
        "INSERT OR IGNORE INTO cloud_commands (command_id, nonce, issuer, kind, issued_ts, expires_ts, received_ms, result, message,"
        " event_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (r.command_id, r.nonce, r.issuer, r.kind, r.issued_ts, r.expires_ts, r.received_ms, r.result, r.message[:300], r.event_seq)
            for r in records
        ],
    )


def apply_results(conn: sqlite3.Connection, results: Sequence[CommandResult]) -> None:
    conn.executemany(
        "UPDATE cloud_commands SET result = ?, message = ?, event_seq = ? WHERE nonce = ? AND result IS NULL",
        [(r.result, r.message[:300], r.event_seq, r.nonce) for r in results],
    )


def interrupt_running(conn: sqlite3.Connection) -> int:
    """At open: a command still without a result ran when the process stopped (its audit event says
    whether it was applied). Its ack says so; it is never run again."""
    cur = conn.execute(
        "UPDATE cloud_commands SET result = 'interrupted', message = 'the EMS stopped while it ran; see the audit log' WHERE result IS NULL"
    )
    return cur.rowcount


def pending_acks(conn: sqlite3.Connection, limit: int = ACK_LIMIT) -> list[tuple[int, dict[str, object]]]:
    """Results not in a batch yet, oldest first, as (row id, ack)."""
    rows = conn.execute(
        "SELECT id, command_id, result, message, event_seq, received_ms FROM cloud_commands"
        " WHERE batch_id IS NULL AND result IS NOT NULL ORDER BY id LIMIT ?",
        (limit,),
    ).fetchall()
    return [
        (int(i), {"command_id": cid, "result": res, "message": msg or "", "event_seq": seq, "received_ms": int(at)})
        for i, cid, res, msg, seq, at in rows
    ]


def attach_acks(conn: sqlite3.Connection, row_ids: Sequence[int], batch_id: str) -> None:
    conn.executemany("UPDATE cloud_commands SET batch_id = ? WHERE id = ?", [(batch_id, i) for i in row_ids])


def command_seen(conn: sqlite3.Connection, command_id: str) -> Literal["ack_pending", "acked"] | None:
    """The latest row of `command_id`: its ack is still to go (no batch yet, or the batch is pending
    in the outbox), has gone (delivered, parked, or no longer in the outbox), or None: never seen."""
    row = conn.execute(
        "SELECT c.batch_id, o.status FROM cloud_commands c LEFT JOIN outbox o ON o.batch_id = c.batch_id"
        " WHERE c.command_id = ? ORDER BY c.id DESC LIMIT 1",
        (command_id,),
    ).fetchone()
    if row is None:
        return None
    batch, status = row
    return "ack_pending" if batch is None or status == "pending" else "acked"


def nonce_seen(conn: sqlite3.Connection, nonce: str) -> bool:
    return conn.execute("SELECT 1 FROM cloud_commands WHERE nonce = ?", (nonce,)).fetchone() is not None
