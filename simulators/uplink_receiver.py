"""Reference uplink receiver: what a cloud endpoint must do with EMS batches (docs/persistence.md).

It checks, in order: bearer token (401), signature over timestamp + body (401), timestamp window
(401), gzip + JSON + batch id (400/415); then stores the batch once by its batch id and answers
200 {"status": "stored"}, 200 {"status": "duplicate"} (the same id with the same content), or
409 {"status": "conflict"} (the same id with other content: never dropped silently; the sender
keeps such a batch). Content is compared as canonical JSON. Storage is SQLite (a file or memory).

    python -m simulators.uplink_receiver --port 8443 (--cert server.pem [--key server.key] | --tls-dir var/uplink-tls) \
        [--db var/uplink-received.db] [--token-env EMS_UPLINK_TOKEN] [--hmac-key-env EMS_UPLINK_HMAC_KEY]

It is also the reference of the cloud's command queue (docs/uplink.md): `queue_command(site, kind,
body)` (or `POST <dir>/sites/<site>/commands` with the admin token) queues a signed envelope; the site
gets the queued ones in the answer to each batch POST and from `GET <dir>/sites/<site>/commands`
(token + signature over an empty body), until a stored batch of that site carries their ack; then
they are `done` with the site's result.

Tests import `UplinkReceiver`, bind 127.0.0.1 port 0, and may script failures (`fail_next`).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import signal
import socket
import sqlite3
import ssl
import sys
import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from interfaces.uplink.signing import BATCH_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_command, timestamp_fresh, verify

__all__ = ["Scripted", "UplinkReceiver", "main"]

log = structlog.get_logger("simulators.uplink_receiver")

MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_JSON_BYTES = 16 * 1024 * 1024
_COMMANDS_PATH = re.compile(r"^/sites/([A-Za-z0-9_.-]{1,64})/commands$")


@dataclass(frozen=True, slots=True)
class Scripted:
    """A canned answer for the next request (test hook), given before any check."""

    status: int
    retry_after: str | None = None
    body: str = "scripted failure"


class UplinkReceiver:
    def __init__(
        self,
        *,
        token: str,
        hmac_key: bytes,
        certfile: Path | str,
        keyfile: Path | str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        db_path: Path | str = ":memory:",
        max_skew_s: float = 300.0,
        clock: Callable[[], float] = time.time,
        path: str = "/api/v1/batches",
        admin_token: str | None = None,
    ) -> None:
        self._token = token
        self._key = hmac_key
        self._certfile = str(certfile)
        self._keyfile = None if keyfile is None else str(keyfile)
        self.host = host
        self.port = port
        self.path = path
        self._base = path.rsplit("/", 1)[0]  # commands live under <base>/sites/<site>/commands
        self._admin_token = admin_token
        self._max_skew_s = max_skew_s
        self._clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(db_path), check_same_thread=False)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS received (seq INTEGER PRIMARY KEY, batch_id TEXT NOT NULL UNIQUE, window_start INTEGER, received_ts REAL NOT NULL, body TEXT NOT NULL)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS commands (seq INTEGER PRIMARY KEY, command_id TEXT NOT NULL, site_id TEXT NOT NULL,"
            " envelope TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'queued', queued_ts REAL NOT NULL, acked_ts REAL, result TEXT,"
            " event_seq INTEGER, message TEXT, batch_id TEXT)"
        )
        self._db.commit()
        self.acks: list[dict[str, Any]] = []  # every ack seen in a stored batch, in arrival order
        self._script: deque[Scripted] = deque()
        self.counts: Counter[str] = Counter()  # stored, duplicate, scripted, rejected:<why>, tls_error
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> UplinkReceiver:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self._certfile, self._keyfile)
        self._server = _Server((self.host, self.port), _Handler, self, ctx)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="uplink-receiver", daemon=True
        )
        self._thread.start()
        log.info("receiver_started", url=self.url)
        return self

    def stop(self) -> None:
        """Stop listening (the port is refused until `start()` again); stored batches are kept."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.drop_connections()  # kept-alive connections go too: the receiver is really gone
            self._server = None
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def close(self) -> None:
        self.stop()
        with self._lock:
            self._db.close()

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}{self.path}"

    # ---- test hooks and results ------------------------------------------------------------
    def fail_next(self, status: int, *, count: int = 1, retry_after: str | None = None) -> None:
        with self._lock:
            self._script.extend([Scripted(status, retry_after)] * count)

    def batches(self) -> list[dict[str, Any]]:
        """Stored batches in arrival order (each batch id once)."""
        with self._lock:
            rows = self._db.execute("SELECT body FROM received ORDER BY seq").fetchall()
        return [json.loads(r[0]) for r in rows]

    def batch_ids(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT batch_id FROM received ORDER BY seq")]

    # ---- the command queue -----------------------------------------------------------------
    def queue_command(
        self,
        site_id: str,
        kind: str,
        body: Mapping[str, Any],
        *,
        ttl_s: float = 600.0,
        issuer: str = "ecowatt",
        issued_at: int | None = None,
        key: bytes | None = None,
    ) -> dict[str, Any]:
        """Queue a command for `site_id`, signed with the site's key (`key`: another, to test a bad
        signature); returns the envelope. It is offered to the site until its ack arrives."""
        now = int(self._clock()) if issued_at is None else issued_at
        env: dict[str, Any] = {
            "id": f"c-{secrets.token_hex(8)}",
            "nonce": secrets.token_hex(16),
            "issuer": issuer,
            "issued_at": now,
            "expires_at": now + int(ttl_s),
            "kind": kind,
            "body": dict(body),
        }
        env["signature"] = sign_command(self._key if key is None else key, env)
        self.inject(site_id, env)
        return env

    def inject(self, site_id: str, envelope: Mapping[str, Any]) -> None:
        """Queue an envelope as it is (a replay, a forged or tampered one)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO commands (command_id, site_id, envelope, queued_ts) VALUES (?, ?, ?, ?)",
                (str(envelope.get("id")), site_id, json.dumps(envelope), self._clock()),
            )
            self._db.commit()

    def queued(self, site_id: str) -> list[dict[str, Any]]:
        """The envelopes still waiting for their ack, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT envelope FROM commands WHERE site_id = ? AND status = 'queued' ORDER BY seq", (site_id,))
            return [json.loads(r[0]) for r in rows]

    def command(self, command_id: str) -> dict[str, Any] | None:
        """The latest queue entry of `command_id`: status (queued|done) and the acked result."""
        with self._lock:
            row = self._db.execute(
                "SELECT status, result, event_seq, message, batch_id FROM commands WHERE command_id = ? ORDER BY seq DESC LIMIT 1",
                (command_id,),
            ).fetchone()
        if row is None:
            return None
        return dict(zip(("status", "result", "event_seq", "message", "batch_id"), row, strict=True))

    def _take_acks(self, site_id: str, batch_id: str, acks: object) -> None:
        if not isinstance(acks, list):
            return
        with self._lock:
            for a in acks:
                if not isinstance(a, dict) or not isinstance(a.get("command_id"), str):
                    continue
                self.acks.append({**a, "batch_id": batch_id})
                self._db.execute(
                    "UPDATE commands SET status = 'done', acked_ts = ?, result = ?, event_seq = ?, message = ?, batch_id = ?"
                    " WHERE site_id = ? AND command_id = ? AND status = 'queued'",
                    (
                        self._clock(),
                        str(a.get("result")),
                        a.get("event_seq"),
                        str(a.get("message", ""))[:300],
                        batch_id,
                        site_id,
                        a["command_id"],
                    ),
                )
            self._db.commit()

    # ---- the checks (no socket: called by the handler, testable on its own) ----------------
    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self._lock:
            scripted = self._script.popleft() if self._script else None
        if scripted is not None:
            self.counts["scripted"] += 1
            extra = {"Retry-After": scripted.retry_after} if scripted.retry_after is not None else {}
            return scripted.status, {"error": scripted.body}, extra
        route = path.split("?", 1)[0]
        site = _COMMANDS_PATH.match(route.removeprefix(self._base)) if route.startswith(self._base + "/") else None
        if site is not None and method == "POST":
            return self._admin_queue(site.group(1), headers, body)
        if site is None and (method != "POST" or route != self.path):
            return self._reject(404 if method == "POST" else 405, "not_found")
        auth = headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not _same(auth[7:].strip(), self._token):
            return self._reject(401, "bad_token")
        ts = headers.get(TIMESTAMP_HEADER, "")
        if not verify(self._key, ts, body, headers.get(SIGNATURE_HEADER, "")):
            return self._reject(401, "bad_signature")
        if not timestamp_fresh(ts, now_s=self._clock(), max_skew_s=self._max_skew_s):
            return self._reject(401, "stale_timestamp")
        if site is not None:  # GET: the site fetches its queued commands
            return 200, {"commands": self.queued(site.group(1))}, {}
        if headers.get("Content-Encoding", "").lower() != "gzip":
            return self._reject(415, "not_gzip")
        try:
            raw = _gunzip(body)
            batch = json.loads(raw)
        except (OSError, EOFError, zlib.error, ValueError, UnicodeDecodeError):
            return self._reject(400, "bad_body")
        bid = batch.get("batch_id") if isinstance(batch, dict) else None
        if not isinstance(bid, str) or not bid or headers.get(BATCH_HEADER, bid) != bid:
            return self._reject(400, "bad_batch_id")
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO received (batch_id, window_start, received_ts, body) VALUES (?, ?, ?, ?)",
                    (bid, batch.get("window_start_ts"), self._clock(), raw.decode()),
                )
                self._db.commit()
                outcome = "stored"
            except sqlite3.IntegrityError:
                (stored,) = self._db.execute("SELECT body FROM received WHERE batch_id = ?", (bid,)).fetchone()
                outcome = "duplicate" if _canonical(json.loads(stored)) == _canonical(batch) else "conflict"
            self.counts[outcome] += 1
        if outcome == "conflict":
            log.warning("batch_conflict", batch_id=bid, hint="the same id with other content: kept the first, refused this one")
            return 409, {"status": outcome, "batch_id": bid, "error": "same batch id, different content"}, {}
        log.debug("batch_received", batch_id=bid, outcome=outcome)
        site_id = batch.get("site_id")
        if not isinstance(site_id, str):
            return 200, {"status": outcome, "batch_id": bid}, {}
        self._take_acks(site_id, bid, batch.get("acks"))
        return 200, {"status": outcome, "batch_id": bid, "commands": self.queued(site_id)}, {}

    def _admin_queue(self, site_id: str, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        """POST {kind, body, ttl_s?, issuer?} with the admin token: queue a command (answers the envelope)."""
        auth = headers.get("Authorization", "")
        if self._admin_token is None or not auth.startswith("Bearer ") or not _same(auth[7:].strip(), self._admin_token):
            return self._reject(401, "bad_admin_token")
        try:
            req = json.loads(body)
            kind, cbody = req["kind"], req.get("body", {})
            ttl_s, issuer = float(req.get("ttl_s", 600.0)), str(req.get("issuer", "ecowatt"))
            if not isinstance(kind, str) or not isinstance(cbody, dict) or not 0 < ttl_s <= 86400:
                raise ValueError(kind)
        except (ValueError, KeyError, TypeError):
            return self._reject(400, "bad_command")
        return 201, self.queue_command(site_id, kind, cbody, ttl_s=ttl_s, issuer=issuer), {}

    def _reject(self, status: int, why: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self._lock:
            self.counts[f"rejected:{why}"] += 1
        log.info("batch_rejected", http_status=status, reason=why)
        return status, {"error": why}, {}


def _canonical(batch: object) -> str:
    return hashlib.sha256(json.dumps(batch, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _gunzip(body: bytes) -> bytes:
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = d.decompress(body, MAX_JSON_BYTES)
    if d.unconsumed_tail or not d.eof:
        raise ValueError("gzip body too large or truncated")
    return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], handler: type[BaseHTTPRequestHandler], receiver: UplinkReceiver, ctx: ssl.SSLContext) -> None:
        super().__init__(addr, handler)
        self.receiver = receiver
        self.ssl_ctx = ctx
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = self.socket.accept()
        # The handshake happens in the handler thread, so a slow client cannot stall accept().
        tls = self.ssl_ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        with self._open_lock:
            self._open.add(tls)
        return tls, addr

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        with self._open_lock:
            conns, self._open = list(self._open), set()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                c.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        self.receiver.counts["tls_error" if isinstance(exc, ssl.SSLError) else "connection_error"] += 1
        log.debug("receiver_connection_failed", error=repr(exc))


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes; no 40 ms delayed-ACK stall
    timeout = 10

    def setup(self) -> None:
        super().setup()
        self.request.do_handshake()

    def do_POST(self) -> None:
        self._serve("POST")

    def do_GET(self) -> None:
        self._serve("GET")

    def _serve(self, method: str) -> None:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self._answer(413, {"error": "body_too_large"}, {})
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        status, payload, extra = self.server.receiver.handle(method, self.path, dict(self.headers.items()), body)
        self._answer(status, payload, extra)

    def _answer(self, status: int, payload: Mapping[str, Any], extra: Mapping[str, str]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("receiver_request", line=format % args)


def _secret(env: str | None, file: str | None, what: str) -> str:
    if file:
        return Path(file).read_text(encoding="utf-8").splitlines()[0].strip()
    value = os.environ.get(env or "", "")
    if not value:
        raise SystemExit(f"uplink_receiver: {what}: set ${env} or give --{what}-file")
    return value


def _test_certificate(tls_dir: Path) -> str:
    """A throw-away CA (tls_dir/ca.pem) and server key + chain (tls_dir/server.pem), for `make run`."""
    try:
        import trustme
    except ImportError as exc:
        raise SystemExit("uplink_receiver: --tls-dir needs trustme (pip install -r requirements-dev.txt)") from exc
    tls_dir.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tls_dir / "ca.pem"))
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(str(tls_dir / "server.pem"))
    return str(tls_dir / "server.pem")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m simulators.uplink_receiver", description="Reference HTTPS receiver of EMS uplink batches")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8443, help="TCP port (0 = any free port)")
    p.add_argument("--cert", help="PEM server certificate (chain); may also hold the key")
    p.add_argument(
        "--tls-dir", help="no --cert: make a test CA and a 127.0.0.1/localhost certificate here (ca.pem for uplink.ca_file; needs trustme)"
    )
    p.add_argument("--key", help="PEM private key (if not in --cert)")
    p.add_argument("--db", default="var/uplink-received.db", help="SQLite file the batches are stored in")
    p.add_argument("--path", default="/api/v1/batches", help="URL path batches are POSTed to")
    p.add_argument("--token-env", default="EMS_UPLINK_TOKEN", help="environment variable holding the bearer token")
    p.add_argument("--token-file", help="file holding the bearer token (instead of --token-env)")
    p.add_argument("--hmac-key-env", default="EMS_UPLINK_HMAC_KEY", help="environment variable holding the HMAC key")
    p.add_argument("--hmac-key-file", help="file holding the HMAC key (instead of --hmac-key-env)")
    p.add_argument("--max-skew-s", type=float, default=300.0, help="accepted |timestamp - now|, s")
    p.add_argument(
        "--admin-token-env",
        default="EMS_UPLINK_ADMIN_TOKEN",
        help="environment variable holding the token that may queue commands (POST <dir>/sites/<site>/commands); unset = no queueing over HTTP",
    )
    args = p.parse_args(argv)
    if not args.cert:
        if not args.tls_dir:
            p.error("give --cert (and --key) or --tls-dir")
        args.cert, args.key = _test_certificate(Path(args.tls_dir)), None
    from interfaces.logs import configure_logging

    configure_logging(fmt="auto", level="info")
    token = _secret(args.token_env, args.token_file, "token")
    key = _secret(args.hmac_key_env, args.hmac_key_file, "hmac-key").encode()
    if args.db != ":memory:":
        Path(args.db).parent.mkdir(parents=True, exist_ok=True)
    rx = UplinkReceiver(
        token=token,
        hmac_key=key,
        certfile=args.cert,
        keyfile=args.key,
        host=args.host,
        port=args.port,
        db_path=args.db,
        max_skew_s=args.max_skew_s,
        path=args.path,
        admin_token=os.environ.get(args.admin_token_env) or None,
    )
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    rx.start()
    print(json.dumps({"event": "receiver_listening", "url": rx.url}), flush=True)
    stop.wait()
    rx.close()
    log.info("receiver_stopped", counts=dict(rx.counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
