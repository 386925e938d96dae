"""Simulated Modbus devices: a register image laid out from a point map, served by pymodbus 3.16.

`RegisterImage` builds the registers of one device from the same YAML point map the EMS reads
(SunSpec: 'SunS' marker + model chain at `base`; plain: fixed addresses), encodes SI values into
it and decodes the EMS's writes into `on_write(name, si_value)` calls.

`DeviceServer` serves an image over Modbus TCP or RTU (pymodbus `SimDevice` + an `action` hook
that copies the live image into each response and routes writes), and can be stopped, restarted
or silenced (accepts requests, never answers) for rehearsals. It runs in an asyncio loop.

Vendor semantics taken from the profile: a device that serves one client (`device.single_client`)
closes a second TCP connection while one is open; a profile whose points live in both register
tables (input and holding, e.g. Sungrow) answers FC4 only over input points and FC3 only over
holding points; a profile that writes single registers with FC6 (`control.write.function:
fc6_for_single`) has an FC16 write of one register refused (ILLEGAL FUNCTION).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimAction, SimData, SimDevice

from interfaces.modbus.pointmap import DecodeError, EncodeError, Point, PointMap, PointType, decode_raw, encode_raw, from_si, to_si
from interfaces.modbus.sunspec import SUNS_MARKER

__all__ = ["SUNSPEC_BASE", "DeviceServer", "RegisterImage"]

log = structlog.get_logger("simulators.modbus")
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # failures are reported by us, once
SUNSPEC_BASE = 40000


@dataclass(frozen=True, slots=True)
class _Slot:
    address: int  # absolute PDU address
    point: Point
    sf_address: int | None  # absolute address of its scale-factor register


class RegisterImage:
    """Registers of one simulated device (one unit id), laid out from `pmap`. Not thread-safe (one event loop).

    `unit_key`: for a profile whose points live at several unit ids (`device_ids`, e.g. a Victron GX's
    system unit 100 and VE.Bus unit 227), the image of the points with that key (None: the rest).
    A profile with `read_gap_max: 0` is strict like the device: a read that touches a register no
    point covers is refused (ILLEGAL ADDRESS); otherwise such registers read 0.
    """

    def __init__(
        self,
        pmap: PointMap,
        *,
        base: int = SUNSPEC_BASE,
        on_write: Callable[[str, float], None] | None = None,
        unit_key: str | None = None,
    ) -> None:
        self.map = pmap
        self._on_write = on_write
        self._slots: dict[str, _Slot] = {}
        self.unit_key = unit_key
        if pmap.kind == "sunspec":
            self.start = base
            regs: list[int] = list(SUNS_MARKER)
            for model in pmap.models:
                model_addr = base + len(regs)
                regs += [model.id, model.length] + [0] * model.length
                for p in model.points:
                    sf_addr = None if p.sf is None else model_addr + p.sf
                    self._slots[p.name] = _Slot(model_addr + p.offset, p, sf_addr)
            regs += [0xFFFF, 0]
        else:
            points = [p for p in pmap.points if p.device_id == unit_key]
            if not points:
                raise ValueError(f"{pmap.name}: no points for unit {unit_key or 'default'}")
            self.start = min(p.offset for p in points)
            end = max(p.offset + p.count for p in points)
            regs = [0] * (end - self.start)
            for p in points:
                self._slots[p.name] = _Slot(p.offset, p, p.sf)  # plain maps: sf is the absolute address of the scale factor
        self.regs = regs
        self._parts: dict[str, list[_Slot]] = {}  # reading -> the points summed into it (`part_of`)
        for sl in self._slots.values():
            if sl.point.part_of:
                self._parts.setdefault(sl.point.part_of, []).append(sl)
        self._mapped: set[int] | None = None  # strict devices: the addresses a point covers
        if pmap.kind == "plain" and pmap.read_gap_max == 0:
            self._mapped = {sl.address + i for sl in self._slots.values() for i in range(sl.point.count)}
        self._writable: set[int] = {s.address + i for s in self._slots.values() if s.point.writable for i in range(s.point.count)}
        # a device with two register tables (points read with FC4 and others with FC3): each address belongs to its point's table
        tables = {sl.point.function or pmap.function for sl in self._slots.values()}
        self._table: dict[int, str] | None = None
        if len(tables) > 1:
            self._table = {sl.address + i: sl.point.function or pmap.function for sl in self._slots.values() for i in range(sl.point.count)}
        self._overrides: dict[int, int] = {}
        for s in self._slots.values():
            if s.point.server_value is not None:
                self._put(s, s.point.server_value, raw=True)

    @property
    def end(self) -> int:
        return self.start + len(self.regs)

    def address_of(self, name: str) -> int:
        return self._slots[name].address

    def _sf(self, slot: _Slot) -> float:
        if slot.sf_address is None or not self.start <= slot.sf_address < self.end:
            return 0.0
        raw = self.regs[slot.sf_address - self.start]
        return float(raw - 0x1_0000 if raw >= 0x8000 else raw)

    def _put(self, slot: _Slot, value: float | str, *, raw: bool = False) -> None:
        p = slot.point
        if not raw and not isinstance(value, str) and p.type is not PointType.STRING:
            value = from_si(value, p, sf=self._sf(slot))
        words = encode_raw(value, p, word_order=self.map.word_order)
        i = slot.address - self.start
        self.regs[i : i + len(words)] = words

    def set_values(self, values: Mapping[str, float | str]) -> None:
        """Encode SI values by point name; names the map does not have are ignored.

        A value that does not fit its register is clamped by type (e.g. an int16 saturates), like a
        device would; strings are truncated.
        """
        for name, value in values.items():
            slots = [self._slots[name]] if name in self._slots else self._parts.get(name, [])
            share = value / len(slots) if slots and not isinstance(value, str) else value  # a summed reading: split evenly
            for slot in slots:
                if slot.point.server_value is not None:
                    continue
                try:
                    self._put(slot, share)
                except EncodeError:
                    self._put_saturated(slot, share)

    def _put_saturated(self, slot: _Slot, value: float | str) -> None:
        p = slot.point
        if isinstance(value, str) or value != value:  # NaN: leave the register as it is
            return
        limits = {PointType.INT16: (-0x8000 + 1, 0x7FFF), PointType.UINT16: (0, 0xFFFE), PointType.INT32: (-0x7FFF_FFFF, 0x7FFF_FFFF)}
        lo, hi = limits.get(p.type, (0, 0xFFFF))
        raw = min(max(from_si(value, p, sf=self._sf(slot)), lo), hi)
        self._put(slot, raw, raw=True)

    def value(self, name: str) -> float | str:
        """Decode a point (SI) from the image, as the EMS would see it."""
        slot = self._slots[name]
        i = slot.address - self.start
        raw = decode_raw(self.regs[i : i + slot.point.count], slot.point, word_order=self.map.word_order)
        return raw if isinstance(raw, str) else to_si(raw, slot.point, sf=self._sf(slot))

    def override(self, name: str, words: list[int] | None) -> None:
        """Serve fixed raw words for a point (garbage injection for tests); None removes it."""
        slot = self._slots[name]
        for i in range(slot.point.count):
            if words is None:
                self._overrides.pop(slot.address + i, None)
            else:
                self._overrides[slot.address + i] = words[i]

    def read(self, address: int, count: int, *, function: str | None = None) -> list[int] | None:
        """Registers address..address+count-1, or None when outside the image (or, on a strict
        device, when any of them is covered by no point; or, on a device with two tables, when
        `function` (holding: FC3, input: FC4) is not the table of a point the read touches)."""
        if address < self.start or address + count > self.end:
            return None
        if self._mapped is not None and any(a not in self._mapped for a in range(address, address + count)):
            return None
        table = self._table
        if table is not None and function is not None and any(table.get(a, function) != function for a in range(address, address + count)):
            return None
        out = self.regs[address - self.start : address - self.start + count]
        for a, w in self._overrides.items():
            if address <= a < address + count:
                out[a - address] = w
        return out

    def write(self, address: int, words: list[int]) -> bool:
        """Apply a write from the EMS. False (-> illegal address) when any register is not writable."""
        if any(address + i not in self._writable for i in range(len(words))):
            return False
        self.regs[address - self.start : address - self.start + len(words)] = words
        for slot in self._slots.values():
            p = slot.point
            if p.writable and address <= slot.address and slot.address + p.count <= address + len(words):
                try:
                    si = self.value(p.name)
                except DecodeError as exc:
                    log.warning("sim_write_rejected", point=p.name, reason=str(exc))
                    continue
                if self._on_write is not None and not isinstance(si, str):
                    self._on_write(p.name, si)
        return True


class _Refused(asyncio.Protocol):
    """A connection the device does not serve: closed as soon as it is accepted."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class _SingleClientTcpServer(ModbusTcpServer):
    """Modbus TCP for a device that serves one client at a time: while a connection is open, a
    new one is accepted and closed at once (the client sees its connection dropped)."""

    def __init__(self, *args: Any, on_refused: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_refused = on_refused

    def handle_new_connection(self) -> Any:
        if self.active_connections:
            self._on_refused()
            return _Refused()
        return super().handle_new_connection()


_FC_READ_TABLE = {3: "holding", 4: "input"}
_FC_WRITE_MULTIPLE = 16


class DeviceServer:
    """A simulated Modbus device (TCP or RTU) serving a `RegisterImage`; start/stop/silence at will.

    More devices can share the server (`attach`), e.g. an ESS and a meter on one RS-485 line.
    `single_client`: a TCP device that serves one client at a time refuses a second connection.
    `write_log` keeps the last writes as (function code, unit id, address, words), for tests.
    """

    def __init__(
        self,
        name: str,
        image: RegisterImage,
        *,
        transport: str = "tcp",
        host: str = "127.0.0.1",
        port: int = 502,
        serial_port: str = "",
        baudrate: int = 19200,
        device_id: int = 1,
        single_client: bool = False,
    ) -> None:
        self.name = name
        self.single_client = single_client
        self.refused_connections = 0
        self.write_log: deque[tuple[int, int, int, list[int]]] = deque(maxlen=1000)
        self.image = image
        self.transport = transport
        self.host = host
        self.port = port
        self.serial_port = serial_port
        self.baudrate = baudrate
        self.device_id = device_id
        self._images: dict[int, RegisterImage] = {device_id: image}
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._speak = asyncio.Event()  # cleared while silent
        self._speak.set()
        self.requests = 0
        self.writes = 0

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def clients(self) -> int:
        """TCP connections open now (0 when stopped or on RTU)."""
        server = self._server
        return len(server.active_connections) if isinstance(server, ModbusTcpServer) else 0

    @property
    def silent(self) -> bool:
        return not self._speak.is_set()

    def where(self) -> str:
        return f"tcp://{self.host}:{self.port}" if self.transport == "tcp" else f"rtu://{self.serial_port}@{self.baudrate}"

    def set_silent(self, on: bool) -> None:
        """Silent: requests are accepted but never answered (the EMS sees timeouts)."""
        if on:
            self._speak.clear()
        else:
            self._speak.set()
        log.info("sim_device_silenced" if on else "sim_device_unsilenced", device=self.name)

    def attach(self, device_id: int, image: RegisterImage) -> None:
        """Serve another device (unit ID) on the same transport; takes effect at the next start()."""
        if device_id in self._images:
            raise ValueError(f"{self.name}: unit ID {device_id} is already served on {self.where()}")
        self._images[device_id] = image

    def _action_for(self, device_id: int, image: RegisterImage) -> SimAction:
        control = image.map.control
        fc6_only = control is not None and control.write.function == "fc6_for_single"

        async def action(
            fc: int, start_address: int, address: int, count: int, registers: list[int], set_values: list[int] | list[bool] | None
        ) -> ExcCodes | None:
            self.requests += 1
            if not self._speak.is_set():
                await self._speak.wait()  # answers only after the silence (the client has long timed out)
            if set_values:
                self.writes += 1
                words = [int(v) for v in set_values]
                self.write_log.append((fc, device_id, address, words))
                if fc6_only and fc == _FC_WRITE_MULTIPLE and len(words) == 1:
                    return ExcCodes.ILLEGAL_FUNCTION  # this device takes a single register by FC6 only
                return None if image.write(address, words) else ExcCodes.ILLEGAL_ADDRESS
            words = image.read(address, count, function=_FC_READ_TABLE.get(fc))
            if words is None:
                return ExcCodes.ILLEGAL_ADDRESS
            registers[address - start_address : address - start_address + count] = words
            return None

        return action

    async def start(self) -> None:
        if self._server is not None:
            return
        devices = [
            SimDevice(
                id=did,
                simdata=[SimData(img.start, count=len(img.regs), values=0, datatype=DataType.REGISTERS)],
                action=self._action_for(did, img),
            )
            for did, img in self._images.items()
        ]
        server: ModbusTcpServer | ModbusSerialServer
        if self.transport == "tcp" and self.single_client:
            server = _SingleClientTcpServer(devices, address=(self.host, self.port), on_refused=self._refused)
        elif self.transport == "tcp":
            server = ModbusTcpServer(devices, address=(self.host, self.port))
        else:
            server = ModbusSerialServer(devices, framer=FramerType.RTU, port=self.serial_port, baudrate=self.baudrate)
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:  # pymodbus: "Could not start listen, please check address."
            raise OSError(f"{exc} (port in use?)") from exc
        self._server = server
        log.info(
            "sim_device_started",
            device=self.name,
            where=self.where(),
            device_ids=",".join(str(d) for d in self._images),
            maps=",".join(i.map.name for i in self._images.values()),
        )

    def _refused(self) -> None:
        self.refused_connections += 1
        log.warning("sim_second_client_refused", device=self.name, where=self.where(), refused=self.refused_connections)

    async def stop(self) -> None:
        server, self._server = self._server, None
        self._speak.set()  # let requests held by a silence finish
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]
            log.info("sim_device_stopped", device=self.name, where=self.where())
