"""The Flask app factory (docs/api.md). `create_app(cfg, ctx, clock, store=None)`; no globals.

Order of checks for every request: route -> bearer token and role (401/403) -> body size (413),
content type (415) and JSON syntax (400) -> pydantic validation of query/body (422, naming the
field) -> handler. Every write to mode/setpoint, accepted or refused, lands in the audit trail
(`ctx` events, kind "audit") and the log. Handlers read one snapshot each; none holds the
context lock across I/O.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import structlog
from flask import Response, g, request
from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.info import Info
from flask_openapi3.models.tag import Tag
from flask_openapi3.openapi import OpenAPI
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from pydantic import BaseModel, Field, ValidationError, create_model
from werkzeug.exceptions import HTTPException

from api import views
from api.auth import TokenTable
from api.metrics import ApiMetrics
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
    ModeRequest,
    ReleaseQuery,
    Resolution,
    SetpointRequest,
    StatusResponse,
    WriteResponse,
)
from api.sources import ContextSource, ReadSource, SourceUnavailable, jsonable
from api.ui import ui_blueprint
from config import EMSConfig
from config.api import Role
from ems.clock import Clock
from ems.context import EMSContext, RequestResult
from ems.model import Mode, State

__all__ = ["API_VERSION", "create_app"]

API_VERSION = "1.0.0"
PREFIX = "/api/v1"
_BEARER: list[dict[str, list[str]]] = [{"bearerAuth": []}]
_BODY_METHODS = frozenset({"PUT", "POST", "PATCH"})
_WRITES = {"v1.put_mode": "mode", "v1.put_setpoint": "setpoint", "v1.delete_setpoint": "release"}
_LOG_EVERY_S = 10.0

log = structlog.get_logger("api")


def _json(model: BaseModel, status: int = 200) -> Response:
    return Response(model.model_dump_json(), status=status, mimetype="application/json")


def _error(status: int, error: str, message: str, fields: list[FieldError] | None = None) -> Response:
    return _json(ApiError(error=error, message=message, fields=fields or []), status)


def _field_name(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "body"


def _validation_error(exc: ValidationError) -> Response:
    fields = [FieldError(field=_field_name(e["loc"]), reason=str(e["msg"])) for e in exc.errors(include_url=False)]
    message = "; ".join(f"{f.field}: {f.reason}" for f in fields)
    return _error(422, "validation_failed", message, fields)


def _responses(ok: type[BaseModel] | dict[str, Any], *, role: Role | None, params: bool = False, body: bool = False) -> dict[int, Any]:
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


class _RateLimitedLog:
    """At most one line per `every_s` per event name; the lines in between are counted."""

    def __init__(self, clock: Clock, every_s: float) -> None:
        self._clock = clock
        self._every_s = every_s
        self._next: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, event: str, **kw: Any) -> None:
        now = self._clock.monotonic()
        if now < self._next.get(event, -math.inf):
            self._suppressed[event] = self._suppressed.get(event, 0) + 1
            return
        self._next[event] = now + self._every_s
        log.warning(event, suppressed=self._suppressed.pop(event, 0), **kw)


def create_app(cfg: EMSConfig, ctx: EMSContext, clock: Clock, store: ReadSource | None = None) -> OpenAPI:
    """Build the WSGI app. `store` is the persistence layer's read-only query object, if any."""
    tokens = TokenTable(cfg.api.tokens)
    source: ReadSource = store if store is not None else ContextSource(ctx, clock)
    metrics = ApiMetrics(ctx, cfg.control, clock, outbox=getattr(store, "outbox", None))
    refusals = _RateLimitedLog(clock, _LOG_EVERY_S)
    read_role = Role.VIEWER if cfg.api.protect_reads else None
    roles: dict[str, Role | None] = {}

    app = OpenAPI(
        __name__,
        info=Info(
            title="EMS controller API",
            version=API_VERSION,
            description="On-site EMS controller: status, history, mode and set-point. See docs/api.md.",
        ),
        security_schemes={"bearerAuth": {"type": "http", "scheme": "bearer", "description": "token from api.tokens"}},
        doc_ui=False,
        validation_error_status=422,
        validation_error_model=ApiError,
        validation_error_callback=_validation_error,
    )
    app.config["MAX_CONTENT_LENGTH"] = cfg.api.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    bp = APIBlueprint("v1", __name__, url_prefix=PREFIX)
    tag_read, tag_write = Tag(name="read", description="state and history"), Tag(name="write", description="operator requests (audited)")

    def route(method: str, rule: str, role: Role | None, responses: dict[int, Any], summary: str, *, bp_: Any = bp) -> Callable[[Any], Any]:
        def register(func: Any) -> Any:
            prefix = "v1." if bp_ is bp else ""
            roles[prefix + func.__name__] = role
            tags = [tag_write] if method in ("put", "delete") else [tag_read]
            decorator = getattr(bp_, method)
            return decorator(rule, responses=responses, summary=summary, tags=tags, security=_BEARER if role else None)(func)

        return register

    # ---- hooks ------------------------------------------------------------------------------
    @app.before_request
    def _before() -> Response | None:
        g.t0 = clock.monotonic()
        g.who, g.audited = "anonymous", False
        if request.method == "OPTIONS" or request.endpoint is None:
            return None
        result = tokens.check(request.headers.get("Authorization"), roles.get(request.endpoint))
        g.who = result.who
        if result.status == 401:
            resp = _error(401, "unauthorized", result.message)
            resp.headers["WWW-Authenticate"] = 'Bearer realm="ems"'
            return resp
        if result.status == 403:
            return _error(403, "forbidden", result.message)
        if request.method in _BODY_METHODS:
            return _check_body(cfg.api.max_body_bytes)
        return None

    @app.after_request
    def _after(resp: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        metrics.requests.labels(request.method, endpoint, str(resp.status_code)).inc()
        if "t0" in g:
            metrics.latency.labels(endpoint).observe(max(0.0, clock.monotonic() - g.t0))
        what = _WRITES.get(request.endpoint or "")
        if what is not None and not g.get("audited", False) and request.method != "OPTIONS":
            _audit_refused(what, resp)
        return resp

    def _audit_refused(what: str, resp: Response) -> None:
        message = ""
        if resp.is_json:
            body = resp.get_json(silent=True)
            message = str(body.get("message", "")) if isinstance(body, dict) else ""
        snap = ctx.snapshot()
        old: Any = snap.requested_mode.value if what == "mode" else (snap.external_setpoint.power_w if snap.external_setpoint else None)
        new = _requested_value(what)
        ctx.record_event(
            "audit", who=g.who, via="rest", what=what, old=old, new=new, result="refused", status=resp.status_code, message=message[:300]
        )
        ctx.count("api_writes_refused")
        refusals.warning("api_write_refused", who=g.who, what=what, status=resp.status_code, message=message[:300])

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        resp = _error(code, (exc.name or "error").lower().replace(" ", "_"), exc.description or exc.name or "")
        for k, v in exc.get_headers():
            if k.lower() != "content-type":
                resp.headers[k] = v
        return resp

    @app.errorhandler(SourceUnavailable)
    def _unavailable(exc: SourceUnavailable) -> Response:
        ctx.count("api_store_unavailable")
        refusals.warning("api_store_unavailable", path=request.path, error=str(exc)[:300])
        return _error(503, "store_unavailable", f"history is not available right now: {exc}")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        ctx.count("api_errors")
        log.exception("api_request_failed", method=request.method, path=request.path)
        return _error(500, "internal_error", f"unexpected {type(exc).__name__}; see the EMS log")

    # ---- reads ------------------------------------------------------------------------------
    @route(
        "get",
        "/health",
        None,
        {200: HealthResponse, 503: HealthResponse},
        "Health: 200 healthy, 503 not (FAULT, stale or failing worker, no cycle)",
    )
    def get_health() -> Response:
        h = views.health(ctx.snapshot(), cfg)
        return _json(h, 200 if h.healthy else 503)

    @route(
        "get",
        "/status",
        read_role,
        _responses(StatusResponse, role=read_role),
        "State, modes, measurements with ages, command, limits, faults, flags, workers",
    )
    def get_status() -> Response:
        return _json(views.status(ctx.snapshot(), cfg, wall_now_ts=clock.wall().timestamp()))

    @route(
        "get",
        "/measurements",
        read_role,
        {**_responses(MeasurementsResponse, role=read_role, params=True), 503: ApiError},
        "Measurement history (1s samples or 1m aggregates), paged",
    )
    def get_measurements(query: MeasurementsQuery) -> Response:
        now_ts = clock.wall().timestamp()
        to_ts = query.to_ts if query.to_ts is not None else now_ts
        from_ts = query.from_ts if query.from_ts is not None else max(0.0, to_ts - 3600.0)
        fields = [f.value for f in dict.fromkeys(query.fields)] if query.fields else [f.value for f in MeasurementField]
        limit = min(query.limit, cfg.api.max_page_rows)
        rows = (
            []
            if from_ts > to_ts
            else source.measurements(from_ts=from_ts, to_ts=to_ts, fields=fields, resolution=query.resolution, limit=limit)
        )
        step_s = 60.0 if query.resolution is Resolution.MINUTE else 0.001  # rows are at least this far apart
        nxt = rows[-1].ts + step_s if len(rows) >= limit else None
        return _json(
            MeasurementsResponse(
                source=source.name,
                resolution=query.resolution,
                fields=fields,
                from_ts=from_ts,
                to_ts=to_ts,
                rows=rows,
                next_from_ts=nxt,
            )
        )

    @route(
        "get",
        "/events",
        read_role,
        {**_responses(EventsResponse, role=read_role, params=True), 503: ApiError},
        "Events: state changes, faults, audit; filter by kind and time, paged",
    )
    def get_events(query: EventsQuery) -> Response:
        limit = min(query.limit, cfg.api.max_page_rows)
        empty = query.from_ts is not None and query.to_ts is not None and query.from_ts > query.to_ts
        events = (
            []
            if empty
            else source.events(kinds=query.kind, from_ts=query.from_ts, to_ts=query.to_ts, after_seq=query.after_seq, limit=limit)
        )
        full = len(events) >= limit
        return _json(
            EventsResponse(
                source=source.name,
                events=events,
                next_after_seq=events[-1].seq if full else None,
            )
        )

    @route(
        "get", "/mode", read_role, _responses(ModeInfo, role=read_role), "Requested and effective mode, external set-point, control flags"
    )
    def get_mode() -> Response:
        return _json(views.mode_info(ctx.snapshot(), cfg))

    @route("get", "/devices", read_role, _responses(DevicesResponse, role=read_role), "Each source: protocol, address, map, last seen")
    def get_devices() -> Response:
        return _json(DevicesResponse(devices=views.devices(ctx.snapshot(), cfg, jsonable)))

    @route("get", "/config", Role.ADMIN, _responses(ConfigResponse, role=Role.ADMIN), "Effective config, secrets redacted (admin)")
    def get_config() -> Response:
        data, redacted = views.redacted_config(cfg)
        return _json(ConfigResponse(config=data, redacted=redacted))

    # ---- writes -----------------------------------------------------------------------------
    def _written(what: str, r: RequestResult, detail: dict[str, Any]) -> Response:
        g.audited = True
        snap = ctx.snapshot()
        log.info("api_write", who=g.who, what=what, old=r.old, new=r.new, result="accepted", event_seq=r.event_seq, **detail)
        return _json(
            WriteResponse(
                accepted=r.accepted,
                what=what,
                old=jsonable(r.old),
                new=jsonable(r.new),
                event_seq=r.event_seq,
                requested_mode=snap.requested_mode,
                control=views.control_flags(cfg),
                note=_note(snap.state, snap.requested_mode),
            )
        )

    def _note(state: State, mode: Mode) -> str:
        c = cfg.control
        if not c.enabled:
            gate = "control.enabled is false"
        elif c.dry_run:
            gate = "control.dry_run is true"
        else:
            gate = ""
        if gate:
            return f"recorded; {gate}, so the controller computes with it but the inverter still gets 0 W"
        if state is State.FAULT:
            return "recorded; the state is FAULT, so the inverter gets 0 W until every fault cause has cleared"
        return f"recorded; the controller applies mode {mode.value} at its next cycle, inside every limit"

    @route(
        "put", "/mode", Role.OPERATOR, _responses(WriteResponse, role=Role.OPERATOR, body=True), "Request a run mode (operator; audited)"
    )
    def put_mode(body: ModeRequest) -> Response:
        r = ctx.request_mode(body.mode, who=g.who, via="rest")
        return _written("mode", r, {})

    def put_setpoint(body: SetpointRequest) -> Response:
        r = ctx.set_external_setpoint(power_w=body.power_w, ttl_s=body.ttl_s, reason=body.reason, who=g.who, via="rest")
        if not r.accepted:  # the context audited the refusal
            g.audited = True
            refusals.warning("api_write_refused", who=g.who, what="setpoint", status=422, message=r.message)
            return _error(422, "validation_failed", f"ttl_s: {r.message}", [FieldError(field="ttl_s", reason=r.message)])
        return _written("setpoint", r, {"ttl_s": body.ttl_s, "reason": body.reason})

    # the TTL bound comes from the config, so the document states the real limit
    put_setpoint.__annotations__ = {"body": _setpoint_model(cfg.control.external_max_ttl_s), "return": Response}
    route(
        "put",
        "/setpoint",
        Role.OPERATOR,
        _responses(WriteResponse, role=Role.OPERATOR, body=True),
        "Set an external set-point with a TTL -> EXTERNAL (operator; audited)",
    )(put_setpoint)

    @route(
        "delete",
        "/setpoint",
        Role.OPERATOR,
        _responses(WriteResponse, role=Role.OPERATOR, params=True),
        "Release the external set-point and request a local mode (operator; audited)",
    )
    def delete_setpoint(query: ReleaseQuery) -> Response:
        fallback = Mode.SELF_CONSUMPTION if cfg.control.external_fallback is State.SELF_CONSUMPTION else Mode.IDLE
        r = ctx.release_setpoint(who=g.who, via="rest", mode=query.mode or fallback)
        return _written("release", r, {"mode": (query.mode or fallback).value})

    app.register_api(bp)

    # ---- outside /api/v1 ---------------------------------------------------------------------
    @route(
        "get",
        "/metrics",
        read_role,
        {
            200: {"description": "Prometheus text exposition", "content": {"text/plain": {"schema": {"type": "string"}}}},
            **({401: ApiError, 403: ApiError} if read_role else {}),
        },
        "Prometheus metrics",
        bp_=app,
    )
    def metrics_text() -> Response:
        return Response(generate_latest(metrics.registry), status=200, content_type=CONTENT_TYPE_PLAIN_0_0_4)

    @app.get(f"{PREFIX}/openapi.json", doc_ui=False)
    def openapi_json() -> Response:
        return Response(json.dumps(app.api_doc), mimetype="application/json")

    roles["openapi_json"] = None
    _tidy_spec(app.api_doc)  # generated once here and cached by flask-openapi3
    app.register_blueprint(ui_blueprint())  # dashboard at /ui/ (api/ui, docs/ui.md): static files, public
    return app


def _tidy_spec(spec: dict[str, Any]) -> None:
    """flask-openapi3 adds a 422 to every operation; drop it where nothing is validated (no parameters, no body)."""
    for ops in spec.get("paths", {}).values():
        for op in ops.values():
            if not op.get("parameters") and "requestBody" not in op:
                op.get("responses", {}).pop("422", None)


def _setpoint_model(max_ttl_s: float) -> type[SetpointRequest]:
    ttl = SetpointRequest.model_fields["ttl_s"]
    field = Field(strict=True, gt=0, le=max_ttl_s, allow_inf_nan=False, description=ttl.description)
    return create_model("SetpointRequest", __base__=SetpointRequest, __module__=__name__, ttl_s=(float, field))


def _check_body(max_bytes: int) -> Response | None:
    length = request.content_length
    if length is not None and length > max_bytes:
        return _error(413, "body_too_large", f"body: {length} bytes is more than api.max_body_bytes ({max_bytes})")
    if not request.is_json:
        return _error(415, "unsupported_media_type", f"body: Content-Type must be application/json (got {request.mimetype or 'none'})")
    try:
        data = request.get_data(cache=True)
    except HTTPException as exc:  # chunked body over the cap
        return _error(exc.code or 413, "body_too_large", f"body: more than api.max_body_bytes ({max_bytes})")
    try:
        obj = request.json_module.loads(data) if data else None
    except ValueError as exc:
        return _error(400, "bad_json", f"body: invalid JSON ({exc})")
    if not isinstance(obj, dict):
        return _error(400, "bad_json", f"body: must be a JSON object (got {type(obj).__name__ if obj is not None else 'nothing'})")
    return None


def _requested_value(what: str) -> Any:
    """What a refused write asked for, as far as the body tells (for the audit row)."""
    if what == "release":
        return request.args.get("mode")
    try:
        body = request.get_json(silent=True) if request.is_json else None
    except HTTPException:  # over the size cap: nothing to show
        return None
    if not isinstance(body, dict):
        return None
    value = body.get("mode") if what == "mode" else body.get("power_w")
    return jsonable(value) if isinstance(value, str | int | float | bool) or value is None else str(value)[:100]
