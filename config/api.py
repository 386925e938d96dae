"""`api:` section: REST API served by waitress (issue 7, docs/api.md)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, model_validator

from config.common import SecretRef, Section

__all__ = ["ApiConfig", "ApiToken", "Role"]


class Role(StrEnum):
    """Token roles, weakest first: each role may do what the weaker ones may."""

    VIEWER = "viewer"  # protected reads (when `protect_reads` is true)
    OPERATOR = "operator"  # + mode and set-point writes
    ADMIN = "admin"  # + everything else (e.g. the effective config)

    @property
    def rank(self) -> int:
        return list(Role).index(self)


class ApiToken(Section):
    name: str = Field(
        "", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$", description="who the token is: recorded as `who` in the audit trail"
    )
    role: Role = Field(Role.VIEWER, description="viewer | operator | admin")
    secret: SecretRef | None = Field(None, description="the bearer token itself: {env: NAME} or {file: PATH}, never inline")

    @model_validator(mode="after")
    def _has_secret(self) -> ApiToken:
        if self.secret is None:
            raise ValueError("secret: required ({env: NAME} or {file: PATH})")
        return self


class ApiConfig(Section):
    enabled: bool = Field(False, description="start the REST API server")
    host: str = Field(
        "127.0.0.1",
        min_length=1,
        max_length=255,
        description="address to bind (loopback by default; put a TLS proxy in front for remote use)",
    )
    port: int = Field(8080, ge=0, le=65535, description="TCP port (0 = any free port)")
    threads: int = Field(4, ge=1, le=64, description="waitress worker threads (/api/v1/health has a thread of its own)")
    connection_limit: int = Field(
        1000,
        ge=10,
        le=100_000,
        description="most open client connections; a new one beyond closes the longest-idle one (the API cannot be locked out)",
    )
    idle_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="a connection with no request in service that sends nothing for this long is closed, s"
    )
    request_timeout_s: float = Field(
        10.0, gt=0, le=600, description="a request (headers and body) must arrive completely within this, however slowly it trickles, s"
    )
    max_body_bytes: int = Field(16384, ge=256, le=10_000_000, description="largest accepted request body; larger gets 413, bytes")
    protect_reads: bool = Field(False, description="when true, reads (except health and the OpenAPI document) need a viewer token too")
    tokens: tuple[ApiToken, ...] = Field((), description="bearer tokens, each with a name, a role and a secret reference")
    max_page_rows: int = Field(1000, ge=10, le=100_000, description="largest page of measurements or events one request returns")
    health_max_error_streak: int = Field(
        3,
        ge=1,
        le=1000,
        description="a device with this many consecutive failed units of work is failing: a required one (the inverter, the owner of a required reading) makes /health return 503, any other is named degraded (200)",
    )
    controller_stale_s: float = Field(5.0, gt=0, le=600, description="no control cycle for this long makes /health return 503, s")
    stream_max_clients: int = Field(
        2,
        ge=0,
        le=63,
        description="live streams (GET /api/v1/stream) served at once; each holds a waitress worker thread while open, so at most threads - 1 (at least one thread stays for other requests); more get 503 with Retry-After",
    )
    stream_max_s: float = Field(
        300.0,
        gt=0,
        le=86400,
        description="a stream ends after this long and the client reconnects (Last-Event-ID resumes it): no thread is held for ever, s",
    )
    stream_heartbeat_s: float = Field(
        15.0,
        gt=0,
        le=60,
        description="a comment line is sent when nothing else was for this long: keep it well below waitress's channel timeout, s",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> ApiConfig:
        names = [t.name for t in self.tokens]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"tokens: token names must be unique (repeated: {', '.join(dupes)})")
        return self
