"""`make run`: the simulated site and the EMS, in one terminal, stopped together by Ctrl-C.

    python -m simulators.demo [--config config/sim.yaml] [--sim-config config/simulators.yaml]
                              [--run-dir .run] [--duration-s S] [--status-every-s 5]

Starts, in order: the helper contexts the EMS config asks for (e.g. a local MQTT broker), the
simulators (`python -m simulators`), then the EMS (`python main.py`). Each process logs JSON lines
to `<run-dir>/<name>.log`; the terminal shows the interesting ones, plus a site status line every
few seconds (load, PV, battery, grid, SOC and the mean absolute grid power since the EMS started
regulating). Ctrl-C (or --duration-s) stops the EMS first, so it writes 0 W, then the simulators.

To add a process: append a `Proc` in `build_procs()`. To add a helper (broker, receiver): a
context manager in `helper_contexts()`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from config import ConfigError, EMSConfig, load_config
from simulators.config import SimConfigError, SimulatorConfig, load_sim_config
from simulators.ctl import send

__all__ = ["Proc", "build_procs", "helper_contexts", "main"]

REPO_ROOT = Path(__file__).resolve().parents[1]
_HIDDEN_KEYS = {"timestamp", "level", "event", "logger"}
# Events shown on the terminal at info level (warnings and errors are always shown).
_SHOWN = {
    "ems": {
        "ems_starting",
        "state_changed",
        "fault_raised",
        "fault_cleared",
        "limit_bound",
        "summary",
        "modbus_connected",
        "modbus_link_recovered",
        "controller_stopped",
        "ems_stopped",
        "api_started",
        "mqtt_connected",
        "can_bus_opened",
        "bms_identified",
    },
    "simulators": {
        "simulator_started",
        "simulator_stopped",
        "sim_device_started",
        "sim_device_stopped",
        "sim_inverter_reverted",
        "sim_inverter_recovered",
        "sim_load_offset_set",
        "bms_simulator_started",
    },
}


@dataclass
class Proc:
    """A child process of the demo: its command line, its log file and which lines reach the terminal."""

    name: str
    argv: list[str]
    ready: Callable[[], bool] | None = None  # polled before the next process starts
    ready_timeout_s: float = 20.0
    popen: subprocess.Popen[str] | None = None
    on_event: list[Callable[[dict[str, Any]], None]] = field(default_factory=list)


def helper_contexts(cfg: EMSConfig, *, mqtt_operator_password: str | None = None) -> list[AbstractContextManager[object]]:
    """Helpers the EMS config needs that are not our processes (each yields or skips itself)."""
    helpers: list[AbstractContextManager[object]] = []
    if cfg.mqtt.enabled:
        from simulators.broker import demo_broker

        base = (cfg.mqtt.base_topic or f"ems/{cfg.site.id}").rstrip("/")
        helpers.append(demo_broker(cfg.mqtt, base_topic=base, operator_password=mqtt_operator_password))
    return helpers


def _sim_ready(sim_cfg: SimulatorConfig) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            return send("status", port=sim_cfg.control.port, timeout_s=1.0).startswith("{")
        except OSError:
            return False

    return ready


def build_procs(*, ems_config: Path, sim_config: Path, sim_cfg: SimulatorConfig) -> list[Proc]:
    """The processes, in start order (stopped in reverse)."""
    py = sys.executable
    return [
        Proc(
            "simulators",
            [py, "-m", "simulators", "--config", str(sim_config), "--log-format", "json"],
            ready=_sim_ready(sim_cfg) if sim_cfg.control.enabled else None,
        ),
        Proc("ems", [py, "main.py", "--config", str(ems_config), "--log-format", "json"]),
    ]


class Terminal:
    """Serialises terminal output of several reader threads."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        with self._lock:
            self._out.write(text + "\n")
            self._out.flush()


def _fmt_value(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.1f}" if abs(v) < 1e6 else f"{v:.4g}"
    return str(v)


def format_event(name: str, ev: dict[str, Any]) -> str:
    ts = str(ev.get("timestamp", ""))[11:19]
    level = str(ev.get("level", "info"))
    fields = " ".join(f"{k}={_fmt_value(v)}" for k, v in ev.items() if k not in _HIDDEN_KEYS)
    mark = "" if level == "info" else f" {level.upper()}"
    return f"{ts} [{name}]{mark} {ev.get('event', '?')} {fields}".rstrip()


def _pump(proc: Proc, log_file: TextIO, term: Terminal) -> None:
    assert proc.popen is not None and proc.popen.stderr is not None
    shown = _SHOWN.get(proc.name, set())
    for raw in proc.popen.stderr:
        log_file.write(raw)
        log_file.flush()
        try:
            ev = json.loads(raw)
        except ValueError:
            term.line(f"[{proc.name}] {raw.rstrip()}")
            continue
        if not isinstance(ev, dict):
            continue
        for cb in proc.on_event:
            cb(ev)
        if ev.get("level") in ("warning", "error", "critical") or ev.get("event") in shown:
            term.line(format_event(proc.name, ev))


def _status_line(sim_cfg: SimulatorConfig) -> str | None:
    try:
        st = json.loads(send("status", port=sim_cfg.control.port, timeout_s=1.0))
    except (OSError, ValueError):
        return None
    return (
        f"{time.strftime('%H:%M:%S', time.gmtime())} [site] t={st['profile_time']} load={st['load_w']:.0f}W pv={st['pv_w']:.0f}W "
        f"battery={st['ess_power_w']:+.0f}W grid={st['grid_true_w']:+.0f}W soc={st['soc_pct']:.2f}% "
        f"mean|grid|={st['mean_abs_grid_w']:.1f}W over {st['stats_s']:.0f}s"
    )


@contextlib.contextmanager
def _running(procs: Sequence[Proc], run_dir: Path, term: Terminal) -> Iterator[None]:
    started: list[tuple[Proc, TextIO, threading.Thread]] = []
    try:
        for proc in procs:
            log_file: TextIO = (run_dir / f"{proc.name}.log").open("w", encoding="utf-8")
            proc.popen = subprocess.Popen(
                proc.argv,
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            reader = threading.Thread(target=_pump, args=(proc, log_file, term), name=f"demo-{proc.name}", daemon=True)
            reader.start()
            started.append((proc, log_file, reader))
            if proc.ready is not None:
                deadline = time.monotonic() + proc.ready_timeout_s
                while not proc.ready():
                    if proc.popen.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"{proc.name} did not start (exit={proc.popen.poll()}); see {run_dir / (proc.name + '.log')}")
                    threading.Event().wait(0.2)
        yield
    finally:
        for proc, log_file, reader in reversed(started):
            assert proc.popen is not None
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
                try:
                    proc.popen.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    term.line(f"[demo] {proc.name} did not stop in 10 s; killing it")
                    proc.popen.kill()
                    proc.popen.wait(5)
            reader.join(5)
            log_file.close()


DEMO_TOKEN_ENV = "EMS_DEMO_OPERATOR_TOKEN"
MQTT_PASSWORD_ENV = "EMS_DEMO_MQTT_PASSWORD"  # the EMS's broker password config/sim.yaml names
MQTT_OPERATOR_PASSWORD_ENV = "EMS_DEMO_MQTT_OPERATOR_PASSWORD"  # user `operator` on the demo broker


def demo_mqtt_credentials() -> dict[str, str]:
    """Broker passwords for the EMS (user `ems`) and an operator: fresh ones per run unless set."""
    out = {}
    for user, var in (("ems", MQTT_PASSWORD_ENV), ("operator", MQTT_OPERATOR_PASSWORD_ENV)):
        out[user] = os.environ.get(var) or secrets.token_urlsafe(12)
        os.environ[var] = out[user]  # the EMS process inherits it; config/sim.yaml reads it
    return out


def _demo_operator_token() -> str:
    """The operator token config/sim.yaml names; a fresh one per run unless the user set it."""
    token = os.environ.get(DEMO_TOKEN_ENV) or secrets.token_urlsafe(12)
    os.environ[DEMO_TOKEN_ENV] = token  # inherited by the EMS process
    return token


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m simulators.demo", description="make run: simulators + EMS, stopped together by Ctrl-C")
    p.add_argument("--config", default="config/sim.yaml", help="EMS config (live control against the simulators)")
    p.add_argument("--sim-config", default="config/simulators.yaml", help="simulator config")
    p.add_argument("--run-dir", default=".run", help="where the process logs go")
    p.add_argument("--duration-s", type=float, default=None, help="stop by itself after this many seconds")
    p.add_argument("--status-every-s", type=float, default=5.0, help="site status line period (0 = off)")
    args = p.parse_args(argv)
    try:
        demo_token = _demo_operator_token()
        mqtt_creds = demo_mqtt_credentials()
        cfg = load_config(args.config)
        sim_cfg = load_sim_config(args.sim_config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {args.config}: {problem}", file=sys.stderr)
        return 2
    except SimConfigError as exc:
        print(f"config error: {args.sim_config}: {exc}", file=sys.stderr)
        return 2
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    term = Terminal(sys.stdout)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    procs = build_procs(ems_config=Path(args.config), sim_config=Path(args.sim_config), sim_cfg=sim_cfg)
    ems = next(pr for pr in procs if pr.name == "ems")
    regulating = threading.Event()

    def _watch_state(ev: dict[str, Any]) -> None:
        if ev.get("event") == "state_changed" and ev.get("to_state") == "SELF_CONSUMPTION" and not regulating.is_set():
            regulating.set()
            with contextlib.suppress(OSError):
                send("stats reset", port=sim_cfg.control.port, timeout_s=1.0)

    ems.on_event.append(_watch_state)
    with ExitStack() as stack:
        for helper in helper_contexts(cfg, mqtt_operator_password=mqtt_creds["operator"]):
            stack.enter_context(helper)
        try:
            stack.enter_context(_running(procs, run_dir, term))
        except RuntimeError as exc:
            term.line(f"[demo] {exc}")
            return 1
        api = f"http://{cfg.api.host}:{cfg.api.port}/api/v1 (GET /status, /measurements)" if cfg.api.enabled else "off (api.enabled: false)"
        term.line(f"[demo] EMS config {args.config} (live control of a SIMULATED battery); simulators {args.sim_config}")
        term.line(f"[demo] logs: {run_dir / 'ems.log'}, {run_dir / 'simulators.log'} (JSON lines); REST API: {api}")
        if cfg.api.enabled:
            base = f"http://{cfg.api.host}:{cfg.api.port}"
            term.line(
                f"[demo] dashboard: {base}/ui/  operator token: {demo_token}  (emsctl: EMSCTL_URL={base} EMSCTL_TOKEN={demo_token} .venv/bin/emsctl status)"
            )
        if cfg.mqtt.enabled:
            base = (cfg.mqtt.base_topic or f"ems/{cfg.site.id}").rstrip("/")
            term.line(
                f"[demo] MQTT 127.0.0.1:{cfg.mqtt.port} (no anonymous clients): user operator password {mqtt_creds['operator']}"
                f" may command {base}/cmd/# (MQTT 5; a retained command is refused)"
            )
        if sim_cfg.control.enabled:
            term.line(
                f"[demo] rehearse faults: {sys.executable} -m simulators.ctl --port {sim_cfg.control.port} meter stop | meter start | load_offset 1500 | status"
            )
        term.line("[demo] Ctrl-C stops the EMS (it writes 0 W first) and then the simulators")
        started = time.monotonic()
        next_status = started + args.status_every_s
        while not stop.wait(0.2):
            if any(pr.popen is not None and pr.popen.poll() is not None for pr in procs):
                dead = [pr.name for pr in procs if pr.popen is not None and pr.popen.poll() is not None]
                term.line(f"[demo] {', '.join(dead)} exited; stopping")
                break
            now = time.monotonic()
            if args.status_every_s > 0 and now >= next_status and sim_cfg.control.enabled:
                next_status += args.status_every_s
                line = _status_line(sim_cfg)
                if line:
                    term.line(line)
            if args.duration_s is not None and now - started >= args.duration_s:
                break
        final = _status_line(sim_cfg) if sim_cfg.control.enabled else None
        if final:
            term.line(final.replace("[site]", "[site final]"))
        term.line("[demo] stopping")
    return 0


if __name__ == "__main__":
    sys.exit(main())
