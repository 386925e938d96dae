"""Per inverter profile (every profile in interfaces/modbus/maps with a `control:` section, as found at
run time): command latency with the meter link hung, and what a killed EMS leaves the inverter in.

    python -m bench.bench_profiles        (make bench runs it; BENCH_QUICK=1: fewer commands)

(a) Latency: the real Modbus links (`build_modbus_links`, as main.py builds them) drive the simulated
    inverter of the profile (simulators.site.Simulator in this process, the profile's own control
    semantics) while the grid meter's address is a TCP server that accepts and never answers (the
    meter link sits in its timeouts the whole time). N commands are published at random phases; each
    is timed from `ctx.commands.publish` until the simulated inverter has taken that set-point (its
    last register of the command written). Goal p99 <= 50 ms. 100 commands (BENCH_QUICK=1: 40).
(b) Process death: `python -m simulators` serving the profile and the real `main.py` (fault_timeout_s
    2 s); once the EMS charges the battery, main.py gets SIGKILL; timed until the simulated inverter
    is back in its safe state by its own revert timer (its own mode, or 0 W where the profile says
    so). Measured for every profile whose device has a revert timer the EMS can set (goal <=
    fault_timeout_s + 1 s); the others are reported with their fixed timeout (or none). The rigs of
    (b) run side by side, and (a) runs after them; a timer that cannot go below 60 s (Huawei's) is
    waited out only with BENCH_PROFILES_ALL=1 (then it sets the pace: about 75 s in all).
The fault campaign (bench_faults.py, issue 18) measures SIGKILL -> safe for the reference device in
its full rig; this one is per profile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from bench.common import REPO_ROOT, emit, free_port, stats_ms
from simulators.black_hole import BlackHole

QUICK = os.environ.get("BENCH_QUICK") == "1"
ALL = os.environ.get("BENCH_PROFILES_ALL") == "1"  # also wait out revert timers longer than LONG_S (Huawei: 60 s)
COMMANDS = 40 if QUICK else 100
LONG_S = 10.0
FAULT_TIMEOUT_S = 2.0
TOLERANCE_W = 50.0  # a set-point "taken" when the device decodes it within this (percent and per-phase rounding)
LEVELS_W = (1500.0, -1200.0, 800.0, -1800.0, 400.0, -600.0, 2000.0, -300.0)
FLAT_EXPORT = "t_s,load_w,pv_w\n0,1500,3000\n"  # 1.5 kW export: the EMS charges the battery


def inverter_profiles() -> list[tuple[str, Any]]:
    from interfaces.modbus.pointmap import available_maps, load_map

    out = []
    for name in available_maps():
        pmap = load_map(name)
        if pmap.control is not None:
            out.append((name, pmap))
    return out


# ---- (a) latency ----------------------------------------------------------------------------------
def _latency(name: str, pmap: Any, n: int) -> dict[str, Any]:
    from config.modbus import ModbusConfig
    from ems.clock import SystemClock
    from ems.context import EMSContext
    from ems.model import Command, ControlStatus, Mode, State
    from interfaces.modbus.worker import build_modbus_links
    from simulators.config import SimulatorConfig
    from simulators.site import Simulator

    arrived: dict[float, float] = {}
    cond = threading.Condition()

    class TimedSimulator(Simulator):
        def _on_ess_write(self, point: str, value: float) -> None:
            super()._on_ess_write(point, value)
            inv = self.inverter
            if inv is not None and inv.external:
                with cond:
                    for want in list(waiting):
                        if want not in arrived and abs(inv.setpoint_w - want) <= TOLERANCE_W:
                            arrived[want] = time.perf_counter()
                    cond.notify_all()

    waiting: set[float] = set()
    unit = pmap.device.device_id if pmap.device.device_id is not None else 1
    port = free_port()
    sim_cfg = SimulatorConfig.model_validate(
        {
            "plant": {"summary_interval_s": 0, "meter_noise_w": 0.0, "watchdog_s": 30.0},
            "ess": {"port": port, "device_id": unit, "map": name},
            "meter": {"enabled": False},
            "control": {"enabled": False},
        }
    )
    sim = TimedSimulator(sim_cfg)
    hole = BlackHole()
    loop = asyncio.new_event_loop()
    stop_sim = asyncio.Event()
    loop_thread = threading.Thread(target=loop.run_forever, name="bench-sim-loop", daemon=True)
    loop_thread.start()
    running = asyncio.run_coroutine_threadsafe(sim.run(stop_sim), loop)
    clock = SystemClock()
    ctx = EMSContext(clock=clock, start_mode=Mode.SELF_CONSUMPTION)
    cfg = ModbusConfig.model_validate(
        {
            "enabled": True,
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 1.0,
            "ess": {"port": port, "device_id": unit, "map": name, "poll_period_s": 1.0, "timeout_s": 1.0},
            "meter": {"port": hole.port, "device_id": 2, "map": "sdm630", "poll_period_s": 1.0, "timeout_s": 1.0},
        }
    )
    links = build_modbus_links(
        cfg, readings=ctx.readings, health=ctx.health, commands=ctx.commands, events=ctx.events, counters=ctx.counters, clock=clock
    )
    latencies: list[float] = []
    missed = 0
    error: str | None = None
    rng = random.Random(11)
    pause = threading.Event()
    try:
        for link in links:
            link.start()
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            dev = ctx.snapshot().device("ess")
            if dev is not None and dev.info.get("connected") is True:
                break
            pause.wait(0.05)
        else:
            raise RuntimeError(f"the ESS link did not connect: {ctx.snapshot().device('ess')}")
        prev = 0.0
        for seq in range(1, n + 1):
            value = LEVELS_W[seq % len(LEVELS_W)] + 10.0 * (seq % 7)
            if abs(value - prev) < 4 * TOLERANCE_W:
                value = -value
            prev = value
            with cond:
                arrived.pop(value, None)
                waiting.clear()
                waiting.add(value)
            pause.wait(rng.uniform(0.0, 0.05))
            t0 = time.perf_counter()
            now_s = clock.monotonic()
            ctx.commands.publish(ControlStatus(Command(seq, value, value, now_s), State.SELF_CONSUMPTION, now_s, (), None, None, (), 0))
            with cond:
                if cond.wait_for(partial(dict.__contains__, arrived, value), 2.0):
                    latencies.append(arrived[value] - t0)
                else:
                    missed += 1
        meter = ctx.snapshot().device("meter")
        meter_state = {"errors": None if meter is None else meter.errors_total, "requests_unanswered": hole.requests}
    except (RuntimeError, OSError) as exc:
        error = f"{type(exc).__name__}: {exc}"[:300]
        meter_state = {}
    finally:
        for link in links:
            link.stop()
        loop.call_soon_threadsafe(stop_sim.set)
        with contextlib.suppress(Exception):
            running.result(10)
        loop.call_soon_threadsafe(loop.stop)
        loop_thread.join(5)
        hole.close()
    out: dict[str, Any] = {"commands": n, "missed": missed, "latency": stats_ms(latencies), "meter_hung": meter_state}
    if error:
        out["error"] = error
    return out


# ---- (b) process death -----------------------------------------------------------------------------
class _Ctl:
    """A kept-open connection to the simulator's command channel."""

    def __init__(self, port: int) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=5.0)
        self._buf = b""

    def status(self) -> dict[str, Any]:
        self._sock.sendall(b"status\n")
        while b"\n" not in self._buf:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("simulator closed the command channel")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return dict(json.loads(line))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()


class DeathRig:
    """`python -m simulators` serving one profile and the real main.py driving it."""

    def __init__(self, name: str, pmap: Any, tmp: Path) -> None:
        self.name, self.pmap = name, pmap
        self.dir = tmp / name
        self.dir.mkdir(parents=True)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports = {k: free_port() for k in ("ess", "meter", "control")}
        unit = pmap.device.device_id if pmap.device.device_id is not None else 1
        (self.dir / "profile.csv").write_text(FLAT_EXPORT, encoding="utf-8")
        sim = {
            "plant": {
                "profile": str(self.dir / "profile.csv"),
                "summary_interval_s": 0,
                "soc_start_pct": 50.0,
                "meter_noise_w": 0.0,
                "watchdog_s": 30.0,
                "step_s": 0.05,
            },
            "ess": {"port": self.ports["ess"], "device_id": unit, "map": name},
            "meter": {"port": self.ports["meter"], "device_id": 2},
            "control": {"port": self.ports["control"]},
        }
        device = {"poll_period_s": 0.5, "timeout_s": 0.5}
        ems: dict[str, Any] = {
            "site": {"id": f"bench-{name}"},
            "control": {"enabled": True, "dry_run": False, "summary_interval_s": 0, "fault_timeout_s": FAULT_TIMEOUT_S},
            "modbus": {
                "enabled": True,
                "reconnect_min_s": 0.2,
                "reconnect_max_s": 0.5,
                "ess": {"port": self.ports["ess"], "device_id": unit, "map": name, **device},
                "meter": {"port": self.ports["meter"], "device_id": 2, "map": "sdm630", **device},
            },
        }
        if pmap.device.single_client:  # one Modbus client only: the inverter's own grid reading serves
            ems["modbus"]["meter"] = {"enabled": False}
        (self.dir / "sim.yaml").write_text(yaml.safe_dump(sim), encoding="utf-8")
        (self.dir / "ems.yaml").write_text(yaml.safe_dump(ems), encoding="utf-8")
        self.ctl: _Ctl | None = None
        self.ems: subprocess.Popen[bytes] | None = None
        self.killed = threading.Event()  # main.py got SIGKILL (or the rig failed before)
        self.done = threading.Event()

    def _spawn(self, args: list[str], log: str) -> subprocess.Popen[bytes]:
        f = (self.dir / log).open("wb")
        p = subprocess.Popen([sys.executable, *args], cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def start_sim(self) -> None:
        self._spawn(["-m", "simulators", "--config", str(self.dir / "sim.yaml"), "--log-format", "json"], "sim.log")

    def connect(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                self.ctl = _Ctl(self.ports["control"])
                return True
            except OSError:
                threading.Event().wait(0.1)
        return False

    def start_ems(self) -> None:
        self.ems = self._spawn(["main.py", "--config", str(self.dir / "ems.yaml"), "--log-format", "json"], "ems.log")

    def in_control(self) -> bool:
        assert self.ctl is not None
        s = self.ctl.status()
        return bool(s["enabled"]) and s["setpoint_w"] < -500.0  # charging under the EMS's command

    def safe(self) -> bool:
        assert self.ctl is not None
        return not self.ctl.status()["enabled"]  # its own mode again (or 0 W, as its profile says)

    def tail(self, log: str) -> str:
        try:
            return (self.dir / log).read_text(encoding="utf-8", errors="replace")[-600:]
        except OSError:
            return ""

    def close(self) -> None:
        if self.ctl is not None:
            self.ctl.close()
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def _revert_facts(pmap: Any) -> dict[str, Any]:
    from interfaces.modbus.control import revert_value

    r = pmap.control.revert
    target = revert_value(pmap.control, fault_timeout_s=FAULT_TIMEOUT_S)
    return {
        "settable": target is not None,
        "revert_s": None if target is None else target[2],
        "fixed_s": r.fixed_s,
        "min_s": r.min_s if target is not None else None,
        "reverts_to": r.reverts_to,
        "power_after": r.power_after,
    }


def _death(rig: DeathRig, out: dict[str, Any]) -> None:
    """Wait for control, SIGKILL main.py, time the inverter's return to its safe state."""
    facts = out["revert"]
    try:
        if not rig.connect(30.0):
            raise RuntimeError(f"simulator not reachable: {rig.tail('sim.log')}")
        rig.start_ems()
        deadline = time.monotonic() + 60.0
        pause = threading.Event()
        while not rig.in_control():
            if time.monotonic() > deadline or (rig.ems is not None and rig.ems.poll() is not None):
                raise RuntimeError(f"the EMS did not take control: {rig.tail('ems.log')}")
            pause.wait(0.1)
        assert rig.ems is not None
        t0 = time.monotonic()
        rig.ems.send_signal(signal.SIGKILL)
        limit_s = (facts["revert_s"] or 0.0) + 15.0
        rig.killed.set()
        while not rig.safe():
            if time.monotonic() - t0 > limit_s:
                raise RuntimeError(f"still under the dead EMS's command after {limit_s:.0f} s")
            pause.wait(0.02)
        facts["kill_to_safe_s"] = round(time.monotonic() - t0, 3)
    except (RuntimeError, OSError, ValueError) as exc:
        facts["error"] = f"{type(exc).__name__}: {exc}"[:400]
    finally:
        rig.killed.set()
        rig.done.set()


def main() -> None:
    profiles = inverter_profiles()
    results: dict[str, dict[str, Any]] = {}
    for name, pmap in profiles:
        facts = _revert_facts(pmap)
        if not facts["settable"]:
            facts["kill_to_safe_s"] = None
            facts["note"] = (
                f"not settable: the device's own {facts['fixed_s']:g} s" if facts["fixed_s"] else "no revert timer: keeps the last command"
            )
        facts["goal_s"] = FAULT_TIMEOUT_S + 1.0 if facts["settable"] else None
        results[name] = {"method": pmap.control.method.value, "revert": facts}
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-profiles-") as tmp:
        for name, _pmap in profiles:
            rv = results[name]["revert"]
            if rv["settable"] and (rv["revert_s"] or 0.0) > LONG_S and not ALL:
                rv["kill_to_safe_s"] = None
                rv["note"] = f"not measured: the device accepts no less than {rv['min_s']:g} s (BENCH_PROFILES_ALL=1 waits it out)"
        rigs = [
            DeathRig(name, pmap, Path(tmp))
            for name, pmap in profiles
            if results[name]["revert"]["settable"] and "note" not in results[name]["revert"]
        ]
        threads: list[threading.Thread] = []
        try:
            for rig in rigs:
                rig.start_sim()
            for rig in rigs:  # main.py started one after another: start-up is the CPU-heavy part
                t = threading.Thread(target=_death, args=(rig, results[rig.name]), name=f"death-{rig.name}", daemon=True)
                t.start()
                threads.append(t)
                threading.Event().wait(1.0)
            for rig in rigs:  # every main.py started and killed, the short timers fired: from here on the rigs only wait
                rig.killed.wait(120.0)
                if (results[rig.name]["revert"]["revert_s"] or 0.0) <= 10.0:
                    rig.done.wait(30.0)
            for name, pmap in profiles:  # (a), while the rigs of (b) wait for their inverters' timers
                results[name]["latency_meter_hung"] = _latency(name, pmap, COMMANDS)
            for t in threads:
                t.join(150.0)
        finally:
            for rig in rigs:
                rig.close()
    p99 = [r["latency_meter_hung"]["latency"].get("p99_ms") for r in results.values()]
    emit(
        {
            "profiles": results,
            "fault_timeout_s": FAULT_TIMEOUT_S,
            "commands_per_profile": COMMANDS,
            "latency_p99_ms_max": max((x for x in p99 if isinstance(x, int | float)), default=None),
            "meter": "a TCP server that accepts and never answers (timeout_s 1.0)",
            "wall_s": round(time.monotonic() - t_start, 1),
            "quick": QUICK,
        }
    )


if __name__ == "__main__":
    main()
