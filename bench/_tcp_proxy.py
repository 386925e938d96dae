"""A TCP forwarder that stands in for one device's process in the fault campaign (bench_faults).

    python -m bench._tcp_proxy --listen PORT --to PORT

Every connection to 127.0.0.1:`--listen` is forwarded to 127.0.0.1:`--to`, both ways, by one
thread (selectors). The campaign stops this process with SIGSTOP (the device hangs: connections
stay open, nothing is answered), kills it with SIGKILL (the device's process dies: connections
are reset and the port refuses), and starts it again on the same port. Loopback only.
"""

from __future__ import annotations

import argparse
import contextlib
import selectors
import socket
import sys

_CHUNK = 65536


def serve(listen_port: int, upstream_port: int) -> None:
    sel = selectors.DefaultSelector()
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", listen_port))
    srv.listen(64)
    srv.setblocking(False)
    sel.register(srv, selectors.EVENT_READ, None)
    print(f"proxy_listening {listen_port} -> {upstream_port}", flush=True)
    peers: dict[socket.socket, socket.socket] = {}

    def drop(s: socket.socket) -> None:
        for x in (s, peers.pop(s, None)):
            if x is None:
                continue
            peers.pop(x, None)
            with contextlib.suppress(KeyError, ValueError):
                sel.unregister(x)
            x.close()

    while True:
        for key, _ in sel.select():
            s = key.fileobj
            assert isinstance(s, socket.socket)
            if s is srv:
                client, _addr = srv.accept()
                try:
                    up = socket.create_connection(("127.0.0.1", upstream_port), timeout=2.0)
                except OSError:
                    client.close()
                    continue
                for x in (client, up):
                    x.setblocking(False)
                    x.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sel.register(x, selectors.EVENT_READ, None)
                peers[client], peers[up] = up, client
                continue
            try:
                data = s.recv(_CHUNK)
            except OSError:
                data = b""
            other = peers.get(s)
            if not data or other is None:
                drop(s)
                continue
            try:
                other.setblocking(True)
                other.sendall(data)
                other.setblocking(False)
            except OSError:
                drop(s)


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench._tcp_proxy")
    p.add_argument("--listen", type=int, required=True)
    p.add_argument("--to", type=int, required=True)
    args = p.parse_args()
    serve(args.listen, args.to)
    return 0


if __name__ == "__main__":
    sys.exit(main())
