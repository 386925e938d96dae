"""The one JSON-cleaning helper: any value -> something json.dumps accepts, safely bounded."""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import Enum
from typing import Any

__all__ = ["jsonable"]


def jsonable(value: object, depth: int = 0) -> Any:
    """Non-finite floats become null, enums their value, sets sorted lists, unknown objects their str()."""
    if depth > 8:
        return str(value)
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Enum):
        return jsonable(value.value, depth + 1)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [jsonable(v, depth + 1) for v in items]
    return str(value)
