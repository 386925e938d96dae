"""`control:` section: state machine timers, control law and the limit chain (DESIGN.md §3-4)."""

from __future__ import annotations

from pydantic import Field, model_validator

from config.common import Section
from ems.controller import ControllerConfig
from ems.core import CoreConfig
from ems.law import AdaptiveLaw, FeedForwardLaw, IntegratingLaw, Law, LawName, PredictiveLaw
from ems.limits import BmsCurrent, ForceCharge, GridLimits, LimitsConfig, Ramp, Rating, SocWindow
from ems.model import Mode, Quantity, State
from ems.statemachine import MachineConfig

__all__ = ["ControlConfig", "LawName"]


class ControlConfig(Section):
    enabled: bool = Field(False, description="opt-in 1 of 2: let a non-zero command reach the inverter")
    dry_run: bool = Field(True, description="opt-in 2 of 2 (must be false): when true, commands are computed and logged but 0 W is written")
    period_s: float = Field(1.0, gt=0.05, le=10, description="control cycle period, s")
    start_mode: Mode = Field(
        Mode.SELF_CONSUMPTION, description="run mode requested at start-up (IDLE, SELF_CONSUMPTION, CHARGE_ONLY, DISCHARGE_ONLY, EXTERNAL)"
    )
    required_sources: tuple[Quantity, ...] = Field(
        (Quantity.GRID_POWER_W, Quantity.ESS_POWER_W, Quantity.SOC_PCT),
        description="measurements whose staleness is a FAULT cause",
    )
    fault_timeout_s: float = Field(
        3.0, gt=0, le=600, description="a required source with no good reading for this long is stale -> FAULT, s"
    )
    recover_s: float = Field(10.0, ge=0, le=3600, description="every FAULT cause must be clear this long before leaving FAULT, s")
    worker_stall_s: float = Field(10.0, gt=0, le=600, description="a worker with no heartbeat for this long is stalled -> FAULT, s")
    target_grid_w: float = Field(0.0, ge=-1e6, le=1e6, description="self-consumption target grid power (+ import), W")
    law: LawName = Field(
        LawName.ADAPTIVE,
        description="self-consumption control law: adaptive (needs no plant constant: identifies the inverter online), "
        "integrating (DESIGN §4 reference law) or predictive (needs inverter_tau_s); docs/benchmarks.md",
    )
    gain: float = Field(0.6, gt=0, le=2, description="integrating law gain: cmd = prev_cmd + gain * (grid - target)")
    deadband_w: float = Field(10.0, ge=0, le=10000, description="no correction while |grid - target| is below this, W")
    inverter_tau_s: float = Field(
        1.0, ge=0, le=60, description="predictive law: the inverter's first-order response time constant it compensates (0 = instant), s"
    )
    meter_age_s: float = Field(
        0.5,
        ge=0,
        le=10,
        description="predictive law: typical age of a meter value when it is polled (about half the meter's refresh period), s",
    )
    lag_compensation: float = Field(
        1.0, ge=0, le=1, description="predictive law: share of the inverter lag compensated (1 = reach the goal in one cycle, 0 = none)"
    )
    smoothing_band_w: float = Field(
        60.0,
        ge=0,
        le=1e6,
        description="predictive law: changes of the balancing goal smaller than this are smoothed (meter noise, load flicker), W",
    )
    trust_scale_w: float = Field(
        100.0,
        ge=0,
        le=1e6,
        description="predictive law: a meter reading taken while the inverter moved this much since its last reading counts half; its weight falls with the square of the move (0 = always full), W",
    )
    smoothing_gain: float = Field(
        0.3, gt=0, le=1, description="predictive law: share of a small goal change taken per cycle (1 = no smoothing)"
    )
    charge_power_w: float = Field(2000.0, ge=0, le=1e6, description="CHARGE_ONLY charge power, W")
    discharge_power_w: float = Field(2000.0, ge=0, le=1e6, description="DISCHARGE_ONLY discharge power, W")
    external_fallback: State = Field(
        State.STANDBY, description="state after an external set-point's TTL lapses: STANDBY or SELF_CONSUMPTION"
    )
    external_max_ttl_s: float = Field(3600.0, gt=0, le=86400, description="longest TTL accepted for an external set-point, s")
    max_charge_w: float = Field(5000.0, ge=0, le=1e6, description="limit 1: inverter charge rating, W")
    max_discharge_w: float = Field(5000.0, ge=0, le=1e6, description="limit 1: inverter discharge rating, W")
    use_bms_limits: bool = Field(True, description="limit 2: apply BMS CCL/DCL x voltage and enable flags when the BMS reports them")
    soc_min_pct: float = Field(10.0, ge=0, le=100, description="limit 3: no discharge at or below, %")
    soc_max_pct: float = Field(95.0, ge=0, le=100, description="limit 3: no charge at or above, %")
    soc_hysteresis_pct: float = Field(2.0, ge=0, le=20, description="limit 3: a blocked direction reopens this far inside the window, %")
    force_charge_w: float = Field(1000.0, ge=0, le=1e6, description="limit 3: charge power when the BMS requests a force charge, W")
    max_import_w: float | None = Field(
        None, ge=0, le=1e7, description="limit 4: the battery never makes grid import exceed this (null = off), W"
    )
    max_export_w: float | None = Field(
        None, ge=0, le=1e7, description="limit 4: the battery never makes grid export exceed this (null = off), W"
    )
    ramp_w_per_s: float | None = Field(
        None, gt=0, le=1e7, description="limit 5: max rise of |command| per second; reductions are immediate (null = off), W/s"
    )
    shutdown_timeout_s: float = Field(3.0, gt=0, le=30, description="on SIGTERM, wait this long for the inverter to take 0 W, s")
    summary_interval_s: float = Field(60.0, ge=0, le=3600, description="periodic summary log line interval (0 = off), s")

    @model_validator(mode="after")
    def _consistent(self) -> ControlConfig:
        if self.soc_min_pct >= self.soc_max_pct:
            raise ValueError(f"soc_min_pct: must be < control.soc_max_pct (got {self.soc_min_pct:g} >= {self.soc_max_pct:g})")
        if self.external_fallback not in (State.STANDBY, State.SELF_CONSUMPTION):
            raise ValueError(f"external_fallback: must be STANDBY or SELF_CONSUMPTION (got {self.external_fallback})")
        if self.soc_min_pct + self.soc_hysteresis_pct >= self.soc_max_pct - self.soc_hysteresis_pct:
            raise ValueError("soc_hysteresis_pct: the hysteresis bands overlap; widen the SOC window or narrow the hysteresis")
        return self

    @property
    def live(self) -> bool:
        """Both opt-ins given: non-zero commands may reach the inverter."""
        return self.enabled and not self.dry_run

    def make_law(self) -> Law:
        """The law, chosen once at start. Without both opt-ins nothing drives the inverter, so the
        feed-forward law shows the set-point that would balance the grid now (an integrator would wind up)."""
        if not self.live:
            return FeedForwardLaw(deadband_w=self.deadband_w)
        if self.law is LawName.ADAPTIVE:
            return AdaptiveLaw(period_s=self.period_s)
        if self.law is LawName.PREDICTIVE:
            return PredictiveLaw(
                period_s=self.period_s,
                inverter_tau_s=self.inverter_tau_s,
                meter_age_s=self.meter_age_s,
                lag_compensation=self.lag_compensation,
                smoothing_band_w=self.smoothing_band_w,
                trust_scale_w=self.trust_scale_w,
                smoothing_gain=self.smoothing_gain,
                deadband_w=self.deadband_w,
                gain=self.gain,
            )
        return IntegratingLaw(gain=self.gain, deadband_w=self.deadband_w)

    def limits(self) -> LimitsConfig:
        return LimitsConfig(
            rating=Rating(max_charge_w=self.max_charge_w, max_discharge_w=self.max_discharge_w),
            bms=BmsCurrent(enabled=self.use_bms_limits),
            soc=SocWindow(soc_min_pct=self.soc_min_pct, soc_max_pct=self.soc_max_pct, hysteresis_pct=self.soc_hysteresis_pct),
            force_charge=ForceCharge(power_w=self.force_charge_w),
            grid=GridLimits(max_import_w=self.max_import_w, max_export_w=self.max_export_w),
            ramp=Ramp(w_per_s=self.ramp_w_per_s, period_s=self.period_s),
        )

    def machine(self) -> MachineConfig:
        return MachineConfig(
            required_sources=self.required_sources,
            fault_timeout_s=self.fault_timeout_s,
            recover_s=self.recover_s,
            external_fallback=self.external_fallback,
        )

    def controller(self) -> ControllerConfig:
        return ControllerConfig(
            core=self.core(),
            period_s=self.period_s,
            worker_stall_s=self.worker_stall_s,
            shutdown_timeout_s=self.shutdown_timeout_s,
            summary_interval_s=self.summary_interval_s,
        )

    def core(self) -> CoreConfig:
        """The pure core's config (ems.core.CoreConfig): plain frozen dataclasses, one per concern."""
        return CoreConfig(
            machine=self.machine(),
            limits=self.limits(),
            law=self.make_law(),
            target_grid_w=self.target_grid_w,
            charge_power_w=self.charge_power_w,
            discharge_power_w=self.discharge_power_w,
            enabled=self.enabled,
            dry_run=self.dry_run,
        )
