"""Health per device and thread liveness (DESIGN.md §1).

A *device* is what the EMS talks to or keeps (ess, meter, pv, bms, broker, store, uplink, api):
its last good unit of work, error streak, last error and a small frozen info mapping (identity,
map, link state). A *thread* beats a heartbeat; the controller supervises the threads that serve
a required device. Which device is required follows from ownership (it owns a required source)
or from its role (the actuator); the context works that out in `snapshot`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import cast

import structlog

from ems.context.frozen import freeze
from ems.model import DeviceHealth, Quantity, ThreadHealth

__all__ = ["Health"]

log = structlog.get_logger("ems.context")

_EMPTY: Mapping[str, object] = MappingProxyType({})


@dataclass(slots=True)
class _Device:
    name: str
    kind: str
    where: str
    thread: str
    actuator: bool
    last_ok_s: float | None = None
    error_streak: int = 0
    errors_total: int = 0
    last_error: str | None = None
    last_error_s: float | None = None
    info: Mapping[str, object] = field(default_factory=lambda: _EMPTY)


class Health:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._devices: dict[str, _Device] = {}
        self._threads: dict[str, tuple[tuple[str, ...], float | None]] = {}

    # ---- start-up -------------------------------------------------------------------------------
    def register_device(self, name: str, *, kind: str, where: str, thread: str, actuator: bool = False) -> None:
        """Register (or re-describe) a device; its history (streaks, last ok) is kept."""
        with self._lock:
            d = self._devices.get(name)
            if d is None:
                self._devices[name] = _Device(name, kind, where, thread, actuator)
            else:
                d.kind, d.where, d.thread, d.actuator = kind, where, thread, actuator

    def register_thread(self, name: str, devices: Iterable[str] = ()) -> None:
        with self._lock:
            old_devices, beat = self._threads.get(name, ((), None))
            self._threads[name] = (tuple(dict.fromkeys((*old_devices, *devices))), beat)

    # ---- workers --------------------------------------------------------------------------------
    def beat(self, thread: str, *, at_s: float) -> None:
        with self._lock:
            devices, _beat = self._threads.get(thread, ((), None))
            self._threads[thread] = (devices, at_s)

    def ok(self, device: str, *, at_s: float) -> int:
        """A good unit of work; returns the error streak this ends (0 if none): log recovery when > 0."""
        with self._lock:
            d = self._device(device)
            ended, d.error_streak, d.last_ok_s = d.error_streak, 0, at_s
            return ended

    def error(self, device: str, *, reason: str, at_s: float) -> int:
        """A failed unit of work; returns the streak (1 = the ok -> failed edge: log it)."""
        with self._lock:
            d = self._device(device)
            d.error_streak += 1
            d.errors_total += 1
            d.last_error, d.last_error_s = reason[:300], at_s
            return d.error_streak

    def set_info(self, device: str, **info: object) -> None:
        """Replace the device's info (identity, map, link state); stored frozen."""
        frozen = cast(Mapping[str, object], freeze(info))
        with self._lock:
            self._device(device).info = frozen

    def _device(self, name: str) -> _Device:
        d = self._devices.get(name)
        if d is None:  # a device nobody registered (a typo in a worker, an ad-hoc tool): visible as kind "unknown", logged once
            d = self._devices[name] = _Device(name, "unknown", "", name, False)
            log.warning("health_device_unregistered", device=name, hint="a worker reports on a device it never registered")
        return d

    # ---- readers --------------------------------------------------------------------------------
    def snapshot(
        self, owners: Mapping[Quantity, tuple[str, str]], required_sources: frozenset[Quantity]
    ) -> tuple[tuple[DeviceHealth, ...], tuple[ThreadHealth, ...]]:
        """Devices (required: the actuator, or the owner of a required source) and threads.

        `owners`: quantity -> (source, device), from `Readings.owners()`."""
        owned: dict[str, list[Quantity]] = {}
        for q, (_source, device) in owners.items():
            owned.setdefault(device, []).append(q)
        with self._lock:
            rows = [(d, d.info) for d in self._devices.values()]
            devices = tuple(
                DeviceHealth(
                    name=d.name,
                    kind=d.kind,
                    where=d.where,
                    thread=d.thread,
                    required=d.actuator or any(q in required_sources for q in owned.get(d.name, ())),
                    owns=tuple(sorted(owned.get(d.name, ()))),
                    last_ok_s=d.last_ok_s,
                    error_streak=d.error_streak,
                    errors_total=d.errors_total,
                    last_error=d.last_error,
                    last_error_s=d.last_error_s,
                    info=info,
                )
                for d, info in rows
            )
            threads = tuple(ThreadHealth(n, devs, beat) for n, (devs, beat) in self._threads.items())
        return devices, threads
