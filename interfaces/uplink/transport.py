"""How a signed batch leaves the site: the transport seam of the uplink sender (docs/uplink.md).

A transport sends ONE outbox row and says what became of it (`Outcome`): delivered, retry (the same
row again after the backoff), refused (parked) or conflict (parked, counted). The sender owns the
order, the backoff and the delivery marks; the outbox stays the only queue. `HttpsTransport`
POSTs to `uplink.url` (docs/persistence.md) and fetches the receiver's queued commands;
`interfaces.uplink.mqtt_transport.MqttTransport` publishes to a broker.
"""

from __future__ import annotations

import email.utils
import json
import os
import ssl
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol
from urllib.parse import urljoin

import requests

from config.uplink import UplinkConfig
from ems.clock import Clock
from interfaces.uplink.signing import BATCH_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

__all__ = ["HttpsTransport", "Outcome", "TransientError", "Transport", "commands_url", "parse_retry_after", "system_cas"]


class TransientError(Exception):
    """A failure worth retrying: network/TLS error, 5xx, 408, 429."""

    def __init__(self, reason: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: Literal["delivered", "retry", "refused", "conflict"]
    reason: str = ""  # retry: http_503, ConnectionError, puback_timeout, ...
    detail: str = ""
    status: int | None = None  # the HTTP status or the MQTT reason code
    retry_after_s: float | None = None
    commands: tuple[object, ...] = ()  # command envelopes the answer carried (HTTPS)


class Transport(Protocol):
    kind: str  # "https" | "mqtt": the uplink device's kind
    where: str  # its address, for the health view
    status_key: str  # the event field its status goes in (http_status, mqtt_reason_code)

    def send(self, batch_id: str, body: bytes) -> Outcome: ...

    def fetch_commands(self) -> tuple[object, ...]:
        """The receiver's queued command envelopes; raises TransientError."""
        ...

    def service(self) -> None:
        """Between sends, at least once a second (keep-alives)."""
        ...

    def close(self) -> None: ...


def system_cas() -> str | bool:
    """The operating system's CA bundle (what OpenSSL uses), not requests' bundled certifi list;
    True (certifi) only when the system has none."""
    paths = ssl.get_default_verify_paths()
    for f in (paths.cafile, paths.openssl_cafile):
        if f and os.path.isfile(f):
            return f
    if paths.capath and os.path.isdir(paths.capath):
        return paths.capath
    return True


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Retry-After as delay-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    v = value.strip()
    if v.isdigit():
        return float(v)
    try:
        when = email.utils.parsedate_to_datetime(v)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - now).total_seconds())


def commands_url(cfg: UplinkConfig, site_id: str) -> str:
    """`uplink.commands.url`, or the batch URL's directory + sites/<site>/commands."""
    return cfg.commands.url or urljoin(cfg.url, f"sites/{site_id}/commands")


def _commands_in(text: str) -> tuple[object, ...]:
    try:
        data = json.loads(text)
    except ValueError:
        return ()
    cmds = data.get("commands") if isinstance(data, dict) else None
    return tuple(cmds) if isinstance(cmds, list) else ()


class HttpsTransport:
    kind = "https"
    status_key = "http_status"

    def __init__(self, cfg: UplinkConfig, *, site_id: str, clock: Clock, session: requests.Session | None = None) -> None:
        if cfg.token is None or cfg.token.value is None or cfg.hmac_key is None or cfg.hmac_key.value is None:
            raise ValueError("uplink.token and uplink.hmac_key must be resolved secrets")
        self.cfg = cfg
        self.where = str(cfg.url)
        self._site_id = site_id
        self._clock = clock
        self._token = cfg.token.value
        self._key = cfg.hmac_key.value.encode()
        self._verify: str | bool = str(cfg.ca_file) if cfg.ca_file is not None else system_cas()
        self._session = session or requests.Session()

    def _headers(self, body: bytes) -> dict[str, str]:
        ts = str(int(self._clock.wall().timestamp()))
        return {
            "Authorization": f"Bearer {self._token}",
            TIMESTAMP_HEADER: ts,
            SIGNATURE_HEADER: sign(self._key, ts, body),
            "User-Agent": "ems-uplink/1",
        }

    def send(self, batch_id: str, body: bytes) -> Outcome:
        headers = {**self._headers(body), "Content-Type": "application/json", "Content-Encoding": "gzip", BATCH_HEADER: batch_id}
        try:
            resp = self._session.post(
                self.cfg.url, data=body, headers=headers, timeout=self.cfg.timeout_s, verify=self._verify, allow_redirects=False
            )
        except requests.RequestException as exc:
            return Outcome("retry", reason=type(exc).__name__, detail=str(exc))
        with resp:
            status, text = resp.status_code, resp.text
            retry_after = parse_retry_after(resp.headers.get("Retry-After"), now=self._clock.wall())
        if 200 <= status < 300:
            return Outcome("delivered", status=status, commands=_commands_in(text))
        if status in (408, 429) or status >= 500:
            return Outcome("retry", reason=f"http_{status}", detail=text[:200], status=status, retry_after_s=retry_after)
        return Outcome("conflict" if status == 409 else "refused", detail=text[:200], status=status)

    def fetch_commands(self) -> tuple[object, ...]:
        """GET the site's queued commands (signed like a batch, over an empty body)."""
        url = commands_url(self.cfg, self._site_id)
        try:
            resp = self._session.get(
                url, headers=self._headers(b""), timeout=self.cfg.timeout_s, verify=self._verify, allow_redirects=False
            )
        except requests.RequestException as exc:
            raise TransientError(type(exc).__name__) from exc
        with resp:
            if resp.status_code != 200:
                raise TransientError(f"http_{resp.status_code}")
            return _commands_in(resp.text)

    def service(self) -> None:
        return None

    def close(self) -> None:
        self._session.close()
