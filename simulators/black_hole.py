"""A TCP server that accepts connections, reads what it is sent and never answers: a Modbus gateway or
meter that hangs mid-request. The tests and benchmarks point a device at it to show that one hung link
does not hold up another."""

from __future__ import annotations

import contextlib
import select
import socket
import threading

__all__ = ["BlackHole"]


class BlackHole:
    """A TCP server on 127.0.0.1 that accepts connections, reads what it is sent and never answers
    (a gateway that hangs). `requests` counts the reads that brought data; `close()` drops every
    connection (the peer sees EOF at once) and stops listening."""

    def __init__(self) -> None:
        self._srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen(8)
        self.port = int(self._srv.getsockname()[1])
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self.accepted = 0
        self.requests = 0
        self._thread = threading.Thread(target=self._run, name="black-hole", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                socks = [self._srv, *self._conns]
            try:
                ready, _, _ = select.select(socks, [], [], 0.05)
            except (OSError, ValueError):  # a socket closed under us: look again
                continue
            for s in ready:
                if s is self._srv:
                    with contextlib.suppress(OSError):
                        conn, _addr = self._srv.accept()
                        with self._lock:
                            self._conns.append(conn)
                            self.accepted += 1
                    continue
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                with self._lock:
                    if data:
                        self.requests += 1
                    else:
                        self._conns.remove(s)
                        s.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with self._lock:
            conns, self._conns = self._conns, []
        for s in (*conns, self._srv):
            with contextlib.suppress(OSError):
                s.close()
