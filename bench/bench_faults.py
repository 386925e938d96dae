"""The fault campaign (issue 18): the real main.py against the simulators, faults injected, figures out.

    python -m bench.bench_faults          (make faults; make bench runs it too; BENCH_QUICK=1: shorter)

One rig, loopback only, bounded (about 2-3 minutes; quick about 1.5): `python -m bench._campaign_sim`
(the simulators plus an `override` command) serves the ESS, grid meter, PV meter and CAN BMS; each
source is reached through its own TCP forwarder process (`bench._tcp_proxy`), which stands in for
the device's process: SIGSTOP hangs it, SIGKILL kills it. The EMS is `python -m bench._campaign_main`
(main.py with its wall clock x60, so 5-minute uplink windows close every 5 s) with Modbus, CAN, the
API, the store, the uplink to a reference receiver in this process and, when mosquitto is installed,
MQTT. Control: fault_timeout_s 1.5 s, recover_s 1 s, a 0.25 s loop.

Figures (one JSON object on stdout):
- per source (meter, ess, pv, bms) and fault (stop, silent, hung = SIGSTOP, killed = SIGKILL):
  time to FAULT, to 0 W at the simulated inverter, and to recovery (SELF_CONSUMPTION and charging
  again); the PV meter is not a required source: time to `degraded` instead;
- EMS SIGKILL / SIGSTOP -> inverter safe (0 W by its own revert timer), s;
- kill -9 loop: N restarts, each killed right after an accepted request: database integrity,
  batches created vs delivered, duplicates (dropped by the receiver, stored twice), audit rows
  lost, samples lost per kill (s of data in the flush window);
- implausible values per source -> readings refused (`readings_implausible`);
- API with 500 idle and 200 slow-header connections -> /api/v1/health latency;
- garbage CAN frames, MQTT commands and REST requests -> counts, thread deaths.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import resource
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from bench.common import REPO_ROOT, emit, free_port, stats_ms, wait_until

QUICK = os.environ.get("BENCH_QUICK") == "1"
FAULT_TIMEOUT_S = 1.5
RECOVER_S = 1.0
PERIOD_S = 0.25
WALL_FACTOR = 60.0
KILL_ROUNDS = 3 if QUICK else 6
SOURCES = ("meter", "ess", "pv", "bms")
FAULTS = ("stop", "silent", "hung", "killed") if not QUICK else ("stop", "hung", "killed")
REQUIRED = ["grid_power_w", "ess_power_w", "soc_pct", "bms_voltage_v", "bms_ccl_a", "bms_dcl_a"]
PROFILE = "t_s,load_w,pv_w\n0,1500,3000\n"  # 1.5 kW export: the battery charges under the EMS's control
TOKEN_ENV, TOKEN = "EMS_CAMPAIGN_TOKEN", "tok-campaign-" + secrets.token_hex(6)
UP_TOKEN, UP_KEY = "campaign-uplink-token", "campaign-uplink-hmac-key"
_POLL_S = 0.025
_wait = functools.partial(wait_until, pause_s=_POLL_S)  # fault reactions are timed to 25 ms


def _r(x: float | None, nd: int = 2) -> float | None:
    return None if x is None else round(x, nd)


class Rig:
    """Simulators, forwarders, the EMS, the uplink receiver and (optionally) mosquitto, in a temp dir."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        names = ("ess_up", "meter_up", "pv_up", "bms_up", "ctl", "ess", "meter", "pv", "bms", "api")
        self.ports = {n: free_port() for n in names}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.epoch = time.time()
        self.broker: Any = None
        self.receiver: Any = None
        self.ems_log = tmp / "ems.log"

    # ---- configs ----------------------------------------------------------------------------
    def write_configs(self) -> None:
        (self.tmp / "profile.csv").write_text(PROFILE)
        p = self.ports
        sim = {
            "plant": {"profile": str(self.tmp / "profile.csv"), "step_s": 0.02, "summary_interval_s": 0, "soc_start_pct": 50.0,
                      "meter_noise_w": 0.0, "meter_period_s": 0.2, "inverter_tau_s": 0.2, "watchdog_s": 30.0},
            "ess": {"port": p["ess_up"], "device_id": 1},
            "meter": {"port": p["meter_up"], "device_id": 2},
            "pv": {"enabled": True, "port": p["pv_up"], "device_id": 3},
            "bms": {"enabled": True, "port": p["bms_up"]},
            "control": {"enabled": True, "port": p["ctl"]},
        }  # fmt: skip
        dev = {"poll_period_s": 0.1, "timeout_s": 0.3}
        ems: dict[str, Any] = {
            "site": {"id": "campaign"},
            "control": {"enabled": True, "dry_run": False, "period_s": PERIOD_S, "fault_timeout_s": FAULT_TIMEOUT_S,
                        "recover_s": RECOVER_S, "summary_interval_s": 0, "required_sources": REQUIRED},
            "modbus": {"enabled": True, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5,
                       "ess": {"port": p["ess"], "device_id": 1, "map": "auto", **dev},
                       "meter": {"port": p["meter"], "device_id": 2, "map": "sdm630", **dev},
                       "pv": {"enabled": True, "port": p["pv"], "device_id": 3, "map": "sdm630_pv", **dev}},
            "can": {"enabled": True, "interface": "socketcand", "channel": "can0", "host": "127.0.0.1", "port": p["bms"],
                    "reopen_s": 0.2, "receive_timeout_s": 0.1},
            "api": {"enabled": True, "port": p["api"], "threads": 4,
                    "tokens": [{"name": "campaign", "role": "operator", "secret": {"env": TOKEN_ENV}}]},
            "store": {"enabled": True, "path": str(self.tmp / "ems.db"), "flush_interval_s": 5.0, "finalize_lag_s": 0.5},
            "uplink": {"enabled": True, "url": self.receiver.url, "ca_file": str(self.tmp / "ca.pem"),
                       "token": {"env": "EMS_CAMPAIGN_UP_TOKEN"}, "hmac_key": {"env": "EMS_CAMPAIGN_UP_KEY"},
                       "idle_poll_s": 0.5, "backoff_initial_s": 0.2, "backoff_max_s": 2.0, "backoff_jitter_s": 0.1},
        }  # fmt: skip
        if self.broker is not None:
            ems["mqtt"] = {"enabled": True, "host": "127.0.0.1", "port": self.broker.port, "username": "ems",
                           "password": {"env": "EMS_CAMPAIGN_MQTT_PW"}, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5}  # fmt: skip
        (self.tmp / "sim.yaml").write_text(yaml.safe_dump(sim))
        (self.tmp / "ems.yaml").write_text(yaml.safe_dump(ems))

    # ---- helpers around the EMS ---------------------------------------------------------------
    def start_receiver(self) -> None:
        import trustme

        from simulators.uplink_receiver import UplinkReceiver

        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(self.tmp / "ca.pem"))
        ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(self.tmp / "server.pem"))
        self.receiver = UplinkReceiver(
            token=UP_TOKEN, hmac_key=UP_KEY.encode(), certfile=self.tmp / "server.pem", max_skew_s=1e9, db_path=self.tmp / "rx.db"
        ).start()

    def start_broker(self) -> None:
        try:
            from simulators.broker import find_mosquitto, start_local_broker

            if find_mosquitto() is None:
                return
            acl = "user ems\ntopic readwrite ems/#\ntopic readwrite homeassistant/#\n\nuser operator\ntopic write ems/campaign/cmd/#\ntopic read ems/#\n"
            self.broker = start_local_broker(workdir=self.tmp / "mosquitto", users={"ems": "ems-pw", "operator": "op-pw"}, acl=acl)
        except Exception as exc:  # the campaign goes on (reported)
            print(f"bench_faults: no MQTT broker: {exc}", file=sys.stderr)
            self.broker = None

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> None:
        out = open(log or self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - owned by the process
        self.procs[name] = subprocess.Popen(
            [sys.executable, *args], cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )  # fmt: skip

    def start_sim(self) -> None:
        self._spawn("sim", ["-m", "bench._campaign_sim", "--config", str(self.tmp / "sim.yaml"), "--log-format", "json"])
        if not _wait(lambda: self.sim()["devices"], 30):
            raise RuntimeError("the simulators did not start: " + self.tail("sim"))

    def start_proxy(self, src: str) -> None:
        self._spawn(f"proxy-{src}", ["-m", "bench._tcp_proxy", "--listen", str(self.ports[src]), "--to", str(self.ports[f"{src}_up"])])
        _wait(lambda: _connectable(self.ports[src]), 10)

    def start_ems(self) -> None:
        env = {
            TOKEN_ENV: TOKEN,
            "EMS_CAMPAIGN_UP_TOKEN": UP_TOKEN,
            "EMS_CAMPAIGN_UP_KEY": UP_KEY,
            "EMS_CAMPAIGN_MQTT_PW": "ems-pw",
            "EMS_BENCH_WALL_EPOCH": str(self.epoch),
            "EMS_BENCH_WALL_FACTOR": str(WALL_FACTOR),
        }
        self._spawn(
            "ems", ["-m", "bench._campaign_main", "--config", str(self.tmp / "ems.yaml"), "--log-format", "json"], env, self.ems_log
        )
        if not _wait(lambda: self.status()["state"], 30):
            raise RuntimeError("the EMS did not answer: " + self.tail("ems"))

    def signal(self, name: str, sig: int) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def stop_all(self) -> None:
        for name in ["ems", *[n for n in self.procs if n.startswith("proxy")], "sim"]:
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGCONT)
                self.signal(name, signal.SIGTERM)
        if self.receiver is not None:
            self.receiver.stop()
        if self.broker is not None:
            self.broker.stop()

    def tail(self, name: str, n: int = 8) -> str:
        path = self.ems_log if name == "ems" else self.tmp / f"{name}.log"
        with contextlib.suppress(OSError):
            return " | ".join(path.read_text(errors="replace").splitlines()[-n:])[-1500:]
        return ""

    # ---- observations -------------------------------------------------------------------------
    def ctl(self, line: str) -> str:
        from simulators.ctl import send

        return send(line, port=self.ports["ctl"], timeout_s=2.0)

    def sim(self) -> dict[str, Any]:
        return dict(json.loads(self.ctl("status")))

    def get(self, path: str, timeout_s: float = 2.0) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['api']}{path}", timeout=timeout_s) as r:
                body = r.read()
                return r.status, json.loads(body) if path != "/metrics" else body.decode()
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def status(self) -> dict[str, Any]:
        return dict(self.get("/api/v1/status")[1])

    def health(self) -> dict[str, Any]:
        return dict(self.get("/api/v1/health")[1])

    def put(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.ports['api']}{path}", data=json.dumps(body).encode(), method="PUT",
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def counter(self, name: str) -> int | None:
        _code, text = self.get("/metrics")
        for line in str(text).splitlines():
            if line.startswith(f'ems_events_total{{name="{name}"}}') or line.startswith(f'ems_events{{name="{name}"}}'):
                return int(float(line.rsplit(" ", 1)[1]))
        return None

    def charging(self) -> bool:
        s = self.sim()
        st = self.status()
        return bool(s["enabled"]) and s["setpoint_w"] < -300.0 and st["state"] == "SELF_CONSUMPTION"

    def zero_w(self) -> bool:
        """0 W at the simulated inverter: the EMS's 0 W command, or its own revert timer (then not enabled)."""
        return abs(float(self.sim()["setpoint_w"])) < 0.5

    def reverted(self) -> bool:
        """The inverter's own timer took it back to its own mode (0 W): nobody commands it any more."""
        s = self.sim()
        return not s["enabled"] and abs(float(s["setpoint_w"])) < 0.5

    def pv_status(self) -> str:
        return next(str(d["status"]) for d in self.health()["devices"] if d["name"] == "pv")


def _connectable(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


# ---- the fault matrix -----------------------------------------------------------------------------
def _inject(rig: Rig, src: str, fault: str) -> Callable[[], None]:
    """Start the fault; returns how to end it."""
    if fault == "hung":
        rig.signal(f"proxy-{src}", signal.SIGSTOP)
        return lambda: rig.signal(f"proxy-{src}", signal.SIGCONT)
    if fault == "killed" or (fault == "stop" and src == "bms"):
        rig.signal(f"proxy-{src}", signal.SIGKILL if fault == "killed" else signal.SIGTERM)
        return lambda: rig.start_proxy(src)
    if fault == "silent":
        cmd = "bms silent" if src == "bms" else f"{src} silent"
        rig.ctl(f"{cmd} on")
        return lambda: rig.ctl(f"{cmd} off") and None
    rig.ctl(f"{src} stop")
    return lambda: rig.ctl(f"{src} start") and None


def _scenario(rig: Rig, src: str, fault: str) -> dict[str, Any]:
    if not _wait(rig.charging, 20):
        return {"error": "not regulating before the fault: " + rig.tail("ems", 3)}
    required = src != "pv"
    t0 = time.monotonic()
    end = _inject(rig, src, fault)
    row: dict[str, Any] = {}
    try:
        if required:
            deadline = t0 + FAULT_TIMEOUT_S + 6.0
            to_fault = to_zero = None
            ev = threading.Event()
            while time.monotonic() < deadline and (to_fault is None or to_zero is None):
                now = time.monotonic()
                with contextlib.suppress(OSError, ValueError, urllib.error.URLError):
                    if to_fault is None and rig.status()["state"] == "FAULT":
                        to_fault = now - t0
                    if to_zero is None and rig.zero_w():
                        to_zero = now - t0
                ev.wait(_POLL_S)
            row |= {"to_fault_s": _r(to_fault), "to_zero_w_s": _r(to_zero)}
            with contextlib.suppress(OSError, ValueError, urllib.error.URLError):
                row["fault_causes"] = rig.status()["fault_causes"]
        else:
            t = _wait(lambda: rig.pv_status() == "degraded", FAULT_TIMEOUT_S + 6.0)
            row |= {"to_degraded_s": _r(time.monotonic() - t0) if t else None, "state": rig.status()["state"]}
    finally:
        t1 = time.monotonic()
        end()
    ok = _wait(rig.charging if required else (lambda: rig.pv_status() == "ok" and rig.charging()), 20)
    row["to_recovery_s"] = _r(time.monotonic() - t1) if ok else None
    return row


def _matrix(rig: Rig) -> dict[str, Any]:
    return {src: {fault: _scenario(rig, src, fault) for fault in FAULTS} for src in SOURCES}


# ---- the EMS itself dies or hangs ---------------------------------------------------------------
def _ems_death(rig: Rig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    pd = _wait(lambda: rig.status().get("process_death"), 10) or {}
    out["process_death"] = pd.get("leads_to")
    out["revert_s"] = pd.get("after_s")
    for how, sig in (("sigkill", signal.SIGKILL), ("sigstop", signal.SIGSTOP)):
        if not _wait(rig.charging, 20):
            out[f"{how}_error"] = "not regulating before"
            continue
        t0 = time.monotonic()
        rig.procs["ems"].send_signal(sig)
        ok = _wait(rig.reverted, FAULT_TIMEOUT_S + 10.0)
        out[f"{how}_to_safe_s"] = _r(time.monotonic() - t0) if ok else None
        if sig == signal.SIGSTOP:
            rig.signal("ems", signal.SIGCONT)
            out["sigcont_resumes_control"] = bool(_wait(rig.charging, 20))
        else:
            rig.procs["ems"].wait(10)
            rig.start_ems()
    return out


# ---- implausible readings ---------------------------------------------------------------------
def _implausible(rig: Rig) -> dict[str, Any]:
    from config.schema import EMSConfig

    if "plausibility" not in EMSConfig.model_fields:  # the plausibility work (its own issue) is not in this tree
        return {"pending": "no plausibility windows yet (counter readings_implausible)"}
    out: dict[str, Any] = {}
    # inside each map's own range (else the link refuses the raw value first), far outside the site's windows
    injections = {"meter": ("grid_power_w", 150000.0), "ess": ("ess_power_w", 30000.0), "pv": ("pv_power_w", 150000.0)}
    for src in SOURCES:
        _wait(rig.charging, 20)
        before = rig.counter("readings_implausible") or 0
        faulted = False
        t_end = time.monotonic() + FAULT_TIMEOUT_S + 0.7  # long enough for a refused required reading to go stale
        if src == "bms":
            import can

            from interfaces.can.codec import Codec
            from interfaces.can.socketcand import SocketcandBus

            bus = SocketcandBus("can0", host="127.0.0.1", port=rig.ports["bms_up"])
            data = Codec().encode_measurements(voltage_v=200.0, current_a=0.0, temperature_degc=25.0)  # a 51 V pack reads 200 V
            try:
                while time.monotonic() < t_end:
                    bus.send(can.Message(arbitration_id=0x356, is_extended_id=False, data=data))
                    faulted = faulted or rig.status()["state"] == "FAULT"
                    threading.Event().wait(0.1)
            finally:
                bus.shutdown()
        else:
            point, value = injections[src]
            rig.ctl(f"override {src} {point} {value:g}")
            try:
                while time.monotonic() < t_end:
                    faulted = faulted or rig.status()["state"] == "FAULT"
                    threading.Event().wait(0.1)
            finally:
                rig.ctl(f"override {src} off")
        after = rig.counter("readings_implausible") or 0
        out[src] = {"rejected": after - before, "fault": faulted}
    return out


# ---- API under connection abuse -------------------------------------------------------------------
def _api_abuse(rig: Rig) -> dict[str, Any]:
    idle_n, slow_n = 500, 200
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096) if hard != resource.RLIM_INFINITY else 4096, hard))
    port = rig.ports["api"]
    socks: list[socket.socket] = []
    stop = threading.Event()
    try:
        for _ in range(idle_n):
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        slow = []
        for _ in range(slow_n):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            slow.append(s)
        socks += slow

        def trickle() -> None:
            while not stop.wait(0.5):
                for s in slow:
                    with contextlib.suppress(OSError):
                        s.send(b"a")

        t = threading.Thread(target=trickle, daemon=True)
        t.start()
        lat: list[float] = []
        errors = 0
        for _ in range(100):
            t0 = time.perf_counter()
            try:
                code, _body = rig.get("/api/v1/health", timeout_s=3.0)
                lat.append(time.perf_counter() - t0)
                errors += code not in (200, 503)
            except (OSError, urllib.error.URLError):
                errors += 1
        stop.set()
        t.join(5)
        return {"idle": idle_n, "slow": slow_n, "health": stats_ms(lat), "errors": errors}
    finally:
        stop.set()
        for s in socks:
            s.close()


# ---- garbage in -----------------------------------------------------------------------------------
def _garbage(rig: Rig) -> dict[str, Any]:
    rng = random.Random(18)
    out: dict[str, Any] = {}
    before = {k: rig.counter(k) or 0 for k in ("can_frames_malformed", "can_frames_decoded", "mqtt_cmd_invalid")}
    # CAN: random frames into the BMS's bus (the simulator's socketcand hub)
    import can

    from interfaces.can.socketcand import SocketcandBus

    bus = SocketcandBus("can0", host="127.0.0.1", port=rig.ports["bms_up"])
    ids = [0x305, 0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E, 0x35A, 0x35F]
    n_can = 1000
    try:
        for _ in range(n_can):
            fid = rng.choice(ids) if rng.random() < 0.7 else rng.randrange(0x800)
            bus.send(can.Message(arbitration_id=fid, is_extended_id=False, data=bytes(rng.randrange(256) for _ in range(rng.randrange(9)))))
    finally:
        bus.shutdown()
    # REST: random methods, paths, bodies
    paths = ["/api/v1/mode", "/api/v1/setpoint", "/api/v1/status", "/api/v1/measurements", "/api/v1/events", "/api/v1/grid/import-cap",
             "/api/v1/prices", "/api/v1/health", "/metrics", "/api/v1/../../etc/passwd", "/api/v1/%ff", "/" + "a" * 3000]  # fmt: skip
    codes: dict[str, int] = {}
    server_errors: list[str] = []
    for _ in range(300):
        method = rng.choice(["GET", "PUT", "POST", "DELETE", "PATCH"])
        body = rng.choice([b"", b"{", b"null", b"[]", json.dumps({"mode": rng.random()}).encode(), bytes(rng.randrange(256) for _ in range(64)),
                           json.dumps({"power_w": rng.choice([1e308, -1, "x", None]), "ttl_s": rng.choice([0, -5, 1e9, "y"])}).encode()])  # fmt: skip
        headers = {"Content-Type": rng.choice(["application/json", "text/plain", "application/x-www-form-urlencoded"])}
        if rng.random() < 0.5:
            headers["Authorization"] = rng.choice([f"Bearer {TOKEN}", "Bearer nope", "Basic Zm9vOmJhcg=="])
        path = rng.choice(paths) + (f"?from_ts={rng.choice(['x', '-1', '1e400', ''])}" if rng.random() < 0.3 else "")
        req = urllib.request.Request(f"http://127.0.0.1:{rig.ports['api']}{path}", data=body or None, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                code = r.status
        except urllib.error.HTTPError as exc:
            code = exc.code
        except (OSError, urllib.error.URLError):
            code = 0
        unhealthy = code == 503 and path.startswith("/api/v1/health")  # an answer: the EMS is in FAULT (the CAN garbage)
        key = "health_503" if unhealthy else f"{code // 100}xx" if code else "no_answer"
        codes[key] = codes.get(key, 0) + 1
        if (code >= 500 and not unhealthy) or not code:
            server_errors.append(f"{method} {path[:60]} {body[:40]!r} -> {code}")
    out["rest"] = {"requests": 300, **dict(sorted(codes.items())), "server_errors": server_errors[:5]}
    # MQTT: random command payloads (when the campaign has a broker)
    if rig.broker is not None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="campaign-garbage", protocol=mqtt.MQTTv5)
        c.username_pw_set("operator", "op-pw")
        c.connect("127.0.0.1", rig.broker.port)
        c.loop_start()
        try:
            for i in range(300):
                kind = rng.choice(["mode", "setpoint", "release", "prices", "import_cap", "nope"])
                payload = rng.choice([bytes(rng.randrange(256) for _ in range(rng.randrange(40))), b"{}", b"[1,2]", b'{"mode": 7}',
                                      json.dumps({"power_w": 1e9, "ttl_s": -1, "seq": i}).encode()])  # fmt: skip
                c.publish(f"ems/campaign/cmd/{kind}", payload, qos=1, retain=rng.random() < 0.1).wait_for_publish(5)
        finally:
            c.loop_stop()
            c.disconnect()
        out["mqtt"] = {"published": 300}
    else:
        out["mqtt"] = {"skipped": "mosquitto not installed"}
    _wait(lambda: (rig.counter("can_frames_decoded") or 0) > before["can_frames_decoded"], 5)
    threading.Event().wait(1.0)
    after = {k: rig.counter(k) or 0 for k in before}
    out["can"] = {"frames": n_can, "malformed": after["can_frames_malformed"] - before["can_frames_malformed"],
                  "decoded": after["can_frames_decoded"] - before["can_frames_decoded"]}  # fmt: skip
    if rig.broker is not None:
        out["mqtt"]["invalid"] = after["mqtt_cmd_invalid"] - before["mqtt_cmd_invalid"]
    h = rig.health()
    stale = [w["name"] for w in h["workers"] if w["stale"]]
    alive = rig.procs["ems"].poll() is None
    log = rig.ems_log.read_text(errors="replace")
    out["thread_deaths"] = len(stale) + (0 if alive else 1)
    out["stale_threads"] = stale
    out["worker_iteration_failed"] = log.count('"worker_iteration_failed"') + log.count('"mqtt_message_failed"')
    return out


# ---- kill -9 loop -------------------------------------------------------------------------------
def _kill_loop(rig: Rig) -> dict[str, Any]:
    db = rig.tmp / "ems.db"
    accepted: list[str] = []
    integrity: list[str] = []
    lost_s: list[float] = []
    lost_random_s: list[float] = []
    rng = random.Random(9)
    for i in range(KILL_ROUNDS):
        _wait(lambda: rig.status()["state"] in ("SELF_CONSUMPTION", "STANDBY", "FAULT"), 20)
        with_request = i % 2 == 0  # the other rounds are killed at a random moment, nothing asked
        threading.Event().wait(1.5 if with_request else rng.uniform(1.0, 5.0))  # samples, and a batch or two at x60
        code, body, reason = 0, {}, f"kill9-{i}-{secrets.token_hex(3)}"
        if with_request:
            code, body = rig.put("/api/v1/setpoint", {"power_w": -500.0 - i, "ttl_s": 3600, "reason": reason})
        kill_wall = rig.epoch + WALL_FACTOR * (time.time() - rig.epoch)
        rig.signal("ems", signal.SIGKILL)  # right after the reply
        if code == 200 and body.get("accepted"):
            accepted.append(reason)
        with contextlib.closing(sqlite3.connect(db)) as c:
            integrity.append(str(c.execute("PRAGMA integrity_check").fetchone()[0]))
            last_ms = c.execute("SELECT max(ts_ms) FROM samples").fetchone()[0]
        if last_ms is not None:
            (lost_s if with_request else lost_random_s).append(max(0.0, (kill_wall - last_ms / 1000.0) / WALL_FACTOR))
        rig.start_ems()
    rig.put("/api/v1/mode", {"mode": "SELF_CONSUMPTION"})
    threading.Event().wait(8.0)  # another window or two close and the outbox drains
    rig.signal("ems", signal.SIGTERM)
    with contextlib.closing(sqlite3.connect(db)) as c:
        outbox = dict(c.execute("SELECT status, count(*) FROM outbox GROUP BY status").fetchall())
        audits = [json.loads(d) for (d,) in c.execute("SELECT data FROM events WHERE kind = 'audit'")]
        integrity.append(str(c.execute("PRAGMA integrity_check").fetchone()[0]))
        created = [str(b) for (b,) in c.execute("SELECT batch_id FROM outbox")]
    found = {a.get("reason") for a in audits if a.get("result") == "accepted"}
    stored = rig.receiver.batches()
    windows = [(b.get("installation_id"), b.get("window_start_ts")) for b in stored]
    delivered = len(set(created) & {str(b.get("batch_id")) for b in stored})
    rig.start_ems()  # for the parts after this one
    return {
        "restarts": KILL_ROUNDS,
        "integrity_ok": all(x == "ok" for x in integrity),
        "batches_created": len(created),
        "batches_delivered": delivered,  # at the receiver
        "batches_pending_at_stop": len(created) - delivered,  # made by the final flush: sent at the next start
        "outbox_marked": outbox,  # as the EMS's database says (a delivery mark may wait for the next flush)
        "receiver_stored": int(rig.receiver.counts["stored"]),
        "receiver_duplicates_dropped": int(rig.receiver.counts["duplicate"]),
        "receiver_conflicts": int(rig.receiver.counts["conflict"]),
        "stored_twice": len(windows) - len(set(windows)),
        "requests_accepted": len(accepted),
        "audit_rows_lost": len([r for r in accepted if r not in found]),
        # s of samples not yet committed: right after a request (its audit commit flushed them) / at a random moment
        "samples_lost_per_kill_s": {"min": _r(min(lost_s)) if lost_s else None, "max": _r(max(lost_s)) if lost_s else None},
        "samples_lost_random_kill_s": [_r(x) for x in lost_random_s],
    }


def _summary(res: dict[str, Any]) -> dict[str, Any]:
    rows = [r for src, faults in res.get("sources", {}).items() if src != "pv" for r in faults.values()]
    tf = [r.get("to_fault_s") for r in rows]
    tz = [r.get("to_zero_w_s") for r in rows]
    missing = sum(1 for x in tf + tz if x is None)
    return {
        "fault_s_max": max((x for x in tf if x is not None), default=None),
        "zero_w_s_max": max((x for x in tz if x is not None), default=None),
        "recovery_s_max": max((r.get("to_recovery_s") or 0.0 for r in rows), default=None),
        "faults_without_reaction": missing,
        "limit_s": FAULT_TIMEOUT_S + 1.0,
    }


def main() -> None:
    from interfaces.logs import configure_logging

    configure_logging(fmt="json", level="warning", stream=sys.stderr)  # stdout carries the one JSON result
    t_start = time.monotonic()
    res: dict[str, Any] = {"quick": QUICK, "fault_timeout_s": FAULT_TIMEOUT_S, "recover_s": RECOVER_S, "wall_factor": WALL_FACTOR}
    with tempfile.TemporaryDirectory(prefix="ems-faults-") as tmpdir:
        rig = Rig(Path(tmpdir))
        try:
            rig.start_receiver()
            rig.start_broker()
            res["mqtt"] = rig.broker is not None
            rig.write_configs()
            rig.start_sim()
            for src in SOURCES:
                rig.start_proxy(src)
            rig.start_ems()
            if not _wait(rig.charging, 30):
                raise RuntimeError("the EMS never regulated: " + rig.tail("ems"))
            for name, part in (("sources", _matrix), ("ems_death", _ems_death), ("implausible", _implausible),
                               ("api_abuse", _api_abuse), ("garbage", _garbage), ("kill9_loop", _kill_loop)):  # fmt: skip
                t0 = time.monotonic()
                try:
                    res[name] = part(rig)
                except Exception as exc:  # the campaign goes on (reported)
                    res[name] = {"error": f"{type(exc).__name__}: {exc}"[:400], "ems_log": rig.tail("ems", 4)}
                res.setdefault("part_wall_s", {})[name] = round(time.monotonic() - t0, 1)
        except Exception as exc:  # the campaign goes on (reported)
            res["error"] = f"{type(exc).__name__}: {exc}"[:600]
        finally:
            rig.stop_all()
    res["summary"] = _summary(res)
    res["wall_s"] = round(time.monotonic() - t_start, 1)
    emit(res)


if __name__ == "__main__":
    main()
