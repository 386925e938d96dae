"""The Flask app factory (docs/api.md): `create_app(cfg, ...)` wires the blueprints; no globals.

Order of checks for every request: route -> bearer token and role (401/403) -> body size (413),
content type (415) and JSON syntax (400) -> pydantic validation of query/body (422, naming the
field) -> handler (api/routes.py reads, api/writes.py writes). Every write (mode, set-point,
prices, import cap), accepted or refused, lands in the audit trail (the requests part, event kind "audit") and the log.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import structlog
from flask import Response, g, request
from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.info import Info
from flask_openapi3.openapi import OpenAPI
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from api.auth import TokenTable
from api.commission import COMMISSION_WRITES, commission_blueprint
from api.deps import EXTENSION, ApiDeps, deps
from api.export import export_blueprint
from api.metrics import ApiMetrics
from api.models import ApiError, FieldError
from api.routes import PREFIX, error_response, read_blueprint, register
from api.sources import ContextSource, ReadSource, SourceUnavailable
from api.stream import EXTENSION as STREAM_EXTENSION
from api.stream import StreamHub, get_stream
from api.ui import ui_blueprint
from api.writes import WRITES, write_blueprint
from config import EMSConfig
from config.api import Role
from ems.clock import Clock
from ems.context import EMSContext
from ems.jsonable import jsonable
from interfaces.logs import LogGate

__all__ = ["API_VERSION", "create_app"]

API_VERSION = "1.0.0"
_BODY_METHODS = frozenset({"PUT", "POST", "PATCH"})
_LOG_EVERY_S = 10.0

log = structlog.get_logger("api")


def _validation_error(exc: ValidationError) -> Response:
    fields = [FieldError(field=".".join(str(p) for p in e["loc"]) or "body", reason=str(e["msg"])) for e in exc.errors(include_url=False)]
    return error_response(422, "validation_failed", "; ".join(f"{f.field}: {f.reason}" for f in fields), fields)


def create_app(cfg: EMSConfig, ctx: EMSContext, clock: Clock, store: ReadSource | None = None) -> OpenAPI:
    """Build the WSGI app from the context parts it reads. `store`: the persistence layer's query object, if any."""
    source: ReadSource = store if store is not None else ContextSource(ctx.snapshot, ctx.events, clock)
    outbox: Callable[[], Any] | None = getattr(store, "outbox", None)
    roles: dict[str, Role | None] = {}
    read_role = Role.VIEWER if cfg.api.protect_reads else None
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
    _register_apis(
        app,
        read_blueprint(read_role, roles),
        write_blueprint(cfg.control.external_max_ttl_s, roles),
        export_blueprint(read_role, roles),
        commission_blueprint(cfg, ctx, read_role, roles),
    )
    register(app, roles, "get", "/metrics", metrics_text, role=read_role, summary="Prometheus metrics",
             answers={200: {"description": "Prometheus text exposition", "content": {"text/plain": {"schema": {"type": "string"}}}},
                      **({401: ApiError, 403: ApiError} if read_role else {})})  # fmt: skip
    register(app, roles, "get", f"{PREFIX}/stream", get_stream, role=read_role, summary="Live push: Server-Sent Events of status changes and events",
             answers={200: {"description": "text/event-stream: `status` and `event` events, heartbeat comments", "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                      503: ApiError, **({401: ApiError, 403: ApiError} if read_role else {})})  # fmt: skip
    app.extensions[STREAM_EXTENSION] = StreamHub(cfg, ctx.events)
    app.get(f"{PREFIX}/openapi.json", doc_ui=False)(openapi_json)
    roles["openapi_json"] = None
    app.before_request(_before)
    app.after_request(_after)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(SourceUnavailable, _unavailable)
    app.register_error_handler(Exception, _unexpected)
    app.extensions[EXTENSION] = ApiDeps(
        cfg=cfg,
        snapshot=ctx.snapshot,
        requests=ctx.requests,
        counters=ctx.counters,
        clock=clock,
        source=source,
        metrics=ApiMetrics(ctx.snapshot, ctx.counters, cfg.control, clock, outbox=outbox),
        tokens=TokenTable(cfg.api.tokens),
        roles=roles,
        refusals=LogGate(_LOG_EVERY_S),
    )
    _tidy_spec(app.api_doc)  # generated once here and cached by flask-openapi3
    app.register_blueprint(ui_blueprint())  # dashboard at /ui/ (api/ui, docs/ui.md): static files, public
    return app


# ---- outside the blueprints -----------------------------------------------------------------
def metrics_text() -> Response:
    return Response(generate_latest(deps().metrics.registry), status=200, content_type=CONTENT_TYPE_PLAIN_0_0_4)


def openapi_json() -> Response:
    from flask import current_app

    return Response(json.dumps(current_app.api_doc), mimetype="application/json")  # type: ignore[attr-defined]


# ---- hooks ------------------------------------------------------------------------------------
def _before() -> Response | None:
    d = deps()
    g.t0 = d.clock.monotonic()
    g.who, g.audited = "anonymous", False
    if request.method == "OPTIONS" or request.endpoint is None:
        return None
    result = d.tokens.check(request.headers.get("Authorization"), d.roles.get(request.endpoint))
    g.who = result.who
    if result.status == 401:
        resp = error_response(401, "unauthorized", result.message)
        resp.headers["WWW-Authenticate"] = 'Bearer realm="ems"'
        return resp
    if result.status == 403:
        return error_response(403, "forbidden", result.message)
    if request.method in _BODY_METHODS:
        return _check_body(d.cfg.api.max_body_bytes)
    return None


def _after(resp: Response) -> Response:
    d = deps()
    endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
    d.metrics.requests.observe(request.method, endpoint, str(resp.status_code), max(0.0, d.clock.monotonic() - g.t0) if "t0" in g else None)
    what = WRITES.get(request.endpoint or "") or COMMISSION_WRITES.get(request.endpoint or "")
    if what is not None and not g.get("audited", False) and request.method != "OPTIONS":
        _audit_refused(d, what, resp)
    return resp


def _audit_refused(d: ApiDeps, what: str, resp: Response) -> None:
    message = ""
    if resp.is_json:
        body = resp.get_json(silent=True)
        message = str(body.get("message", "")) if isinstance(body, dict) else ""
    mode, setpoint = d.requests.snapshot()
    cap = d.requests.import_cap()
    old: Any = mode.value if what == "mode" else (setpoint.power_w if setpoint else None)
    if what == "import_cap":
        old = None if cap is None else cap.power_w
    elif what == "prices":
        old = None
    d.requests.audit_refused(what, who=g.who, via="rest", old=old, new=_requested_value(what), message=message, status=resp.status_code)
    d.counters.count("api_writes_refused")
    held = d.refusals.allow("api_write_refused", d.clock.monotonic())
    if held is not None:
        log.warning("api_write_refused", who=g.who, what=what, status=resp.status_code, message=message[:300], suppressed=held)


def _http_error(exc: HTTPException) -> Response:
    code = exc.code or 500
    resp = error_response(code, (exc.name or "error").lower().replace(" ", "_"), exc.description or exc.name or "")
    for k, v in exc.get_headers():
        if k.lower() != "content-type":
            resp.headers[k] = v
    return resp


def _unavailable(exc: SourceUnavailable) -> Response:
    d = deps()
    d.counters.count("api_store_unavailable")
    held = d.refusals.allow("api_store_unavailable", d.clock.monotonic())
    if held is not None:
        log.warning("api_store_unavailable", path=request.path, error=str(exc)[:300], suppressed=held)
    return error_response(503, "store_unavailable", f"history is not available right now: {exc}")


def _unexpected(exc: Exception) -> Response:
    deps().counters.count("api_errors")
    log.exception("api_request_failed", method=request.method, path=request.path)
    return error_response(500, "internal_error", f"unexpected {type(exc).__name__}; see the EMS log")


def _register_apis(app: OpenAPI, *blueprints: APIBlueprint) -> None:
    """Register each blueprint, merging the operations of a path that two of them serve (GET /mode
    reads, PUT /mode writes): flask-openapi3 would keep only the last blueprint's path item."""
    for bp in blueprints:
        for uri, item in bp.paths.items():
            old = app.paths.get(uri)
            if old is not None:
                ops = {name: op for name in type(item).model_fields if (op := getattr(item, name)) is not None}
                bp.paths[uri] = old.model_copy(update=ops)
        app.register_api(bp)


def _tidy_spec(spec: dict[str, Any]) -> None:
    """flask-openapi3 adds a 422 to every operation; drop it where nothing is validated (no parameters, no body)."""
    for ops in spec.get("paths", {}).values():
        for op in ops.values():
            if not op.get("parameters") and "requestBody" not in op:
                op.get("responses", {}).pop("422", None)


def _check_body(max_bytes: int) -> Response | None:
    length = request.content_length
    if length is not None and length > max_bytes:
        return error_response(413, "body_too_large", f"body: {length} bytes is more than api.max_body_bytes ({max_bytes})")
    if not request.is_json:
        return error_response(
            415, "unsupported_media_type", f"body: Content-Type must be application/json (got {request.mimetype or 'none'})"
        )
    try:
        data = request.get_data(cache=True)
    except HTTPException as exc:  # chunked body over the cap
        return error_response(exc.code or 413, "body_too_large", f"body: more than api.max_body_bytes ({max_bytes})")
    try:
        obj = request.json_module.loads(data) if data else None
    except ValueError as exc:
        return error_response(400, "bad_json", f"body: invalid JSON ({exc})")
    if not isinstance(obj, dict):
        return error_response(400, "bad_json", f"body: must be a JSON object (got {type(obj).__name__ if obj is not None else 'nothing'})")
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
    if what == "prices":
        n = body.get("points") or body.get("prices_eur_per_kwh")
        return {"points": len(n)} if isinstance(n, list) else None
    value = body.get("mode") if what == "mode" else body.get("power_w")
    return jsonable(value) if isinstance(value, str | int | float | bool) or value is None else str(value)[:100]
