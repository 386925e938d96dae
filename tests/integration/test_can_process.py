"""Two processes, one loopback CAN bus: `python -m simulators.bms` (hub + BMS) and the EMS side
(CanWorker + a real Controller on the system clock). Commands on the simulator's stdin inject a
protection, clear it, and silence the BMS."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from ems.clock import SystemClock
from ems.context import EMSContext
from ems.model import Mode, State
from ems.model import Quantity as Q
from tests.helpers.can import can_worker, ems_config
from tests.helpers.common import PYTHON, REPO_ROOT, free_port, wait_for
from tests.helpers.context import feed, make_controller


@pytest.fixture
def bms_process() -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    proc = subprocess.Popen(
        [PYTHON, "-m", "simulators.bms", "--port", str(port), "--soc-pct", "64"],
        cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    yield proc, port
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _command(proc: subprocess.Popen[str], line: str) -> str:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    return proc.stdout.readline().strip()


def test_simulator_process_drives_soc_protection_fault_and_silence(bms_process: tuple[subprocess.Popen[str], int]) -> None:
    proc, port = bms_process
    cfg = ems_config(
        can_cfg={"interface": "socketcand", "channel": "can0", "port": port, "reopen_s": 0.2}, control={"fault_timeout_s": 1.5}
    )
    clock = SystemClock()
    ctx = EMSContext(clock=clock, start_mode=Mode.SELF_CONSUMPTION)
    worker = can_worker(cfg, ctx, clock)
    controller = make_controller(ctx, cfg, clock, workers=[worker])
    worker.start()
    try:
        wait_for(
            lambda: (r := ctx.snapshot().measurements.get(Q.SOC_PCT)) is not None and r.value == 64.0,
            timeout_s=15,
            what="SOC from the BMS process",
        )

        def fresh_meter() -> None:
            feed(ctx, {Q.GRID_POWER_W: 500.0, Q.ESS_POWER_W: 0.0}, source="modbus")

        def cycle_until(state: State) -> bool:
            fresh_meter()
            return controller.cycle().state is state

        wait_for(lambda: cycle_until(State.SELF_CONSUMPTION), what="SELF_CONSUMPTION with the BMS healthy")
        assert _command(proc, "protection over_temperature on").startswith("ok protections=over_temperature")
        wait_for(lambda: cycle_until(State.FAULT), what="FAULT on the BMS protection")
        assert "bms_protection:over_temperature" in ctx.snapshot().fault_causes
        assert ctx.snapshot().command is not None and ctx.snapshot().command.written_w == 0.0
        assert _command(proc, "clear").startswith("ok protections=-")
        wait_for(lambda: ctx.snapshot().bms_flags is not None and not ctx.snapshot().bms_flags.protections, what="protection cleared")
        fresh_meter()
        assert "bms_protection:over_temperature" not in controller.cycle().fault_causes
        assert _command(proc, "silent on").startswith("ok")
        wait_for(lambda: "stale:bms_voltage_v" in (fresh_meter(), controller.cycle())[1].fault_causes, what="stale BMS after silence")
        assert controller.cycle().state is State.FAULT
        assert _command(proc, "no such thing").startswith("error")
    finally:
        worker.stop()
