"""`can:` section: CAN BMS (issue: CAN BMS)."""

from __future__ import annotations

from pydantic import Field

from config.common import Section

__all__ = ["CanConfig"]


class CanConfig(Section):
    enabled: bool = Field(False, description="start this part")
