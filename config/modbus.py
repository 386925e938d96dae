"""`modbus:` section: Modbus TCP/RTU devices: ESS inverter and grid meter (docs/modbus.md)."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field, field_validator, model_validator

from config.common import Section
from ems.model import Quantity

__all__ = [
    "EssDeviceConfig",
    "MeterDeviceConfig",
    "ModbusConfig",
    "ModbusDeviceConfig",
    "PvMeterDeviceConfig",
    "ReleaseOnStop",
    "Transport",
]


class Transport(StrEnum):
    TCP = "tcp"
    RTU = "rtu"


class ModbusDeviceConfig(Section):
    enabled: bool = Field(True, description="poll this device (when the modbus section is enabled)")
    transport: Transport = Field(Transport.TCP, description="tcp (Modbus TCP) or rtu (serial RS-485)")
    host: str = Field("127.0.0.1", min_length=1, description="tcp: device or gateway address")
    port: int = Field(502, ge=1, le=65535, description="tcp: port")
    serial_port: str = Field("/dev/ttyUSB0", min_length=1, description="rtu: serial device path")
    baudrate: int = Field(9600, ge=300, le=921600, description="rtu: baud rate")
    parity: Literal["N", "E", "O"] = Field("N", description="rtu: parity N, E or O")
    stopbits: Literal[1, 2] = Field(1, description="rtu: stop bits")
    device_id: int = Field(1, ge=0, le=247, description="Modbus unit / slave ID (RTU 1-247)")
    map: str = Field(
        "auto", min_length=1, description="point map: a name in interfaces/modbus/maps, a YAML path, or auto (SunSpec discovery picks it)"
    )
    word_order: Literal["map", "big", "little"] = Field(
        "map", description="32-bit word order: map (as the point map says), big (high word first) or little"
    )
    poll_period_s: float = Field(1.0, gt=0.05, le=60, description="read the device every this many seconds, s")
    timeout_s: float = Field(1.0, gt=0.05, le=30, description="request timeout, s")
    retries: int = Field(0, ge=0, le=5, description="retries per request before it counts as failed")
    device_ids: dict[str, int] = Field(
        default_factory=dict,
        description="unit ids of a profile's named sub-devices, where the site differs (e.g. {vebus: 242} on a Victron GX)",
    )
    ignore_points: tuple[str, ...] = Field(
        (),
        description="readings of this device not to publish (a CAN BMS needs none: it owns the battery readings, the inverter's copies yield)",
    )

    @field_validator("ignore_points")
    @classmethod
    def _known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(v) - {q.value for q in Quantity})
        if unknown:
            raise ValueError(f"unknown reading(s) {unknown}; known: {sorted(q.value for q in Quantity)}")
        return v


class ReleaseOnStop(StrEnum):
    AUTO = "auto"
    NATIVE = "native"
    ZERO = "zero"


class EssDeviceConfig(ModbusDeviceConfig):
    """The battery inverter: SunSpec discovery picks its map by default."""

    map: str = Field(
        "auto",
        min_length=1,
        description="device profile / point map: a name in interfaces/modbus/maps (`emsctl devices` lists them), a YAML path, or auto (SunSpec discovery)",
    )
    release_on_stop: ReleaseOnStop = Field(
        ReleaseOnStop.AUTO,
        description="on stop: native (write the profile's release: the inverter returns to its own self-consumption), zero (leave it at 0 W under external control until its own timer reverts it), auto (native when the profile has a release)",
    )
    rating_w: float | None = Field(
        None,
        gt=0,
        le=1e6,
        description="percent-of-rating profiles: the rating the percentages refer to, when the device does not report it, W",
    )


class MeterDeviceConfig(ModbusDeviceConfig):
    """The grid meter: an Eastron SDM630 map and unit ID 2 by default."""

    map: str = Field(
        "sdm630", min_length=1, description="point map: a name in interfaces/modbus/maps, a YAML path, or auto (SunSpec discovery picks it)"
    )
    device_id: int = Field(2, ge=0, le=247, description="Modbus unit / slave ID (RTU 1-247)")


class PvMeterDeviceConfig(ModbusDeviceConfig):
    """An optional PV production meter (pv_power_w): off by default, SDM630 wired for production, unit ID 3."""

    enabled: bool = Field(False, description="poll a PV production meter (pv_power_w; shown and stored, not used by the control law)")
    map: str = Field(
        "sdm630_pv",
        min_length=1,
        description="point map: a name in interfaces/modbus/maps, a YAML path, or auto (SunSpec discovery picks it)",
    )
    device_id: int = Field(3, ge=0, le=247, description="Modbus unit / slave ID (RTU 1-247)")


class ModbusConfig(Section):
    enabled: bool = Field(False, description="start this part")
    ess: EssDeviceConfig = Field(
        default_factory=EssDeviceConfig, description="battery inverter: readings (ess_power_w, soc_pct, ...), command, enable and heartbeat"
    )
    meter: MeterDeviceConfig = Field(default_factory=MeterDeviceConfig, description="grid meter: grid_power_w, ...")
    pv: PvMeterDeviceConfig = Field(default_factory=PvMeterDeviceConfig, description="PV production meter (optional): pv_power_w")
    reconnect_min_s: float = Field(0.5, gt=0, le=60, description="first reconnect delay; doubles per failure (tenacity exponential), s")
    reconnect_max_s: float = Field(10.0, gt=0, le=600, description="longest reconnect delay, s")
    command_max_age_s: float = Field(5.0, gt=0, le=600, description="after a reconnect, a command older than this is re-written as 0 W, s")
    bad_value_log_interval_s: float = Field(
        60.0, ge=0, le=3600, description="log a rejected register at most once per point per this many seconds, s"
    )

    @model_validator(mode="after")
    def _ordered(self) -> ModbusConfig:
        on_line: dict[str, tuple[str, ModbusDeviceConfig]] = {}  # serial port -> the first device on it
        for name, d in (("ess", self.ess), ("meter", self.meter), ("pv", self.pv)):
            if not d.enabled or d.transport is not Transport.RTU:
                continue
            if d.serial_port not in on_line:
                on_line[d.serial_port] = (name, d)
                continue
            fname, f = on_line[d.serial_port]
            if (d.baudrate, d.parity, d.stopbits) != (f.baudrate, f.parity, f.stopbits):
                raise ValueError(f"{name}: on the serial port modbus.{fname} uses, baudrate, parity and stopbits must match modbus.{fname}")
            if d.device_id == f.device_id:
                raise ValueError(f"{name}: device_id {d.device_id} is modbus.{fname}'s on the same serial line")
        self._one_client_per_device()
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(
                f"reconnect_min_s: must be <= modbus.reconnect_max_s (got {self.reconnect_min_s:g} > {self.reconnect_max_s:g})"
            )
        return self

    def _one_client_per_device(self) -> None:
        """A device that serves one Modbus TCP client (its profile's `device.single_client`) cannot
        also be the meter's or the PV meter's address: the EMS would open a second connection to it.
        The inverter profile's own grid and PV readings serve instead (or a Modbus proxy)."""
        ess = self.ess
        if not ess.enabled or ess.transport is not Transport.TCP or ess.map == "auto":
            return
        from interfaces.modbus.pointmap import MapError, load_map  # config must not need the maps to import

        try:
            single = load_map(ess.map).device.single_client
        except MapError:
            return  # an unknown map is reported when the link loads it
        if not single:
            return
        for name, d in (("meter", self.meter), ("pv", self.pv)):
            if d.enabled and d.transport is Transport.TCP and (d.host, d.port) == (ess.host, ess.port):
                raise ValueError(
                    f"{name}.port: modbus.{name}.host:port ({d.host}:{d.port}) is modbus.ess.host:port, and modbus.ess.map {ess.map!r} "
                    f"serves only one Modbus TCP client (device.single_client): set modbus.{name}.enabled: false (the inverter's own "
                    f"readings serve) or reach the device through a Modbus proxy"
                )
