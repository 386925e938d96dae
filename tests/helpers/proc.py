"""Run a real process (main.py, simulators) and follow its JSON log lines without sleeping."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import Any

from tests.helpers.common import PYTHON, REPO_ROOT


class LoggedProcess:
    """A subprocess whose stderr JSON lines are collected by a reader thread."""

    def __init__(self, args: Sequence[str], *, env: dict[str, str] | None = None) -> None:
        full_env = {**os.environ, **(env or {})}
        self.proc = subprocess.Popen(
            [PYTHON, *args],
            cwd=REPO_ROOT,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.raw.append(line)
                with contextlib.suppress(ValueError):
                    self.events.append(json.loads(line))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_event(self, predicate: Callable[[dict[str, Any]], bool], *, timeout_s: float, what: str) -> dict[str, Any]:
        with self._cond:
            found: list[dict[str, Any]] = []

            def ready() -> bool:
                found[:] = [e for e in self.events if predicate(e)][:1]
                return bool(found) or self.proc.poll() is not None

            self._cond.wait_for(ready, timeout_s)
            if not found:
                tail = "".join(self.raw[-20:])
                raise AssertionError(f"no log event {what} within {timeout_s} s; exit={self.proc.poll()}; last lines:\n{tail}")
            return found[0]

    def terminate_and_wait(self, *, timeout_s: float) -> int:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=timeout_s)
        self._reader.join(5)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
