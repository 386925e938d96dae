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

The system test that stalls the loop on purpose wraps `main.main` with a cycle hook of its own
(tests/helpers/stall.py); nothing here or in `main.py` reads a variable that could block the loop.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import sdnotify  # type: ignore[import-untyped]
import structlog

from ems.controller import CycleReport

__all__ = ["SystemdNotifier", "notify_stopping"]

log = structlog.get_logger("interfaces.systemd")


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
