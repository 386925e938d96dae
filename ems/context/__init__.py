"""The shared context (DESIGN.md §1), split by concern: each part has its own lock and a narrow interface.

- `readings`: measurements and BMS flags, each quantity owned by one source (`readings.claim`);
- `requests`: the requested mode and the external set-point, every request audited;
- `commands`: the command channel from the controller to the ESS link;
- `health`: per-device health and thread heartbeats;
- `plans`: the planner's latest plan and state (the controller follows the active slot);
- `polling`: bounded, expiring fast-poll requests the device links honour (commissioning);
- `commission`: the commissioning board: a run requested over the API, its progress and report;
- `events`: the event log; `counters`: named counters.

The controller, each worker and the API are handed only the parts they use. `snapshot()` copies
every part (each under its own lock, a few attribute copies) and reads the clock after the
copies, so no reading is newer than `snap.at_s`. Nobody gets a mutable internal, and no part
does I/O while holding its lock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from ems.clock import Clock
from ems.context.commands import CommandChannel
from ems.context.commission import CommissionBoard
from ems.context.counters import Counters
from ems.context.events import EventLog
from ems.context.health import Health
from ems.context.plan import PlanBoard, PlannerStatus
from ems.context.polling import PollRequests
from ems.context.readings import Readings, ReadingsWriter
from ems.context.requests import AuditNotDurable, PricePush, RequestResult, Requests
from ems.model import Mode, Quantity, Snapshot
from ems.plausibility import Window

__all__ = [
    "AuditNotDurable",
    "CommandChannel",
    "CommissionBoard",
    "Counters",
    "EMSContext",
    "EventLog",
    "Health",
    "PlanBoard",
    "PlannerStatus",
    "PollRequests",
    "PricePush",
    "Readings",
    "ReadingsWriter",
    "RequestResult",
    "Requests",
]

DEFAULT_REQUIRED = (Quantity.GRID_POWER_W, Quantity.ESS_POWER_W, Quantity.SOC_PCT)


class EMSContext:
    """The parts, built once in main.py and handed out one by one."""

    def __init__(
        self,
        *,
        clock: Clock,
        start_mode: Mode = Mode.IDLE,
        max_ttl_s: float = 3600.0,
        events_kept: int = 5000,
        required_sources: Iterable[Quantity] = DEFAULT_REQUIRED,
        windows: Mapping[Quantity, Window] | None = None,
    ) -> None:
        self.clock = clock
        self.started_at_s = clock.monotonic()
        self.required_sources = frozenset(required_sources)
        self.counters = Counters()
        self.events = EventLog(clock=clock, kept=events_kept)
        self.readings = Readings(self.counters, windows)
        self.requests = Requests(events=self.events, clock=clock, start_mode=start_mode, max_ttl_s=max_ttl_s)
        self.commands = CommandChannel()
        self.health = Health()
        self.plans = PlanBoard()
        self.polling = PollRequests()
        self.commission = CommissionBoard()

    def snapshot(self) -> Snapshot:
        measurements, flags = self.readings.snapshot()
        owners = self.readings.owners()
        mode, setpoint = self.requests.snapshot()
        control, written_seq = self.commands.snapshot()
        devices, threads = self.health.snapshot(owners, self.required_sources)
        plan, planner = self.plans.snapshot()
        counters = self.counters.snapshot()
        at_s = self.clock.monotonic()  # after the copies: nothing in the snapshot is newer
        return Snapshot(
            at_s=at_s,
            started_at_s=self.started_at_s,
            measurements=measurements,
            bms_flags=flags,
            requested_mode=mode,
            external_setpoint=setpoint,
            control=control,
            written_seq=written_seq,
            devices=devices,
            threads=threads,
            counters=counters,
            plan=plan,
            planner=planner,
            import_cap=self.requests.import_cap(),
            energy=self.readings.energy(),
        )

    def owners(self) -> Mapping[Quantity, str]:
        """quantity -> owning source (for the API's catalogue and tests)."""
        return MappingProxyType({q: src for q, (src, _dev) in self.readings.owners().items()})
