"""`uplink:` section: 5-minute batches posted over HTTPS (DESIGN.md §6, docs/persistence.md)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from config.common import SecretRef, Section

__all__ = ["UplinkConfig"]


class UplinkConfig(Section):
    enabled: bool = Field(False, description="build 5-minute batches into the outbox and start the sender (needs store.enabled)")
    url: str = Field("", max_length=2000, description="receiver endpoint, https://host[:port]/path; batches are POSTed here")
    ca_file: Path | None = Field(
        None, description="PEM CA bundle to verify the receiver with (null = the system CAs, e.g. /etc/ssl/certs/ca-certificates.crt)"
    )
    token: SecretRef | None = Field(None, description="bearer token sent as `Authorization: Bearer`: {env: NAME} or {file: PATH}")
    hmac_key: SecretRef | None = Field(None, description="key of the X-EMS-Signature HMAC-SHA256: {env: NAME} or {file: PATH}")
    timeout_s: float = Field(
        5.0, gt=0, le=60, description="connect and read timeout of one POST; keep it well under control.worker_stall_s, s"
    )
    backoff_initial_s: float = Field(2.0, gt=0, le=3600, description="first retry delay after a network error, 5xx, 408 or 429, s")
    backoff_max_s: float = Field(600.0, gt=0, le=86400, description="longest retry delay (exponential backoff stops growing here), s")
    backoff_jitter_s: float = Field(2.0, ge=0, le=3600, description="random extra delay added to each retry (0..this), s")
    retry_after_max_s: float = Field(3600.0, gt=0, le=86400, description="a receiver's Retry-After is honoured up to this, s")
    idle_poll_s: float = Field(
        5.0, gt=0, le=600, description="with nothing to send, look at the outbox this often (new batches also wake the sender), s"
    )

    @model_validator(mode="after")
    def _complete(self) -> UplinkConfig:
        if not self.enabled:
            return self
        if not self.url.startswith("https://"):
            raise ValueError(f"url: must be an https:// URL when uplink.enabled (got {self.url!r})")
        if self.token is None:
            raise ValueError("token: required when uplink.enabled ({env: NAME} or {file: PATH})")
        if self.hmac_key is None:
            raise ValueError("hmac_key: required when uplink.enabled ({env: NAME} or {file: PATH})")
        return self
