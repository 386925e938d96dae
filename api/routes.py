"""Read endpoints under /api/v1 (docs/api.md): plain handler functions and the blueprint that holds them.

Each handler reads one snapshot (or one page from the read source) and answers with the response
models of api/models.py; none holds a lock across I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Response
from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.tag import Tag
from pydantic import BaseModel

from api import views
from api.deps import deps
from api.models import (
    ApiError,
    ConfigResponse,
    DevicesResponse,
    EventsQuery,
    EventsResponse,
    FieldError,
    HealthResponse,
    MeasurementField,
    MeasurementsQuery,
    MeasurementsResponse,
    ModeInfo,
    PlanResponse,
    Resolution,
    StatusResponse,
)
from config.api import Role

__all__ = ["BEARER", "PREFIX", "error_response", "json_response", "read_blueprint", "register", "responses"]

PREFIX = "/api/v1"
BEARER: list[dict[str, list[str]]] = [{"bearerAuth": []}]
TAG_READ = Tag(name="read", description="state and history")
TAG_WRITE = Tag(name="write", description="operator requests (audited)")


def json_response(model: BaseModel, status: int = 200) -> Response:
    return Response(model.model_dump_json(), status=status, mimetype="application/json")


def error_response(status: int, error: str, message: str, fields: list[FieldError] | None = None) -> Response:
    return json_response(ApiError(error=error, message=message, fields=fields or []), status)


def responses(ok: type[BaseModel] | dict[str, Any], *, role: Role | None, params: bool = False, body: bool = False) -> dict[int, Any]:
    """The documented responses of an operation: what it returns, plus the errors its checks can give."""
    out: dict[int, Any] = {200: ok}
    if params or body:
        out[422] = ApiError
    if role is not None:
        out[401] = ApiError
        out[403] = ApiError
    if body:
        out[400] = ApiError
        out[413] = ApiError
        out[415] = ApiError
    return out


def register(
    bp: Any,
    roles: dict[str, Role | None],
    method: str,
    rule: str,
    func: Callable[..., Response],
    *,
    role: Role | None,
    answers: dict[int, Any],
    summary: str,
) -> None:
    """Add `func` to `bp` at `rule` and note the role its endpoint needs."""
    roles[f"{bp.name}.{func.__name__}" if isinstance(bp, APIBlueprint) else func.__name__] = role
    tags = [TAG_WRITE] if method in ("put", "delete", "post") else [TAG_READ]
    getattr(bp, method)(rule, responses=answers, summary=summary, tags=tags, security=BEARER if role else None)(func)


# ---- handlers -------------------------------------------------------------------------------
def get_health() -> Response:
    d = deps()
    h = views.health(d.snapshot(), d.cfg)
    return json_response(h, 200 if h.healthy else 503)


def get_status() -> Response:
    d = deps()
    return json_response(views.status(d.snapshot(), d.cfg, wall_now_ts=d.clock.wall().timestamp()))


def get_measurements(query: MeasurementsQuery) -> Response:
    d = deps()
    now_ts = d.clock.wall().timestamp()
    to_ts = query.to_ts if query.to_ts is not None else now_ts
    from_ts = query.from_ts if query.from_ts is not None else max(0.0, to_ts - 3600.0)
    fields = [f.value for f in dict.fromkeys(query.fields)] if query.fields else [f.value for f in MeasurementField]
    limit = min(query.limit, d.cfg.api.max_page_rows)
    rows = (
        []
        if from_ts > to_ts
        else d.source.measurements(from_ts=from_ts, to_ts=to_ts, fields=fields, resolution=query.resolution, limit=limit)
    )
    step_s = 60.0 if query.resolution is Resolution.MINUTE else 0.001  # rows are at least this far apart
    nxt = rows[-1].ts + step_s if len(rows) >= limit else None
    return json_response(
        MeasurementsResponse(
            source=d.source.name, resolution=query.resolution, fields=fields, from_ts=from_ts, to_ts=to_ts, rows=rows, next_from_ts=nxt
        )
    )


def get_events(query: EventsQuery) -> Response:
    d = deps()
    limit = min(query.limit, d.cfg.api.max_page_rows)
    empty = query.from_ts is not None and query.to_ts is not None and query.from_ts > query.to_ts
    events = (
        [] if empty else d.source.events(kinds=query.kind, from_ts=query.from_ts, to_ts=query.to_ts, after_seq=query.after_seq, limit=limit)
    )
    full = len(events) >= limit
    return json_response(EventsResponse(source=d.source.name, events=events, next_after_seq=events[-1].seq if full else None))


def get_mode() -> Response:
    d = deps()
    return json_response(views.mode_info(d.snapshot(), d.cfg))


def get_devices() -> Response:
    d = deps()
    return json_response(DevicesResponse(devices=views.devices(d.snapshot(), d.cfg)))


def get_plan() -> Response:
    from api.plan_view import plan_response

    d = deps()
    return json_response(plan_response(d.snapshot(), d.cfg, wall_now_ts=d.clock.wall().timestamp()))


def get_config() -> Response:
    data, redacted = views.redacted_config(deps().cfg)
    return json_response(ConfigResponse(config=data, redacted=redacted))


def read_blueprint(read_role: Role | None, roles: dict[str, Role | None]) -> APIBlueprint:
    """The read endpoints; `read_role` is None when reads are public (api.protect_reads false)."""
    bp = APIBlueprint("v1_read", __name__, url_prefix=PREFIX)
    r = read_role
    register(bp, roles, "get", "/health", get_health, role=None, answers={200: HealthResponse, 503: HealthResponse},
             summary="Health: 200 healthy (maybe degraded), 503 not (FAULT, a required device failing, no cycle)")  # fmt: skip
    register(bp, roles, "get", "/status", get_status, role=r, answers=responses(StatusResponse, role=r),
             summary="State, modes, measurements with ages, command, limits, faults, flags, devices, threads")  # fmt: skip
    register(bp, roles, "get", "/measurements", get_measurements, role=r,
             answers={**responses(MeasurementsResponse, role=r, params=True), 503: ApiError},
             summary="Measurement history (1s samples or 1m aggregates), paged")  # fmt: skip
    register(bp, roles, "get", "/events", get_events, role=r, answers={**responses(EventsResponse, role=r, params=True), 503: ApiError},
             summary="Events: state changes, faults, audit; filter by kind and time, paged")  # fmt: skip
    register(bp, roles, "get", "/mode", get_mode, role=r, answers=responses(ModeInfo, role=r),
             summary="Requested and effective mode, external set-point, control flags")  # fmt: skip
    register(bp, roles, "get", "/devices", get_devices, role=r, answers=responses(DevicesResponse, role=r),
             summary="Each device: protocol, address, map, health, readings it owns")  # fmt: skip
    register(bp, roles, "get", "/plan", get_plan, role=r, answers=responses(PlanResponse, role=r),
             summary="The planner's plan: slots with prices, planned SOC and power, mode, grid target; costs; status; the slot followed")  # fmt: skip
    register(bp, roles, "get", "/config", get_config, role=Role.ADMIN, answers=responses(ConfigResponse, role=Role.ADMIN),
             summary="Effective config, secrets redacted (admin)")  # fmt: skip
    return bp
