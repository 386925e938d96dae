"""main.build_services starts the CAN worker only when can.enabled."""

from __future__ import annotations

from config import parse_config
from ems.clock import SimClock
from ems.context import EMSContext
from interfaces.can.worker import CanWorker
from main import build_services
from tests.helpers.can import BMS_SOURCES


def test_the_can_worker_is_built_only_when_enabled() -> None:
    clock = SimClock()
    on = parse_config({"can": {"enabled": True}, "control": {"required_sources": BMS_SOURCES}}, {})
    off = parse_config({}, {})
    services = build_services(on, EMSContext(clock=clock), clock)
    workers = [s for s in services if isinstance(s, CanWorker)]
    assert len(workers) == 1
    assert workers[0].name == "can" and not workers[0].is_alive()  # built, not started
    assert not [s for s in build_services(off, EMSContext(clock=clock), clock) if isinstance(s, CanWorker)]
