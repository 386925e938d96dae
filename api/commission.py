"""Commissioning over REST (`emsctl commission`, docs/commissioning.md).

- `POST /api/v1/commission` (operator): start a run. Refused (409, audited) while the state is FAULT
  or STOP, without both control opt-ins (control.enabled true, control.dry_run false), while an
  external set-point is in force, without an inverter link, or while a run is in progress; 422
  without `confirm: true`. Accepted: 202 with the run number; the commissioning thread inside the
  EMS does the rest (interfaces/commission/runner.py), every set-point it makes audited under the
  caller's token.
- `GET /api/v1/commission?run=N` (read role): progress and, once finished, the report. Polling with
  `run` keeps that run alive: a run whose client stops polling ends itself (back to 0 W).
- `DELETE /api/v1/commission` (operator): abort the run in progress (audited); it goes back to 0 W
  and the mode it started from.
"""

from __future__ import annotations

from typing import Any, Literal

import structlog
from flask import Response, g
from flask_openapi3.blueprint import APIBlueprint
from pydantic import BaseModel, ConfigDict, Field

from api.deps import deps
from api.models import ApiError
from api.routes import PREFIX, error_response, json_response, register, responses
from config import EMSConfig
from config.api import Role
from ems.commission import Directions
from ems.context import EMSContext
from ems.context.commission import CommissionView
from ems.jsonable import jsonable
from ems.model import Mode, State

__all__ = ["COMMISSION_WRITES", "CommissionStart", "commission_blueprint"]

log = structlog.get_logger("api")

COMMISSION_WRITES = {"v1_commission.post_commission": "commission", "v1_commission.delete_commission": "commission"}


class CommissionStart(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    confirm: Literal[True] = Field(description="must be true: the run moves the battery (small steps inside every limit)")
    step_w: float = Field(
        1000.0, strict=False, gt=0, le=1e6, allow_inf_nan=False, description="size of each step, W (at most half of every power limit)"
    )
    directions: Directions = Field(Directions.BOTH, description="both: +S, 0, -S, 0 W; discharge: +S, 0; charge: -S, 0")
    max_hold_s: float = Field(30.0, ge=5, le=300, allow_inf_nan=False, description="longest hold of one step while its response settles, s")
    poll_period_s: float = Field(0.1, ge=0.05, le=1.0, allow_inf_nan=False, description="fast poll of the inverter and the meter, s")


class CommissionQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    run: int | None = Field(None, ge=1, le=2**31, description="the run this client follows: polling with it keeps the run alive")


class CommissionInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    run: int | None = Field(description="the latest run (null: none since start)")
    state: str = Field(description="idle | queued | running | done | aborted | failed")
    who: str | None = Field(description="the token that started it")
    phase: str = Field(description="what the run is doing now")
    progress: dict[str, Any] = Field(description="step, steps, elapsed_s, setpoint_w, ess_power_w")
    report: dict[str, Any] | None = Field(description="the report, once finished (docs/commissioning.md)")
    abort_requested: str | None = Field(description="why an abort was asked for, if it was")
    note: str | None = Field(None, description="what happens next")


def _info(v: CommissionView, note: str | None = None) -> CommissionInfo:
    return CommissionInfo(
        run=v.run,
        state=v.state.value,
        who=v.who,
        phase=v.phase,
        progress=jsonable(v.progress),
        report=None if v.report is None else jsonable(v.report),
        abort_requested=v.abort_requested,
        note=note,
    )


def _refusal(cfg: EMSConfig, ctx: EMSContext) -> str | None:
    """Why a run may not start now, or None."""
    c = cfg.control
    if not c.live:
        return (
            "control is not live: commissioning needs both opt-ins, control.enabled: true and control.dry_run: false "
            f"(now enabled={str(c.enabled).lower()}, dry_run={str(c.dry_run).lower()})"
        )
    snap = ctx.snapshot()
    if snap.state is State.FAULT:
        return f"the state is FAULT ({', '.join(snap.fault_causes) or 'no cause given'}): clear every cause first"
    if snap.state is State.STOP:
        return "the controller has not run a cycle yet (state STOP)"
    if ctx.commission.busy():
        return f"run {ctx.commission.snapshot().run} is in progress: wait for it, or DELETE /api/v1/commission"
    sp = snap.external_setpoint
    if snap.requested_mode is Mode.EXTERNAL or (sp is not None and sp.active(snap.at_s)):
        return "an external set-point is in force: release it first (DELETE /api/v1/setpoint)"
    ess = snap.device("ess")
    if ess is None:
        return "no inverter link (modbus.ess)"
    if ess.info.get("connected") is not True:
        return f"the inverter link is not connected ({ess.last_error or 'not yet'})"
    return None


def commission_blueprint(cfg: EMSConfig, ctx: EMSContext, read_role: Role | None, roles: dict[str, Role | None]) -> APIBlueprint:
    bp = APIBlueprint("v1_commission", __name__, url_prefix=PREFIX)
    op = Role.OPERATOR
    board = ctx.commission

    def _refused(status: int, error: str, message: str, new: object) -> Response:
        d = deps()
        g.audited = True
        d.requests.audit_refused("commission", who=g.who, via="rest", old=board.snapshot().run, new=new, message=message, status=status)
        d.counters.count("api_writes_refused")
        log.warning("api_write_refused", who=g.who, what="commission", status=status, message=message[:300])
        return error_response(status, error, message)

    def post_commission(body: CommissionStart) -> Response:
        params = body.model_dump(mode="json")
        why = _refusal(cfg, ctx)
        if why is not None:
            return _refused(409, "commission_refused", f"commission: refused: {why}", params)
        d = deps()
        mode, _sp = ctx.requests.snapshot()
        req = board.submit(who=g.who, via="rest", params=params, prev_mode=mode, now_s=d.clock.monotonic())
        if req is None:
            return _refused(409, "commission_refused", "commission: refused: a run is in progress", params)
        g.audited = True
        seq = ctx.events.record(
            "audit", who=g.who, via="rest", what="commission", old=None, new={"run": req.run, **params}, result="accepted"
        )
        log.info("api_write", who=g.who, what="commission", result="accepted", run=req.run, event_seq=seq, **params)
        note = (
            f"run {req.run} accepted: the battery goes to 0 W, then steps of {body.step_w:g} W ({body.directions.value}); "
            f"poll GET /api/v1/commission?run={req.run} (a run whose client stops polling ends itself); "
            f"afterwards mode {mode.value} again"
        )
        return json_response(_info(board.snapshot(), note), 202)

    def get_commission(query: CommissionQuery) -> Response:
        if query.run is not None:
            board.touch(query.run, now_s=deps().clock.monotonic())
        return json_response(_info(board.snapshot()))

    def delete_commission() -> Response:
        run = board.cancel(who=g.who, reason="aborted over the API")
        if run is None:
            return _refused(409, "commission_not_running", "commission: no run in progress", None)
        g.audited = True
        seq = ctx.events.record("audit", who=g.who, via="rest", what="commission", old=run, new="abort", result="accepted")
        log.info("api_write", who=g.who, what="commission", result="accepted", run=run, action="abort", event_seq=seq)
        return json_response(_info(board.snapshot(), f"run {run}: abort asked; it goes back to 0 W and the mode it started from"))

    answers_post: dict[int, Any] = {**responses(CommissionInfo, role=op, body=True), 409: ApiError}
    answers_post[202] = answers_post.pop(200)
    register(bp, roles, "post", "/commission", post_commission, role=op, answers=answers_post,
             summary="Start commissioning: step the set-point and measure the inverter and the meter (operator; audited)")  # fmt: skip
    register(bp, roles, "get", "/commission", get_commission, role=read_role, answers=responses(CommissionInfo, role=read_role, params=True),
             summary="Commissioning progress and report; polling with run=N keeps that run alive")  # fmt: skip
    register(bp, roles, "delete", "/commission", delete_commission, role=op, answers={**responses(CommissionInfo, role=op), 409: ApiError},
             summary="Abort the commissioning run in progress: back to 0 W and the previous mode (operator; audited)")  # fmt: skip
    return bp
