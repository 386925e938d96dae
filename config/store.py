"""`store:` section: SQLite persistence (issue: persistence and uplink)."""

from __future__ import annotations

from pydantic import Field

from config.common import Section

__all__ = ["StoreConfig"]


class StoreConfig(Section):
    enabled: bool = Field(False, description="start this part")
