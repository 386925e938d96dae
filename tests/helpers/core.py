"""Builders for pure-core tests: Inputs with sensible fresh readings, overridable."""

from __future__ import annotations

from collections.abc import Mapping

from config import EMSConfig, parse_config
from config.control import ControlConfig
from ems.core import CoreConfig
from ems.inputs import Inputs
from ems.model import BmsFlags, ExternalSetpoint, Mode, Quantity, Reading
from ems.statemachine import MachineConfig

Q = Quantity


def control_cfg(**overrides: object) -> ControlConfig:
    cfg: EMSConfig = parse_config({"control": dict(overrides)}, {})
    return cfg.control


def core_cfg(**overrides: object) -> CoreConfig:
    """The pure core's config, built from a `control:` section with these keys (validated as in a file)."""
    return control_cfg(**overrides).core()


def machine_cfg(**overrides: object) -> MachineConfig:
    return control_cfg(**overrides).machine()


def make_inputs(
    *,
    now_s: float = 100.0,
    started_at_s: float = 0.0,
    grid_w: float | None = 0.0,
    ess_w: float | None = 0.0,
    soc_pct: float | None = 50.0,
    extra: Mapping[Quantity, float] | None = None,
    age_s: float = 0.0,
    mode: Mode = Mode.SELF_CONSUMPTION,
    setpoint: ExternalSetpoint | None = None,
    protections: frozenset[str] = frozenset(),
    worker_faults: tuple[str, ...] = (),
    shutdown: bool = False,
) -> Inputs:
    values: dict[Quantity, float | None] = {Q.GRID_POWER_W: grid_w, Q.ESS_POWER_W: ess_w, Q.SOC_PCT: soc_pct}
    values.update(extra or {})
    m = {q: Reading(v, now_s - age_s) for q, v in values.items() if v is not None}
    flags = BmsFlags(protections, frozenset(), now_s) if protections else None
    return Inputs(
        now_s=now_s,
        started_at_s=started_at_s,
        measurements=m,
        bms_flags=flags,
        requested_mode=mode,
        external_setpoint=setpoint,
        worker_faults=worker_faults,
        shutdown=shutdown,
    )
