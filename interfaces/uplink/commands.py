"""The cloud's command queue, site side (docs/uplink.md): verify each signed envelope, spend its
nonce in SQLite, run it through the same audited request path as REST and MQTT, and leave the result
for the next batch (`acks`).

An envelope (JSON object, from the receiver's answer to a batch POST or to GET .../commands):

    {"id": "c-1", "nonce": "9f2c...", "issuer": "ecowatt", "issued_at": 1772323500, "expires_at": 1772324100,
     "kind": "setpoint", "body": {"power_w": 1500, "ttl_s": 600, "reason": "dr-event"}, "signature": "sha256=..."}

kinds and bodies: mode {mode}; setpoint {power_w, ttl_s, reason?}; release {mode?}; prices (as REST
`PUT /api/v1/prices`); import_cap {power_w|null, ttl_s?, reason?}; tariff is refused (the tariff is
configuration). Per envelope, in this order:
1. the receiver offers a command again until it sees its ack: one whose ack has not gone yet is
   left alone (no second run, no second audit);
2. signature (constant time) -> `bad_signature`; the nonce is then not trusted and not spent;
3. a nonce already spent -> `replayed` (also after a restart: the nonces are in SQLite);
4. `issued_at` more than `max_skew_s` ahead, or older than `max_age_s` (+ skew), or `expires_at`
   passed (- skew) -> `expired`;
5. an unknown kind or a bad body -> `refused`;
6. else its row (the nonce) is committed, THEN it runs through `ctx.requests` (who = cloud:<issuer>,
   via = cloud) -> `accepted` or `refused` (the context's refusal, e.g. a TTL out of range).
Every outcome is audited (a refusal before the request path by `audit_refused`) and acked with the
audit event's seq.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from config.uplink import UplinkCommandsConfig
from ems.clock import Clock
from ems.context import Counters, RequestResult, Requests
from ems.model import Mode
from interfaces.logs import LogGate
from interfaces.prices.push import PricesPush
from interfaces.store.commands import CommandRecord, CommandResult, command_seen, nonce_seen
from interfaces.store.schema import open_readonly
from interfaces.store.store import CommandNotRecorded
from interfaces.uplink.signing import verify_command

__all__ = ["KINDS", "RESULTS", "CloudCommands", "CommandLog", "Handled"]

log = structlog.get_logger("interfaces.uplink.commands")

KINDS = ("mode", "setpoint", "release", "prices", "import_cap", "tariff")
RESULTS = ("accepted", "refused", "expired", "bad_signature", "replayed", "interrupted")
_ID = re.compile(r"^[A-Za-z0-9_.:@-]{1,64}$")
_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
_MAX_POWER_W = 1e7


class CommandLog(Protocol):
    """What the commands need from the store."""

    path: Path

    def record_command(self, record: CommandRecord) -> None: ...

    def set_command_result(self, result: CommandResult) -> None: ...


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)  # numbers strict (no "1500"), enums by their JSON names


class _ModeBody(_Body):
    mode: Mode


class _SetpointBody(_Body):
    power_w: float = Field(..., strict=True, ge=-_MAX_POWER_W, le=_MAX_POWER_W, allow_inf_nan=False)
    ttl_s: float = Field(..., strict=True, gt=0, allow_inf_nan=False)
    reason: str = Field("", strict=True, max_length=200)


class _ReleaseBody(_Body):
    mode: Mode | None = None


class _ImportCapBody(_Body):
    power_w: float | None = Field(..., strict=True, ge=0, le=_MAX_POWER_W, allow_inf_nan=False)
    ttl_s: float | None = Field(None, strict=True, gt=0, le=7 * 86400, allow_inf_nan=False)
    reason: str = Field("", strict=True, max_length=200)


_BODIES: Mapping[str, type[BaseModel]] = {
    "mode": _ModeBody,
    "setpoint": _SetpointBody,
    "release": _ReleaseBody,
    "import_cap": _ImportCapBody,
    "prices": PricesPush,
}


@dataclass(frozen=True, slots=True)
class Handled:
    command_id: str
    result: str  # one of RESULTS
    message: str
    event_seq: int | None


def _int(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _summary(kind: str, body: object) -> object:
    """What the audit row shows as `new` (never a whole price curve)."""
    if not isinstance(body, dict):
        return None
    if kind in ("mode", "release"):
        return body.get("mode")
    if kind in ("setpoint", "import_cap"):
        return body.get("power_w")
    if kind == "prices":
        pts = body.get("points") or body.get("prices_eur_per_kwh")
        return {"points": len(pts)} if isinstance(pts, list) else None
    return None


class CloudCommands:
    """Runs in the uplink sender's thread; `handle(envelope)` for each envelope received."""

    def __init__(
        self,
        *,
        cfg: UplinkCommandsConfig,
        key: bytes,
        requests: Requests,
        store: CommandLog,
        counters: Counters,
        clock: Clock,
        release_mode: Mode,
        prices_refused: str | None,
    ) -> None:
        self.cfg = cfg
        self._key = key
        self._requests = requests
        self._store = store
        self._counters = counters
        self._clock = clock
        self._release_mode = release_mode
        self._prices_refused = prices_refused
        self._conn: sqlite3.Connection | None = None
        self._logs = LogGate(60.0)

    def _ro(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = open_readonly(self._store.path)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ---- one envelope ----------------------------------------------------------------------
    def handle(self, env: object) -> Handled | None:
        """Verify and run one envelope; None when there is nothing to ack (a redelivery, no id, or
        its row could not be committed: it comes again)."""
        cid = env.get("id") if isinstance(env, dict) else None
        if not isinstance(env, dict) or not isinstance(cid, str) or not _ID.match(cid):
            self._counters.count("uplink_command_invalid")
            held = self._logs.allow("invalid", self._clock.monotonic())
            if held is not None:
                log.warning("cloud_command_invalid", error="not an envelope with a valid id (nothing to ack)", held_back=held)
            return None
        if command_seen(self._ro(), cid) == "ack_pending":
            self._counters.count("uplink_command_redelivered")
            return None
        kind = env.get("kind") if env.get("kind") in KINDS else None
        if not verify_command(self._key, env):
            return self._refuse(env, cid, "bad_signature", "the signature does not match (HMAC over the envelope)", verified=False)
        nonce = env.get("nonce")
        if not isinstance(nonce, str) or not _NONCE.match(nonce):
            return self._refuse(env, cid, "refused", "nonce: 16-128 characters of A-Z a-z 0-9 _ -", spend=False)
        if nonce_seen(self._ro(), nonce):
            return self._refuse(env, cid, "replayed", "nonce already used", spend=False)
        now = self._clock.wall().timestamp()
        issued, expires = _int(env.get("issued_at")), _int(env.get("expires_at"))
        skew = self.cfg.max_skew_s
        if issued is None or expires is None or expires < issued:
            why, result = "issued_at and expires_at: integer unix seconds, expires_at >= issued_at", "refused"
        elif issued > now + skew:
            why, result = f"issued_at is {issued - now:.0f} s ahead of this clock (max_skew_s {skew:g})", "expired"
        elif now - issued > self.cfg.max_age_s + skew:
            why, result = f"issued {now - issued:.0f} s ago (max_age_s {self.cfg.max_age_s:g})", "expired"
        elif expires < now - skew:
            why, result = f"expired {now - expires:.0f} s ago", "expired"
        elif kind is None:
            why, result = f"kind: one of {', '.join(KINDS)} (got {env.get('kind')!r})", "refused"
        else:
            return self._run(env, cid, kind, nonce)
        return self._refuse(env, cid, result, why)

    def _record(self, env: dict[str, Any], cid: str, *, spend: bool, result: str | None, message: str, seq: int | None) -> bool:
        """Commit the command's row; `spend`: with its nonce (a verified, well-formed, new one)."""
        nonce = env.get("nonce") if spend else None
        rec = CommandRecord(
            command_id=cid,
            nonce=nonce if isinstance(nonce, str) else None,
            issuer=str(env.get("issuer"))[:64] if env.get("issuer") is not None else None,
            kind=str(env.get("kind"))[:32] if env.get("kind") is not None else None,
            issued_ts=_int(env.get("issued_at")),
            expires_ts=_int(env.get("expires_at")),
            received_ms=round(self._clock.wall().timestamp() * 1000),
            result=result,
            message=message,
            event_seq=seq,
        )
        try:
            self._store.record_command(rec)
        except CommandNotRecorded as exc:
            self._counters.count("uplink_command_not_recorded")
            log.error("cloud_command_not_recorded", command_id=cid, reason=str(exc), hint="not run; it comes again")
            return False
        return True

    def _who(self, env: Mapping[str, Any], *, verified: bool) -> str:
        """cloud:<issuer> once the signature vouches for the issuer, else plain cloud."""
        issuer = env.get("issuer")
        return f"cloud:{issuer}" if verified and isinstance(issuer, str) and _ID.match(issuer) else "cloud"

    def _refuse(
        self, env: dict[str, Any], cid: str, result: str, message: str, *, verified: bool = True, spend: bool | None = None
    ) -> Handled | None:
        """Audit the refusal, record it (spending the nonce when it is verified and new) for the ack."""
        kind = str(env.get("kind")) if env.get("kind") in KINDS else "command"
        seq = self._requests.audit_refused(
            kind,
            who=self._who(env, verified=verified),
            via="cloud",
            old=None,
            new=_summary(kind, env.get("body")),
            message=f"{result}: {message}",
            command_id=cid,
        )
        if not self._record(env, cid, spend=verified if spend is None else spend, result=result, message=message, seq=seq):
            return None
        return self._done(cid, kind, result, message, seq)

    def _run(self, env: dict[str, Any], cid: str, kind: str, nonce: str) -> Handled | None:
        who = self._who(env, verified=True)
        model = _BODIES.get(kind)
        body: Any = None
        problem = "the tariff is configuration (tariff:), not a command; send its spot prices with kind prices" if model is None else None
        if model is not None:
            try:
                body = model.model_validate(env.get("body"))
            except ValidationError as exc:
                err = exc.errors()[0]
                problem = f"body.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"[:300]
        if kind == "prices" and problem is None and self._prices_refused is not None:
            problem = f"prices not used: {self._prices_refused}"
        if problem is not None:
            return self._refuse(env, cid, "refused", problem)
        if not self._record(env, cid, spend=True, result=None, message="", seq=None):  # the nonce is spent before it runs
            return None
        r = self._apply(kind, body, who)
        result = "accepted" if r.accepted else "refused"
        self._store.set_command_result(CommandResult(nonce, result, "" if r.accepted else r.message, r.event_seq))
        return self._done(cid, kind, result, "" if r.accepted else r.message, r.event_seq)

    def _apply(self, kind: str, body: Any, who: str) -> RequestResult:
        rq, via = self._requests, "cloud"
        if isinstance(body, _ModeBody):
            return rq.request_mode(body.mode, who=who, via=via)
        if isinstance(body, _SetpointBody):
            return rq.set_external_setpoint(power_w=body.power_w, ttl_s=body.ttl_s, reason=body.reason or "cloud", who=who, via=via)
        if isinstance(body, _ReleaseBody):
            return rq.release_setpoint(who=who, via=via, mode=body.mode or self._release_mode)
        if isinstance(body, _ImportCapBody):
            if body.power_w is None:
                return rq.clear_import_cap(who=who, via=via)
            return rq.set_import_cap(power_w=body.power_w, ttl_s=body.ttl_s, reason=body.reason or "cloud", who=who, via=via)
        assert isinstance(body, PricesPush), kind
        return rq.push_prices(body.to_points(), who=who, via=via)

    def _done(self, cid: str, kind: str, result: str, message: str, seq: int | None) -> Handled:
        self._counters.count(f"uplink_command_{result}")
        event = "cloud_command_accepted" if result == "accepted" else "cloud_command_refused"
        (log.info if result == "accepted" else log.warning)(event, command_id=cid, kind=kind, result=result, message=message, event_seq=seq)
        return Handled(cid, result, message, seq)
