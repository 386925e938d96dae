"""`uplink:` section: cloud uplink of 5-minute batches (issue: persistence and uplink)."""

from __future__ import annotations

from pydantic import Field

from config.common import Section

__all__ = ["UplinkConfig"]


class UplinkConfig(Section):
    enabled: bool = Field(False, description="start this part")
