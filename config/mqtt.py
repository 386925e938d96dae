"""`mqtt:` section: MQTT broker, commands, ingest and state publishing (issue: MQTT)."""

from __future__ import annotations

from pydantic import Field

from config.common import Section

__all__ = ["MqttConfig"]


class MqttConfig(Section):
    enabled: bool = Field(False, description="start this part")
