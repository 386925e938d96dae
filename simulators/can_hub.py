"""A CAN bus between processes that stays on loopback, for the simulators and tests: a tiny
socketcand-compatible server (bound to 127.0.0.1). Every frame one client sends is delivered to
every other client, like nodes on one CAN bus. The BMS simulator runs it; the EMS connects with
`interfaces.can.socketcand.SocketcandBus`, as it would to a socketcand daemon on a field gateway.
Not part of the running EMS (it is no edge of the process): it lives with the simulators.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable

import can
import structlog

from interfaces.can.socketcand import TokenReader, close_socket, format_frame, parse_send

__all__ = ["SocketcandHub"]

log = structlog.get_logger("simulators.can_hub")


class _Client:
    def __init__(self, sock: socket.socket, peer: str) -> None:
        self.sock = sock
        self.peer = peer
        self.lock = threading.Lock()
        self.raw = False
        self.forward_after_s = float("inf")

    def send_line(self, line: str) -> None:
        with self.lock:
            self.sock.sendall(line.encode("ascii"))


class SocketcandHub:
    """A socketcand raw-mode server for one virtual bus, on loopback. Threads: accept + one per client."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        channel: str = "can0",
        handshake_grace_s: float = 0.1,
        on_frame: Callable[[can.Message], None] | None = None,
    ) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the CAN bridge binds to loopback only (got host={host!r})")
        self._host, self._want_port, self._channel = host, port, channel
        self._grace_s = handshake_grace_s  # python-can's client reads "< ok >" with one recv(): don't append a frame to it
        self._on_frame = on_frame
        self._clients: list[_Client] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._threads: list[threading.Thread] = []  # client threads (accept thread only)
        self.frames_forwarded = 0
        self.lines_rejected = 0

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return int(self._server.getsockname()[1])

    @property
    def clients(self) -> int:
        """Clients that frames are forwarded to (raw mode, past the handshake grace)."""
        now = time.monotonic()
        with self._lock:
            return sum(1 for c in self._clients if c.raw and now >= c.forward_after_s)

    def start(self) -> SocketcandHub:
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((self._host, self._want_port))
        srv.listen(8)
        srv.settimeout(0.2)
        self._server = srv
        self._accept_thread = threading.Thread(target=self._accept_loop, name="can-hub-accept", daemon=True)
        self._accept_thread.start()
        log.info("can_hub_started", host=self._host, port=self.port, channel=self._channel)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._accept_thread is not None:
            self._accept_thread.join(2.0)
        with self._lock:
            clients, self._clients = self._clients, []
        for c in clients:
            close_socket(c.sock)
        for t in self._threads:
            t.join(2.0)
        if self._server is not None:
            close_socket(self._server)
        log.info("can_hub_stopped", frames_forwarded=self.frames_forwarded, lines_rejected=self.lines_rejected)

    def broadcast(self, msg: can.Message, *, sender: _Client | None = None) -> int:
        """Deliver `msg` to every raw-mode client except `sender`; returns how many got it."""
        line = format_frame(msg, timestamp_s=time.time())
        now = time.monotonic()
        with self._lock:
            targets = [c for c in self._clients if c is not sender and c.raw and now >= c.forward_after_s]
        sent = 0
        for c in targets:
            try:
                c.send_line(line)
                sent += 1
            except OSError:
                self._drop(c)
        with self._lock:
            self.frames_forwarded += 1
        return sent

    def _accept_loop(self) -> None:
        assert self._server is not None
        while not self._stop.is_set():
            try:
                sock, addr = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(2.0)  # a client that stops reading is dropped, never blocks the bus
            client = _Client(sock, f"{addr[0]}:{addr[1]}")
            with self._lock:
                self._clients.append(client)
            thread = threading.Thread(target=self._client_loop, args=(client,), name=f"can-hub-{addr[1]}", daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    def _client_loop(self, c: _Client) -> None:
        reader = TokenReader()
        try:
            c.send_line("< hi >")
            while not self._stop.is_set():
                ready, _, _ = select.select([c.sock], [], [], 0.2)
                if not ready:
                    continue
                data = c.sock.recv(4096)
                if not data:
                    break
                for token in reader.feed(data):
                    self._handle(c, token)
        except OSError as exc:
            log.debug("can_hub_client_failed", peer=c.peer, error=repr(exc))
        finally:
            self._drop(c)

    def _handle(self, c: _Client, token: str) -> None:
        words = token[1:-1].split()
        cmd = words[0] if words else ""
        if cmd == "open" and len(words) == 2:
            c.send_line("< ok >" if words[1] == self._channel else "< error could not open bus >")
        elif cmd == "rawmode":
            c.send_line("< ok >")
            c.raw, c.forward_after_s = True, time.monotonic() + self._grace_s
            log.info("can_hub_client_joined", peer=c.peer)
        elif cmd == "send" and c.raw:
            try:
                msg = parse_send(token)
            except ValueError:
                self._reject(c, token)
                return
            self.broadcast(msg, sender=c)
            if self._on_frame is not None:
                self._on_frame(msg)
        else:
            self._reject(c, token)

    def _reject(self, c: _Client, token: str) -> None:
        with self._lock:
            self.lines_rejected += 1
            total = self.lines_rejected
        if total == 1 or total % 1000 == 0:
            log.warning("can_hub_line_rejected", peer=c.peer, line=token[:80], rejected_total=total)

    def _drop(self, c: _Client) -> None:
        with self._lock:
            if c not in self._clients:
                return
            self._clients.remove(c)
        close_socket(c.sock)
        log.info("can_hub_client_left", peer=c.peer)
