"""Helpers shared by every test layer. No sleeps: wait on conditions with a timeout."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

REPO_ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
T = TypeVar("T")


def free_port(host: str = "127.0.0.1") -> int:
    """A free TCP port on loopback (bind to port 0, read it back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], T], *, timeout_s: float = 10.0, interval_s: float = 0.02, what: str = "condition") -> T:
    """Poll `predicate` until it returns a truthy value; fail the test with `what` on timeout.

    Uses Event.wait for the pause between polls, so it never sleeps past the deadline.
    """
    pause = threading.Event()
    deadline = time.monotonic() + timeout_s
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}" + (f" (last error: {last_exc!r})" if last_exc else ""))
        pause.wait(interval_s)
