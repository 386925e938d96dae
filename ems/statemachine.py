"""The EMS state machine (DESIGN.md §3, STYLE S3): guards become events, transitions are data.

`step(machine, inputs, cfg)` is pure. Run `python -m ems.statemachine` to render the table
into docs/state-machine.md (a test checks the file is current).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from types import MappingProxyType

from ems.inputs import Inputs
from ems.model import LOCAL_MODES, Mode, Quantity, State

__all__ = ["TRANSITIONS", "Event", "MachineConfig", "MachineState", "Transition", "classify", "fault_causes", "render_markdown", "step"]


class Event(StrEnum):
    SHUTDOWN = "SHUTDOWN"  # SIGTERM/SIGINT: stop writing anything but 0 W
    FAULT_DETECTED = "FAULT_DETECTED"  # a required source stale, a BMS protection, a dead/stalled worker
    CAUSES_CLEARED = "CAUSES_CLEARED"  # in FAULT: every cause clear for recover_s
    STARTED = "STARTED"  # first cycle of a healthy process
    MODE_IDLE = "MODE_IDLE"  # requested mode IDLE
    MODE_LOCAL = "MODE_LOCAL"  # SELF_CONSUMPTION, CHARGE_ONLY or DISCHARGE_ONLY requested
    SETPOINT_ACTIVE = "SETPOINT_ACTIVE"  # mode EXTERNAL with a set-point inside its TTL
    NO_SETPOINT_TO_STANDBY = "NO_SETPOINT_TO_STANDBY"  # mode EXTERNAL, no live set-point (none, or its TTL lapsed), fallback STANDBY
    NO_SETPOINT_TO_SELF_CONSUMPTION = "NO_SETPOINT_TO_SELF_CONSUMPTION"  # same, fallback SELF_CONSUMPTION


S, E = State, Event
TRANSITIONS: Mapping[tuple[State, Event], State] = MappingProxyType(
    {
        (S.STOP, E.STARTED): S.STANDBY,
        (S.STOP, E.FAULT_DETECTED): S.FAULT,
        (S.STANDBY, E.SHUTDOWN): S.STOP,
        (S.STANDBY, E.FAULT_DETECTED): S.FAULT,
        (S.STANDBY, E.MODE_LOCAL): S.SELF_CONSUMPTION,
        (S.STANDBY, E.SETPOINT_ACTIVE): S.EXTERNAL,
        (S.STANDBY, E.NO_SETPOINT_TO_SELF_CONSUMPTION): S.SELF_CONSUMPTION,
        (S.SELF_CONSUMPTION, E.SHUTDOWN): S.STOP,
        (S.SELF_CONSUMPTION, E.FAULT_DETECTED): S.FAULT,
        (S.SELF_CONSUMPTION, E.MODE_IDLE): S.STANDBY,
        (S.SELF_CONSUMPTION, E.SETPOINT_ACTIVE): S.EXTERNAL,
        (S.SELF_CONSUMPTION, E.NO_SETPOINT_TO_STANDBY): S.STANDBY,
        (S.EXTERNAL, E.SHUTDOWN): S.STOP,
        (S.EXTERNAL, E.FAULT_DETECTED): S.FAULT,
        (S.EXTERNAL, E.MODE_IDLE): S.STANDBY,
        (S.EXTERNAL, E.MODE_LOCAL): S.SELF_CONSUMPTION,
        (S.EXTERNAL, E.NO_SETPOINT_TO_STANDBY): S.STANDBY,
        (S.EXTERNAL, E.NO_SETPOINT_TO_SELF_CONSUMPTION): S.SELF_CONSUMPTION,
        (S.FAULT, E.SHUTDOWN): S.STOP,
        (S.FAULT, E.CAUSES_CLEARED): S.STANDBY,
    }
)
del S, E


@dataclass(frozen=True, slots=True)
class MachineConfig:
    required_sources: tuple[Quantity, ...] = (Quantity.GRID_POWER_W, Quantity.ESS_POWER_W, Quantity.SOC_PCT)
    fault_timeout_s: float = 3.0  # a required source with no good reading for this long is stale
    recover_s: float = 10.0  # every cause clear this long before FAULT is left
    external_fallback: State = State.STANDBY  # after an external set-point's TTL lapses


@dataclass(frozen=True, slots=True)
class MachineState:
    state: State = State.STOP
    clear_since_s: float | None = None  # in FAULT: when every cause last became clear


@dataclass(frozen=True, slots=True)
class Transition:
    machine: MachineState  # the machine after this step
    event: Event | None
    changed: bool
    reason: str  # why the state changed, or why it stays in FAULT
    causes: tuple[str, ...]  # current FAULT causes (empty when healthy)


def fault_causes(inputs: Inputs, cfg: MachineConfig) -> tuple[str, ...]:
    """Every reason to be in FAULT right now, named for the log and the API."""
    causes: list[str] = []
    for q in cfg.required_sources:
        if inputs.value(q, max_age_s=cfg.fault_timeout_s) is None and inputs.now_s - inputs.started_at_s > cfg.fault_timeout_s:
            causes.append(f"stale:{q.value}")
    if inputs.bms_flags is not None:
        causes += [f"bms_protection:{name}" for name in sorted(inputs.bms_flags.protections)]
    causes += inputs.worker_faults
    return tuple(causes)


def _mode_event(inputs: Inputs, cfg: MachineConfig) -> Event:
    mode = inputs.requested_mode
    if mode is Mode.IDLE:
        return Event.MODE_IDLE
    if mode in LOCAL_MODES:
        return Event.MODE_LOCAL
    if inputs.setpoint_active():
        return Event.SETPOINT_ACTIVE
    if cfg.external_fallback is State.SELF_CONSUMPTION:
        return Event.NO_SETPOINT_TO_SELF_CONSUMPTION
    return Event.NO_SETPOINT_TO_STANDBY


def classify(machine: MachineState, inputs: Inputs, causes: tuple[str, ...], cfg: MachineConfig) -> Event | None:
    """Turn guards (timers, hysteresis, requests) into the one event of this cycle, by priority."""
    if inputs.shutdown:
        return Event.SHUTDOWN
    if causes:
        return Event.FAULT_DETECTED
    if machine.state is State.FAULT:
        clear = machine.clear_since_s
        if clear is not None and inputs.now_s - clear >= cfg.recover_s:
            return Event.CAUSES_CLEARED
        return None
    if machine.state is State.STOP:
        return Event.STARTED
    return _mode_event(inputs, cfg)


def _reason(event: Event, inputs: Inputs, causes: tuple[str, ...]) -> str:
    if event is Event.FAULT_DETECTED:
        return ",".join(causes)
    if event in (Event.MODE_IDLE, Event.MODE_LOCAL):
        return f"mode_requested:{inputs.requested_mode.value}"
    if event is Event.SETPOINT_ACTIVE:
        return "external_setpoint"
    if event in (Event.NO_SETPOINT_TO_STANDBY, Event.NO_SETPOINT_TO_SELF_CONSUMPTION):
        # EXTERNAL asked for with no set-point at all is not a lapse: say which it is
        return "setpoint_missing" if inputs.external_setpoint is None else "setpoint_ttl_lapsed"
    if event is Event.CAUSES_CLEARED:
        return "causes_clear_for_recover_s"
    return event.value.lower()


def step(machine: MachineState, inputs: Inputs, cfg: MachineConfig, *, extra_causes: tuple[str, ...] = ()) -> Transition:
    """`extra_causes`: FAULT causes the core found itself (implausible readings, ems/plausibility.py)."""
    causes = fault_causes(inputs, cfg) + extra_causes
    clear_since = None if causes else (machine.clear_since_s if machine.clear_since_s is not None else inputs.now_s)
    event = classify(replace(machine, clear_since_s=clear_since), inputs, causes, cfg)
    nxt = TRANSITIONS.get((machine.state, event)) if event is not None else None
    if event is None or nxt is None or nxt is machine.state:
        reason = ",".join(causes) if machine.state is State.FAULT and causes else ""
        return Transition(replace(machine, clear_since_s=clear_since), event, False, reason, causes)
    entered = MachineState(state=nxt, clear_since_s=None if nxt is State.FAULT else clear_since)
    return Transition(entered, event, True, _reason(event, inputs, causes), causes)


def render_markdown() -> str:
    """The transition table as Markdown, for docs/state-machine.md."""
    lines = [
        "# State machine",
        "",
        "Generated from `ems/statemachine.py` by `python -m ems.statemachine > docs/state-machine.md`;",
        "a unit test fails when this file and the code disagree.",
        "",
        "Each cycle the guards become exactly one event, by priority: SHUTDOWN, FAULT_DETECTED,",
        "CAUSES_CLEARED (in FAULT, after every cause was clear for `control.recover_s`), STARTED (in STOP),",
        "then the event of the requested mode. A pair missing from the table means *stay*.",
        "",
        "FAULT causes: `stale:<quantity>` (a `control.required_sources` entry with no good reading for",
        "`control.fault_timeout_s`), `bms_protection:<flag>`, `worker_dead:<name>`, `worker_stalled:<name>`.",
        "STOP, STANDBY and FAULT command 0 W. SELF_CONSUMPTION runs the law of the requested mode",
        "(grid balancing, CHARGE_ONLY, DISCHARGE_ONLY); EXTERNAL follows the set-point until its TTL lapses.",
        "Mode EXTERNAL without a live set-point falls back to `control.external_fallback`; the reason logged",
        "is `setpoint_ttl_lapsed` when its set-point's TTL ran out, `setpoint_missing` when it never had one.",
        "",
        "| state | event | next state |",
        "|---|---|---|",
    ]
    for (state, event), nxt in TRANSITIONS.items():
        lines.append(f"| {state.value} | {event.value} | {nxt.value} |")
    lines += ["", "## Events", ""]
    for e in Event:
        lines.append(f"- `{e.value}`")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    sys.stdout.write(render_markdown())
