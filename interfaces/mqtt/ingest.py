"""Measurement ingest: decode one payload of a configured topic into (quantity, SI value).

A payload is a plain number (`1234.5`) or JSON with the number at `json_path` (`power.total`;
list items by index: `phases.0.w`). The configured unit is converted to the quantity's SI unit
here (DESIGN §2: conversions only in `interfaces/`), and `invert` flips the sign.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from config.mqtt import IngestTopic, unit_factor
from ems.model import Quantity

__all__ = ["IngestError", "IngestRule", "decode"]


class IngestError(ValueError):
    """A payload that does not hold a finite number where the config says."""


@dataclass(frozen=True, slots=True)
class IngestRule:
    quantity: Quantity
    path: tuple[str, ...]  # empty = plain number
    factor: float  # unit -> SI, sign included
    accept_retained: bool

    @classmethod
    def from_config(cls, t: IngestTopic) -> IngestRule:
        factor = unit_factor(t.quantity, t.unit)
        assert factor is not None  # checked by the config model
        path = tuple(p for p in (t.json_path or "").split(".") if p)
        return cls(t.quantity, path, -factor if t.invert else factor, t.accept_retained)


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise IngestError(f"not a number: {str(v)[:40]!r}")
    f = float(v)
    if not math.isfinite(f):
        raise IngestError("not a finite number")
    return f


def decode(rule: IngestRule, payload: bytes) -> float:
    """The SI value carried by `payload`; raises IngestError naming what is wrong."""
    try:
        text = payload.decode("utf-8").strip()
        data: Any = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IngestError("not UTF-8 JSON or a plain number") from exc
    for key in rule.path:
        if isinstance(data, dict) and key in data:
            data = data[key]
        elif isinstance(data, list) and key.isdigit() and int(key) < len(data):
            data = data[int(key)]
        else:
            raise IngestError(f"json_path {'.'.join(rule.path)}: no {key!r}")
    value = _number(data) * rule.factor
    if not math.isfinite(value):
        raise IngestError("value out of range")
    return value
