"""MQTT commands: JSON schema, sequence gate, and the hand-over to the context (same path as REST).

Payloads (JSON objects; unknown keys are errors):
- `<base>/cmd/mode`     {"mode": "SELF_CONSUMPTION", "seq": 7?, "source": "ha"?}
- `<base>/cmd/setpoint` {"power_w": 1500, "ttl_s": 300, "reason": "dr-event"?, "seq": 42, "source": "agg"?}
- `<base>/cmd/release`  {"seq": 43, "mode": "SELF_CONSUMPTION"?, "source": "agg"?}
- `<base>/cmd/prices`   spot prices for the planner, as REST `PUT /api/v1/prices`: {"points": [{"start", "end",
  "price_eur_per_kwh"}, ...]} or {"start": ISO, "resolution_s": 3600, "prices_eur_per_kwh": [...]}, plus "seq"?, "source"?
- `<base>/cmd/import_cap` {"power_w": 4200, "ttl_s": 900?, "reason": "14a"?, "seq"?, "source"?}; "power_w": null clears it

`seq` orders commands per stream and sender (`source`; mode is one stream, set-point + release share
another, prices and import_cap one each): a `seq` at or below the last accepted one is ignored (duplicate / out of order). Every command gets one reply on
`<base>/cmd/result`: accepted, refused (by the context), ignored, or invalid (naming the field).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ems.context import Counters, Requests
from ems.jsonable import jsonable
from ems.model import Mode
from interfaces.prices.push import PricesPush

__all__ = [
    "COMMANDS",
    "CommandError",
    "CommandHandler",
    "ImportCapCommand",
    "ModeCommand",
    "PricesCommand",
    "ReleaseCommand",
    "SeqGate",
    "SetpointCommand",
    "parse_command",
]

_MAX_POWER_W = 1e7


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    source: str = Field("", max_length=64, pattern=r"^[A-Za-z0-9_.:@-]*$", description="who sends it (for the audit trail)")


class ModeCommand(_Command):
    mode: Mode = Field(..., description="requested run mode")
    seq: int | None = Field(None, ge=0, description="optional ordering number")


class SetpointCommand(_Command):
    power_w: float = Field(..., ge=-_MAX_POWER_W, le=_MAX_POWER_W, allow_inf_nan=False, description="set-point, + discharge, W")
    ttl_s: float = Field(..., gt=0, allow_inf_nan=False, description="the set-point lapses after this, s")
    reason: str = Field("", max_length=200, description="why (audit trail); optional, as in REST")
    seq: int = Field(..., ge=0, description="ordering number; duplicates and older ones are ignored")


class ReleaseCommand(_Command):
    seq: int = Field(..., ge=0, description="ordering number (the set-point stream)")
    mode: Mode | None = Field(None, description="mode to request instead (null = the configured fallback)")


class ImportCapCommand(_Command):
    power_w: float | None = Field(..., ge=0, le=_MAX_POWER_W, allow_inf_nan=False, description="most import allowed, W (null: clear)")
    ttl_s: float | None = Field(None, gt=0, le=7 * 86400, allow_inf_nan=False, description="lapses after this (null: until cleared), s")
    reason: str = Field("", max_length=200, description="why (audit trail)")
    seq: int | None = Field(None, ge=0, description="optional ordering number")


class PricesCommand(PricesPush):
    """Not strict: times are ISO strings in JSON. Same forms as REST `PUT /api/v1/prices`."""

    source: str = Field("", max_length=64, pattern=r"^[A-Za-z0-9_.:@-]*$", description="who sends it (for the audit trail)")
    seq: int | None = Field(None, ge=0, strict=True, description="optional ordering number")


COMMANDS: Mapping[str, type[_Command] | type[PricesCommand]] = {
    "mode": ModeCommand,
    "setpoint": SetpointCommand,
    "release": ReleaseCommand,
    "import_cap": ImportCapCommand,
    "prices": PricesCommand,
}
_STREAM = {"mode": "mode", "setpoint": "setpoint", "release": "setpoint", "import_cap": "import_cap", "prices": "prices"}


@dataclass(frozen=True, slots=True)
class CommandError:
    field: str  # dotted field name, or "payload" when the payload as a whole is bad
    message: str
    seq: int | None = None


def _seq_of(data: object) -> int | None:
    seq = data.get("seq") if isinstance(data, dict) else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def parse_command(kind: str, payload: bytes, *, max_ttl_s: float) -> _Command | PricesCommand | CommandError:
    """Validate one command payload; the error names the first bad field."""
    try:
        data: Any = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return CommandError("payload", f"not valid UTF-8 JSON: {exc}"[:200])
    if not isinstance(data, dict):
        return CommandError("payload", f"must be a JSON object, got {type(data).__name__}")
    try:
        cmd = COMMANDS[kind].model_validate_json(payload)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err["loc"]) or "payload"
        return CommandError(name, str(err["msg"])[:200], _seq_of(data))
    if isinstance(cmd, SetpointCommand) and cmd.ttl_s > max_ttl_s:
        return CommandError("ttl_s", f"must be <= {max_ttl_s:g}", cmd.seq)
    return cmd


@dataclass(slots=True)
class SeqGate:
    """Last accepted `seq` per stream. Pure bookkeeping, owned by the MQTT thread."""

    last: dict[str, int] = field(default_factory=dict)
    reset_s: float = math.inf  # a last seq older than this no longer holds a lower one back
    _at_s: dict[str, float] = field(default_factory=dict)

    def verdict(self, stream: str, seq: int | None, now_s: float | None = None) -> str | None:
        """None when `seq` may pass, else "duplicate" or "out_of_order"."""
        last = self.last.get(stream)
        if seq is None or last is None or seq > last:
            return None
        if now_s is not None and now_s - self._at_s.get(stream, now_s) > self.reset_s:
            return None  # the sender restarted or its clock stepped back: a new stream
        return "duplicate" if seq == last else "out_of_order"

    def accept(self, stream: str, seq: int | None, now_s: float | None = None) -> None:
        if seq is not None:
            self.last[stream] = seq
            if now_s is not None:
                self._at_s[stream] = now_s


class CommandHandler:
    """Parse, order and apply commands through the context's audited request methods."""

    def __init__(
        self,
        *,
        requests: Requests,
        counters: Counters,
        max_ttl_s: float,
        release_mode: Mode,
        prices_refused: str | None = None,
        seq_reset_s: float = math.inf,
    ) -> None:
        """`prices_refused`: why pushed prices are not used (planner off, no dynamic tariff side), None: accepted."""
        self._prices_refused = prices_refused
        self._requests = requests
        self._counters = counters
        self._max_ttl_s = max_ttl_s
        self._release_mode = release_mode
        self._gate = SeqGate(reset_s=seq_reset_s)

    def handle(self, kind: str, payload: bytes, *, retained: bool = False, now_s: float | None = None) -> dict[str, object]:
        """Apply one command; returns the result message (also counted in the context)."""
        if retained:
            self._counters.count("mqtt_cmd_invalid")
            return {"command": kind, "status": "invalid", "seq": None, "field": "retain", "error": "retained commands are not accepted"}
        parsed = parse_command(kind, payload, max_ttl_s=self._max_ttl_s)
        if isinstance(parsed, CommandError):
            self._counters.count("mqtt_cmd_invalid")
            return {"command": kind, "status": "invalid", "seq": parsed.seq, "field": parsed.field, "error": parsed.message}
        seq: int | None = getattr(parsed, "seq", None)
        stream = f"{_STREAM[kind]}:{parsed.source}"
        why = self._gate.verdict(stream, seq, now_s)
        if why is not None:
            self._counters.count("mqtt_cmd_ignored")
            return {"command": kind, "status": "ignored", "seq": seq, "error": why, "last_seq": self._gate.last[stream]}
        who = f"mqtt:{parsed.source}" if parsed.source else "mqtt"
        if isinstance(parsed, PricesCommand):
            if self._prices_refused is not None:
                pts = parsed.to_points()
                msg = f"prices not used: {self._prices_refused}"
                ev = self._requests.audit_refused("prices", who=who, via="mqtt", old=None, new={"points": len(pts)}, message=msg)
                self._counters.count("mqtt_cmd_refused")
                return {"command": kind, "status": "refused", "seq": seq, "error": msg, "event_seq": ev}
            res = self._requests.push_prices(parsed.to_points(), who=who, via="mqtt")
        elif isinstance(parsed, ImportCapCommand):
            if parsed.power_w is None:
                res = self._requests.clear_import_cap(who=who, via="mqtt")
            else:
                res = self._requests.set_import_cap(power_w=parsed.power_w, ttl_s=parsed.ttl_s, reason=parsed.reason, who=who, via="mqtt")
        elif isinstance(parsed, ModeCommand):
            res = self._requests.request_mode(parsed.mode, who=who, via="mqtt")
        elif isinstance(parsed, SetpointCommand):
            res = self._requests.set_external_setpoint(
                power_w=parsed.power_w, ttl_s=parsed.ttl_s, reason=parsed.reason, who=who, via="mqtt", seq=parsed.seq
            )
        else:
            assert isinstance(parsed, ReleaseCommand)
            res = self._requests.release_setpoint(who=who, via="mqtt", mode=parsed.mode or self._release_mode)
        if not res.accepted:
            self._counters.count("mqtt_cmd_refused")
            return {"command": kind, "status": "refused", "seq": seq, "error": res.message, "event_seq": res.event_seq}
        self._gate.accept(stream, seq, now_s)
        self._counters.count("mqtt_cmd_accepted")
        return {
            "command": kind,
            "status": "accepted",
            "seq": seq,
            "old": jsonable(res.old),
            "new": jsonable(res.new),
            "event_seq": res.event_seq,
        }
