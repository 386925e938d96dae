"""Builders for tests that need the shared context: feed readings as a test source, build a
controller from a config, publish a control status as the controller would."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from config import EMSConfig
from config.control import ControlConfig
from ems.clock import Clock
from ems.context import EMSContext, PlanBoard
from ems.controller import Controller, Supervised
from ems.model import Command, ControlStatus, Quantity, State

__all__ = ["feed", "make_controller", "publish"]


def feed(ctx: EMSContext, values: Mapping[Quantity, float], *, at_s: float | None = None, source: str = "test") -> int:
    """Write readings as `source` (claimed firmly on the way); returns how many were dropped."""
    writer = ctx.readings.claim(source, values.keys())
    return writer.update(values, at_s=ctx.clock.monotonic() if at_s is None else at_s)


def make_controller(
    ctx: EMSContext,
    cfg: ControlConfig | EMSConfig,
    clock: Clock | None = None,
    *,
    workers: Sequence[Supervised] = (),
    on_cycle: Sequence[object] = (),
    plans: PlanBoard | None = None,
) -> Controller:
    control = cfg.control if isinstance(cfg, EMSConfig) else cfg
    return Controller(
        readings=ctx.readings,
        requests=ctx.requests,
        commands=ctx.commands,
        health=ctx.health,
        events=ctx.events,
        required_sources=frozenset(control.required_sources),
        cfg=control.controller(),
        clock=clock or ctx.clock,
        workers=workers,
        on_cycle=on_cycle,  # type: ignore[arg-type]
        plans=plans,
    )


def publish(
    ctx: EMSContext,
    *,
    seq: int,
    setpoint_w: float,
    written_w: float | None = None,
    state: State = State.SELF_CONSUMPTION,
    limits: tuple[str, ...] = (),
    hold: str | None = None,
    gate: str | None = None,
    fault_causes: tuple[str, ...] = (),
    at_s: float | None = None,
) -> Command:
    """Publish one cycle's status on the command channel, as the controller does."""
    now = ctx.clock.monotonic() if at_s is None else at_s
    cmd = Command(seq, setpoint_w, setpoint_w if written_w is None else written_w, now)
    ctx.commands.publish(ControlStatus(cmd, state, now, limits, hold, gate, fault_causes, overruns=0))
    return cmd
