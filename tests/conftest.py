"""Fixtures shared by every test layer. Area-specific fixtures live in their own test modules
or in tests/helpers/<area>.py, so parallel work does not collide here."""

from __future__ import annotations

import pytest

from config import EMSConfig, parse_config
from ems.clock import SimClock
from ems.context import EMSContext
from ems.model import Mode


@pytest.fixture
def sim_clock() -> SimClock:
    return SimClock()


@pytest.fixture
def live_cfg() -> EMSConfig:
    """Defaults with both control opt-ins given."""
    return parse_config({"control": {"enabled": True, "dry_run": False}}, {})


@pytest.fixture
def ctx(sim_clock: SimClock) -> EMSContext:
    return EMSContext(clock=sim_clock, start_mode=Mode.SELF_CONSUMPTION)
