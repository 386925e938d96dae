"""python-can bus over the socketcand raw-mode protocol (TCP): the EMS's CAN client for a socketcand
gateway, and for the simulator's loopback hub (simulators/can_hub.py).

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

import can
import structlog

__all__ = ["SocketcandBus", "TokenReader", "close_socket", "format_frame", "parse_send"]

log = structlog.get_logger("interfaces.can.socketcand")
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


class TokenReader:
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


def close_socket(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()


class SocketcandBus(can.BusABC):
    """python-can bus over a socketcand server (our hub, or a real socketcand on a gateway)."""

    def __init__(
        self,
        channel: str = "can0",
        *,
        host: str = "127.0.0.1",
        port: int = 29536,
        connect_timeout_s: float = 2.0,
        send_timeout_s: float = 1.0,
        **kwargs: object,
    ) -> None:
        """`send_timeout_s`: a send to a server that stops reading fails after this (CanOperationError)
        instead of blocking the sender (the worker's thread) for ever."""
        self._sock = socket.create_connection((host, port), timeout=connect_timeout_s)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader = TokenReader()
        self._tokens: deque[str] = deque()
        self._send_lock = threading.Lock()
        try:
            self._expect("< hi >", connect_timeout_s)
            self._send_line(f"< open {channel} >")
            self._expect("< ok >", connect_timeout_s)
            self._send_line("< rawmode >")
            self._expect("< ok >", connect_timeout_s)
        except BaseException:
            close_socket(self._sock)
            raise
        self._sock.settimeout(send_timeout_s)  # bounds sendall(); receives wait in select() first
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
        close_socket(self._sock)


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
