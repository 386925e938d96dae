"""Config of `python -m simulators --config FILE` (e.g. config/simulators.yaml); pydantic, keys checked.

Separate from the EMS config: the simulators are another process, standing in for the field devices.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from config.common import Section
from simulators.bms import BmsSimConfig
from simulators.plant import DEFAULT_OCV_CURVE, PlantParams

__all__ = [
    "ControlChannelConfig",
    "PlantConfig",
    "SimConfigError",
    "SimDeviceConfig",
    "SimLoggingConfig",
    "SimulatorConfig",
    "load_sim_config",
]


class SimConfigError(ValueError):
    """Problems in a simulator config file, one per line, each naming its dotted key."""


class PlantConfig(Section):
    profile: str = Field("summer-sunny", description="day profile: a shipped name (summer-sunny, spring-mixed, winter) or a CSV path")
    start_time: str = Field("00:00", description="time of day the simulation starts at, HH:MM[:SS] (profile time)")
    speed: float = Field(1.0, gt=0, le=1000, description="simulated seconds per real second")
    step_s: float = Field(0.1, gt=0.005, le=1.0, description="real seconds between plant steps")
    summary_interval_s: float = Field(10.0, ge=0, le=3600, description="log a plant_summary line every this many real seconds (0 = off)")
    load_offset_w: float = Field(0.0, ge=-1e6, le=1e6, description="added to the profile's load (rehearse a load step), W")
    capacity_wh: float = Field(10_000.0, gt=0, description="usable battery energy, Wh")
    soc_start_pct: float = Field(50.0, ge=0, le=100, description="SOC at start, %")
    charge_efficiency: float = Field(0.95, gt=0, le=1, description="AC -> DC efficiency when charging")
    discharge_efficiency: float = Field(0.95, gt=0, le=1, description="DC -> AC efficiency when discharging")
    ocv_curve: tuple[tuple[float, float], ...] = Field(
        DEFAULT_OCV_CURVE, description="open-circuit voltage: (SOC %, pack V) pairs, SOC increasing"
    )
    nominal_voltage_v: float = Field(51.2, gt=0, description="nominal pack voltage, V")
    internal_resistance_ohm: float = Field(0.01, ge=0, description="pack internal resistance, ohm")
    max_charge_current_a: float = Field(100.0, ge=0, description="BMS-like charge current limit away from full, A")
    max_discharge_current_a: float = Field(100.0, ge=0, description="BMS-like discharge current limit away from empty, A")
    charge_taper_start_pct: float = Field(90.0, ge=0, le=100, description="CCL falls linearly to 0 A from here to 100 %, %")
    discharge_taper_end_pct: float = Field(5.0, ge=0, le=100, description="DCL falls linearly to 0 A from here to 0 %, %")
    inverter_max_charge_w: float = Field(5000.0, ge=0, description="inverter charge rating, W")
    inverter_max_discharge_w: float = Field(5000.0, ge=0, description="inverter discharge rating, W")
    inverter_tau_s: float = Field(1.0, ge=0, description="inverter first-order response time constant (simulated s)")
    quantisation_w: float = Field(0.0, ge=0, description="inverter set-point resolution (0 = none), W")
    dead_time_s: float = Field(
        0.0, ge=0, le=30, description="from a written set-point to the inverter's first response (simulated s); 0 = none"
    )
    ramp_w_per_s: float = Field(0.0, ge=0, description="fastest change of the inverter's power reference (0 = no ramp limit), W/s")
    meter_period_s: float = Field(1.0, gt=0, description="meter refresh period (simulated s)")
    meter_noise_w: float = Field(5.0, ge=0, description="meter noise standard deviation, W")
    watchdog_s: float = Field(10.0, ge=0, description="inverter heartbeat timeout (simulated s); 0 = no watchdog")
    ambient_temperature_degc: float = Field(25.0, description="battery ambient temperature, degC")
    seed: int = Field(0, description="random seed (meter noise)")

    @field_validator("start_time")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        if not re.fullmatch(r"([01]?\d|2[0-3]):[0-5]\d(:[0-5]\d)?", v):
            raise ValueError(f"must be HH:MM or HH:MM:SS (got {v!r})")
        return v

    @property
    def start_time_s(self) -> float:
        parts = [int(x) for x in self.start_time.split(":")]
        return float(parts[0] * 3600 + parts[1] * 60 + (parts[2] if len(parts) > 2 else 0))

    def params(self) -> PlantParams:
        names = set(PlantParams.__dataclass_fields__) - {"_ocv_table", "thermal_tau_s", "heating_degc_per_kw"}
        try:
            return PlantParams(**{n: getattr(self, n) for n in names})
        except ValueError as exc:
            raise SimConfigError(f"plant: {exc}") from exc


class SimDeviceConfig(Section):
    enabled: bool = Field(True, description="serve this device")
    transport: Literal["tcp", "rtu"] = Field("tcp", description="tcp or rtu (serial)")
    host: str = Field("127.0.0.1", description="tcp: bind address (loopback)")
    port: int = Field(15020, ge=1, le=65535, description="tcp: port")
    serial_port: str = Field("", description="rtu: serial device (e.g. one end of a socat pty pair)")
    baudrate: int = Field(19200, ge=300, le=921600, description="rtu: baud rate")
    device_id: int = Field(1, ge=0, le=247, description="Modbus unit ID")
    map: str = Field("sunspec_ess", description="point map served (interfaces/modbus/maps)")


class SimEssConfig(SimDeviceConfig):
    port: int = Field(15020, ge=1, le=65535, description="tcp: port")
    device_id: int = Field(1, ge=0, le=247, description="Modbus unit ID")
    map: str = Field("sunspec_ess", description="point map served (interfaces/modbus/maps)")


class SimMeterConfig(SimDeviceConfig):
    port: int = Field(15021, ge=1, le=65535, description="tcp: port")
    device_id: int = Field(2, ge=0, le=247, description="Modbus unit ID")
    map: str = Field("sdm630", description="point map served (interfaces/modbus/maps)")


class SimPvMeterConfig(SimDeviceConfig):
    enabled: bool = Field(False, description="serve a PV production meter (the EMS's modbus.pv)")
    port: int = Field(15022, ge=1, le=65535, description="tcp: port")
    device_id: int = Field(3, ge=0, le=247, description="Modbus unit ID")
    map: str = Field("sdm630_pv", description="point map served (interfaces/modbus/maps)")


class ControlChannelConfig(Section):
    enabled: bool = Field(True, description="serve the rehearsal command channel (docs/simulator.md)")
    host: str = Field("127.0.0.1", description="bind address (loopback)")
    port: int = Field(15029, ge=0, le=65535, description="TCP port (0 = any free port; the log says which)")


class SimLoggingConfig(Section):
    format: Literal["auto", "json", "console"] = Field("auto", description="auto = console on a TTY, JSON otherwise")
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="minimum level")


class SimulatorConfig(Section):
    plant: PlantConfig = Field(default_factory=PlantConfig, description="site physics and profile")
    ess: SimEssConfig = Field(default_factory=SimEssConfig, description="battery inverter")
    meter: SimMeterConfig = Field(default_factory=SimMeterConfig, description="grid meter")
    pv: SimPvMeterConfig = Field(default_factory=SimPvMeterConfig, description="PV production meter (optional)")
    bms: BmsSimConfig = Field(default_factory=lambda: BmsSimConfig(enabled=False), description="CAN BMS simulator (docs/can.md)")
    control: ControlChannelConfig = Field(default_factory=ControlChannelConfig, description="rehearsal command channel")
    logging: SimLoggingConfig = Field(default_factory=SimLoggingConfig, description="log output")


def load_sim_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> SimulatorConfig:
    """Read and validate a simulator config (None = defaults). Raises SimConfigError naming keys."""
    raw: Any = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise SimConfigError(f"{path}: cannot read: {exc}") from exc
        if not isinstance(raw, dict):
            raise SimConfigError(f"{path}: the top level must be a mapping of sections")
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, last = dotted.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[last] = value
    try:
        cfg = SimulatorConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{'.'.join(str(x) for x in e['loc'])}: {str(e['msg']).removeprefix('Value error, ')}" for e in exc.errors()]
        raise SimConfigError("\n".join(lines)) from exc
    cfg.plant.params()  # physics checks (e.g. taper order) named under plant:
    return cfg
