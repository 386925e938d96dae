"""`can:` section: CAN BMS (Pylontech / SMA-compatible frame set, docs/can.md)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, model_validator

from config.common import Section
from ems.model import Quantity

__all__ = ["CanConfig", "CanInterface", "CurrentPositive"]


class CanInterface(StrEnum):
    SOCKETCAN = "socketcan"  # production: Linux SocketCAN (can0), bitrate set with `ip link`
    SOCKETCAND = "socketcand"  # socketcand TCP protocol; the simulators serve it on 127.0.0.1
    SLCAN = "slcan"  # serial-line CAN adapters (CANable, USBtin, ...)
    VIRTUAL = "virtual"  # python-can in-process bus (tests)


class CurrentPositive(StrEnum):
    CHARGE = "charge"
    DISCHARGE = "discharge"


class CanConfig(Section):
    enabled: bool = Field(False, description="start the CAN BMS worker")
    interface: CanInterface = Field(
        CanInterface.SOCKETCAN,
        description="python-can interface: socketcan (production), socketcand (simulators over TCP on loopback), slcan, virtual (tests)",
    )
    channel: str = Field(
        "can0",
        min_length=1,
        max_length=64,
        description="CAN channel: can0 for socketcan, the serial port for slcan, the bus name for socketcand/virtual",
    )
    host: str = Field("127.0.0.1", min_length=1, description="socketcand only: server address")
    port: int = Field(29536, ge=1, le=65535, description="socketcand only: server TCP port")
    bitrate: int = Field(
        500_000,
        gt=0,
        le=1_000_000,
        description="bus bitrate, bit/s (slcan sets it; for socketcan set it with `ip link set can0 type can bitrate 500000`)",
    )
    receive_timeout_s: float = Field(
        0.5, gt=0.01, le=5, description="longest blocking receive; the worker sees its stop flag this often, s"
    )
    reopen_s: float = Field(2.0, gt=0, le=60, description="wait this long before reopening a bus that failed or closed, s")
    current_positive: CurrentPositive = Field(
        CurrentPositive.CHARGE, description="what a positive 0x356 current means on this BMS; the EMS stores bms_current_a with + charge"
    )
    keepalive_period_s: float | None = Field(
        None,
        gt=0,
        le=60,
        description="send the 0x305 inverter keep-alive this often (null = never; enable only when no inverter on the bus sends it), s",
    )
    stale_after_s: float | None = Field(
        None,
        gt=0,
        le=600,
        description="no 0x351/0x356 frame for this long: the worker raises the protection flag bms_silent (-> FAULT) until they return (null = control.fault_timeout_s), s",
    )
    ignore_ids: tuple[int, ...] = Field(
        (0x35A, 0x35B, 0x35F), description="frame ids skipped without counting them malformed (protocol V1.3 frames we do not decode)"
    )
    malformed_log_interval_s: float = Field(
        60.0, gt=0, le=3600, description="a malformed frame is logged at most once per this interval per frame id, s"
    )
    alarm_log_interval_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="a 0x359 protection/warning edge (raised or cleared) is logged and recorded as an event at most once per this per flag; the flags themselves (and FAULT) follow every frame, s",
    )
    required_sources: tuple[Quantity, ...] = Field(
        (Quantity.SOC_PCT, Quantity.BMS_VOLTAGE_V, Quantity.BMS_CCL_A, Quantity.BMS_DCL_A),
        description="when enabled, each of these must also be in control.required_sources, so a silent BMS means FAULT",
    )

    @model_validator(mode="after")
    def _ids(self) -> CanConfig:
        bad = [i for i in self.ignore_ids if not 0 <= i <= 0x1FFFFFFF]
        if bad:
            raise ValueError(f"ignore_ids: CAN ids must be within 0..0x1FFFFFFF (got {bad})")
        return self
