"""Modbus links (DESIGN §1): one daemon thread per TCP device, one per RS-485 line.

Devices on one serial line share the bus, so they share a thread; every TCP device has its own.
The ESS link sleeps on the command channel alone (`CommandChannel.wait_command`), so a published
command is written at once and never waits behind a meter's or a PV meter's I/O.

Each wake-up a link
1. (re)connects devices whose reconnect time has come (one `Backoff` per device, so a dead meter
   on a shared line never delays the inverter); right after the ESS (re)connects it writes the
   enable point and the current command first (0 W when that command is too old);
2. writes a newly published command (enable + set-point + heartbeat counter, merged into as few
   FC16 requests as the addresses allow) and acknowledges it on the command channel;
3. polls devices whose poll period is due; good values go to the device's readings writer (it
   owns them), a malformed or out-of-range register is counted (`modbus_bad_value`), logged at
   most once per point per `bad_value_log_interval_s` and skipped, so that source goes stale
   instead of wrong.
Health is kept per device: a dead PV meter marks the PV meter failing, not the ESS or the meter.
A device is polled every `poll_period_s`, or faster while a fast-poll request for it stands
(ems/context/polling.py: bounded and expiring; commissioning asks for one), then at its own period again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from pymodbus.client import ModbusSerialClient
from pymodbus.exceptions import ModbusException

from config.modbus import ModbusConfig, ModbusDeviceConfig, ReleaseOnStop, Transport
from ems.clock import Clock
from ems.context import CommandChannel, Counters, EventLog, Health, PollRequests, Readings, ReadingsWriter
from ems.model import Command, Quantity
from interfaces.backoff import Backoff
from interfaces.logs import LogGate
from interfaces.modbus.actuator import Actuator
from interfaces.modbus.link import DeviceLink, LinkError, Rejected, serial_client
from interfaces.modbus.pointmap import DecodeError, MapError, available_maps, load_map
from interfaces.worker import Worker

__all__ = ["BATTERY_QUANTITIES", "ESS_QUANTITIES", "ModbusLink", "build_modbus_links", "map_quantities"]

_MAX_WAIT_S = 0.25  # longest single wait, so stop() is seen promptly
# What an inverter may also report of its battery: copies of what a BMS owns when there is one.
BATTERY_QUANTITIES = frozenset(
    {
        Quantity.SOC_PCT,
        Quantity.SOH_PCT,
        Quantity.BMS_VOLTAGE_V,
        Quantity.BMS_CURRENT_A,
        Quantity.BMS_TEMPERATURE_DEGC,
        Quantity.BMS_CCL_A,
        Quantity.BMS_DCL_A,
        Quantity.BMS_CVL_V,
        Quantity.BMS_DVL_V,
    }
)


def map_quantities(cfg: ModbusDeviceConfig) -> frozenset[Quantity]:
    """The readings a device's map can provide (for `auto`: any SunSpec map's), minus ignore_points."""
    names = available_maps() if cfg.map == "auto" else [cfg.map]
    known = {q.value: q for q in Quantity}
    found: set[Quantity] = set()
    for name in names:
        pmap = load_map(name)
        if cfg.map == "auto" and pmap.kind != "sunspec":
            continue
        points = [p for spec in pmap.models for p in spec.points] if pmap.kind == "sunspec" else list(pmap.points)
        readings = (p.part_of or p.name for p in points if not p.writable)  # a summed reading (part_of) counts too
        found |= {known[r] for r in readings if r in known}
    return frozenset(q for q in found if q.value not in cfg.ignore_points)


class _Device:
    """Scheduling state of one device (link-thread only)."""

    def __init__(
        self, name: str, cfg: ModbusDeviceConfig, writer: ReadingsWriter, backoff: Backoff, *, shared_client: ModbusSerialClient | None
    ) -> None:
        self.name = name
        self.cfg = cfg
        self.actuator: Actuator | None = None  # the ESS's control side, built once its profile is known
        self.writer = writer
        self.link = DeviceLink(name, cfg, shared_client=shared_client, owns=writer.owns)
        self.backoff = backoff
        self.next_poll_s = -math.inf
        self.up: bool | None = None  # link state last reported (None: never yet)
        self.rewritten_w: float | None = None  # command re-written at the last (re)connect
        self.last_error: str | None = None


class ModbusLink(Worker):
    expected_errors = (*Worker.expected_errors, ModbusException, LinkError, DecodeError, MapError)

    def __init__(
        self,
        *,
        name: str,
        devices: list[_Device],
        cfg: ModbusConfig,
        health: Health,
        events: EventLog,
        counters: Counters,
        clock: Clock,
        commands: CommandChannel | None = None,
        fault_timeout_s: float = 3.0,
        polling: PollRequests | None = None,
    ) -> None:
        super().__init__(
            name=name, health=health, clock=clock, period_s=min(d.cfg.poll_period_s for d in devices), devices=[d.name for d in devices]
        )
        self._cfg = cfg
        self._devices = devices
        self._events = events
        self._counters = counters
        self._ess = next((d for d in devices if d.name == "ess"), None)
        self._commands = commands if self._ess is not None else None
        self._latest: Command | None = None  # newest command seen
        self._written_seq = 0  # newest command written to the ESS
        self._fault_timeout_s = fault_timeout_s
        self._bad_values = LogGate(cfg.bad_value_log_interval_s)
        self._polling = polling
        if self._commands is not None:
            self._commands.register_consumer()
        for d in devices:
            health.register_device(d.name, kind="modbus", where=d.link.where(), thread=name, actuator=d is self._ess)

    # ---- loop ---------------------------------------------------------------------------------
    def _period_s(self, dev: _Device, now_s: float) -> float:
        """The device's poll period now: its own, or a standing fast-poll request's if shorter."""
        fast = None if self._polling is None else self._polling.period_s(dev.name, now_s=now_s)
        return dev.cfg.poll_period_s if fast is None else min(fast, dev.cfg.poll_period_s)

    def wait_next(self) -> bool:
        now = self._clock.monotonic()
        for d in self._devices:  # a fast poll that starts brings the next poll forward
            d.next_poll_s = min(d.next_poll_s, now + self._period_s(d, now))
        due = min((d.next_poll_s if d.link.connected else d.backoff.next_at_s for d in self._devices), default=now + self.period_s)
        timeout = min(max(due - now, 0.0), _MAX_WAIT_S)
        if self._stop_event.is_set():
            return True
        if self._commands is not None:
            cmd = self._commands.wait_command(after_seq=0 if self._latest is None else self._latest.seq, timeout_s=timeout)
            if cmd is not None:
                self._latest = cmd
        else:
            self._stop_event.wait(timeout)
        return self._stop_event.is_set()

    def iterate(self) -> None:
        for dev in self._devices:
            try:
                self._serve(dev)
            except self.expected_errors as exc:
                self._lost(dev, exc)

    def _serve(self, dev: _Device) -> None:
        now = self._clock.monotonic()
        if not dev.link.connected:
            if not dev.backoff.due(now):
                return
            self._connect(dev)
        if dev is self._ess and self._latest is not None and self._latest.seq > self._written_seq:
            self._write_command(dev, self._latest)
            if dev.up:
                self.succeeded(dev.name)  # a command the inverter took is a good unit of work too
        if self._clock.monotonic() >= dev.next_poll_s:
            now = self._clock.monotonic()
            dev.next_poll_s = max(dev.next_poll_s + self._period_s(dev, now), now)
            values, rejected = dev.link.poll()
            at_s = self._clock.monotonic()
            if values:
                dev.writer.update(values, at_s=at_s)
            for r in rejected:
                self._reject(dev, r, at_s)
            if dev.up is not True:
                self._up(dev)
            self.succeeded(dev.name)

    # ---- connection ---------------------------------------------------------------------------
    def _connect(self, dev: _Device) -> None:
        dev.link.connect()
        self.log.debug("modbus_link_opened", device=dev.name, where=dev.link.where())
        if dev is self._ess:
            self._take_control(dev)

    def _take_control(self, dev: _Device) -> None:
        """Before anything else: the profile's hand-over and revert timer, then the current command
        (0 W if it is stale or missing)."""
        actuator = self._actuator(dev)
        actuator.take_control(dev.link)
        cmd = self._latest
        if cmd is None or self._clock.monotonic() - cmd.at_s > self._cfg.command_max_age_s:
            actuator.write(dev.link, 0.0)
            dev.rewritten_w = 0.0
        else:
            self._write_command(dev, cmd, force=True)
            dev.rewritten_w = cmd.written_w

    def _actuator(self, dev: _Device) -> Actuator:
        pmap = dev.link.pmap
        if pmap is None or pmap.control is None:
            raise LinkError(f"{dev.name}: map {None if pmap is None else pmap.name} has no control section: it cannot drive an inverter")
        if dev.actuator is None or dev.actuator.spec is not pmap.control:
            cfg = dev.cfg
            release = getattr(cfg, "release_on_stop", ReleaseOnStop.AUTO) is not ReleaseOnStop.ZERO
            dev.actuator = Actuator(
                dev.name,
                pmap.control,
                clock=self._clock,
                fault_timeout_s=self._fault_timeout_s,
                rating_w=getattr(cfg, "rating_w", None),
                release=release,
            )
        return dev.actuator

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
            failed_attempts=dev.backoff.failures,
            rewritten_w=None if dev.rewritten_w is None else round(dev.rewritten_w, 1),
            **link.identity,
        )
        info: dict[str, object] = {"connected": True, "map": pmap, "models": sorted(link.models), "identity": dict(link.identity)}
        self._health.set_info(dev.name, **info, **_revert_info(dev))
        self._events.record("modbus", device=dev.name, connected=True, where=link.where())
        dev.up, dev.last_error, dev.rewritten_w = True, None, None
        dev.backoff.reset()

    def _lost(self, dev: _Device, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}"[:300]
        dev.link.close()
        delay_s = dev.backoff.failed(self._clock.monotonic(), exc)
        dev.last_error = reason
        self._counters.count(f"modbus_{dev.name}_errors")
        self.failed(type(exc).__name__, detail=reason, device=dev.name)
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
        self._health.set_info(dev.name, connected=False, error=reason, **_revert_info(dev))  # the timer stays set in the device
        self._events.record("modbus", device=dev.name, connected=False, reason=reason)
        dev.up = False

    # ---- writes -------------------------------------------------------------------------------
    def _write_command(self, dev: _Device, cmd: Command, *, force: bool = False) -> None:
        actuator = self._actuator(dev)
        if force or actuator.due(cmd.written_w):
            actuator.write(dev.link, cmd.written_w)
        self._written_seq = max(self._written_seq, cmd.seq)
        if self._commands is not None:
            self._commands.ack(cmd.seq)

    # ---- bad values ---------------------------------------------------------------------------
    def _reject(self, dev: _Device, r: Rejected, now_s: float) -> None:
        self._counters.count("modbus_bad_value")
        held = self._bad_values.allow(f"{dev.name}.{r.point}", now_s)
        if held is not None:
            self.log.warning("modbus_value_rejected", device=dev.name, point=r.point, reason=r.reason[:200], suppressed=held)

    def on_stop(self) -> None:
        """Stop: hand the inverter back (the profile's release) after the controller's 0 W, then close."""
        for dev in self._devices:
            if dev.actuator is not None and dev.link.connected:
                try:
                    dev.actuator.release(dev.link)
                except self.expected_errors as exc:
                    self.log.warning("inverter_release_failed", device=dev.name, error=f"{type(exc).__name__}: {exc}"[:300])
            dev.link.close()


def _revert_info(dev: _Device) -> dict[str, object]:
    """What a process death leads to (for /status), as the actuator set and read back at the last connect."""
    if dev.actuator is None or dev.actuator.revert is None:
        return {}
    rv = dev.actuator.revert
    return {
        "process_death": rv.describe(),
        "revert_s": rv.timeout_s,
        "revert_verified": rv.verified,
        "method": dev.actuator.spec.method.value,
    }


ESS_QUANTITIES = frozenset(q for q in Quantity if q.value.startswith("ess_"))


def _claims(name: str, cfg: ModbusDeviceConfig) -> tuple[frozenset[Quantity], frozenset[Quantity]]:
    """(firm, optional) readings of a device. The inverter owns its own readings (ess_*); what else it
    reports (its battery's SOC and currents, its attached grid meter, its PV input) are optional
    copies that yield to a dedicated BMS or meter."""
    provided = map_quantities(cfg)
    if name == "ess":
        return provided & ESS_QUANTITIES, provided - ESS_QUANTITIES
    return provided, frozenset()


def build_modbus_links(
    cfg: ModbusConfig,
    *,
    readings: Readings,
    health: Health,
    commands: CommandChannel,
    events: EventLog,
    counters: Counters,
    clock: Clock,
    fault_timeout_s: float = 3.0,
    names: Iterable[str] = ("ess", "meter", "pv"),
    polling: PollRequests | None = None,
) -> list[ModbusLink]:
    """Claim each enabled device's readings and group the devices into links (threads)."""
    enabled = [(n, getattr(cfg, n)) for n in names if getattr(cfg, n).enabled]
    lines: dict[str, ModbusSerialClient] = {}  # one client per serial port: devices on one RS-485 line share it
    groups: dict[str, list[_Device]] = {}
    for n, d in enabled:
        firm, optional = _claims(n, d)
        writer = readings.claim(n, firm, optional=optional)
        backoff = Backoff.exponential(min_s=cfg.reconnect_min_s, max_s=cfg.reconnect_max_s)
        if d.transport is Transport.RTU:
            client = lines.setdefault(d.serial_port, serial_client(d))
            key = "modbus-rtu-" + d.serial_port.rsplit("/", 1)[-1]
        else:
            client, key = None, f"modbus-{n}"
        groups.setdefault(key, []).append(_Device(n, d, writer, backoff, shared_client=client))
    return [
        ModbusLink(
            name=key,
            devices=devs,
            cfg=cfg,
            health=health,
            events=events,
            counters=counters,
            clock=clock,
            commands=commands,
            fault_timeout_s=fault_timeout_s,
            polling=polling,
        )
        for key, devs in groups.items()
    ]
