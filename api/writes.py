"""Write endpoints under /api/v1 (docs/api.md): mode and set-point requests, pushed prices and an
external import cap (docs/scheduling.md), every one audited.

No `from __future__ import annotations` here: the set-point body model is built from the config
(its TTL bound is `control.external_max_ttl_s`, so the OpenAPI document states the real limit),
and the handler's annotation must be that class itself, not a name.
"""

from typing import Any

import structlog
from flask import Response, g
from flask_openapi3.blueprint import APIBlueprint
from pydantic import Field, create_model

from api import views
from api.deps import deps
from api.models import ApiError, FieldError, ImportCapRequest, ModeRequest, PricesRequest, ReleaseQuery, SetpointRequest, WriteResponse
from api.routes import PREFIX, error_response, json_response, register, responses
from config.api import Role
from ems.context import RequestResult
from ems.jsonable import jsonable
from ems.model import Mode, State
from interfaces.prices.push import push_refused

__all__ = ["WRITES", "setpoint_model", "write_blueprint"]

log = structlog.get_logger("api")

WRITES = {
    "v1_write.put_mode": "mode",
    "v1_write.put_setpoint": "setpoint",
    "v1_write.delete_setpoint": "release",
    "v1_write.put_prices": "prices",
    "v1_write.put_import_cap": "import_cap",
    "v1_write.delete_import_cap": "import_cap",
}


def _note(state: State, mode: Mode, *, has_setpoint: bool = True) -> str:
    c = deps().cfg.control
    gate = "control.enabled is false" if not c.enabled else ("control.dry_run is true" if c.dry_run else "")
    if gate:
        return f"recorded; {gate}, so the controller computes with it but the inverter still gets 0 W"
    if state is State.FAULT:
        return "recorded; the state is FAULT, so the inverter gets 0 W until every fault cause has cleared"
    if mode is Mode.EXTERNAL and not has_setpoint:
        return (
            f"recorded; mode EXTERNAL has no set-point (setpoint_missing), so the controller runs the fallback"
            f" {c.external_fallback.value} until PUT /api/v1/setpoint gives one"
        )
    return f"recorded; the controller applies mode {mode.value} at its next cycle, inside every limit"


def _answers(*, params: bool = False, body: bool = False) -> dict[int, Any]:
    """A write's documented answers; 503: its audit could not be committed, so it was not applied."""
    return {**responses(WriteResponse, role=Role.OPERATOR, params=params, body=body), 503: ApiError}


def _not_durable(what: str, r: RequestResult) -> Response:
    g.audited = True  # the requests part audited it (accepted, then withdrawn)
    log.error("api_write_not_durable", who=g.who, what=what, status=503, event_seq=r.event_seq, message=r.message)
    return error_response(503, "audit_not_durable", f"{what}: {r.message}; try again")


def _written(what: str, r: RequestResult, detail: dict[str, Any], note: str | None = None) -> Response:
    if r.not_durable:
        return _not_durable(what, r)
    d = deps()
    g.audited = True
    snap = d.snapshot()
    log.info("api_write", who=g.who, what=what, old=r.old, new=r.new, result="accepted", event_seq=r.event_seq, **detail)
    return json_response(
        WriteResponse(
            accepted=r.accepted,
            what=what,
            old=jsonable(r.old),
            new=jsonable(r.new),
            event_seq=r.event_seq,
            requested_mode=snap.requested_mode,
            control=views.control_flags(d.cfg),
            note=note or _note(snap.state, snap.requested_mode, has_setpoint=snap.external_setpoint is not None),
        )
    )


def put_mode(body: ModeRequest) -> Response:
    r = deps().requests.request_mode(body.mode, who=g.who, via="rest")
    return _written("mode", r, {})


def set_setpoint(body: SetpointRequest) -> Response:
    d = deps()
    r = d.requests.set_external_setpoint(power_w=body.power_w, ttl_s=body.ttl_s, reason=body.reason, who=g.who, via="rest")
    if r.not_durable:
        return _not_durable("setpoint", r)
    if not r.accepted:  # the requests part audited the refusal
        g.audited = True
        held = d.refusals.allow("api_write_refused", d.clock.monotonic())
        if held is not None:
            log.warning("api_write_refused", who=g.who, what="setpoint", status=422, message=r.message, suppressed=held)
        return error_response(422, "validation_failed", f"ttl_s: {r.message}", [FieldError(field="ttl_s", reason=r.message)])
    return _written("setpoint", r, {"ttl_s": body.ttl_s, "reason": body.reason})


def delete_setpoint(query: ReleaseQuery) -> Response:
    cfg = deps().cfg
    fallback = Mode.SELF_CONSUMPTION if cfg.control.external_fallback is State.SELF_CONSUMPTION else Mode.IDLE
    r = deps().requests.release_setpoint(who=g.who, via="rest", mode=query.mode or fallback)
    return _written("release", r, {"mode": (query.mode or fallback).value})


def _refused_by_context(what: str, r: RequestResult, field: str) -> Response:
    if r.not_durable:
        return _not_durable(what, r)
    d = deps()
    g.audited = True  # the requests part audited the refusal
    held = d.refusals.allow("api_write_refused", d.clock.monotonic())
    if held is not None:
        log.warning("api_write_refused", who=g.who, what=what, status=422, message=r.message, suppressed=held)
    return error_response(422, "validation_failed", f"{field}: {r.message}", [FieldError(field=field, reason=r.message)])


def put_prices(body: PricesRequest) -> Response:
    cfg = deps().cfg
    why = push_refused(cfg.planner, cfg.tariff)
    if why is not None:
        return error_response(409, "prices_not_used", f"prices: not accepted: {why}")
    r = deps().requests.push_prices(body.to_points(), who=g.who, via="rest")
    if not r.accepted:
        return _refused_by_context("prices", r, "points" if body.points is not None else "prices_eur_per_kwh")
    return _written("prices", r, {"points": len(body.to_points())}, note="recorded; the planner re-plans with these prices at once")


def put_import_cap(body: ImportCapRequest) -> Response:
    r = deps().requests.set_import_cap(power_w=body.power_w, ttl_s=body.ttl_s, reason=body.reason, who=g.who, via="rest")
    if not r.accepted:
        return _refused_by_context("import_cap", r, "power_w")
    note = "recorded; the loop keeps grid import at or below it from its next cycle (limit 4), the planner re-plans under it"
    return _written("import_cap", r, {"ttl_s": body.ttl_s, "reason": body.reason}, note=note)


def delete_import_cap() -> Response:
    r = deps().requests.clear_import_cap(who=g.who, via="rest")
    return _written("import_cap", r, {}, note="recorded; no external import cap any more (control.max_import_w still applies)")


def setpoint_model(max_ttl_s: float) -> type[SetpointRequest]:
    ttl = SetpointRequest.model_fields["ttl_s"]
    field = Field(strict=True, gt=0, le=max_ttl_s, allow_inf_nan=False, description=ttl.description)
    return create_model("SetpointRequest", __base__=SetpointRequest, __module__=__name__, ttl_s=(float, field))


def write_blueprint(max_ttl_s: float, roles: dict[str, Role | None]) -> APIBlueprint:
    bp = APIBlueprint("v1_write", __name__, url_prefix=PREFIX)
    op = Role.OPERATOR
    body_model = setpoint_model(max_ttl_s)

    def put_setpoint(body: body_model) -> Response:  # type: ignore[valid-type]
        return set_setpoint(body)

    register(bp, roles, "put", "/mode", put_mode, role=op, answers=_answers(body=True),
             summary="Request a run mode (operator; audited)")  # fmt: skip
    register(bp, roles, "put", "/setpoint", put_setpoint, role=op, answers=_answers(body=True),
             summary="Set an external set-point with a TTL -> EXTERNAL (operator; audited)")  # fmt: skip
    register(bp, roles, "put", "/prices", put_prices, role=op, answers={**_answers(body=True), 409: ApiError},
             summary="Push spot prices to the planner: points or a day-ahead series (operator; audited)")  # fmt: skip
    register(bp, roles, "put", "/grid/import-cap", put_import_cap, role=op, answers=_answers(body=True),
             summary="Set an external import cap (dimming, e.g. §14a EnWG) with an optional TTL (operator; audited)")  # fmt: skip
    register(bp, roles, "delete", "/grid/import-cap", delete_import_cap, role=op, answers=_answers(),
             summary="Clear the external import cap (operator; audited)")  # fmt: skip
    register(bp, roles, "delete", "/setpoint", delete_setpoint, role=op, answers=_answers(params=True),
             summary="Release the external set-point and request a local mode (operator; audited)")  # fmt: skip
    return bp
