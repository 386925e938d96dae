"""A CAN bus between processes that stays on loopback: the socketcand raw-mode protocol over TCP.

`SocketcandHub` is a tiny socketcand-compatible server (bound to 127.0.0.1): every frame one
client sends is delivered to every other client, like nodes on one CAN bus. The BMS simulator
runs it; the EMS connects with `SocketcandBus`, a python-can `BusABC` speaking the same protocol.

Why our own client and not python-can's `socketcand` interface (which also works with the hub,
see tests): python-can 4.6's client spins at 100 % CPU inside `recv()` once the server closes
the connection (EOF reads as "no data yet"), and its handshake can fail when the server's `ok`
and the first frame arrive in one TCP read. This client raises `CanOperationError` on EOF, so
the worker closes and reopens the bus, and it buffers the handshake properly.

Protocol (https://github.com/linux-can/socketcand, doc/protocol.md), the subset used here:
    server: < hi >            client: < open can0 >     server: < ok >
    client: < rawmode >       server: < ok >
    client: < send 351 8 30 2 e8 3 74 e cc 1 >          (id hex, dlc, data bytes hex)
    server: < frame 351 1700000000.000000 3002E803740ECC01 >
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable

import can
import structlog

__all__ = ["SocketcandBus", "SocketcandHub", "format_frame", "parse_send"]

log = structlog.get_logger("interfaces.can.bridge")
_MAX_TOKEN = 256  # longest "< ... >" we accept; a CAN frame line is < 60 characters


def _format_id(msg: can.Message) -> str:
    return f"{msg.arbitration_id & 0x1FFFFFFF:08X}" if msg.is_extended_id else f"{msg.arbitration_id & 0x7FF:03X}"


def format_frame(msg: can.Message, *, timestamp_s: float) -> str:
    """Server -> client line, as socketcand writes it (std id 3 hex digits, ext id 8)."""
    data = bytes(msg.data[: msg.dlc]).hex().upper()
    return f"< frame {_format_id(msg)} {timestamp_s:.6f} {data} >"


def parse_send(token: str) -> can.Message:
    """Client -> server `< send ID DLC B0 B1 ... >` to a Message; ValueError when malformed."""
    parts = token[1:-1].split()
    if len(parts) < 3 or parts[0] != "send":
        raise ValueError("not a send command")
    id_text, dlc = parts[1], int(parts[2], 16)
    data = bytes(int(b, 16) for b in parts[3:])
    if not (0 <= dlc <= 8 and len(data) == dlc and len(id_text) in (3, 8)):
        raise ValueError("bad dlc or id length")
    can_id = int(id_text, 16)
    extended = len(id_text) == 8
    if can_id > (0x1FFFFFFF if extended else 0x7FF):
        raise ValueError("id out of range")
    return can.Message(arbitration_id=can_id, is_extended_id=extended, data=data, dlc=dlc)


class _TokenReader:
    """Split a byte stream into `< ... >` tokens; junk between tokens is dropped."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[str]:
        self._buf += data
        out: list[str] = []
        while True:
            start = self._buf.find(b"<")
            if start < 0:
                self._buf = b""
                return out
            end = self._buf.find(b">", start)
            if end < 0:
                self._buf = self._buf[start:] if len(self._buf) - start <= _MAX_TOKEN else b""
                return out
            out.append(self._buf[start : end + 1].decode("ascii", errors="replace"))
            self._buf = self._buf[end + 1 :]


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
            _close(c.sock)
        for t in self._threads:
            t.join(2.0)
        if self._server is not None:
            _close(self._server)
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
        reader = _TokenReader()
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
        _close(c.sock)
        log.info("can_hub_client_left", peer=c.peer)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()


class SocketcandBus(can.BusABC):
    """python-can bus over a socketcand server (our hub, or a real socketcand on a gateway)."""

    def __init__(
        self, channel: str = "can0", *, host: str = "127.0.0.1", port: int = 29536, connect_timeout_s: float = 2.0, **kwargs: object
    ) -> None:
        self._sock = socket.create_connection((host, port), timeout=connect_timeout_s)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader = _TokenReader()
        self._tokens: deque[str] = deque()
        self._send_lock = threading.Lock()
        try:
            self._expect("< hi >", connect_timeout_s)
            self._send_line(f"< open {channel} >")
            self._expect("< ok >", connect_timeout_s)
            self._send_line("< rawmode >")
            self._expect("< ok >", connect_timeout_s)
        except BaseException:
            _close(self._sock)
            raise
        self._sock.settimeout(None)
        self._channel = channel
        self.channel_info = f"socketcand {channel}@{host}:{port}"
        super().__init__(channel=channel, **kwargs)  # type: ignore[arg-type]

    def _send_line(self, line: str) -> None:
        with self._send_lock:
            self._sock.sendall(line.encode("ascii"))

    def _next_token(self, timeout_s: float | None) -> str | None:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self._tokens:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._sock], [], [], left)
            if not ready:
                return None
            data = self._sock.recv(4096)
            if not data:
                raise can.CanOperationError("socketcand server closed the connection")
            self._tokens.extend(self._reader.feed(data))
        return self._tokens.popleft()

    def _expect(self, want: str, timeout_s: float) -> None:
        got = self._next_token(timeout_s)
        if got != want:
            raise can.CanInitializationError(f"socketcand handshake: expected {want!r}, got {got!r}")

    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                token = self._next_token(left)
            except OSError as exc:
                raise can.CanOperationError(f"socketcand receive failed: {exc}") from exc
            if token is None:
                return None, False
            msg = _parse_frame(token)
            if msg is not None:
                msg.channel = self._channel
                return msg, False
            if deadline is not None and time.monotonic() >= deadline:
                return None, False

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        data = " ".join(f"{b:x}" for b in bytes(msg.data[: msg.dlc]))
        try:
            self._send_line(f"< send {_format_id(msg)} {msg.dlc:X} {data} >")
        except OSError as exc:
            raise can.CanOperationError(f"socketcand send failed: {exc}") from exc

    def shutdown(self) -> None:
        super().shutdown()
        _close(self._sock)


def _parse_frame(token: str) -> can.Message | None:
    """`< frame ID SEC.USEC DATAHEX >` to a Message; None for anything else (errors, acks)."""
    parts = token[1:-1].split()
    if len(parts) < 3 or parts[0] != "frame":
        return None
    try:
        data = bytes.fromhex(parts[3]) if len(parts) > 3 else b""
        can_id, ts = int(parts[1], 16), float(parts[2])
    except ValueError:
        return None
    if len(data) > 8:
        return None
    return can.Message(arbitration_id=can_id, is_extended_id=len(parts[1]) == 8, data=data, dlc=len(data), timestamp=ts, is_rx=True)
