"""The supported devices: every profile in interfaces/modbus/maps, as `emsctl devices` lists them
and docs/devices.md shows them (`python -m interfaces.modbus.devices > docs/devices.md`; a test
checks the file is current). The facts come from each profile's `device:` and `control:` sections.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from interfaces.modbus.pointmap import PointMap, available_maps, load_map

__all__ = ["DeviceRow", "device_rows", "render_markdown"]


@dataclass(frozen=True, slots=True)
class DeviceRow:
    name: str
    kind: str
    vendor: str
    model: str
    method: str
    keepalive: str
    revert: str
    release: str
    transport: str
    installer: str
    source: str


def _revert(pmap: PointMap) -> str:
    c = pmap.control
    if c is None:
        return "-"
    r = c.revert
    if r.point is not None:
        span = f"{r.min_s:g}-{r.max_s:g} s" if r.max_s is not None else f">= {r.min_s:g} s"
        floor = f" (at least {r.min_s:g} s: a process death takes that long)" if r.min_s > 5 else ""
        again = ", rewritten before every command" if r.rewrite else ""
        return f"settable ({r.point}, {r.unit}, {span}): written = control.fault_timeout_s{floor} and read back{again}; then {r.reverts_to}"
    if r.fixed_s is not None:
        return f"fixed by the device, about {r.fixed_s:g} s; then {r.reverts_to}"
    return f"none known: the last command stays until {r.reverts_to}"


def _keepalive(pmap: PointMap) -> str:
    c = pmap.control
    if c is None:
        return "-"
    parts = ["command every control cycle"]
    if c.heartbeat:
        parts.append(f"counter {c.heartbeat}")
    if c.write.min_interval_s:
        parts.append(f"unchanged at most every {c.write.min_interval_s:g} s")
    if c.write.keepalive_s:
        parts.append(f"needed within {c.write.keepalive_s:g} s")
    return ", ".join(parts)


def _transport(pmap: PointMap) -> str:
    d = pmap.device
    bits = [pmap.kind, f"FC{'4' if pmap.function == 'input' else '3'}", f"{pmap.word_order}-endian words"]
    if d.port:
        bits.append(f"port {d.port}")
    if d.device_id is not None:
        bits.append(f"unit {d.device_id}")
    if pmap.device_ids:
        bits.append("units " + ", ".join(f"{k} {v}" for k, v in pmap.device_ids.items()))
    if d.single_client:
        bits.append("ONE client only")
    return ", ".join(bits)


def device_rows() -> list[DeviceRow]:
    rows = []
    for name in available_maps():
        pmap = load_map(name)
        d, c = pmap.device, pmap.control
        rows.append(
            DeviceRow(
                name=name,
                kind=d.kind,
                vendor=d.vendor or "-",
                model=d.model or pmap.description,
                method=c.method.value if c is not None else "read only",
                keepalive=_keepalive(pmap),
                revert=_revert(pmap),
                release=", ".join(f"{w.point}={w.value:g}" for w in c.release) if c is not None and c.release else "-",
                transport=_transport(pmap),
                installer=d.installer or "-",
                source=" ".join(d.source.split()) or "-",
            )
        )
    return rows


def render_markdown() -> str:
    rows = device_rows()
    lines = [
        "# Supported devices",
        "",
        "Generated from the profiles in `interfaces/modbus/maps/` by `python -m interfaces.modbus.devices > docs/devices.md`;",
        "a unit test fails when this file and the profiles disagree. `emsctl devices` prints the same list.",
        "Pick a profile with `modbus.ess.map` / `modbus.meter.map` (docs/configuration.md); `emsctl modbus scan` suggests one.",
        "",
        "| profile | kind | vendor | control method | keep-alive | revert timer | release on stop |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [f"| `{r.name}` | {r.kind} | {r.vendor} | {r.method} | {r.keepalive} | {r.revert} | {r.release} |" for r in rows]
    lines += ["", "## Per profile", ""]
    for r in rows:
        lines += [
            f"### `{r.name}` — {r.vendor} {r.model}".rstrip(),
            "",
            f"- transport: {r.transport}",
            f"- installer settings: {r.installer}",
            f"- sources: {r.source}",
            "",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(render_markdown())
