"""Every (state, event) pair of the state machine, driven through the real guards."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import pytest

from ems.inputs import Inputs
from ems.model import ExternalSetpoint, Mode, State
from ems.statemachine import TRANSITIONS, Event, MachineState, render_markdown, step
from tests.helpers.core import machine_cfg, make_inputs

S, E = State, Event

# The specification, written out independently of ems/statemachine.py (DESIGN.md §3).
# Anything not listed means "stay".
EXPECTED = {
    (S.STOP, E.STARTED): S.STANDBY,
    (S.STOP, E.FAULT_DETECTED): S.FAULT,
    **{(s, E.SHUTDOWN): S.STOP for s in (S.STANDBY, S.SELF_CONSUMPTION, S.EXTERNAL, S.FAULT)},
    **{(s, E.FAULT_DETECTED): S.FAULT for s in (S.STANDBY, S.SELF_CONSUMPTION, S.EXTERNAL)},
    (S.FAULT, E.CAUSES_CLEARED): S.STANDBY,
    (S.STANDBY, E.MODE_LOCAL): S.SELF_CONSUMPTION,
    (S.STANDBY, E.SETPOINT_ACTIVE): S.EXTERNAL,
    (S.STANDBY, E.NO_SETPOINT_TO_SELF_CONSUMPTION): S.SELF_CONSUMPTION,
    (S.SELF_CONSUMPTION, E.MODE_IDLE): S.STANDBY,
    (S.SELF_CONSUMPTION, E.SETPOINT_ACTIVE): S.EXTERNAL,
    (S.SELF_CONSUMPTION, E.NO_SETPOINT_TO_STANDBY): S.STANDBY,
    (S.EXTERNAL, E.MODE_IDLE): S.STANDBY,
    (S.EXTERNAL, E.MODE_LOCAL): S.SELF_CONSUMPTION,
    (S.EXTERNAL, E.NO_SETPOINT_TO_STANDBY): S.STANDBY,
    (S.EXTERNAL, E.NO_SETPOINT_TO_SELF_CONSUMPTION): S.SELF_CONSUMPTION,
}

NOW = 100.0
RECOVER_S = 10.0


def _scenario(state: State, event: Event) -> tuple[MachineState, Inputs, str]:
    """A machine in `state` and inputs whose guards yield exactly `event`; plus the fallback to configure."""
    machine = MachineState(state=state)
    live_sp = ExternalSetpoint(1000.0, NOW + 30, "test", "tester")
    lapsed_sp = ExternalSetpoint(1000.0, NOW - 1, "test", "tester")
    fallback = "STANDBY"
    if state is S.FAULT and event is not E.CAUSES_CLEARED:
        machine = replace(machine, clear_since_s=NOW)  # clear just now: not yet for recover_s
    match event:
        case E.SHUTDOWN:
            inputs = make_inputs(now_s=NOW, shutdown=True)
        case E.FAULT_DETECTED:
            inputs = make_inputs(now_s=NOW, grid_w=None)
        case E.CAUSES_CLEARED:
            machine = replace(machine, clear_since_s=NOW - RECOVER_S)
            inputs = make_inputs(now_s=NOW)
        case E.STARTED:
            inputs = make_inputs(now_s=NOW)
        case E.MODE_IDLE:
            inputs = make_inputs(now_s=NOW, mode=Mode.IDLE)
        case E.MODE_LOCAL:
            inputs = make_inputs(now_s=NOW, mode=Mode.CHARGE_ONLY)
        case E.SETPOINT_ACTIVE:
            inputs = make_inputs(now_s=NOW, mode=Mode.EXTERNAL, setpoint=live_sp)
        case E.NO_SETPOINT_TO_STANDBY:
            inputs = make_inputs(now_s=NOW, mode=Mode.EXTERNAL, setpoint=lapsed_sp)
        case E.NO_SETPOINT_TO_SELF_CONSUMPTION:
            inputs = make_inputs(now_s=NOW, mode=Mode.EXTERNAL, setpoint=None)
            fallback = "SELF_CONSUMPTION"
    return machine, inputs, fallback


@pytest.mark.parametrize(("state", "event"), list(itertools.product(State, Event)), ids=lambda v: str(v))
def test_every_state_event_pair(state: State, event: Event) -> None:
    machine, inputs, fallback = _scenario(state, event)
    cfg = machine_cfg(recover_s=RECOVER_S, external_fallback=fallback)
    tr = step(machine, inputs, cfg)
    if tr.event is event:
        assert tr.machine.state is EXPECTED.get((state, event), state)
        assert tr.changed is ((state, event) in EXPECTED)
        return
    # Guard priority makes some pairs unreachable: STOP always starts first, FAULT ignores every
    # request until its causes clear, STARTED/CAUSES_CLEARED exist only in STOP/FAULT.
    if state is S.STOP:
        assert (tr.event, tr.machine.state) == (E.STARTED, S.STANDBY)
    elif state is S.FAULT:
        assert (tr.event, tr.machine.state) == (None, S.FAULT)
    else:
        assert event in (E.STARTED, E.CAUSES_CLEARED)
        assert tr.event is E.MODE_LOCAL
        assert tr.machine.state is EXPECTED.get((state, E.MODE_LOCAL), state)


def test_every_pair_of_the_table_is_reached_by_its_guards() -> None:
    """Each transition in the code's table happens when its guards say so (no dead entries)."""
    cfg_for = {
        "STANDBY": machine_cfg(recover_s=RECOVER_S),
        "SELF_CONSUMPTION": machine_cfg(recover_s=RECOVER_S, external_fallback="SELF_CONSUMPTION"),
    }
    for (state, event), nxt in TRANSITIONS.items():
        machine, inputs, fallback = _scenario(state, event)
        tr = step(machine, inputs, cfg_for[fallback])
        assert (tr.event, tr.machine.state, tr.changed) == (event, nxt, True), (state, event)


def test_a_day_of_requests_walks_the_machine_as_design_says() -> None:
    """STOP -> STANDBY -> SELF_CONSUMPTION -> EXTERNAL -> (TTL) -> STANDBY -> FAULT -> (recover) -> STANDBY -> STOP."""
    cfg = machine_cfg(recover_s=5.0, fault_timeout_s=3.0)
    sp = ExternalSetpoint(800.0, 20.0, "dr", "agg")
    walk = [
        (make_inputs(now_s=1.0), S.STANDBY),
        (make_inputs(now_s=2.0), S.SELF_CONSUMPTION),
        (make_inputs(now_s=3.0, mode=Mode.EXTERNAL, setpoint=sp), S.EXTERNAL),
        (make_inputs(now_s=20.0, mode=Mode.EXTERNAL, setpoint=sp), S.STANDBY),
        (make_inputs(now_s=21.0, mode=Mode.IDLE), S.STANDBY),
        (make_inputs(now_s=22.0, mode=Mode.IDLE, protections=frozenset({"over_voltage"})), S.FAULT),
        (make_inputs(now_s=23.0, mode=Mode.IDLE), S.FAULT),
        (make_inputs(now_s=27.9, mode=Mode.IDLE), S.FAULT),
        (make_inputs(now_s=28.0, mode=Mode.IDLE), S.STANDBY),
        (make_inputs(now_s=29.0, mode=Mode.IDLE, shutdown=True), S.STOP),
    ]
    m = MachineState()
    for inputs, expected in walk:
        m = step(m, inputs, cfg).machine
        assert m.state is expected, (inputs.now_s, m.state)


def test_stop_starts_to_standby_then_requested_mode() -> None:
    cfg = machine_cfg()
    tr = step(MachineState(), make_inputs(now_s=1.0), cfg)
    assert (tr.machine.state, tr.reason) == (S.STANDBY, "started")
    tr = step(tr.machine, make_inputs(now_s=2.0), cfg)
    assert (tr.machine.state, tr.reason) == (S.SELF_CONSUMPTION, "mode_requested:SELF_CONSUMPTION")


def test_stale_source_is_a_fault_only_after_fault_timeout() -> None:
    cfg = machine_cfg(fault_timeout_s=3.0)
    sc = MachineState(S.SELF_CONSUMPTION)
    assert step(sc, make_inputs(now_s=NOW, age_s=3.0), cfg).machine.state is S.SELF_CONSUMPTION
    tr = step(sc, make_inputs(now_s=NOW, age_s=3.01), cfg)
    assert tr.machine.state is S.FAULT
    assert tr.causes == ("stale:grid_power_w", "stale:ess_power_w", "stale:soc_pct")


def test_a_source_never_read_is_aged_from_process_start() -> None:
    cfg = machine_cfg(fault_timeout_s=3.0)
    standby = MachineState(S.STANDBY)
    assert step(standby, make_inputs(now_s=2.9, started_at_s=0.0, soc_pct=None), cfg).machine.state is S.SELF_CONSUMPTION
    tr = step(standby, make_inputs(now_s=3.5, started_at_s=0.0, soc_pct=None), cfg)
    assert (tr.machine.state, tr.causes) == (S.FAULT, ("stale:soc_pct",))


def test_bms_protection_and_dead_worker_are_named_fault_causes() -> None:
    cfg = machine_cfg()
    tr = step(MachineState(S.EXTERNAL), make_inputs(protections=frozenset({"over_voltage"}), worker_faults=("worker_dead:modbus",)), cfg)
    assert tr.machine.state is S.FAULT
    assert tr.reason == "bms_protection:over_voltage,worker_dead:modbus"


def test_recovery_needs_every_cause_clear_for_recover_s() -> None:
    cfg = machine_cfg(recover_s=10.0)
    m = step(MachineState(S.SELF_CONSUMPTION), make_inputs(now_s=0.0, grid_w=None, started_at_s=-10), cfg).machine
    assert m.state is S.FAULT
    t = 1.0
    m = step(m, make_inputs(now_s=t), cfg).machine  # clear from t = 1
    for t in (5.0, 10.9):
        m = step(m, make_inputs(now_s=t), cfg).machine
        assert m.state is S.FAULT
    m = step(m, make_inputs(now_s=8.0 + 3.5, grid_w=None, started_at_s=-10), cfg).machine  # flaps back: timer restarts
    m = step(m, make_inputs(now_s=12.0), cfg).machine
    m = step(m, make_inputs(now_s=21.9), cfg).machine
    assert m.state is S.FAULT
    tr = step(m, make_inputs(now_s=22.0), cfg)
    assert (tr.machine.state, tr.reason) == (S.STANDBY, "causes_clear_for_recover_s")


def test_external_setpoint_ttl_lapse_falls_back_as_configured() -> None:
    sp = ExternalSetpoint(1500.0, 130.0, "aggregator", "op")
    for fallback, expected in (("STANDBY", S.STANDBY), ("SELF_CONSUMPTION", S.SELF_CONSUMPTION)):
        cfg = machine_cfg(external_fallback=fallback)
        m = MachineState(S.EXTERNAL)
        assert step(m, make_inputs(now_s=129.9, mode=Mode.EXTERNAL, setpoint=sp), cfg).machine.state is S.EXTERNAL
        tr = step(m, make_inputs(now_s=130.0, mode=Mode.EXTERNAL, setpoint=sp), cfg)
        assert (tr.machine.state, tr.reason) == (expected, "setpoint_ttl_lapsed")


def test_external_requested_without_a_setpoint_says_setpoint_missing_not_lapsed() -> None:
    for fallback, expected in (("STANDBY", S.STANDBY), ("SELF_CONSUMPTION", S.SELF_CONSUMPTION)):
        cfg = machine_cfg(external_fallback=fallback)
        for start in (S.SELF_CONSUMPTION, S.EXTERNAL, S.STANDBY):
            tr = step(MachineState(start), make_inputs(now_s=10.0, mode=Mode.EXTERNAL, setpoint=None), cfg)
            if tr.changed:
                assert (tr.machine.state, tr.reason) == (expected, "setpoint_missing")
            else:
                assert tr.machine.state is start is expected


def test_docs_state_machine_table_is_current() -> None:
    doc = Path(__file__).resolve().parents[2] / "docs" / "state-machine.md"
    assert doc.read_text(encoding="utf-8") == render_markdown(), "run: make docs"
