"""Planner benchmark (issue 17): the real process with the planner on, and the plan followed at 1 s.

    python -m bench.bench_planner            (about 90 s)
    BENCH_QUICK=1 python -m bench.bench_planner

1. Real process: `python -m simulators` + the real main.py (as `bench._timed_main`, a timer around
   Controller.cycle) with `config/sim.yaml` made self-contained and the planner on: tariff from a
   CSV of the shipped Belgian day-ahead prices mapped onto today's dates, a store pre-filled with two
   weeks of the shipped household's history (the forecasts need it). During the API-load phase
   (`bench._api_load` from a second process, plus GET /api/v1/plan) a new day-ahead series is pushed
   over REST every few seconds, so the planner re-plans again and again while the 1 Hz loop runs:
   loop overruns and lateness of the cycles around each re-plan, and the re-plan time in the process.
2. Replay: three days of the shipped year at 1 s with the real core following the plan
   (simulators.schedule.replay_plan): delivered against planned battery energy per slot.

Prints one JSON object.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from bench.common import REPO_ROOT, emit, free_port, lateness, stats_ms, wait_until

PERIOD_S = 1.0
TOKEN = "bench-planner-operator-token"
PUSH_EVERY_S = 3.0
HISTORY_DAYS = 14


def _same_day_2023(day: datetime) -> datetime:
    return day.replace(year=2023, month=day.month, day=min(day.day, 28) if day.month == 2 else day.day)


def _prices_csv(path: Path, today: datetime) -> list[tuple[int, float]]:
    """Yesterday to the day after tomorrow (UTC days): the 2023 prices of the same dates, shifted onto these."""
    from interfaces.prices.csv_file import read_price_csv
    from simulators.schedule.year import PRICES

    pts = read_price_csv(PRICES).points
    rows: list[tuple[int, float]] = []
    for k in range(-1, 3):
        day = today + timedelta(days=k)
        src = _same_day_2023(day)
        shift = int(day.timestamp() - src.timestamp())
        lo, hi = src.timestamp(), src.timestamp() + 86400
        rows += [(p.start_unix_s + shift, p.price_eur_per_kwh) for p in pts if lo <= p.start_unix_s < hi]
    rows.sort()
    lines = ["ts_utc,price_eur_per_kwh"] + [f"{datetime.fromtimestamp(t, UTC):%Y-%m-%dT%H:%M:%SZ},{v}" for t, v in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return rows


def _history(db: Path, now: datetime) -> int:
    """Two weeks of minute aggregates from the shipped household (same dates in 2023), as the store writes them."""
    from interfaces.store.schema import open_writer
    from simulators.schedule.year import load_year

    year = load_year()
    conn = open_writer(db)
    end = int(now.timestamp() // 900 * 900)
    rows = []
    for t in range(end - HISTORY_DAYS * 86400, end, 60):
        src = _same_day_2023(datetime.fromtimestamp(t, UTC))
        i = int((src.timestamp() - year.start_unix_s) // year.slot_s) % year.n
        load, pv = year.load_w[i], year.pv_w[i]
        stats = {"grid_power_w": [load - pv] * 4 + [60], "pv_power_w": [pv] * 4 + [60], "ess_power_w": [0.0] * 4 + [60]}
        rows.append((t, json.dumps(stats, separators=(",", ":")), '{"SELF_CONSUMPTION":60}'))
    conn.executemany("INSERT INTO minutes (ts, n, stats, states) VALUES (?, 60, ?, ?)", rows)
    conn.close()
    return len(rows)


class _Rig:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ports = {k: free_port() for k in ("ess", "meter", "pv", "ctl", "api", "can")}
        sim = yaml.safe_load((REPO_ROOT / "config" / "simulators.yaml").read_text())
        sim["plant"].update(speed=1.0, start_time="08:30", profile="summer-sunny")
        for dev in ("ess", "meter", "pv"):
            if dev in sim:
                sim[dev]["port"] = self.ports[dev]
        sim["control"].update(enabled=True, port=self.ports["ctl"])
        if "bms" in sim:
            sim["bms"]["port"] = self.ports["can"]
        ems = yaml.safe_load((REPO_ROOT / "config" / "sim.yaml").read_text())
        for dev in ("ess", "meter", "pv"):
            if dev in ems["modbus"]:
                ems["modbus"][dev]["port"] = self.ports[dev]
        if "can" in ems:
            ems["can"]["port"] = self.ports["can"]
        ems.setdefault("control", {})["summary_interval_s"] = 0.0
        ems["api"] = {
            "enabled": True,
            "host": "127.0.0.1",
            "port": self.ports["api"],
            "tokens": [{"name": "bench-operator", "role": "operator", "secret": {"env": "EMS_BENCH_OPERATOR_TOKEN"}}],
        }
        ems["store"] = {"enabled": True, "path": str(tmp / "ems.db")}
        ems["mqtt"] = {"enabled": False}
        ems.pop("uplink", None)
        ems["tariff"] = {
            "timezone": "UTC",
            "import_price": {"kind": "dynamic", "formula": {"adder_eur_per_kwh": 0.14, "vat_pct": 6}},
            "export_price": {"kind": "dynamic", "formula": {"adder_eur_per_kwh": -0.01}},
            "source": {"kind": "csv", "path": str(tmp / "prices.csv"), "refresh_s": 600},
        }
        ems["planner"] = {"enabled": True, "battery": {"capacity_wh": 10000.0}}
        (tmp / "sim.yaml").write_text(yaml.safe_dump(sim))
        (tmp / "ems.yaml").write_text(yaml.safe_dump(ems))
        self.timing = tmp / "timing.json"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.base = f"http://127.0.0.1:{self.ports['api']}"

    def _spawn(self, args: list[str], log: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        out = open(self.tmp / log, "wb")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen([sys.executable, *args], cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             env={**os.environ, **(env or {})})  # fmt: skip
        self.procs.append(p)
        return p

    def sim_status(self) -> dict[str, Any]:
        from simulators.ctl import send

        return dict(json.loads(send("status", port=self.ports["ctl"], timeout_s=2.0)))

    def start(self) -> None:
        self._spawn(["-m", "simulators", "--config", str(self.tmp / "sim.yaml"), "--log-format", "json"], "sim.log")
        if not wait_until(self.sim_status, 20, pause_s=0.1):
            raise RuntimeError(f"simulators did not start: {self.tail('sim.log')}")
        self.ems = self._spawn(
            ["-m", "bench._timed_main", "--config", str(self.tmp / "ems.yaml"), "--log-format", "json", "--log-level", "info"],
            "ems.log",
            {"EMS_BENCH_TIMING_FILE": str(self.timing), "EMS_BENCH_OPERATOR_TOKEN": TOKEN},
        )
        if not wait_until(lambda: any(e.get("event") == "plan_made" for e in self.events()), 60, pause_s=0.5):
            raise RuntimeError(f"no plan within 60 s: {self.tail('ems.log')}")

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in (self.tmp / "ems.log").read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    def tail(self, name: str, n: int = 12) -> str:
        try:
            return " | ".join((self.tmp / name).read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self) -> int | None:
        rc = None
        for p in reversed(self.procs):  # the EMS first (started second), then the simulators
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    code = p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    code = p.wait(5)
                if p is getattr(self, "ems", None):
                    rc = code
        return rc


def _push(base: str, rows: list[tuple[int, float]], k: int) -> int:
    """A day-ahead series from the start of today (UTC), each push a little different: a re-plan every time."""
    day0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    prices = [v + 0.001 * (k % 7) for t, v in rows if day0.timestamp() <= t < day0.timestamp() + 48 * 3600][:48]
    body = json.dumps({"start": day0.isoformat(), "resolution_s": 3600, "prices_eur_per_kwh": prices}).encode()
    req = urllib.request.Request(
        base + "/api/v1/prices", data=body, method="PUT", headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        return int(r.status)


def _ts(ev: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(ev["timestamp"]).replace("Z", "+00:00")).timestamp()


def real_process(phase_s: float) -> dict[str, Any]:
    out: dict[str, Any] = {"phase_s": phase_s}
    with tempfile.TemporaryDirectory(prefix="ems-bench-planner-") as d:
        tmp = Path(d)
        now = datetime.now(UTC)
        rows = _prices_csv(tmp / "prices.csv", now.replace(hour=0, minute=0, second=0, microsecond=0))
        out["history_minutes"] = _history(tmp / "ems.db", now)
        rig = _Rig(tmp)
        wall0 = mono0 = wall1 = mono1 = None
        pushes: list[int] = []
        try:
            rig.start()
            threading.Event().wait(5.0)
            stop = threading.Event()

            def pusher() -> None:
                k = 0
                while not stop.wait(PUSH_EVERY_S):
                    k += 1
                    try:
                        pushes.append(_push(rig.base, rows, k))
                    except OSError:
                        pushes.append(0)

            def plan_reader() -> None:
                while not stop.wait(0.5):
                    with contextlib.suppress(OSError):
                        urllib.request.urlopen(rig.base + "/api/v1/plan", timeout=5).read()

            threads = [threading.Thread(target=f, daemon=True) for f in (pusher, plan_reader)]
            wall0, mono0 = time.time(), time.monotonic()
            for t in threads:
                t.start()
            load = subprocess.run(
                [sys.executable, "-m", "bench._api_load", "--base", rig.base, "--duration", str(phase_s)],
                cwd=REPO_ROOT, capture_output=True, text=True, timeout=phase_s + 60,
            )  # fmt: skip
            stop.set()
            for t in threads:
                t.join(10)
            wall1, mono1 = time.time(), time.monotonic()
            lines = [ln for ln in load.stdout.splitlines() if ln.startswith("{")]
            out["api_load"] = json.loads(lines[-1]) if lines else {"error": load.stderr[-300:]}
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            out["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            out["ems_exit"] = rig.stop()
        if "error" in out or wall0 is None or wall1 is None or mono0 is None or mono1 is None:
            out["ems_log_tail"] = rig.tail("ems.log")
            return out
        evs = rig.events()
        t = json.loads(rig.timing.read_text())
        starts, durs = t["starts_s"], t["durations_s"]
        offset = wall0 - mono0  # wall = monotonic + offset (both taken here, the EMS's clock is the same machine's)
        made = [e for e in evs if e.get("event") == "plan_made" and wall0 <= _ts(e) <= wall1]
        overruns = [e for e in evs if e.get("event") == "cycle_overrun"]
        windows = [(_ts(e) - float(e.get("solve_s", 0.0)) - offset - 0.05, _ts(e) - offset + 0.05) for e in made]
        idx = [i for i, s in enumerate(starts) if mono0 <= s <= mono1]
        late = lateness([starts[i] for i in idx])
        late_at = {starts[i]: v for i, v in zip(idx, late, strict=True)}
        # cycles that overlap a re-plan, or start within one period after it ended
        near = [late_at[s] for s in late_at if any(a - PERIOD_S <= s <= b + PERIOD_S for a, b in windows)]
        work_near = [durs[i] for i in idx if any(a <= starts[i] + durs[i] and starts[i] <= b for a, b in windows)]
        out["replans"] = {
            "n": len(made),
            "pushes_accepted": sum(1 for p in pushes if p == 200),
            "triggers": sorted({str(e.get("trigger")) for e in made}),
            "slots_mean": round(sum(int(e.get("slots", 0)) for e in made) / max(1, len(made)), 1),
            "solve_s": stats_ms(float(e.get("solve_s", 0.0)) for e in made),
            "status": sorted({str(e.get("status")) for e in made}),
        }
        out["loop"] = {
            "cycles": len(idx),
            "lateness": stats_ms(late),
            "overruns": sum(int(e.get("skipped_cycles", 1)) for e in overruns if wall0 <= _ts(e) <= wall1),
            "overruns_during_replans": sum(
                int(e.get("skipped_cycles", 1)) for e in overruns if any(a - 2 <= _ts(e) - offset <= b + 2 for a, b in windows)
            ),
            "lateness_near_replans": stats_ms(near),
            "cycle_work_overlapping_replans": stats_ms(work_near),
        }
        planner_states = [e.get("to_state") for e in evs if e.get("event") == "planner_state_changed"]
        out["planner_states"] = planner_states
    return out


def replay(days: float) -> dict[str, Any]:
    import structlog

    from interfaces.planner.solver import warm_up
    from simulators.schedule.replay_plan import _live_control, replay_plan
    from simulators.schedule.year import load_year

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    warm_up()  # the HiGHS banner off stdout
    year = load_year()
    day = 28  # 29-31 January 2023: wide price spreads, little PV: grid charging, holds and self-consumption
    first = day * 96
    res = replay_plan(year, first=first, last=first + int(days * 96), control=_live_control(), perfect_forecast=True)
    return {"start_day": day, "days": days, "forecast": "perfect", **res.summary()}


def main() -> int:
    quick = os.environ.get("BENCH_QUICK") == "1"
    t0 = time.perf_counter()
    doc: dict[str, Any] = {"bench": "planner", "quick": quick}
    doc["real_process"] = real_process(20.0 if quick else 25.0)
    doc["replay"] = replay(1.0 if quick else 3.0)
    doc["run_s"] = round(time.perf_counter() - t0, 1)
    emit(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
