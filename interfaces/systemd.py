"""systemd service notifications (deploy/ems.service, `Type=notify`, `WatchdogSec=`).

- READY=1 after the first control cycle: every service has started and the loop runs.
- WATCHDOG=1 from the control loop itself, after each cycle that finished on time. A loop that
  stalls or keeps overrunning stops pinging, and systemd restarts the process after `WatchdogSec`.
  A FAULT state still pings: the loop is alive and holding 0 W, a restart would not help.
- STATUS=... on state changes (shown by `systemctl status ems`), STOPPING=1 on shutdown.

The datagrams go through the `sdnotify` package, on a non-blocking socket: a full notify
queue drops (and counts) a ping instead of blocking the control loop. Without `NOTIFY_SOCKET`
(not under systemd) every call is a no-op. WATCHDOG pings are sent only when systemd asked
for them (`WATCHDOG_USEC` set, and `WATCHDOG_PID` absent or ours), as `sd_watchdog_enabled()`.

Test hook (never for production): `EMS_TEST_STALL_FILE=/abs/path` makes the control loop block
after a cycle while that file exists (at most `STALL_MAX_S`), so the system test can see the
watchdog pings stop. The unit file removes the variable (`UnsetEnvironment=`), and the process
logs `test_stall_hook_armed` at warning level when it is set.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import sdnotify  # type: ignore[import-untyped]
import structlog

from ems.controller import CycleReport

__all__ = ["STALL_ENV", "STALL_MAX_S", "SystemdNotifier", "notify_stopping", "stall_hook_from_env"]

log = structlog.get_logger("interfaces.systemd")

STALL_ENV = "EMS_TEST_STALL_FILE"
STALL_MAX_S = 60.0
_STALL_POLL_S = 0.05


def _open() -> socket.socket | None:
    """The connected, non-blocking notify socket, or None when not run by systemd ($NOTIFY_SOCKET, read by sdnotify)."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return None
    try:
        notifier = sdnotify.SystemdNotifier(debug=True)  # debug: raise instead of silently ignoring
    except (OSError, TypeError, IndexError) as exc:
        log.warning("systemd_notify_unavailable", notify_socket=os.environ.get("NOTIFY_SOCKET"), error=str(exc))
        return None
    sock: socket.socket = notifier.socket
    sock.setblocking(False)
    return sock


def _watchdog_usec(environ: Mapping[str, str]) -> int | None:
    """WATCHDOG_USEC when the watchdog is meant for this process (sd_watchdog_enabled)."""
    pid = environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec if usec > 0 else None


class SystemdNotifier:
    """Per-cycle hook (`on_cycle`) and shutdown notice for systemd. Owns the notify socket."""

    def __init__(self) -> None:
        self._sock = _open()
        self.watchdog_usec = _watchdog_usec(os.environ) if self._sock is not None else None
        self._ready = False
        self._state: str | None = None
        self._failing = False
        self.sent = 0
        self.dropped = 0

    @property
    def active(self) -> bool:
        return self._sock is not None

    def notify(self, message: str) -> bool:
        """Send one notification; False (counted, logged on the first failure) if it could not go."""
        if self._sock is None:
            return False
        try:
            self._sock.send(message.encode("utf-8"))
        except OSError as exc:  # BlockingIOError (queue full), ECONNREFUSED (systemd gone), ...
            self.dropped += 1
            if not self._failing:
                self._failing = True
                log.warning("systemd_notify_failed", message=message.split("\n", 1)[0], error=type(exc).__name__, dropped=self.dropped)
            return False
        if self._failing:
            self._failing = False
            log.info("systemd_notify_recovered", dropped=self.dropped)
        self.sent += 1
        return True

    def on_cycle(self, report: CycleReport) -> None:
        """After every control cycle: READY once, STATUS on state change, WATCHDOG if on time."""
        if self._sock is None:
            return
        lines = []
        state = report.decision.state.value
        if state != self._state:
            self._state = state
            lines.append(f"STATUS=state {state}, inverter {report.decision.written_w:.0f} W")
        if not self._ready:
            lines.insert(0, "READY=1")
        if report.on_time and self.watchdog_usec is not None:
            lines.append("WATCHDOG=1")
        if lines and self.notify("\n".join(lines)) and not self._ready:
            self._ready = True
            log.info("systemd_ready", watchdog_s=None if self.watchdog_usec is None else self.watchdog_usec / 1e6)

    def stopping(self) -> None:
        self.notify("STOPPING=1\nSTATUS=stopping")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def notify_stopping() -> None:
    """Tell systemd the process is shutting down (no-op outside systemd)."""
    n = SystemdNotifier()
    try:
        n.stopping()
    finally:
        n.close()


def stall_hook_from_env(
    environ: Mapping[str, str] | None = None, notifier: SystemdNotifier | None = None
) -> Callable[[CycleReport], None] | None:
    """TEST ONLY: a cycle hook that blocks the control loop while `$EMS_TEST_STALL_FILE` exists.

    With a `notifier`, it marks the stall in the notify stream (STATUS=test stall started/ended),
    so a test reading that stream can tell exactly which pings fell inside the stall."""
    env = os.environ if environ is None else environ
    raw = env.get(STALL_ENV)
    if not raw:
        return None
    path = Path(raw)
    if not path.is_absolute():
        log.error("test_stall_hook_refused", env=STALL_ENV, path=raw, reason="not an absolute path")
        return None
    log.warning(
        "test_stall_hook_armed",
        env=STALL_ENV,
        path=str(path),
        max_s=STALL_MAX_S,
        hint="test only: the control loop blocks while this file exists; never set this in production",
    )
    pause = threading.Event()  # never set: wait() is the pause between polls

    def stall(_report: CycleReport) -> None:
        if not path.exists():
            return
        log.warning("test_stall_started", path=str(path))
        if notifier is not None:
            notifier.notify("STATUS=test stall started")
        polls = 0
        while path.exists() and polls < STALL_MAX_S / _STALL_POLL_S:
            pause.wait(_STALL_POLL_S)
            polls += 1
        log.warning("test_stall_ended", path=str(path), stalled_s=round(polls * _STALL_POLL_S, 2))
        if notifier is not None:
            notifier.notify("STATUS=test stall ended")

    return stall
