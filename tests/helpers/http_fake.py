"""A real HTTP server on 127.0.0.1 (port 0) that serves canned provider answers, for the price and
forecast clients. Routes map a path to a handler returning (status, content type, body); every
request is recorded (method, path, query, headers, body) so tests can check what was sent."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Response = tuple[int, str, bytes]
Handler = Callable[[Request], Response]


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def serve(status: int, body: bytes, content_type: str = "application/json") -> Handler:
    return lambda _req: (status, content_type, body)


@dataclass
class FakeProvider:
    routes: dict[str, Handler]
    requests: list[Request] = field(default_factory=list)
    base_url: str = ""


@contextmanager
def fake_provider(routes: dict[str, Handler]) -> Iterator[FakeProvider]:
    state = FakeProvider(routes)

    class _H(BaseHTTPRequestHandler):
        def _do(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            req = Request(self.command, parts.path, parse_qs(parts.query), dict(self.headers.items()), self.rfile.read(length))
            state.requests.append(req)
            handler = state.routes.get(parts.path)
            status, ctype, body = handler(req) if handler else (404, "text/plain", b"not found")
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = _do
        do_POST = _do

        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), _H)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-provider", daemon=True)
    thread.start()
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
