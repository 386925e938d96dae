"""`api:` section: REST API served by waitress (issue: REST API)."""

from __future__ import annotations

from pydantic import Field

from config.common import Section

__all__ = ["ApiConfig"]


class ApiConfig(Section):
    enabled: bool = Field(False, description="start this part")
