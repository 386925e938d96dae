"""Send one rehearsal command to a running `python -m simulators` and print the reply.

python -m simulators.ctl [--host 127.0.0.1] [--port 15029] meter stop
python -m simulators.ctl status
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence

__all__ = ["send"]


def send(line: str, *, host: str = "127.0.0.1", port: int = 15029, timeout_s: float = 5.0) -> str:
    """One command line -> one reply line."""
    with socket.create_connection((host, port), timeout=timeout_s) as s:
        s.sendall(line.strip().encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return buf.decode("utf-8", "replace").strip()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m simulators.ctl", description="rehearsal commands for python -m simulators (docs/simulator.md)"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=15029)
    p.add_argument(
        "words",
        nargs="+",
        help="e.g. status | meter stop | meter start | ess silent on | load_offset 1500 | bms protection over_voltage on",
    )
    args = p.parse_args(argv)
    try:
        reply = send(" ".join(args.words), host=args.host, port=args.port)
    except OSError as exc:
        print(f"cannot reach the simulator at {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(reply)
    return 1 if reply.startswith("error") else 0


if __name__ == "__main__":
    sys.exit(main())
