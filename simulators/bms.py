"""Simulated Pylontech/SMA-compatible CAN BMS, driven by the plant model (docs/can.md).

Sends the frame set of `interfaces/can/pylontech.dbc` at the periods the DBC gives
(GenMsgCycleTime, 1 s), encoded through the same cantools codec the EMS decodes with. Values
come from any object with the `BatterySource` attributes (the plant model of `simulators/plant.py`).
Faults to rehearse: raise a protection or a warning flag, override a request flag, go silent;
at start (config) or at run time (`command("protection over_voltage on")`, or a line on stdin
of `python -m simulators.bms`).

By default it also serves the bus: a socketcand-compatible hub on 127.0.0.1 (simulators/can_hub.py)
to which the EMS connects with `can.interface: socketcand`.

    python -m simulators.bms [--port 29536] [--soc-pct 60] [--config FILE]   # commands on stdin
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Protocol

import can
import structlog
import yaml
from pydantic import Field, ValidationError, model_validator

from config.can import CanInterface, CurrentPositive
from config.common import Section
from interfaces.can.codec import KEEPALIVE_ID, PROTECTIONS, WARNINGS, Codec
from interfaces.can.socketcand import SocketcandBus
from interfaces.logs import configure_logging
from simulators.can_hub import SocketcandHub

__all__ = ["BatterySource", "BmsSimConfig", "BmsSimulator", "StaticBattery", "main"]

log = structlog.get_logger("simulators.bms")
_FLAGS = {"protection": frozenset(PROTECTIONS.values()), "warning": frozenset(WARNINGS.values())}
_REQUESTS = ("charge_enable", "discharge_enable", "force_charge")
_BMS_FRAME_IDS = (0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E)


class BatterySource(Protocol):
    """What the simulated BMS reads each frame (the plant model has these, + charge current)."""

    @property
    def soc_pct(self) -> float: ...
    @property
    def battery_voltage_v(self) -> float: ...
    @property
    def battery_current_a(self) -> float: ...
    @property
    def battery_temperature_degc(self) -> float: ...
    @property
    def charge_current_limit_a(self) -> float: ...
    @property
    def discharge_current_limit_a(self) -> float: ...


class StaticBattery:
    """A battery that holds still: for the standalone simulator and tests without a plant."""

    def __init__(
        self,
        *,
        soc_pct: float = 60.0,
        voltage_v: float = 52.4,
        current_a: float = 0.0,
        temperature_degc: float = 25.0,
        ccl_a: float = 100.0,
        dcl_a: float = 100.0,
    ) -> None:
        self.soc_pct = soc_pct
        self.battery_voltage_v = voltage_v
        self.battery_current_a = current_a
        self.battery_temperature_degc = temperature_degc
        self.charge_current_limit_a = ccl_a
        self.discharge_current_limit_a = dcl_a


class BmsSimConfig(Section):
    enabled: bool = Field(True, description="run the simulated CAN BMS")
    serve_bridge: bool = Field(True, description="run the socketcand hub (the loopback CAN bus) in this process")
    interface: CanInterface = Field(
        CanInterface.SOCKETCAND, description="bus the BMS sends on: socketcand (the hub) or virtual (in-process tests)"
    )
    channel: str = Field("can0", min_length=1, description="bus name")
    host: str = Field("127.0.0.1", description="hub address (loopback only)")
    port: int = Field(29536, ge=0, le=65535, description="hub TCP port (0 = any free port)")
    name: str = Field("PYLON", max_length=8, pattern=r"^[ -~]*$", description="manufacturer name in 0x35E (ASCII)")
    modules: int = Field(2, ge=0, le=255, description="modules in parallel (0x359 byte 4)")
    soh_pct: float = Field(100.0, ge=0, le=100, description="state of health sent in 0x355, %")
    charge_voltage_limit_v: float = Field(56.0, gt=0, le=6553, description="CVL in 0x351, V")
    discharge_voltage_limit_v: float | None = Field(
        46.0, gt=0, le=6553, description="DVL in 0x351, V (null = send DLC 6 without it, like some emulators)"
    )
    force_charge_below_pct: float = Field(3.0, ge=0, le=100, description="request a force charge (0x35C bit 5) at or below this SOC, %")
    charge_disable_at_pct: float = Field(100.0, ge=0, le=100, description="clear the charge-enable bit at or above this SOC, %")
    current_positive: CurrentPositive = Field(
        CurrentPositive.CHARGE, description="sign convention this BMS uses on the wire for 0x356 current"
    )
    protections: tuple[str, ...] = Field((), description="protection flags raised from the start (e.g. over_voltage)")
    warnings: tuple[str, ...] = Field((), description="warning flags raised from the start (e.g. high_temperature)")
    silent: bool = Field(False, description="start silent (no frames) to rehearse a lost BMS")

    @model_validator(mode="after")
    def _known_flags(self) -> BmsSimConfig:
        for kind, names in (("protection", self.protections), ("warning", self.warnings)):
            unknown = sorted(set(names) - _FLAGS[kind])
            if unknown:
                raise ValueError(f"{kind}s: unknown {kind} flag(s) {unknown}; known: {sorted(_FLAGS[kind])}")
        if self.host not in ("127.0.0.1", "localhost"):
            raise ValueError(f"host: the simulated bus stays on loopback (got {self.host!r})")
        return self


def _clamp(x: float, lo: float, hi: float) -> float:
    return lo if not x >= lo else min(x, hi)  # NaN -> lo


class BmsSimulator:
    """One sender thread: frames at their DBC periods, 0x305 keep-alives counted, commands applied."""

    def __init__(
        self, battery: BatterySource, cfg: BmsSimConfig | None = None, *, bus_factory: Callable[[], can.BusABC] | None = None
    ) -> None:
        self._battery = battery
        self._cfg = cfg or BmsSimConfig()
        self._codec = Codec(current_sign=1.0 if self._cfg.current_positive is CurrentPositive.CHARGE else -1.0)
        self._bus_factory = bus_factory
        self._lock = threading.Lock()
        self._protections = frozenset(self._cfg.protections)
        self._warnings = frozenset(self._cfg.warnings)
        self._silent = self._cfg.silent
        self._overrides: dict[str, bool] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._hub: SocketcandHub | None = None
        self._bus: can.BusABC | None = None
        self.frames_sent = 0
        self.keepalives_received = 0
        self.last_keepalive_s: float | None = None  # monotonic

    # ---- lifecycle -----------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The hub's TCP port (with serve_bridge)."""
        return self._hub.port if self._hub is not None else self._cfg.port

    def start(self) -> BmsSimulator:
        cfg = self._cfg
        if cfg.serve_bridge:
            self._hub = SocketcandHub(host=cfg.host, port=cfg.port, channel=cfg.channel).start()
        self._bus = self._open_bus()
        self._thread = threading.Thread(target=self._run, name="bms-sim", daemon=True)
        self._thread.start()
        log.info(
            "bms_simulator_started",
            interface=cfg.interface.value,
            port=self.port,
            silent=self._silent,
            protections=",".join(sorted(self._protections)) or "none",
        )
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        if self._bus is not None:
            self._bus.shutdown()
        if self._hub is not None:
            self._hub.stop()
        log.info("bms_simulator_stopped", frames_sent=self.frames_sent, keepalives_received=self.keepalives_received)

    def _open_bus(self) -> can.BusABC:
        if self._bus_factory is not None:
            return self._bus_factory()
        cfg = self._cfg
        if cfg.interface is CanInterface.VIRTUAL:
            return can.Bus(interface="virtual", channel=cfg.channel, receive_own_messages=False)
        if cfg.interface is CanInterface.SOCKETCAND:
            return SocketcandBus(cfg.channel, host=cfg.host, port=self.port)
        raise ValueError(f"interface: the BMS simulator sends on socketcand or virtual (got {cfg.interface.value})")

    # ---- fault injection -----------------------------------------------------------------
    def set_flag(self, kind: str, name: str, raised: bool) -> None:
        if kind not in _FLAGS or name not in _FLAGS[kind]:
            raise ValueError(f"unknown {kind} flag {name!r}; known: {sorted(_FLAGS.get(kind, ()))}")
        with self._lock:
            attr = "_protections" if kind == "protection" else "_warnings"
            cur: frozenset[str] = getattr(self, attr)
            setattr(self, attr, cur | {name} if raised else cur - {name})
        log.info("bms_simulator_flag_set", kind=kind, flag=name, raised=raised)

    def set_silent(self, silent: bool) -> None:
        with self._lock:
            self._silent = silent
        log.info("bms_simulator_silent_set", silent=silent)

    def set_request(self, name: str, value: bool | None) -> None:
        """Override a 0x35C request bit (None = back to automatic)."""
        if name not in _REQUESTS:
            raise ValueError(f"unknown request {name!r}; known: {list(_REQUESTS)}")
        with self._lock:
            if value is None:
                self._overrides.pop(name, None)
            else:
                self._overrides[name] = value
        log.info("bms_simulator_request_set", request=name, value="auto" if value is None else value)

    def clear(self) -> None:
        with self._lock:
            self._protections, self._warnings, self._silent = frozenset(), frozenset(), False
            self._overrides.clear()
        log.info("bms_simulator_cleared")

    def command(self, line: str) -> str:
        """Text commands: `protection NAME on|off`, `warning NAME on|off`, `silent on|off`,
        `request charge_enable|discharge_enable|force_charge on|off|auto`, `clear`, `status`."""
        words = line.strip().lower().split()
        try:
            if words[:1] == ["clear"] and len(words) == 1:
                self.clear()
            elif words[:1] == ["status"] and len(words) == 1:
                pass
            elif len(words) == 3 and words[0] in _FLAGS and words[2] in ("on", "off"):
                self.set_flag(words[0], words[1], words[2] == "on")
            elif len(words) == 2 and words[0] == "silent" and words[1] in ("on", "off"):
                self.set_silent(words[1] == "on")
            elif len(words) == 3 and words[0] == "request" and words[2] in ("on", "off", "auto"):
                self.set_request(words[1], None if words[2] == "auto" else words[2] == "on")
            else:
                return f"error: unknown command {line.strip()!r}; see simulators/bms.py BmsSimulator.command"
        except ValueError as exc:
            return f"error: {exc}"
        with self._lock:
            return (
                f"ok protections={','.join(sorted(self._protections)) or '-'} warnings={','.join(sorted(self._warnings)) or '-'} "
                f"silent={self._silent} frames_sent={self.frames_sent} keepalives_received={self.keepalives_received}"
            )

    # ---- frames --------------------------------------------------------------------------
    def frames(self) -> list[can.Message]:
        """The frame set for the battery's present state, encoded through the DBC."""
        b, cfg, c = self._battery, self._cfg, self._codec
        with self._lock:
            prot, warn, overrides = self._protections, self._warnings, dict(self._overrides)
        soc = _clamp(b.soc_pct, 0.0, 100.0)
        requests = {
            "charge_enable": soc < cfg.charge_disable_at_pct,
            "discharge_enable": True,
            "force_charge": soc <= cfg.force_charge_below_pct,
        } | overrides
        payloads = {
            0x351: c.encode_limits(
                cvl_v=cfg.charge_voltage_limit_v,
                ccl_a=_clamp(b.charge_current_limit_a, 0.0, 3276.7),
                dcl_a=_clamp(b.discharge_current_limit_a, 0.0, 3276.7),
                dvl_v=cfg.discharge_voltage_limit_v,
            ),
            0x355: c.encode_soc(soc_pct=soc, soh_pct=cfg.soh_pct),
            0x356: c.encode_measurements(
                voltage_v=_clamp(b.battery_voltage_v, 0.0, 327.67),
                current_a=_clamp(b.battery_current_a, -3276.7, 3276.7),
                temperature_degc=_clamp(b.battery_temperature_degc, -60.0, 125.0),
            ),
            0x359: c.encode_alarms(protections=prot, warnings=warn, modules=cfg.modules),
            0x35C: c.encode_requests(**requests),
            0x35E: c.encode_name(cfg.name),
        }
        return [can.Message(arbitration_id=fid, is_extended_id=False, data=data) for fid, data in payloads.items()]

    def _run(self) -> None:
        assert self._bus is not None
        bus = self._bus
        next_due = dict.fromkeys(_BMS_FRAME_IDS, time.monotonic())
        while not self._stop.is_set():
            now = time.monotonic()
            due = [fid for fid, t in next_due.items() if t <= now]
            if due:
                self._send(bus, due)
                for fid in due:
                    next_due[fid] = max(next_due[fid] + self._codec.period_s(fid), now)
                continue
            try:
                msg = bus.recv(min(0.5, min(next_due.values()) - now))
            except can.CanError as exc:
                log.warning("bms_simulator_bus_failed", error=str(exc))
                self._stop.wait(1.0)
                continue
            if msg is not None and msg.arbitration_id == KEEPALIVE_ID and not msg.is_extended_id:
                self.keepalives_received += 1
                self.last_keepalive_s = time.monotonic()

    def _send(self, bus: can.BusABC, due: list[int]) -> None:
        with self._lock:
            silent = self._silent
        if silent:
            return
        try:
            for msg in self.frames():
                if msg.arbitration_id in due:
                    bus.send(msg)
                    self.frames_sent += 1
        except (can.CanError, OSError) as exc:
            log.warning("bms_simulator_send_failed", error=str(exc))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m simulators.bms", description="Simulated CAN BMS on a loopback socketcand hub; commands on stdin"
    )
    p.add_argument("--config", help="YAML file with the BmsSimConfig keys (see simulators/bms.py)")
    p.add_argument("--port", type=int, help="hub TCP port on 127.0.0.1 (overrides the config)")
    p.add_argument("--soc-pct", type=float, default=60.0, help="SOC of the static battery, %%")
    args = p.parse_args(argv)
    raw: dict[str, object] = {}
    if args.config:
        with open(args.config, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh) or {}
    if args.port is not None:
        raw["port"] = args.port
    try:
        cfg = BmsSimConfig.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors():
            sys.stderr.write(f"config error: {'.'.join(str(x) for x in err['loc'])}: {err['msg']}\n")
        return 2
    configure_logging(fmt="auto", level="info", stream=sys.stderr)  # stdout carries only the command replies
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _s, _f: stop.set())
    signal.signal(signal.SIGINT, lambda _s, _f: stop.set())
    sim = BmsSimulator(StaticBattery(soc_pct=args.soc_pct), cfg).start()
    log.info(
        "bms_simulator_ready",
        port=sim.port,
        commands="protection|warning NAME on|off, silent on|off, request NAME on|off|auto, clear, status",
    )
    threading.Thread(target=_read_commands, args=(sim,), name="bms-sim-stdin", daemon=True).start()
    stop.wait()
    sim.stop()
    return 0


def _read_commands(sim: BmsSimulator) -> None:
    """One command per stdin line, answered on stdout; EOF just ends the reading (the simulator runs on)."""
    for line in sys.stdin:
        if line.strip():
            sys.stdout.write(sim.command(line) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
