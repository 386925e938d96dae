"""SQLite persistence (DESIGN.md §6, docs/persistence.md): the store, its two threads, and the
read-only query API for the REST API and the planner (`measurements`, `events`, `outbox_status`,
`load_pv_history`, `prices`)."""

from interfaces.store.aggregate import FIELDS, Sample
from interfaces.store.query import HistorySlot, OutboxStatus, events, load_pv_history, measurements, outbox_status, prices
from interfaces.store.schema import SCHEMA_VERSION, open_readonly
from interfaces.store.store import FlushResult, Store
from interfaces.store.workers import StoreSampler, StoreWriter

__all__ = [
    "FIELDS",
    "SCHEMA_VERSION",
    "FlushResult",
    "HistorySlot",
    "OutboxStatus",
    "Sample",
    "Store",
    "StoreSampler",
    "StoreWriter",
    "events",
    "load_pv_history",
    "measurements",
    "open_readonly",
    "outbox_status",
    "prices",
]
