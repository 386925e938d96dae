"""Deep-freeze small status values so a snapshot never hands out a worker's mutable dict or list."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["freeze"]


def freeze(value: object) -> object:
    """Mappings become read-only mappings, lists and sets tuples (recursively); scalars stay."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, set | frozenset):
        return tuple(sorted((freeze(v) for v in value), key=str))
    return value
