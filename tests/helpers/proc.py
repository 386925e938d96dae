"""Run a real process (main.py, simulators) and follow its JSON log lines without sleeping."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

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


def stop_all(*procs: LoggedProcess | None) -> None:
    """SIGTERM and wait (as systemd would), then make sure each is gone."""
    for p in procs:
        if p is not None:
            if p.proc.poll() is None:
                p.terminate_and_wait(timeout_s=15)
            p.kill()


@contextlib.contextmanager
def simulators_and_ems(
    workdir: Path,
    sim_cfg: dict[str, Any],
    ems_cfg: dict[str, Any],
    *,
    ems_env: dict[str, str] | None = None,
    start_timeout_s: float = 30.0,
) -> Iterator[tuple[LoggedProcess, LoggedProcess]]:
    """`python -m simulators` with `sim_cfg`, then, once it has started, the real `main.py` with `ems_cfg`.

    Both configs are written as YAML into `workdir`; both processes log JSON; both are stopped on exit.
    """
    (workdir / "sim.yaml").write_text(yaml.safe_dump(sim_cfg), encoding="utf-8")
    (workdir / "ems.yaml").write_text(yaml.safe_dump(ems_cfg), encoding="utf-8")
    sim = LoggedProcess(["-m", "simulators", "--config", str(workdir / "sim.yaml"), "--log-format", "json"])
    ems: LoggedProcess | None = None
    try:
        sim.wait_event(lambda e: e.get("event") == "simulator_started", timeout_s=start_timeout_s, what="simulator_started")
        ems = LoggedProcess(["main.py", "--config", str(workdir / "ems.yaml"), "--log-format", "json"], env=ems_env)
        yield sim, ems
    finally:
        stop_all(ems, sim)
