"""`modbus:` section: Modbus TCP/RTU devices: ESS inverter and grid meter (issue: simulator/Modbus)."""

from __future__ import annotations

from pydantic import Field

from config.common import Section

__all__ = ["ModbusConfig"]


class ModbusConfig(Section):
    enabled: bool = Field(False, description="start this part")
