"""The Modbus worker (DESIGN §1): one daemon thread for the ESS inverter, the grid meter and an optional PV meter.

Each wake-up it
1. (re)connects devices whose reconnect time has come (exponential backoff, tenacity's
   `wait_exponential`, computed per device so a dead meter never blocks the inverter's writes);
   right after the ESS (re)connects it writes the enable point and the current command first;
2. writes a newly published command (enable + set-point + heartbeat counter, merged into as few
   FC16 requests as the addresses allow) and acknowledges it to the context;
3. polls devices whose poll period is due; good values go to the context, a malformed or
   out-of-range register is counted (`modbus_bad_value`), logged at most once per point per
   `bad_value_log_interval_s` and skipped, so that source goes stale instead of wrong.
It sleeps in `ctx.wait_command(...)`, so a published command is written at once, not at the next poll.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import tenacity
from pymodbus.client import ModbusSerialClient
from pymodbus.exceptions import ModbusException

from config.modbus import ModbusConfig, ModbusDeviceConfig, Transport
from ems.clock import Clock
from ems.context import EMSContext
from ems.model import Command
from interfaces.modbus.link import DeviceLink, LinkError, Rejected, serial_client
from interfaces.modbus.pointmap import DecodeError, MapError
from interfaces.worker import Worker

__all__ = ["ModbusWorker"]

_MAX_WAIT_S = 0.25  # longest single wait, so stop() is seen promptly


@dataclass(frozen=True, slots=True)
class _Attempt:
    """What tenacity's wait strategies read from a RetryCallState."""

    attempt_number: int


class _Waiting(ConnectionError):
    """The device's reconnect time has not come yet (not a new failure)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name}: waiting to reconnect")


class _Device:
    """Scheduling state of one device (worker-thread only)."""

    def __init__(self, name: str, cfg: ModbusDeviceConfig, now_s: float, *, shared_client: ModbusSerialClient | None = None) -> None:
        self.name = name
        self.cfg = cfg
        self.link = DeviceLink(name, cfg, shared_client=shared_client)
        self.failures = 0
        self.next_connect_s = now_s
        self.next_poll_s = now_s
        self.last_error: str | None = None
        self.up: bool | None = None  # link state last reported (None: never yet)
        self.rewritten_w: float | None = None  # command re-written at the last (re)connect


class ModbusWorker(Worker):
    expected_errors = (*Worker.expected_errors, ModbusException, LinkError, DecodeError, MapError)

    def __init__(self, *, cfg: ModbusConfig, ctx: EMSContext, clock: Clock, name: str = "modbus") -> None:
        devices = [(n, d) for n, d in (("ess", cfg.ess), ("meter", cfg.meter), ("pv", cfg.pv)) if d.enabled]
        period_s = min((d.poll_period_s for _n, d in devices), default=1.0)
        super().__init__(name=name, ctx=ctx, clock=clock, period_s=period_s)
        self._cfg = cfg
        now = clock.monotonic()
        lines: dict[str, ModbusSerialClient] = {}  # one client per serial port: devices on one RS-485 line share it
        self._devices: list[_Device] = []
        for n, d in devices:
            shared = lines.setdefault(d.serial_port, serial_client(d)) if d.transport is Transport.RTU else None
            self._devices.append(_Device(n, d, now, shared_client=shared))
        self._ess = next((d for d in self._devices if d.name == "ess"), None)
        self._backoff = tenacity.wait_exponential(multiplier=cfg.reconnect_min_s, min=cfg.reconnect_min_s, max=cfg.reconnect_max_s)
        self._latest: Command | None = None  # newest command seen
        self._written_seq = 0  # newest command written to the ESS
        self._heartbeat = 0
        self._bad_logged: dict[str, tuple[float, int]] = {}  # point key -> (last log time, suppressed since)
        self._clamp_logged = False
        if self._ess is not None:
            ctx.register_command_consumer()

    # ---- loop ---------------------------------------------------------------------------------
    def wait_next(self) -> bool:
        now = self._clock.monotonic()
        due = min(
            (min(d.next_poll_s if d.link.connected else d.next_connect_s, math.inf) for d in self._devices), default=now + self.period_s
        )
        timeout = min(max(due - now, 0.0), _MAX_WAIT_S)
        if self._stop_event.is_set():
            return True
        if self._ess is not None:
            cmd = self._ctx.wait_command(after_seq=self._seen_seq(), timeout_s=timeout)
            if cmd is not None:
                self._latest = cmd
        else:
            self._stop_event.wait(timeout)
        return self._stop_event.is_set()

    def _seen_seq(self) -> int:
        return 0 if self._latest is None else self._latest.seq

    def iterate(self) -> None:
        problems: list[str] = []
        for dev in self._devices:
            try:
                self._serve(dev)
            except self.expected_errors as exc:
                problems.append(f"{dev.name}:reconnecting" if isinstance(exc, _Waiting) else f"{dev.name}:{type(exc).__name__}")
                self._lost(dev, exc)
        if problems:
            self.failed(",".join(problems), detail="; ".join(f"{d.name}: {d.last_error}" for d in self._devices if d.last_error))
        else:
            self.succeeded()

    def _serve(self, dev: _Device) -> None:
        now = self._clock.monotonic()
        if not dev.link.connected:
            if now < dev.next_connect_s:
                raise _Waiting(dev.name)
            self._connect(dev)
        if dev is self._ess and self._latest is not None and self._latest.seq > self._written_seq:
            self._write_command(dev, self._latest)
        if self._clock.monotonic() >= dev.next_poll_s:
            dev.next_poll_s = max(dev.next_poll_s + dev.cfg.poll_period_s, self._clock.monotonic())
            values, rejected = dev.link.poll()
            at_s = self._clock.monotonic()
            if values:
                self._ctx.update_measurements(values, at_s=at_s)
            for r in rejected:
                self._reject(dev, r, at_s)
            if dev.up is not True:
                self._up(dev)

    # ---- connection ---------------------------------------------------------------------------
    def _connect(self, dev: _Device) -> None:
        dev.link.connect()
        self.log.debug("modbus_link_opened", device=dev.name, where=dev.link.where())
        if dev is self._ess:
            self._rewrite_after_connect(dev)

    def _rewrite_after_connect(self, dev: _Device) -> None:
        """Before anything else: enable/mode and the current command (0 W if it is stale or missing)."""
        cmd = self._latest
        if cmd is None or self._clock.monotonic() - cmd.at_s > self._cfg.command_max_age_s:
            self._write(dev, 0.0)
            dev.rewritten_w = 0.0
        else:
            self._write_command(dev, cmd)
            dev.rewritten_w = cmd.written_w

    def _up(self, dev: _Device) -> None:
        """The first good poll after a (re)connect: the link is confirmed; log the edge once."""
        link = dev.link
        pmap = link.pmap.name if link.pmap else None
        models = ",".join(str(m) for m in sorted(link.models)) or None
        event = "modbus_connected" if dev.up is None else "modbus_link_recovered"
        self.log.info(
            event,
            device=dev.name,
            where=link.where(),
            map=pmap,
            models=models,
            failed_attempts=dev.failures,
            rewritten_w=None if dev.rewritten_w is None else round(dev.rewritten_w, 1),
            **link.identity,
        )
        self._ctx.set_status(
            f"modbus.{dev.name}",
            {"connected": True, "where": link.where(), "map": pmap, "models": sorted(link.models), "identity": dict(link.identity)},
        )
        self._ctx.record_event("modbus", device=dev.name, connected=True, where=link.where())
        dev.up, dev.failures, dev.last_error, dev.rewritten_w = True, 0, None, None

    def _lost(self, dev: _Device, exc: BaseException) -> None:
        if isinstance(exc, _Waiting):
            return
        reason = f"{type(exc).__name__}: {exc}"[:300]
        dev.link.close()
        dev.failures += 1
        delay_s = self._backoff(cast(tenacity.RetryCallState, _Attempt(dev.failures)))
        dev.next_connect_s = self._clock.monotonic() + delay_s
        dev.last_error = reason
        self._ctx.count(f"modbus_{dev.name}_errors")
        if dev.up is False:
            self.log.debug("modbus_retry_failed", device=dev.name, reason=reason, retry_in_s=round(delay_s, 2))
            return
        self.log.warning(
            "modbus_link_lost" if dev.up else "modbus_connect_failed",
            device=dev.name,
            where=dev.link.where(),
            reason=reason,
            retry_in_s=round(delay_s, 2),
        )
        self._ctx.set_status(f"modbus.{dev.name}", {"connected": False, "where": dev.link.where(), "error": reason})
        self._ctx.record_event("modbus", device=dev.name, connected=False, reason=reason)
        dev.up = False

    # ---- writes -------------------------------------------------------------------------------
    def _write_command(self, dev: _Device, cmd: Command) -> None:
        self._write(dev, cmd.written_w)
        self._written_seq = max(self._written_seq, cmd.seq)
        self._ctx.ack_command(cmd.seq, at_s=self._clock.monotonic())

    def _write(self, dev: _Device, setpoint_w: float) -> None:
        link = dev.link
        pmap = link.pmap
        if pmap is None:
            raise ConnectionError(f"{dev.name}: not connected")
        items: list[tuple[int, list[int]]] = []
        ctl = pmap.controls
        if ctl.enable is not None:
            addr, words, _v = link.encode(ctl.enable.point, ctl.enable.value)
            items.append((addr, words))
        if ctl.setpoint is not None:
            addr, words, written = link.encode(ctl.setpoint, setpoint_w)
            if written != setpoint_w and not self._clamp_logged:
                self.log.warning("modbus_setpoint_clamped", device=dev.name, requested_w=round(setpoint_w, 1), written_w=written)
            self._clamp_logged = written != setpoint_w
            items.append((addr, words))
        if ctl.heartbeat is not None:
            self._heartbeat = (self._heartbeat + 1) % 0x10000
            addr, words, _v = link.encode(ctl.heartbeat, float(self._heartbeat))
            items.append((addr, words))
        link.write_points(items)

    # ---- bad values ---------------------------------------------------------------------------
    def _reject(self, dev: _Device, r: Rejected, now_s: float) -> None:
        self._ctx.count("modbus_bad_value")
        key = f"{dev.name}.{r.point}"
        last = self._bad_logged.get(key)
        interval = self._cfg.bad_value_log_interval_s
        if last is None or now_s - last[0] >= interval:
            self.log.warning(
                "modbus_value_rejected", device=dev.name, point=r.point, reason=r.reason[:200], suppressed=0 if last is None else last[1]
            )
            self._bad_logged[key] = (now_s, 0)
        else:
            self._bad_logged[key] = (last[0], last[1] + 1)

    def on_stop(self) -> None:
        for dev in self._devices:
            dev.link.close()
