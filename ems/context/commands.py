"""The command channel (DESIGN.md §1): the controller publishes, the ESS link writes and acknowledges.

One `ControlStatus` per cycle: the command (seq, set-point, written W) plus the state and the
reasons that readers show. The ESS link blocks in `wait_command` on this channel's condition
alone, so a new command wakes it at once, whatever the other devices do.
"""

from __future__ import annotations

import threading

from ems.model import Command, ControlStatus

__all__ = ["CommandChannel"]


class CommandChannel:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._status: ControlStatus | None = None
        self._written_seq: int | None = None
        self._consumers = 0

    # ---- controller -----------------------------------------------------------------------------
    def publish(self, status: ControlStatus) -> None:
        with self._cond:
            self._status = status
            self._cond.notify_all()

    def wait_written(self, seq: int, *, timeout_s: float) -> bool:
        """For shutdown: True once command `seq` (or newer) was written; False on timeout or with no writer."""
        with self._cond:
            if self._consumers == 0:
                return False
            return self._cond.wait_for(lambda: self._written_seq is not None and self._written_seq >= seq, timeout_s)

    # ---- the ESS link ---------------------------------------------------------------------------
    def register_consumer(self) -> None:
        """Called once by the link that writes commands to the inverter (shutdown waits for it)."""
        with self._cond:
            self._consumers += 1

    def wait_command(self, *, after_seq: int, timeout_s: float) -> Command | None:
        """Block until a command newer than `after_seq` is published (or the timeout passes)."""
        with self._cond:
            self._cond.wait_for(lambda: self._status is not None and self._status.command.seq > after_seq, timeout_s)
            st = self._status
            return st.command if st is not None and st.command.seq > after_seq else None

    def latest(self) -> Command | None:
        with self._cond:
            return None if self._status is None else self._status.command

    def ack(self, seq: int) -> None:
        """The inverter took command `seq`."""
        with self._cond:
            if self._written_seq is None or seq > self._written_seq:
                self._written_seq = seq
            self._cond.notify_all()

    # ---- readers --------------------------------------------------------------------------------
    def snapshot(self) -> tuple[ControlStatus | None, int | None]:
        with self._cond:
            return self._status, self._written_seq
