"""SQLite persistence (DESIGN.md §6, docs/persistence.md): the store, its two threads, and the
read-only query API for the REST API (`measurements`, `events`, `outbox_status`)."""

from interfaces.store.aggregate import FIELDS, Sample
from interfaces.store.query import OutboxStatus, events, measurements, outbox_status
from interfaces.store.schema import SCHEMA_VERSION, open_readonly
from interfaces.store.store import FlushResult, Store
from interfaces.store.workers import StoreSampler, StoreWriter

__all__ = [
    "FIELDS",
    "SCHEMA_VERSION",
    "FlushResult",
    "OutboxStatus",
    "Sample",
    "Store",
    "StoreSampler",
    "StoreWriter",
    "events",
    "measurements",
    "open_readonly",
    "outbox_status",
]
