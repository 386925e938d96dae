"""REST API test helpers: a real waitress server on a random loopback port, tokens per role."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import requests

from api.server import ApiServer
from api.sources import ReadSource
from config import EMSConfig, parse_config
from ems.clock import Clock
from ems.context import EMSContext

TOKENS = {"viewer": "tok-viewer-7f3a", "operator": "tok-operator-91c2", "admin": "tok-admin-4e8d"}
TOKEN_ENV = {f"EMS_TEST_TOKEN_{role.upper()}": secret for role, secret in TOKENS.items()}


def api_config(api: Mapping[str, Any] | None = None, control: Mapping[str, Any] | None = None, **sections: Any) -> EMSConfig:
    """Config with the API on port 0 and one token per role (names viewer-1, operator-1, admin-1); more sections as keywords."""
    section: dict[str, Any] = {
        "enabled": True,
        "port": 0,
        "threads": 2,
        "tokens": [{"name": f"{role}-1", "role": role, "secret": {"env": f"EMS_TEST_TOKEN_{role.upper()}"}} for role in TOKENS],
    }
    section.update(api or {})
    return parse_config({"api": section, "control": dict(control or {}), **sections}, TOKEN_ENV)


def bearer(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


@dataclass
class RunningApi:
    server: ApiServer
    url: str
    session: requests.Session

    def get(self, path: str, role: str | None = None, **kw: Any) -> requests.Response:
        headers = {**(bearer(role) if role else {}), **kw.pop("headers", {})}
        return self.session.get(self.url + path, headers=headers, timeout=10, **kw)

    def put(self, path: str, role: str | None = None, **kw: Any) -> requests.Response:
        headers = {**(bearer(role) if role else {}), **kw.pop("headers", {})}
        return self.session.put(self.url + path, headers=headers, timeout=10, **kw)

    def delete(self, path: str, role: str | None = None, **kw: Any) -> requests.Response:
        return self.session.delete(self.url + path, headers=bearer(role) if role else None, timeout=10, **kw)


@contextmanager
def running_api(cfg: EMSConfig, ctx: EMSContext, clock: Clock, store: ReadSource | None = None) -> Iterator[RunningApi]:
    server = ApiServer(cfg=cfg, ctx=ctx, clock=clock, store=store)
    server.start()
    session = requests.Session()
    try:
        yield RunningApi(server, server.url, session)
    finally:
        session.close()
        server.stop(timeout_s=5.0)
