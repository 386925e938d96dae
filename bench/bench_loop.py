"""Benchmarks 4-6: the real `main.py` against `python -m simulators` in real time.

4. loop timing: cycle start lateness against the 1 s deadline grid (p50/p99/max), cycle work
   duration, overruns; a phase without and a phase with API load from a second process
   (`bench._api_load`; only when the REST API part exists);
   plus real-time regulation (mean |grid| at the plant, 08:30) and +/-2500 W load steps (03:00,
   calm load), the steps in their own short rig;
5. fault reaction: the meter is silenced (requests never answered) and the time until the
   simulated inverter's set-point is 0 W is measured at the simulator;
6. resources: RSS and CPU% of the EMS process over the no-load phase (from /proc).

The EMS config is `config/sim.yaml` (what `make run` uses: Modbus, CAN BMS, API, store) made
self-contained: free ports, the store in a temp dir, API tokens and MQTT off (no broker here).

The EMS runs as `python -m bench._timed_main` (main.py plus a timer around Controller.cycle).
Phases last 30 s (`BENCH_LOOP_PHASE_S`; `BENCH_QUICK=1`: 15 s). The real-time regulation and load
steps run the configured (default) law; `BENCH_ALL_LAWS=1` adds integrating and predictive, each in
its own rig (about a minute each). Everything binds 127.0.0.1 on free ports.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from bench.common import REPO_ROOT, emit, free_port, lateness, stats_ms, wait_until
from config.control import ControlConfig, LawName

PERIOD_S = 1.0
SETTLE_S = 10.0
STEP_SETTLE_S = 5.0
STEP_W = 2500.0  # real-time load step (half the simulated inverter's rating)
STEP_WINDOW_S = 12.0
STEP_BAND = 0.04  # settle band, share of the step (the profile's own load flicker is ~1 %)


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_rss_mb(pid: int) -> tuple[float, float]:
    vals = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            vals[k] = int(v.split()[0]) / 1024.0
    return vals.get("VmRSS", float("nan")), vals.get("VmHWM", float("nan"))


class _Rig:
    """Simulators + EMS processes with their configs in a temp dir."""

    def __init__(self, tmp: Path, *, with_api: bool, law: str | None = None, start_time: str = "08:30") -> None:
        self.tmp = tmp
        self.ports = {k: free_port() for k in ("ess", "meter", "pv", "ctl", "api", "can")}
        sim_cfg = yaml.safe_load((REPO_ROOT / "config" / "simulators.yaml").read_text())
        sim_cfg["plant"].update(speed=1.0, start_time=start_time, profile="summer-sunny")
        for dev in ("ess", "meter", "pv"):  # the PV meter too, when the make-run configs have one
            if dev in sim_cfg:
                sim_cfg[dev]["port"] = self.ports[dev]
        sim_cfg["control"].update(enabled=True, port=self.ports["ctl"])
        if "bms" in sim_cfg:
            sim_cfg["bms"]["port"] = self.ports["can"]
        ems_cfg = yaml.safe_load((REPO_ROOT / "config" / "sim.yaml").read_text())
        for dev in ("ess", "meter", "pv"):
            if dev in ems_cfg["modbus"]:
                ems_cfg["modbus"][dev]["port"] = self.ports[dev]
        if "can" in ems_cfg:
            ems_cfg["can"]["port"] = self.ports["can"]
        ems_cfg.setdefault("control", {})["summary_interval_s"] = 0.0
        if law is not None:
            ems_cfg["control"]["law"] = law
        self.law = str(ems_cfg["control"].get("law", ControlConfig.model_fields["law"].default.value))
        # the make-run config, made self-contained: API without tokens (reads are open) on a free port or
        # off, the store in the temp dir, no MQTT (no broker here)
        ems_cfg["api"] = {"enabled": True, "host": "127.0.0.1", "port": self.ports["api"]} if with_api else {"enabled": False}
        if ems_cfg.get("store", {}).get("enabled"):
            ems_cfg["store"]["path"] = str(tmp / "ems.db")
        ems_cfg["mqtt"] = {"enabled": False}
        ems_cfg.pop("uplink", None)
        self.with_api = with_api
        (tmp / "sim.yaml").write_text(yaml.safe_dump(sim_cfg))
        (tmp / "ems.yaml").write_text(yaml.safe_dump(ems_cfg))
        self.fault_timeout_s = float(ems_cfg.get("control", {}).get("fault_timeout_s", 3.0))
        self.timing_file = tmp / "timing.json"
        self.sim: subprocess.Popen[bytes] | None = None
        self.ems: subprocess.Popen[bytes] | None = None

    def _spawn(self, args: list[str], log_name: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        out = open(self.tmp / log_name, "wb")  # noqa: SIM115 - closed with the process
        return subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )

    def ctl(self, line: str) -> str:
        from simulators.ctl import send

        return send(line, port=self.ports["ctl"], timeout_s=2.0)

    def sim_status(self) -> dict[str, Any]:
        return json.loads(self.ctl("status"))

    def start(self) -> None:
        self.sim = self._spawn(["-m", "simulators", "--config", str(self.tmp / "sim.yaml"), "--log-format", "json"], "sim.log")
        if not wait_until(self.sim_status, 20):
            raise RuntimeError(f"simulators did not start: {self.tail('sim.log')}")
        self.ems = self._spawn(
            ["-m", "bench._timed_main", "--config", str(self.tmp / "ems.yaml"), "--log-format", "json", "--log-level", "info"],
            "ems.log",
            {"EMS_BENCH_TIMING_FILE": str(self.timing_file)},
        )
        if not wait_until(lambda: self.sim_status()["setpoint_w"] != 0.0, 30):
            raise RuntimeError(f"EMS never wrote a non-zero set-point: {self.tail('ems.log')}")

    def tail(self, name: str, n: int = 15) -> str:
        try:
            return " | ".join((self.tmp / name).read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self) -> int | None:
        rc = None
        for proc in (self.ems, self.sim):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    rc_p = proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    rc_p = proc.wait(5)
                if proc is self.ems:
                    rc = rc_p
        return rc


def _overruns_between(log_path: Path, t0_wall: float, t1_wall: float) -> int:
    n = 0
    for line in log_path.read_text(errors="replace").splitlines():
        if "cycle_overrun" not in line:
            continue
        try:
            ev = json.loads(line)
            ts = datetime.fromisoformat(str(ev["timestamp"]).replace("Z", "+00:00")).timestamp()
        except (ValueError, KeyError):
            continue
        if t0_wall <= ts <= t1_wall:
            n += int(ev.get("skipped_cycles", 1))
    return n


def _phase(starts: list[float], durations: list[float], t0: float, t1: float, gcs: list[list[float]] | None = None) -> dict[str, object]:
    idx = [i for i, s in enumerate(starts) if t0 <= s <= t1]
    late = lateness([starts[i] for i in idx])
    out: dict[str, object] = {"cycles": len(idx), "lateness": stats_ms(late), "cycle_work": stats_ms([durations[i] for i in idx])}
    if gcs is not None:  # cyclic-GC collections in the window (each holds the GIL): count and longest, per generation
        pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        for start_s, duration_s, gen in gcs:
            if t0 <= start_s <= t1:
                pauses[int(gen)].append(duration_s)
        out["gc"] = {f"gen{gen}": {"n": len(ds), "max_ms": round(1000.0 * max(ds), 3) if ds else None} for gen, ds in pauses.items()}
    return out


def _regulation(status: dict[str, Any]) -> dict[str, object]:
    return {
        "mean_abs_grid_w": round(float(status.get("mean_abs_grid_w", float("nan"))), 1),
        "window_s": round(float(status.get("stats_s", 0.0)), 1),
        "profile": f"summer-sunny from 08:30 (+{SETTLE_S:g} s settle)",
    }


def _load_steps(rig: _Rig) -> list[dict[str, object]]:
    """+STEP_W then back to 0 via the simulator's load offset; overshoot and settle time at the plant."""
    out: list[dict[str, object]] = []
    ev = threading.Event()
    for offset_w, size_w in ((STEP_W, STEP_W), (0.0, -STEP_W)):
        t0 = time.monotonic()
        rig.ctl(f"load_offset {offset_w:g}")
        samples: list[tuple[float, float]] = []
        while (t := time.monotonic() - t0) < STEP_WINDOW_S:
            samples.append((t, float(rig.sim_status()["grid_true_w"])))
            ev.wait(0.1)
        sgn = 1.0 if size_w > 0 else -1.0
        overshoot = max(0.0, -min(g * sgn for _, g in samples)) / abs(size_w) * 100.0
        band_w = STEP_BAND * abs(size_w)
        settle = next((t for i, (t, _) in enumerate(samples) if all(abs(g) <= band_w for _, g in samples[i:])), None)
        out.append(
            {
                "step_w": size_w,
                "overshoot_pct": round(overshoot, 1),
                f"settle_s_{STEP_BAND * 100:g}pct": None if settle is None else round(settle, 1),
            }
        )
    return out


def _law_rig(law: str, *, window_s: float | None, steps: bool) -> dict[str, object]:
    """A second, shorter rig with `control.law` = law: regulation at 08:30 (window_s) or load steps
    at 03:00 (steps), when the profile's own load is calm (< 70 W moves) so the steps measure the law."""
    with tempfile.TemporaryDirectory(prefix="ems-bench-law-") as d:
        rig = _Rig(Path(d), with_api=False, law=law, start_time="03:00" if steps else "08:30")
        try:
            rig.start()
            threading.Event().wait(SETTLE_S if window_s else STEP_SETTLE_S)
            if steps:
                return {"load_steps": _load_steps(rig), "profile": "summer-sunny from 03:00"}
            rig.ctl("stats reset")
            threading.Event().wait(window_s or 0.0)
            return _regulation(rig.sim_status())
        except (RuntimeError, OSError, ValueError) as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            rig.stop()


def _api_available() -> bool:
    try:
        import api.server  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    phase_s = float(os.environ.get("BENCH_LOOP_PHASE_S", "15" if os.environ.get("BENCH_QUICK") == "1" else "30"))
    with_api = _api_available()
    out: dict[str, Any] = {"phase_s": phase_s}
    with tempfile.TemporaryDirectory(prefix="ems-bench-") as d:
        rig = _Rig(Path(d), with_api=with_api)
        try:
            rig.start()
            pid = rig.ems.pid  # type: ignore[union-attr]
            threading.Event().wait(SETTLE_S)  # start-up transient out of the regulation figure
            # phase A: no API load; resources over the same window
            rig.ctl("stats reset")
            a0, a0_wall, cpu0 = time.monotonic(), time.time(), _proc_cpu_s(pid)
            rss_samples = []
            ev = threading.Event()
            while time.monotonic() - a0 < phase_s:
                rss_samples.append(_proc_rss_mb(pid)[0])
                ev.wait(1.0)
            a1, a1_wall, cpu1 = time.monotonic(), time.time(), _proc_cpu_s(pid)
            status = rig.sim_status()
            out["resources"] = {
                "rss_mb_max": round(max(rss_samples), 1),
                "rss_mb_last": round(rss_samples[-1], 1),
                "rss_hwm_mb": round(_proc_rss_mb(pid)[1], 1),
                "cpu_pct_one_core": round(100.0 * (cpu1 - cpu0) / (a1 - a0), 2),
                "window_s": round(a1 - a0, 1),
            }
            out["realtime_regulation"] = {rig.law: _regulation(status)}
            # phase B: API load from a second process
            b0 = b1 = b0_wall = b1_wall = None
            if with_api:
                base = f"http://127.0.0.1:{rig.ports['api']}"
                wait_until(lambda: urllib.request.urlopen(base + "/api/v1/health", timeout=2).status in (200, 503), 10)
                b0, b0_wall = time.monotonic(), time.time()
                load = subprocess.run(
                    [sys.executable, "-m", "bench._api_load", "--base", base, "--duration", str(phase_s)],
                    cwd=REPO_ROOT,
                    capture_output=True,
                    text=True,
                    timeout=phase_s + 60,
                )
                b1, b1_wall = time.monotonic(), time.time()
                lines = [ln for ln in load.stdout.splitlines() if ln.startswith("{")]
                out["api_load"] = json.loads(lines[-1]) if lines else {"error": load.stderr[-500:]}
            # fault reaction: meter silenced -> 0 W at the simulated inverter
            before_w = rig.sim_status()["setpoint_w"]
            f0 = time.monotonic()
            rig.ctl("meter silent on")
            zero = wait_until(lambda: rig.sim_status()["setpoint_w"] == 0.0, 30, pause_s=0.02)
            f1 = time.monotonic()
            rig.ctl("meter silent off")
            out["fault_reaction"] = {
                "setpoint_before_w": before_w,
                "reaction_s": round(f1 - f0, 3) if zero else None,
                "fault_timeout_s": rig.fault_timeout_s,
                "trigger": "meter silent on (requests never answered)",
            }
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            out["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            rc = rig.stop()
            out["ems_exit"] = rc
        if rig.timing_file.exists() and "resources" in out:
            t = json.loads(rig.timing_file.read_text())
            starts, durs, gcs = t["starts_s"], t["durations_s"], t.get("gc")
            out["loop_no_load"] = _phase(starts, durs, a0, a1, gcs)
            out["loop_no_load"]["overruns"] = _overruns_between(rig.tmp / "ems.log", a0_wall, a1_wall)  # type: ignore[index]
            if b0 is not None and b1 is not None and b0_wall is not None and b1_wall is not None:
                out["loop_api_load"] = _phase(starts, durs, b0, b1, gcs)
                out["loop_api_load"]["overruns"] = _overruns_between(rig.tmp / "ems.log", b0_wall, b1_wall)  # type: ignore[index]
            else:
                out["loop_api_load"] = {"available": False, "reason": "REST API part (api/) not present"}
        elif "error" in out:
            out["ems_log_tail"] = rig.tail("ems.log")
    if "realtime_regulation" in out:
        others = [law.value for law in LawName if law.value != rig.law] if os.environ.get("BENCH_ALL_LAWS") == "1" else []
        for law in others:
            out["realtime_regulation"][law] = _law_rig(law, window_s=min(phase_s, 45.0), steps=False)
        out["realtime_load_steps"] = {law: _law_rig(law, window_s=None, steps=True) for law in (rig.law, *others)}
    emit(out)


if __name__ == "__main__":
    main()
