"""What the request handlers need, in one frozen bundle the app factory stores on the app.

Handlers are plain functions that take what they need from `deps()` (the running app's bundle):
the snapshot reader, the requests part, the read source, the metrics, the config.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from flask import current_app

from api.auth import TokenTable
from api.metrics import ApiMetrics
from api.sources import ReadSource
from config import EMSConfig
from config.api import Role
from ems.clock import Clock
from ems.context import Counters, Requests
from ems.model import Snapshot
from interfaces.logs import LogGate

__all__ = ["EXTENSION", "ApiDeps", "deps"]

EXTENSION = "ems"


@dataclass(frozen=True, slots=True)
class ApiDeps:
    cfg: EMSConfig
    snapshot: Callable[[], Snapshot]
    requests: Requests
    counters: Counters
    clock: Clock
    source: ReadSource  # history: the store, or the context's latest values
    metrics: ApiMetrics
    tokens: TokenTable
    roles: Mapping[str, Role | None]  # endpoint -> role it needs (None: public)
    refusals: LogGate  # refused writes and store errors: one line per kind per interval


def deps() -> ApiDeps:
    found = current_app.extensions[EXTENSION]
    if not isinstance(found, ApiDeps):
        raise RuntimeError("the app was not built by api.app.create_app")
    return found
