"""One Modbus device as the EMS sees it: connection, SunSpec discovery, read plan, decode, writes.

Owned and called only by the Modbus worker thread (no locking). Blocking pymodbus sync client with
a short timeout; the worker decides when to (re)connect.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.framer import FramerType

from config.modbus import ModbusDeviceConfig, Transport
from ems.model import Quantity
from interfaces.modbus.pointmap import (
    DecodeError,
    EncodeError,
    ModelSpec,
    Point,
    PointMap,
    PointType,
    available_maps,
    decode_raw,
    encode_raw,
    from_si,
    load_map,
    to_si,
)
from interfaces.modbus.sunspec import SUNSPEC_BASES, discover

__all__ = ["DeviceLink", "LinkError", "Rejected", "serial_client"]

_QUANTITIES = frozenset(q.value for q in Quantity)

# pymodbus logs every failed connect at ERROR through stdlib logging; the worker logs edges itself.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


class LinkError(Exception):
    """The device answered with a Modbus exception, or does not look like its map (discovery)."""


@dataclass(frozen=True, slots=True)
class Rejected:
    point: str
    reason: str


@dataclass(frozen=True, slots=True)
class _Read:
    address: int
    count: int
    points: tuple[tuple[int, Point, int | None], ...]  # (absolute address, point, absolute sf address)
    unit: int  # Modbus unit id
    function: str  # holding | input


@dataclass(slots=True)
class _Layout:
    pmap: PointMap
    models: dict[int, tuple[int, int]] = field(default_factory=dict)  # model id -> (address of ID register, L)
    reads: tuple[_Read, ...] = ()
    addresses: dict[str, tuple[int, Point, int | None]] = field(default_factory=dict)
    sf_cache: dict[int, float] = field(default_factory=dict)


class DeviceLink:
    """A device on TCP or RTU with its point map; `connect()` discovers, `poll()` reads and decodes."""

    def __init__(
        self,
        name: str,
        cfg: ModbusDeviceConfig,
        *,
        shared_client: ModbusSerialClient | None = None,
        owns: Callable[[Quantity], bool] | None = None,
    ) -> None:
        """`shared_client`: the serial client of an RS-485 line this device shares with another
        (one per serial port; after either closes it, the next request reopens it). `owns`: which
        readings this device may publish (its readings writer); the others are not polled."""
        self.name = name
        self.cfg = cfg
        self._owns = owns or (lambda _q: True)
        self._shared = shared_client
        self._client: ModbusTcpClient | ModbusSerialClient | None = None
        self._layout: _Layout | None = None
        self.identity: dict[str, str] = {}

    # ---- connection ---------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._client is not None and self._layout is not None

    @property
    def pmap(self) -> PointMap | None:
        return None if self._layout is None else self._layout.pmap

    @property
    def models(self) -> dict[int, tuple[int, int]]:
        return {} if self._layout is None else dict(self._layout.models)

    def where(self) -> str:
        c = self.cfg
        return f"tcp://{c.host}:{c.port}" if c.transport is Transport.TCP else f"rtu://{c.serial_port}@{c.baudrate}"

    def connect(self) -> None:
        """Open the transport and discover the device. Raises OSError, ModbusException or LinkError."""
        self.close()
        c = self.cfg
        client: ModbusTcpClient | ModbusSerialClient
        if c.transport is Transport.TCP:
            client = ModbusTcpClient(c.host, port=c.port, timeout=c.timeout_s, retries=c.retries)
        else:
            client = self._shared or serial_client(c)
        if not client.connect():
            client.close()  # type: ignore[no-untyped-call]
            raise ConnectionError(f"{self.name}: cannot open {self.where()}")
        self._client = client
        try:
            self._layout = self._discover()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        client, self._client, self._layout = self._client, None, None
        if client is not None:
            client.close()  # type: ignore[no-untyped-call]

    # ---- raw I/O ------------------------------------------------------------------------------
    def _unit(self, p: Point, pmap: PointMap) -> int:
        """The unit id of point `p`: the map's named id (config may override) or the device's."""
        if p.device_id is None:
            return self.cfg.device_id
        return self.cfg.device_ids.get(p.device_id, pmap.device_ids[p.device_id])

    def _read(self, address: int, count: int, *, function: str = "holding", unit: int | None = None) -> list[int]:
        if self._client is None:
            raise ConnectionError(f"{self.name}: not connected")
        uid = self.cfg.device_id if unit is None else unit
        if function == "input":
            rr = self._client.read_input_registers(address, count=count, device_id=uid)
        else:
            rr = self._client.read_holding_registers(address, count=count, device_id=uid)
        if rr.isError():
            raise LinkError(f"{self.name}: read {address}+{count} refused: {rr}")
        regs = list(rr.registers)
        if len(regs) < count:
            raise LinkError(f"{self.name}: read {address}+{count} returned {len(regs)} registers")
        return regs[:count]

    def _write(self, address: int, words: list[int], *, unit: int | None = None, fc6_for_single: bool = False) -> None:
        """FC16 (write multiple registers); FC6 (write single register) for one word when `fc6_for_single`."""
        if self._client is None:
            raise ConnectionError(f"{self.name}: not connected")
        uid = self.cfg.device_id if unit is None else unit
        if fc6_for_single and len(words) == 1:
            rr = self._client.write_register(address, words[0], device_id=uid)
        else:
            rr = self._client.write_registers(address, words, device_id=uid)
        if rr.isError():
            raise LinkError(f"{self.name}: write {address}+{len(words)} (unit {uid}) refused: {rr}")

    # ---- discovery ----------------------------------------------------------------------------
    def _word_order(self, pmap: PointMap) -> str:
        return pmap.word_order if self.cfg.word_order == "map" else self.cfg.word_order

    def _discover(self) -> _Layout:
        wanted = self.cfg.map
        explicit = None if wanted == "auto" else load_map(wanted)
        if explicit is not None and explicit.kind == "plain":
            return self._plan(_Layout(explicit))
        chain = discover(self._read_or_none)
        if chain is None:
            raise LinkError(f"{self.name}: no SunSpec marker at {', '.join(str(b) for b in SUNSPEC_BASES)}")
        models = {m.id: (m.address, m.length) for m in reversed(chain.models)}  # the first of a repeated model wins
        if explicit is not None:
            pmap = explicit
            missing = [m for m in pmap.requires_models if m not in models]
            if missing:
                raise LinkError(f"{self.name}: map {pmap.name} needs SunSpec models {missing}; device has {sorted(models)}")
        else:
            candidates = [load_map(n) for n in available_maps()]
            fits = [m for m in candidates if m.kind == "sunspec" and m.requires_models and all(x in models for x in m.requires_models)]
            if not fits:
                raise LinkError(f"{self.name}: no SunSpec point map fits models {sorted(models)}")
            pmap = max(fits, key=lambda m: len(m.requires_models))  # the most specific fit (ties: by name)
        for spec in pmap.models:
            found = models.get(spec.id)
            if found is not None and found[1] < max((p.offset + p.count - 2 for p in spec.points), default=0):
                raise LinkError(f"{self.name}: model {spec.id} has L={found[1]}, shorter than map {pmap.name} needs")
        layout = _Layout(pmap, models=models)
        self._read_identity(layout)
        return self._plan(layout)

    def _read_or_none(self, address: int, count: int) -> list[int] | None:
        """A read for discovery: None when the device refuses it (Modbus exception response)."""
        try:
            return self._read(address, count)
        except LinkError:
            return None

    def _read_identity(self, layout: _Layout) -> None:
        spec = layout.pmap.model(1)
        found = layout.models.get(1)
        self.identity = {}
        if spec is None or found is None:
            return
        regs = self._read(found[0], min(found[1] + 2, 125))
        for p in spec.points:
            if p.offset + p.count <= len(regs):
                try:
                    raw = decode_raw(regs[p.offset : p.offset + p.count], p)
                except DecodeError:
                    continue
                self.identity[p.name] = str(raw) if isinstance(raw, str) else f"{raw:g}"

    def _plan(self, layout: _Layout) -> _Layout:
        """Absolute addresses of every point and the reads that cover the polled readings."""
        pmap = layout.pmap
        specs: list[tuple[ModelSpec | None, int]] = []
        if pmap.kind == "plain":
            specs.append((None, 0))
        else:
            specs += [(m, layout.models[m.id][0]) for m in pmap.models if m.id in layout.models]
        polled: dict[tuple[int, str], list[tuple[int, Point, int | None]]] = {}
        for spec, model_addr in specs:
            for p in spec.points if spec is not None else pmap.points:
                entry = (model_addr + p.offset, p, None if p.sf is None else model_addr + p.sf)
                layout.addresses[p.name] = entry
                reading = p.part_of or p.name
                if reading in _QUANTITIES and reading not in self.cfg.ignore_points and not p.writable and self._owns(Quantity(reading)):
                    polled.setdefault((self._unit(p, pmap), p.function or pmap.function), []).append(entry)
        layout.reads = tuple(
            rd
            for (unit, function), entries in polled.items()
            for rd in _group(entries, pmap.max_read_registers, pmap.read_gap_max, unit=unit, function=function)
        )
        for _addr, p, sf_addr in layout.addresses.values():  # scale factors of writable points, read once
            if p.writable and sf_addr is not None:
                layout.sf_cache[sf_addr] = float(decode_raw(self._read(sf_addr, 1, unit=self._unit(p, pmap)), _SF_POINT))
        return layout

    # ---- polling and writing ------------------------------------------------------------------
    def poll(self) -> tuple[dict[Quantity, float], list[Rejected]]:
        """Read every polled point; returns good SI values and the rejected points (skipped)."""
        layout = self._require()
        pmap = layout.pmap
        order = self._word_order(pmap)
        values: dict[Quantity, float] = {}
        rejected: list[Rejected] = []
        parts: dict[str, list[float]] = {}
        bad_sums: set[str] = set()
        for rd in layout.reads:
            regs = self._read(rd.address, rd.count, function=rd.function, unit=rd.unit)
            for addr, p, sf_addr in rd.points:
                i = addr - rd.address
                try:
                    raw = decode_raw(regs[i : i + p.count], p, word_order=order)
                    sf = 0.0 if sf_addr is None else float(decode_raw([regs[sf_addr - rd.address]], _SF_POINT))
                    if isinstance(raw, str):
                        raise DecodeError(f"{p.name}: string where a number was expected")
                    si = to_si(raw, p, sf=sf)
                except DecodeError as exc:
                    rejected.append(Rejected(p.name, str(exc)))
                    if p.part_of:
                        bad_sums.add(p.part_of)
                    continue
                if p.part_of:
                    parts.setdefault(p.part_of, []).append(si)
                else:
                    values[Quantity(p.name)] = si
        for name, got in parts.items():
            if name not in bad_sums:  # a sum with a missing part is no reading
                values[Quantity(name)] = sum(got)
        return values, rejected

    def encode(self, name: str, value: float) -> tuple[int, list[int], float]:
        """(address, words, value actually encoded) for writing `value` (SI) to point `name`.

        The value is clamped to the point's min/max (a device limit, logged by the caller when it binds).
        """
        layout = self._require()
        if name not in layout.addresses:
            raise LinkError(f"{self.name}: map {layout.pmap.name} has no point {name!r} (its SunSpec model is missing?)")
        addr, p, sf_addr = layout.addresses[name]
        v = value
        if p.min is not None:
            v = max(v, p.min)
        if p.max is not None:
            v = min(v, p.max)
        sf = 0.0 if sf_addr is None else layout.sf_cache.get(sf_addr, 0.0)
        try:
            words = encode_raw(from_si(v, p, sf=sf), p, word_order=self._word_order(layout.pmap))
        except EncodeError as exc:
            raise LinkError(f"{self.name}: cannot encode {name}={value}: {exc}") from exc
        return addr, words, v

    def write_named(self, items: Sequence[tuple[str, float]], *, merge: bool = True) -> dict[str, float]:
        """Write (point, SI value) items in the given order; returns the values actually encoded
        (clamped to each point's min/max). Consecutive items at adjacent addresses of one unit go
        in one FC16 request unless `merge` is False. A request of one register goes as FC6 when the
        profile says so (`control.write.function: fc6_for_single`)."""
        layout = self._require()
        control = layout.pmap.control
        fc6 = control is not None and control.write.function == "fc6_for_single"
        runs: list[tuple[int, int, list[int]]] = []  # (unit, address, words)
        written: dict[str, float] = {}
        for name, value in items:
            addr, words, v = self.encode(name, value)
            written[name] = v
            unit = self._unit(layout.addresses[name][1], layout.pmap)
            last = runs[-1] if runs else None
            if merge and last is not None and last[0] == unit and last[1] + len(last[2]) == addr and len(last[2]) + len(words) <= 123:
                last[2].extend(words)
            else:
                runs.append((unit, addr, list(words)))
        for unit, addr, words in runs:
            self._write(addr, words, unit=unit, fc6_for_single=fc6)
        return written

    def read_named(self, name: str) -> float:
        """One point's SI value, read now (a rating, a timeout read back after writing it)."""
        layout = self._require()
        if name not in layout.addresses:
            raise LinkError(f"{self.name}: map {layout.pmap.name} has no point {name!r}")
        addr, p, sf_addr = layout.addresses[name]
        unit, function = self._unit(p, layout.pmap), p.function or layout.pmap.function
        raw = decode_raw(self._read(addr, p.count, function=function, unit=unit), p, word_order=self._word_order(layout.pmap))
        if isinstance(raw, str):
            raise DecodeError(f"{p.name}: string where a number was expected")
        sf = 0.0 if sf_addr is None else float(decode_raw(self._read(sf_addr, 1, function=function, unit=unit), _SF_POINT))
        return to_si(raw, p, sf=sf)

    def _require(self) -> _Layout:
        if self._layout is None or self._client is None:
            raise ConnectionError(f"{self.name}: not connected")
        return self._layout


def serial_client(c: ModbusDeviceConfig) -> ModbusSerialClient:
    """An RTU client for the serial line of `c` (not opened yet)."""
    return ModbusSerialClient(
        c.serial_port,
        framer=FramerType.RTU,
        baudrate=c.baudrate,
        parity=c.parity,
        stopbits=c.stopbits,
        timeout=c.timeout_s,
        retries=c.retries,
    )


_SF_POINT = Point(name="sf", offset=0, type=PointType.SUNSSF)


def _group(points: list[tuple[int, Point, int | None]], max_count: int, gap_max: int, *, unit: int, function: str) -> tuple[_Read, ...]:
    """Cover the points (and their scale factors) with as few reads of at most `max_count` registers,
    never spanning more than `gap_max` unmapped registers (a strict device refuses such a read)."""
    reads: list[_Read] = []
    cur: list[tuple[int, Point, int | None]] = []
    lo = hi = 0
    for entry in sorted(points, key=lambda e: e[0]):
        addr, p, sf_addr = entry
        e_lo = min(addr, sf_addr if sf_addr is not None else addr)
        e_hi = max(addr + p.count, (sf_addr + 1) if sf_addr is not None else 0)
        if cur and max(hi, e_hi) - min(lo, e_lo) <= max_count and e_lo - hi <= gap_max:
            lo, hi = min(lo, e_lo), max(hi, e_hi)
            cur.append(entry)
            continue
        if cur:
            reads.append(_Read(lo, hi - lo, tuple(cur), unit, function))
        cur, lo, hi = [entry], e_lo, e_hi
    if cur:
        reads.append(_Read(lo, hi - lo, tuple(cur), unit, function))
    return tuple(reads)
