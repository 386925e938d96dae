"""TEST ONLY: `python -m tests.helpers.stall --config FILE ...` runs the real `main.main` with one
extra cycle hook that blocks the control loop while the file `$EMS_TEST_STALL_FILE` exists (at
most STALL_MAX_S), after the systemd ping, so a system test can see the watchdog pings stop.
Production `main.py` never installs this hook and reads no such variable.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import structlog

from ems.controller import CycleReport
from interfaces.systemd import SystemdNotifier

__all__ = ["STALL_ENV", "STALL_MAX_S", "stall_hook", "stall_hooks_from_env"]

log = structlog.get_logger("tests.stall")
STALL_ENV = "EMS_TEST_STALL_FILE"
STALL_MAX_S = 60.0
_POLL_S = 0.05


def stall_hook(path: Path, notifier: SystemdNotifier | None = None) -> Callable[[CycleReport], None]:
    """Blocks the calling (control) thread while `path` exists; marks start/end in the notify stream."""
    pause = threading.Event()  # never set: wait() is the pause between polls

    def stall(_report: CycleReport) -> None:
        if not path.exists():
            return
        log.warning("test_stall_started", path=str(path))
        if notifier is not None:
            notifier.notify("STATUS=test stall started")
        polls = 0
        while path.exists() and polls < STALL_MAX_S / _POLL_S:
            pause.wait(_POLL_S)
            polls += 1
        log.warning("test_stall_ended", path=str(path), stalled_s=round(polls * _POLL_S, 2))
        if notifier is not None:
            notifier.notify("STATUS=test stall ended")

    return stall


def stall_hooks_from_env(environ: Mapping[str, str] | None = None) -> Callable[[SystemdNotifier], Sequence[Callable[[CycleReport], None]]]:
    env = os.environ if environ is None else environ
    path = Path(env[STALL_ENV])
    if not path.is_absolute():
        raise SystemExit(f"{STALL_ENV} must be an absolute path (got {path})")

    def hooks(notifier: SystemdNotifier) -> Sequence[Callable[[CycleReport], None]]:
        log.warning("test_stall_hook_armed", env=STALL_ENV, path=str(path), max_s=STALL_MAX_S)
        return [stall_hook(path, notifier)]

    return hooks


if __name__ == "__main__":
    import main

    sys.exit(main.main(sys.argv[1:], extra_hooks=stall_hooks_from_env()))
