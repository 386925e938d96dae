"""The commissioning board (`emsctl commission`, docs/commissioning.md): the API submits a run,
the commissioning thread inside the EMS takes it, reports its progress and its report here, and
watches for an abort (DELETE /api/v1/commission) and for its client going away (the client polls
GET with its run id; a run whose client has not polled for a while ends itself).

One run at a time. The last run's report stays readable until the next run starts.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from ems.context.frozen import freeze
from ems.model import Mode

__all__ = ["CommissionBoard", "CommissionRequest", "CommissionView", "RunState"]


class RunState(StrEnum):
    IDLE = "idle"  # no run since start
    QUEUED = "queued"  # accepted, the thread has not taken it yet
    RUNNING = "running"
    DONE = "done"  # every step measured; the battery is back at 0 W and the mode as before
    ABORTED = "aborted"  # ended early (fault, limit, operator, client gone); 0 W and the mode restored
    FAILED = "failed"  # ended by an error in the commissioning thread itself


FINISHED = frozenset({RunState.DONE, RunState.ABORTED, RunState.FAILED})


def _empty() -> Mapping[str, object]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class CommissionRequest:
    run: int
    who: str  # the token name (every set-point of the run is audited under it)
    via: str
    params: Mapping[str, object]  # step_w, max_hold_s, directions, ... (checked by the API)
    prev_mode: Mode  # restored at the end
    at_s: float  # monotonic


@dataclass(frozen=True, slots=True)
class CommissionView:
    run: int | None
    state: RunState
    who: str | None
    phase: str  # what the run is doing now (for the progress line)
    progress: Mapping[str, object] = field(default_factory=_empty)
    report: Mapping[str, object] | None = None
    abort_requested: str | None = None


class CommissionBoard:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._runs = 0
        self._pending: CommissionRequest | None = None
        self._view = CommissionView(None, RunState.IDLE, None, "idle")
        self._touched_s: float | None = None

    # ---- the API --------------------------------------------------------------------------------
    def submit(self, *, who: str, via: str, params: Mapping[str, object], prev_mode: Mode, now_s: float) -> CommissionRequest | None:
        """A new run, or None while one is queued or running."""
        with self._cond:
            if self._view.state in (RunState.QUEUED, RunState.RUNNING):
                return None
            self._runs += 1
            req = CommissionRequest(self._runs, who, via, MappingProxyType(dict(params)), prev_mode, now_s)
            self._pending = req
            self._touched_s = now_s
            self._view = CommissionView(req.run, RunState.QUEUED, who, "queued")
            self._cond.notify_all()
            return req

    def busy(self) -> bool:
        with self._cond:
            return self._view.state in (RunState.QUEUED, RunState.RUNNING)

    def cancel(self, *, who: str, reason: str) -> int | None:
        """Ask the run in progress to end (it goes back to 0 W and the previous mode); its number, or None."""
        with self._cond:
            v = self._view
            if v.state not in (RunState.QUEUED, RunState.RUNNING) or v.run is None:
                return None
            self._view = CommissionView(v.run, v.state, v.who, v.phase, v.progress, v.report, f"{reason} ({who})")
            self._cond.notify_all()
            return v.run

    def touch(self, run: int, *, now_s: float) -> bool:
        """The client of run `run` is still there (it polled); False when that run is not in progress."""
        with self._cond:
            if self._view.run != run or self._view.state not in (RunState.QUEUED, RunState.RUNNING):
                return False
            self._touched_s = now_s
            return True

    # ---- the commissioning thread ---------------------------------------------------------------
    def take(self, *, timeout_s: float) -> CommissionRequest | None:
        """Wait for a submitted run; it is RUNNING once taken."""
        with self._cond:
            self._cond.wait_for(lambda: self._pending is not None, timeout_s)
            req, self._pending = self._pending, None
            if req is not None:
                v = self._view
                self._view = CommissionView(req.run, RunState.RUNNING, req.who, "starting", abort_requested=v.abort_requested)
            return req

    def abort_requested(self) -> str | None:
        with self._cond:
            return self._view.abort_requested

    def touched_s(self) -> float | None:
        """When the client last polled (monotonic)."""
        with self._cond:
            return self._touched_s

    def progress(self, run: int, *, phase: str, **progress: object) -> None:
        with self._cond:
            v = self._view
            if v.run == run and v.state is RunState.RUNNING:
                frozen = freeze(progress)
                assert isinstance(frozen, Mapping)
                self._view = CommissionView(v.run, v.state, v.who, phase, frozen, None, v.abort_requested)

    def finish(self, run: int, *, state: RunState, report: Mapping[str, object]) -> None:
        if state not in FINISHED:
            raise ValueError(f"finish: {state} is not a final state")
        with self._cond:
            v = self._view
            if v.run == run:
                frozen = freeze(report)
                assert isinstance(frozen, Mapping)
                self._view = CommissionView(v.run, state, v.who, "finished", v.progress, frozen, v.abort_requested)
                self._cond.notify_all()

    # ---- readers --------------------------------------------------------------------------------
    def snapshot(self) -> CommissionView:
        with self._cond:
            return self._view

    def wait_finished(self, run: int, *, timeout_s: float) -> bool:
        """For tests and the bench: True once run `run` has finished."""
        with self._cond:
            return self._cond.wait_for(lambda: self._view.run == run and self._view.state in FINISHED, timeout_s)
