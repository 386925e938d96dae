"""Wiring checks for commissioning: read-only Modbus (device scan, register read) and CAN (dump, decode).

Nothing here writes to a device. Modbus requests are rate-limited (`--rate`, default 5 requests/s)
so a scan never floods an inverter that is also being polled by a running EMS. Register decoding
reuses the project's point-map codec (interfaces/modbus/pointmap.py) and SunSpec base addresses
(interfaces/modbus/link.py); CAN frames are decoded through the DBC (interfaces/can/codec.py).

The scan is data-driven: it walks the SunSpec chain, then reads every identification register the
profiles declare (`device.identify` in interfaces/modbus/maps/*.yaml: Eastron meter codes, Carlo
Gavazzi id codes, Huawei / Sungrow model registers, the SunSpec common model ...), each once, and
suggests the profiles whose entries all match. A probe the device refuses (exception response) or
leaves unanswered is a non-match, not an error.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerType

from ems.clock import Clock, SystemClock
from interfaces.cli.client import EXIT_FAIL, EXIT_UNREACHABLE, EXIT_USAGE, CliError
from interfaces.modbus.pointmap import DecodeError, Identify, Point, PointMap, PointType, available_maps, decode_raw, load_map
from interfaces.modbus.sunspec import SUNSPEC_BASES, find_marker, is_marker, walk_models

__all__ = [
    "MODEL_NAMES",
    "ModbusReader",
    "Probe",
    "Serial",
    "Suggestion",
    "SunSpecModel",
    "SunSpecScan",
    "can_decode",
    "can_decode_text",
    "can_frames",
    "parse_can_data",
    "parse_can_id",
    "parse_host",
    "parse_range",
    "read_registers",
    "scan_device",
    "scan_sunspec",
]

MAX_REGS = 125  # per read request (Modbus limit)
MAX_RANGE = 250  # addresses one `--range` scan may probe (odd bases such as 39999 or 40001)
PROBE_SILENCE_MAX = 3  # identification probes stop after this many unanswered requests in a row

MODEL_NAMES: Mapping[int, str] = {
    1: "Common",
    101: "Inverter (single phase)",
    102: "Inverter (split phase)",
    103: "Inverter (three phase)",
    111: "Inverter float (single phase)",
    112: "Inverter float (split phase)",
    113: "Inverter float (three phase)",
    120: "Nameplate",
    121: "Basic settings",
    122: "Measurements status",
    123: "Immediate controls",
    124: "Storage",
    160: "Multiple MPPT",
    201: "Meter (single phase)",
    202: "Meter (split phase)",
    203: "Meter (wye three phase)",
    204: "Meter (delta three phase)",
    211: "Meter float (single phase)",
    213: "Meter float (wye three phase)",
    701: "DER AC measurement",
    702: "DER capacity",
    704: "DER AC controls",
    713: "DER storage capacity",
    802: "Battery base",
    803: "Lithium-ion battery bank",
    804: "Lithium-ion string",
    805: "Lithium-ion module",
    64901: "Vendor: EMS remote control",
}
_IDENTITY = ("manufacturer", "model", "options", "version", "serial_number", "device_address")


def parse_host(text: str, default_port: int = 502) -> tuple[str, int]:
    """HOST[:PORT] (or tcp://HOST:PORT, as the EMS log and /api/v1/devices print it, a trailing
    ` unit N` ignored) for TCP; a path (/dev/ttyUSB0, rtu:///dev/ttyUSB0) is returned as is, for RTU."""
    text = text.strip().split(" unit ", 1)[0]
    for scheme in ("tcp://", "rtu://"):
        if text.lower().startswith(scheme):
            text = text[len(scheme) :].split("@", 1)[0].rstrip("/") if scheme == "rtu://" else text[len(scheme) :].rstrip("/")
    if text.startswith("/"):
        return text, 0
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, default_port
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise CliError(f"HOST[:PORT]: bad address {text!r}", EXIT_USAGE)
    return host.strip("[]"), int(port)


def parse_range(text: str) -> tuple[int, int]:
    a, sep, b = text.partition("-")
    try:
        lo, hi = int(a, 0), int(b, 0)
    except ValueError:
        raise CliError(f"--range: expected A-B register addresses, e.g. 40000-40200 (got {text!r})", EXIT_USAGE) from None
    if not sep or not 0 <= lo <= hi <= 0xFFFF:
        raise CliError(f"--range: need 0 <= A <= B <= 65535 (got {text!r})", EXIT_USAGE)
    if hi - lo + 1 > MAX_RANGE:
        raise CliError(f"--range: at most {MAX_RANGE} registers per scan (got {hi - lo + 1})", EXIT_USAGE)
    return lo, hi


class _RateLimiter:
    """At most `rate_hz` calls per second, spaced evenly (waits on an Event, never sleeps)."""

    def __init__(self, rate_hz: float, clock: Clock) -> None:
        self._period_s = 1.0 / rate_hz
        self._clock = clock
        self._next_s = clock.monotonic()
        self._pause = threading.Event()

    def acquire(self) -> None:
        delay_s = self._next_s - self._clock.monotonic()
        if delay_s > 0:
            self._pause.wait(delay_s)
        self._next_s = max(self._next_s, self._clock.monotonic()) + self._period_s


@dataclass(frozen=True, slots=True)
class Serial:
    """RS-485 line settings for a device given as a path (/dev/ttyUSB0)."""

    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1


class ModbusReader:
    """A read-only Modbus client (holding/input registers only), rate-limited: TCP for HOST[:PORT],
    RTU for a serial device path (`serial` settings)."""

    def __init__(
        self,
        host: str,
        port: int,
        unit: int,
        *,
        rate_hz: float = 5.0,
        timeout_s: float = 2.0,
        serial: Serial | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._unit = unit
        self._client: ModbusTcpClient | ModbusSerialClient
        if serial is None:
            self.where = f"{host}:{port} unit {unit}"
            self._client = ModbusTcpClient(host, port=port, timeout=timeout_s, retries=0)
        else:
            self.where = f"{host}@{serial.baudrate}{serial.parity}{serial.stopbits} unit {unit}"
            self._client = ModbusSerialClient(
                host,
                framer=FramerType.RTU,
                baudrate=serial.baudrate,
                parity=serial.parity,
                stopbits=serial.stopbits,
                timeout=timeout_s,
                retries=0,
            )
        self._limit = _RateLimiter(rate_hz, clock or SystemClock())
        self.requests = 0

    def __enter__(self) -> ModbusReader:
        if not self._client.connect():
            raise CliError(f"Modbus {self.where}: cannot connect", EXIT_UNREACHABLE)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._client.close()  # type: ignore[no-untyped-call]

    def read(self, address: int, count: int, *, input_regs: bool = False) -> list[int] | None:
        """Registers, or None when the device refuses the address (Modbus exception response).
        Raises CliError (exit 3) when the device does not answer."""
        self._limit.acquire()
        self.requests += 1
        try:
            if input_regs:
                rr = self._client.read_input_registers(address, count=count, device_id=self._unit)
            else:
                rr = self._client.read_holding_registers(address, count=count, device_id=self._unit)
        except ModbusException as exc:
            raise CliError(f"Modbus {self.where}: read {address}+{count}: {exc}", EXIT_UNREACHABLE) from exc
        if rr.isError():
            return None
        regs = list(rr.registers)
        return regs[:count] if len(regs) >= count else None


@dataclass(frozen=True, slots=True)
class SunSpecModel:
    id: int
    name: str
    address: int  # of the model's ID register
    length: int


@dataclass(frozen=True, slots=True)
class Probe:
    """One identification register read: the raw words, or None (refused or unanswered)."""

    function: str  # holding | input
    address: int
    count: int
    registers: tuple[int, ...] | None


@dataclass(frozen=True, slots=True)
class Suggestion:
    """A profile that fits the scanned device, and why."""

    map: str
    kind: str
    vendor: str
    why: str
    identified: bool  # by its identification registers (else only by its SunSpec models)


@dataclass(slots=True)
class SunSpecScan:
    where: str
    base: int | None = None
    models: list[SunSpecModel] = field(default_factory=list)
    end_address: int | None = None
    identity: dict[str, str] = field(default_factory=dict)
    maps: list[str] = field(default_factory=list)
    requests: int = 0
    searched: str = ""
    suggestions: list[Suggestion] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    probes_stopped: bool = False  # the device stopped answering: the remaining probes were not sent

    @property
    def found(self) -> bool:
        """A SunSpec chain or at least one fitting profile."""
        return self.base is not None or bool(self.suggestions)

    def as_json(self) -> dict[str, Any]:
        return {
            "where": self.where,
            "found": self.base is not None,
            "base": self.base,
            "models": [{"id": m.id, "name": m.name, "address": m.address, "length": m.length} for m in self.models],
            "end_address": self.end_address,
            "identity": self.identity,
            "maps": self.maps,
            "suggestions": [
                {"map": s.map, "kind": s.kind, "vendor": s.vendor, "why": s.why, "identified": s.identified} for s in self.suggestions
            ],
            "probes": [
                {
                    "function": p.function,
                    "address": p.address,
                    "count": p.count,
                    "registers": None if p.registers is None else list(p.registers),
                }
                for p in self.probes
            ],
            "probes_stopped": self.probes_stopped,
            "requests": self.requests,
            "searched": self.searched,
        }

    def text(self) -> str:
        if self.base is None:
            lines = [f"no SunSpec marker at {self.where} (searched {self.searched}; {self.requests} requests)"]
        else:
            lines = [f"SunSpec device at {self.where}: marker 'SunS' at {self.base}"]
            lines += [f"  model {m.id:>5}  {m.name:<30} at {m.address:>5}  length {m.length}" for m in self.models]
            lines.append(f"  end marker at {self.end_address}" if self.end_address is not None else "  no end marker (chain cut short)")
            if self.identity:
                lines.append("identity  " + "  ".join(f"{k}={v}" for k, v in self.identity.items()))
        if self.base is not None or self.suggestions:
            lines.append("maps      " + (", ".join(self.maps) or "no point map in interfaces/modbus/maps fits these models"))
        lines += [f"  {s.map:<18} {s.kind:<9} {s.vendor}: {s.why}" for s in self.suggestions]
        answered = sum(1 for p in self.probes if p.registers is not None)
        probed = f"probes    {len(self.probes)} identification registers read, {answered} answered"
        if not self.suggestions:
            probed += "; no profile's identification matches"
        if self.probes_stopped:
            probed += f"; stopped after {PROBE_SILENCE_MAX} unanswered requests"
        lines.append(probed)
        lines.append(f"requests  {self.requests} (read-only)")
        return "\n".join(lines)


def _chunks(lo: int, hi: int) -> Iterator[tuple[int, int]]:
    addr = lo
    while addr <= hi:
        count = min(MAX_REGS, hi - addr + 2)  # +1 register so a marker across the boundary is seen
        count = min(count, 0x10000 - addr)
        yield addr, count
        addr += MAX_REGS - 1 if count == MAX_REGS else count


def _find_marker(reader: ModbusReader, search: tuple[int, int] | None) -> int | None:
    """The standard bases, or every address in `search`: block reads, and where the device refuses a
    block (part of it unmapped), one 2-register probe per address of that block."""
    if search is None:
        return find_marker(reader.read)
    lo, hi = search
    for addr, count in _chunks(lo, hi):
        regs = reader.read(addr, count)
        if regs is not None:
            hits = [addr + i for i in range(len(regs) - 1) if is_marker(regs[i : i + 2]) and lo <= addr + i <= hi]
            if hits:
                return hits[0]
            continue
        found = find_marker(reader.read, range(addr, min(addr + count - 1, hi + 1)))
        if found is not None:
            return found
    return None


def scan_sunspec(reader: ModbusReader, search: tuple[int, int] | None = None) -> SunSpecScan:
    """Find the SunSpec marker (standard bases, or inside `search`) and walk the model chain."""
    scan = SunSpecScan(reader.where)
    scan.searched = ", ".join(str(b) for b in SUNSPEC_BASES) if search is None else f"{search[0]}-{search[1]}"
    base = _find_marker(reader, search)
    if base is not None:
        scan.base = base
        chain = walk_models(reader.read, base)
        scan.models = [SunSpecModel(m.id, MODEL_NAMES.get(m.id, "unknown"), m.address, m.length) for m in chain.models]
        scan.end_address = chain.end_address
        scan.identity = _identity(reader, scan.models)
        ids = {m.id for m in scan.models}
        for name in available_maps():
            pmap = load_map(name)
            if pmap.kind == "sunspec" and pmap.requires_models and all(x in ids for x in pmap.requires_models):
                scan.maps.append(name)
    scan.requests = reader.requests
    return scan


def scan_device(reader: ModbusReader, search: tuple[int, int] | None = None) -> SunSpecScan:
    """The SunSpec scan, then every profile's identification registers (each register read once):
    the profiles that fit, identified ones first, then those that fit by SunSpec models alone."""
    scan = scan_sunspec(reader, search)
    profiles = [load_map(name) for name in available_maps()]
    chain = {m.id: m.address for m in reversed(scan.models)}  # the first of a repeated model
    prober = _Prober(reader)
    identified: list[Suggestion] = []
    by_models: list[Suggestion] = []
    for pmap in profiles:
        models_fit = _fits_models(pmap, set(chain)) if pmap.kind == "sunspec" else None
        if models_fit is False or (models_fit is None and not pmap.device.identify):
            continue
        matched: list[str] = []
        for ident in pmap.device.identify:
            where = _register(pmap, ident, chain)
            value = None if where is None else prober.value(*where)
            if where is None or value is None or not _matches(ident, value):
                break
            matched.append(_why(ident, where, value))
        else:
            d = pmap.device
            if matched:
                identified.append(Suggestion(pmap.name, d.kind, d.vendor or "-", "; ".join(matched), True))
            else:
                ids = sorted(i for i in chain if any(m.id == i and m.points and i != 1 for m in pmap.models))
                by_models.append(Suggestion(pmap.name, d.kind, d.vendor or "-", "SunSpec models " + ", ".join(map(str, ids)), False))
    scan.suggestions = identified + by_models
    scan.maps = [s.map for s in scan.suggestions]
    scan.probes = list(prober.reads.values())
    scan.probes_stopped = prober.stopped
    scan.requests = reader.requests
    return scan


def _fits_models(pmap: PointMap, ids: set[int]) -> bool:
    """A SunSpec profile fits a chain with all its required models, or (none required) any of its models with points."""
    if pmap.requires_models:
        return all(x in ids for x in pmap.requires_models)
    return any(m.id in ids and m.points and m.id != 1 for m in pmap.models)


def _register(pmap: PointMap, ident: Identify, chain: Mapping[int, int]) -> tuple[str, int, Point, str] | None:
    """(function, address, point, word order) of an identification entry; None when its SunSpec model is absent."""
    if ident.point is None:
        assert ident.address is not None  # the model validator guarantees one of the two
        point = Point(name="identify", offset=ident.address, type=ident.type, size=ident.size)
        return ident.function, ident.address, point, pmap.word_order
    point = next(p for p in pmap.all_points() if p.name == ident.point)
    if pmap.kind == "plain":
        return point.function or pmap.function, point.offset, point, pmap.word_order
    model = next((m for m in pmap.models if point in m.points), None)
    if model is None or model.id not in chain:
        return None
    return point.function or pmap.function, chain[model.id] + point.offset, point, pmap.word_order


class _Prober:
    """Reads identification registers, each once per scan; a refusal is a non-match, and after
    PROBE_SILENCE_MAX unanswered requests in a row the device is taken as gone (no more probes)."""

    def __init__(self, reader: ModbusReader) -> None:
        self._reader = reader
        self.reads: dict[tuple[str, int, int], Probe] = {}
        self._silent = 0
        self.stopped = False

    def value(self, function: str, address: int, point: Point, order: str) -> float | str | None:
        """The decoded raw value of one identification register, or None."""
        key = (function, address, point.count)
        if key not in self.reads:
            regs: list[int] | None = None
            if not self.stopped:
                try:
                    regs = self._reader.read(address, point.count, input_regs=function == "input")
                    self._silent = 0
                except CliError:  # no answer to this register
                    self._silent += 1
                    self.stopped = self._silent >= PROBE_SILENCE_MAX
            self.reads[key] = Probe(function, address, point.count, None if regs is None else tuple(regs))
        got = self.reads[key].registers
        if got is None:
            return None
        try:
            return decode_raw(list(got), point, word_order=order)
        except DecodeError:
            return None


def _matches(ident: Identify, value: float | str) -> bool:
    if isinstance(value, str):
        if ident.contains is not None:
            return ident.contains.casefold() in value.casefold()
        return not ident.equals or value in {str(e) for e in ident.equals}
    if ident.contains is not None:
        return False
    return not ident.equals or any(not isinstance(e, str) and value == e for e in ident.equals)


def _why(ident: Identify, where: tuple[str, int, Point, str], value: float | str) -> str:
    function, address, point, _order = where
    shown = repr(value) if isinstance(value, str) else f"{value:g} (0x{int(value) & 0xFFFFFFFF:04X})"
    name = f"{ident.point} " if ident.point else ""
    return f"{name}{function} {address} {point.type.value} = {shown}"


def _identity(reader: ModbusReader, models: list[SunSpecModel]) -> dict[str, str]:
    common = next((m for m in models if m.id == 1), None)
    spec = next((pm.model(1) for pm in map(load_map, available_maps()) if pm.kind == "sunspec" and pm.model(1) is not None), None)
    if common is None or spec is None:
        return {}
    regs = reader.read(common.address, min(common.length + 2, MAX_REGS))
    out: dict[str, str] = {}
    for p in spec.points:
        if regs is None or p.name not in _IDENTITY or p.offset + p.count > len(regs):
            continue
        try:
            raw = decode_raw(regs[p.offset : p.offset + p.count], p)
        except DecodeError:
            continue
        out[p.name] = raw if isinstance(raw, str) else f"{raw:g}"
    return out


def read_registers(reader: ModbusReader, address: int, count: int, *, type_: str, input_regs: bool) -> dict[str, Any]:
    """Raw registers at `address` and, for a typed read, the decoded value (big-endian words)."""
    t = PointType(type_)
    need = {PointType.STRING: count}.get(t, 2 if t in (PointType.INT32, PointType.UINT32, PointType.ACC32, PointType.FLOAT32) else 1)
    count = max(count, need)
    if count > MAX_REGS or address + count > 0x10000:
        raise CliError(f"--count: at most {MAX_REGS} registers, inside 0..65535", EXIT_USAGE)
    regs = reader.read(address, count, input_regs=input_regs)
    if regs is None:
        raise CliError(
            f"Modbus {reader.where}: the device refused {'input' if input_regs else 'holding'} registers {address}+{count}", EXIT_FAIL
        )
    point = Point(name="value", offset=0, type=t, size=count if t is PointType.STRING else None)
    values: list[float | str | None] = []
    step = point.count
    for i in range(0, len(regs) - step + 1, step) if t is not PointType.STRING else [0]:
        try:
            values.append(decode_raw(regs[i : i + step], point))
        except DecodeError:
            values.append(None)
    return {"where": reader.where, "address": address, "registers": regs, "type": t.value, "values": values}


# ---- CAN ------------------------------------------------------------------------------------
def parse_can_id(text: str) -> int:
    """A CAN id in hex, as candump/cansend write it: 351, 0x351, 35C."""
    try:
        value = int(text, 16)
    except ValueError:
        raise CliError(f"ID: not a hex CAN id {text!r} (e.g. 351 or 0x351)", EXIT_USAGE) from None
    if not 0 <= value <= 0x1FFFFFFF:
        raise CliError(f"ID: {text} is outside 0..1FFFFFFF", EXIT_USAGE)
    return value


def parse_can_data(text: str) -> bytes:
    cleaned = "".join(c for c in text if c not in " :.-_")
    try:
        data = bytes.fromhex(cleaned)
    except ValueError:
        raise CliError(f"DATA: not hex bytes {text!r} (e.g. 2c01e803e8031c02 or '2c 01 e8 03')", EXIT_USAGE) from None
    if len(data) > 8:
        raise CliError(f"DATA: {len(data)} bytes; a classic CAN frame carries at most 8", EXIT_USAGE)
    return data


def can_decode(codec: Any, frame_id: int, data: bytes, *, extended: bool = False) -> dict[str, Any]:
    """One frame through the DBC: message name, raw signals and project quantities; `error` when unusable."""
    from interfaces.can.codec import FrameError

    out: dict[str, Any] = {"id": f"0x{frame_id:03X}", "data": data.hex(" "), "dlc": len(data)}
    try:
        frame = codec.decode(frame_id, data, is_extended_id=extended)
    except FrameError as exc:
        out["error"] = f"{exc.kind}: {exc}"
        return out
    msg = codec.message(frame_id)
    out["name"] = frame.name
    out["signals"] = {k: v for k, v in msg.decode(bytes(data), decode_choices=False, allow_truncated=True, allow_excess=True).items()}
    out["values"] = {q.value: v for q, v in frame.measurements.items()}
    if frame.protections is not None:
        out["protections"] = sorted(frame.protections)
        out["warnings"] = sorted(frame.warnings or ())
    if frame.info:
        out["info"] = dict(frame.info)
    return out


def can_decode_text(d: Mapping[str, Any]) -> str:
    head = f"{d['id']} [{d['dlc']}] {d['data']}"
    if "error" in d:
        return f"{head}  ! {d['error']}"
    parts = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in d["values"].items()]
    if "protections" in d:
        parts.append(f"protections={','.join(d['protections']) or 'none'}")
        parts.append(f"warnings={','.join(d['warnings']) or 'none'}")
    parts += [f"{k}={v}" for k, v in (d.get("info") or {}).items()]
    return f"{head}  {d['name']}  " + " ".join(parts)


def can_frames(bus: Any, *, count: int | None, idle_timeout_s: float | None, stop: Callable[[], bool]) -> Iterator[Any]:
    """Frames from `bus` until `count` frames, `idle_timeout_s` without a frame, or `stop()`."""
    seen = 0
    idle_s = 0.0
    while not stop() and (count is None or seen < count):
        msg = bus.recv(0.2)
        if msg is None:
            idle_s += 0.2
            if idle_timeout_s is not None and idle_s >= idle_timeout_s:
                return
            continue
        idle_s = 0.0
        seen += 1
        yield msg
