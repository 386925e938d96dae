"""SQLite schema, forward migrations (`PRAGMA user_version`) and connections.

The writer connection is WAL with `synchronous=NORMAL`: a commit survives a process crash, and
the last commits before a power cut may be lost but the file stays consistent. Readers open
their own read-only connections (`open_readonly`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from interfaces.store.aggregate import FIELDS

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "ensure_field_columns", "migrate", "open_readonly", "open_writer"]

# The sample fields as they were when schema v1 was written. A later quantity gets its column from
# `ensure_field_columns` (an ALTER TABLE ADD COLUMN, cheap in SQLite) without a schema version.
_V1_FIELDS = (
    "grid_power_w", "pv_power_w", "ess_power_w", "soc_pct", "soh_pct", "bms_voltage_v", "bms_current_a",
    "bms_temperature_degc", "bms_ccl_a", "bms_dcl_a", "bms_cvl_v", "bms_dvl_v", "bms_charge_enable",
    "bms_discharge_enable", "bms_force_charge", "ess_max_charge_w", "ess_max_discharge_w", "grid_voltage_v",
    "grid_frequency_hz", "grid_import_wh", "grid_export_wh", "ess_status", "cmd_computed_w", "cmd_written_w",
)  # fmt: skip


def _v1(conn: sqlite3.Connection) -> None:
    cols = ", ".join(f"{f} REAL" for f in _V1_FIELDS)
    for sql in (
        # one row a second; ts_ms is the rowid (no extra index); a REAL holding an integer is stored as one
        f"CREATE TABLE samples (ts_ms INTEGER PRIMARY KEY, state TEXT, mode TEXT, {cols})",
        # one row a minute with samples: stats = {field: [min, mean, max, last, count]}, states = {state: samples}
        "CREATE TABLE minutes (ts INTEGER PRIMARY KEY, n INTEGER NOT NULL, stats TEXT NOT NULL, states TEXT NOT NULL)",
        "CREATE TABLE events (id INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, kind TEXT NOT NULL, seq INTEGER, data TEXT NOT NULL)",
        "CREATE INDEX events_ts ON events (ts_ms)",
        "CREATE INDEX events_kind_ts ON events (kind, ts_ms)",
        # AUTOINCREMENT: ids are never reused, so 'oldest first' is 'lowest id first' for ever
        """CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            batch_id TEXT NOT NULL UNIQUE,
            window_start INTEGER NOT NULL,
            created_ms INTEGER NOT NULL,
            body BLOB NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'parked')),
            attempts INTEGER NOT NULL DEFAULT 0,
            done_ms INTEGER,
            last_error TEXT)""",
        "CREATE INDEX outbox_status_id ON outbox (status, id)",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    ):
        conn.execute(sql)


def _v2(conn: sqlite3.Connection) -> None:
    """One name from the core to the database: the command columns take the core's names
    (Decision.setpoint_w, written_w). Minute stats are renamed too; outbox bodies already built stay."""
    conn.execute("ALTER TABLE samples RENAME COLUMN cmd_computed_w TO setpoint_w")
    conn.execute("ALTER TABLE samples RENAME COLUMN cmd_written_w TO written_w")
    conn.execute(
        "UPDATE minutes SET stats = replace(replace(stats, '\"cmd_computed_w\"', '\"setpoint_w\"'), '\"cmd_written_w\"', '\"written_w\"')"
        " WHERE instr(stats, 'cmd_') > 0"
    )


def _v3(conn: sqlite3.Connection) -> None:
    """The planner's price cache: the spot points it last knew, so a restart plans at once (docs/scheduling.md).
    One row per point, [start_ts, end_ts) unix s; a new batch replaces the rows its span overlaps."""
    conn.execute(
        """CREATE TABLE prices (
            start_ts INTEGER PRIMARY KEY,
            end_ts INTEGER NOT NULL,
            price_per_kwh REAL NOT NULL,
            source TEXT NOT NULL,
            stored_ms INTEGER NOT NULL)"""
    )


def _v4(conn: sqlite3.Connection) -> None:
    """The cloud command log (docs/uplink.md): one row per command received, written before it runs.
    `nonce` is UNIQUE, so a spent nonce stays spent across restarts; `batch_id` names the batch
    that carries the result back (the ack), NULL until one does."""
    conn.execute(
        """CREATE TABLE cloud_commands (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            command_id TEXT NOT NULL,
            nonce TEXT UNIQUE,
            issuer TEXT,
            kind TEXT,
            issued_ts INTEGER,
            expires_ts INTEGER,
            received_ms INTEGER NOT NULL,
            result TEXT,
            message TEXT,
            event_seq INTEGER,
            batch_id TEXT)"""
    )
    conn.execute("CREATE INDEX cloud_commands_command_id ON cloud_commands (command_id)")
    conn.execute("CREATE INDEX cloud_commands_unacked ON cloud_commands (id) WHERE batch_id IS NULL")


# MIGRATIONS[i] takes a database from user_version i to i + 1. Append only; never edit a shipped one.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_v1, _v2, _v3, _v4)
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the missing forward migrations, each in its own transaction; returns the version."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise RuntimeError(f"database schema version {version} is newer than this program's {SCHEMA_VERSION}; refusing to touch it")
    for v in range(version, SCHEMA_VERSION):
        conn.execute("BEGIN IMMEDIATE")
        try:
            MIGRATIONS[v](conn)
            conn.execute(f"PRAGMA user_version = {v + 1}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    ensure_field_columns(conn)
    return SCHEMA_VERSION


def ensure_field_columns(conn: sqlite3.Connection) -> tuple[str, ...]:
    """Add a REAL column for every sample field the table lacks; returns the added names."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(samples)")}
    added = tuple(f for f in FIELDS if f not in have)
    for f in added:
        conn.execute(f"ALTER TABLE samples ADD COLUMN {f} REAL")
    return added


def open_writer(path: Path) -> sqlite3.Connection:
    """The one writing connection (autocommit mode; the caller issues BEGIN IMMEDIATE/COMMIT)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        conn.close()
        raise RuntimeError(f"cannot switch {path} to WAL (journal_mode={mode})")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA journal_size_limit=8388608")  # keep the -wal file near the checkpoint size
    migrate(conn)
    return conn


def open_readonly(path: Path | str) -> sqlite3.Connection:
    """A read-only connection for readers (API, sender); raises sqlite3.OperationalError if missing."""
    uri = f"file:{quote(str(Path(path).resolve()))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=5.0, check_same_thread=False)
    conn.execute("PRAGMA query_only=ON")
    return conn
