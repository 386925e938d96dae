"""The planner's output (DESIGN.md §1: the planner advises, the loop decides): the latest plan and
the planner's state, published by the planner thread, read by the controller and the API."""

from __future__ import annotations

import threading

from ems.plan import Plan, PlannerStatus

__all__ = ["PlanBoard", "PlannerStatus"]


OFF = PlannerStatus("off", "planner.enabled is false", None)


class PlanBoard:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plan: Plan | None = None
        self._status = OFF

    def publish(self, plan: Plan | None, status: PlannerStatus) -> None:
        """A new plan (None: withdraw it, the loop goes back to plain self-consumption) and the planner's state."""
        with self._lock:
            self._plan, self._status = plan, status

    def set_status(self, status: PlannerStatus) -> None:
        with self._lock:
            self._status = status

    def snapshot(self) -> tuple[Plan | None, PlannerStatus]:
        with self._lock:
            return self._plan, self._status
