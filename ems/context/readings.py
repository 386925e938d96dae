"""Readings with owners (DESIGN.md §1): every quantity has one source that may write it.

A source (a Modbus device, the CAN BMS, an MQTT ingest topic) claims its quantities at start-up
and gets a `ReadingsWriter`; a write of a quantity it does not own is refused, counted
(`readings_refused`) and logged once per source and quantity. A *firm* claim owns a quantity
for good; an *optional* claim (a copy a device can also provide, e.g. the inverter's battery
readings beside a CAN BMS) holds it only until a firm claim takes it, and a write it lost is
dropped quietly. Each stored reading names its source.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import structlog

from ems.context.counters import Counters
from ems.energy import EnergyTotals
from ems.model import BmsFlags, Quantity, Reading
from ems.plausibility import Window

__all__ = ["ClaimResult", "Readings", "ReadingsWriter"]

log = structlog.get_logger("ems.context")


@dataclass(frozen=True, slots=True)
class _Owner:
    source: str
    device: str  # the device whose health answers for this source (an MQTT topic -> "broker")
    firm: bool


@dataclass(frozen=True, slots=True)
class ClaimResult:
    granted: frozenset[Quantity]
    refused: Mapping[Quantity, str]  # quantity -> the source that owns it


class Readings:
    """`windows`: the plausible range of each quantity on this site (ems/plausibility.py); a value
    outside is refused like a non-finite one: counted (`readings_implausible`), logged once per
    episode (`reading_implausible` ... `reading_plausible_again`), and the reading goes stale."""

    def __init__(self, counters: Counters, windows: Mapping[Quantity, Window] | None = None) -> None:
        self._lock = threading.Lock()
        self._counters = counters
        self._windows: Mapping[Quantity, Window] = windows or {}
        self._implausible: set[tuple[str, Quantity]] = set()
        self._values: dict[Quantity, Reading] = {}
        self._owners: dict[Quantity, _Owner] = {}
        self._flags: BmsFlags | None = None
        self._flags_owner: str | None = None
        self._refusals_logged: set[tuple[str, Quantity]] = set()
        self._energy = EnergyTotals()  # grid import/export and battery charge/discharge, integrated from power

    # ---- start-up -------------------------------------------------------------------------------
    def claim(
        self,
        source: str,
        quantities: Iterable[Quantity],
        *,
        optional: Iterable[Quantity] = (),
        device: str | None = None,
        bms_flags: bool = False,
    ) -> ReadingsWriter:
        """Claim `quantities` firmly and `optional` ones while nobody else does; returns the source's writer."""
        firm = list(dict.fromkeys(quantities))
        soft = [q for q in dict.fromkeys(optional) if q not in firm]
        dev = device or source
        refused: dict[Quantity, str] = {}
        with self._lock:
            for q in firm:
                cur = self._owners.get(q)
                if cur is None or cur.source == source or not cur.firm:
                    self._owners[q] = _Owner(source, dev, True)
                else:
                    refused[q] = cur.source
            for q in soft:
                if q not in self._owners:
                    self._owners[q] = _Owner(source, dev, False)
            if bms_flags:
                if self._flags_owner not in (None, source):
                    raise ValueError(f"bms flags: already owned by {self._flags_owner}; {source} cannot own them too")
                self._flags_owner = source
        for q, owner in refused.items():
            self._counters.count("readings_claims_refused")
            log.warning(
                "reading_claim_refused", source=source, quantity=q.value, owner=owner, effect="its values of this quantity are dropped"
            )
        return ReadingsWriter(self, source, ClaimResult(frozenset(firm) - set(refused), MappingProxyType(refused)), frozenset(soft))

    # ---- writers --------------------------------------------------------------------------------
    def _store(self, source: str, values: Mapping[Quantity, float], at_s: float, quiet: frozenset[Quantity]) -> int:
        """Store finite values the source owns; returns how many were dropped (non-finite or refused).
        A value of a quantity in `quiet` (the source's optional claims) that it does not own is dropped silently."""
        good: dict[Quantity, Reading] = {}
        bad = 0
        refused: list[tuple[Quantity, str | None]] = []
        implausible: list[tuple[Quantity, float, Window]] = []  # new episodes only
        plausible_again: list[Quantity] = []
        rejected_window = 0
        with self._lock:
            for q, v in values.items():
                owner = self._owners.get(q)
                if owner is None or owner.source != source:
                    if q not in quiet:
                        refused.append((q, None if owner is None else owner.source))
                    continue
                if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                    bad += 1
                    continue
                window = self._windows.get(q)
                key = (source, q)
                if window is not None and not window.holds(v):
                    rejected_window += 1
                    if key not in self._implausible:
                        self._implausible.add(key)
                        implausible.append((q, float(v), window))
                    continue
                if key in self._implausible:
                    self._implausible.discard(key)
                    plausible_again.append(q)
                good[q] = Reading(float(v), at_s, source)
            self._values.update(good)
            for q, r in good.items():
                self._energy.add(q, r.value, r.at_s)
            first = [(q, o) for q, o in refused if (source, q) not in self._refusals_logged]
            self._refusals_logged.update((source, q) for q, _o in first)
        if bad:
            self._counters.count("measurements_rejected", bad)
        if rejected_window:
            self._counters.count("readings_implausible", rejected_window)
        for q, v, window in implausible:
            log.warning(
                "reading_implausible",
                source=source,
                quantity=q.value,
                value=v,
                window=window.describe(),
                effect="refused: the reading goes stale",
            )
        for q in plausible_again:
            log.info("reading_plausible_again", source=source, quantity=q.value)
        if refused:
            self._counters.count("readings_refused", len(refused))
        for q, holder in first:
            log.warning("reading_refused", source=source, quantity=q.value, owner=holder or "none", effect="dropped; logged once")
        return bad + len(refused) + rejected_window

    def _set_flags(self, source: str, flags: BmsFlags) -> bool:
        with self._lock:
            if self._flags_owner != source:
                ok = False
            else:
                self._flags, ok = flags, True
        if not ok:
            self._counters.count("readings_refused")
        return ok

    def _owns(self, source: str, q: Quantity) -> bool:
        with self._lock:
            o = self._owners.get(q)
            return o is not None and o.source == source

    # ---- readers --------------------------------------------------------------------------------
    def snapshot(self) -> tuple[Mapping[Quantity, Reading], BmsFlags | None]:
        with self._lock:
            return MappingProxyType(dict(self._values)), self._flags

    def energy(self) -> Mapping[str, float]:
        """Energy totals integrated from the power readings since start, Wh (ems/energy.py)."""
        with self._lock:
            return self._energy.totals()

    def owners(self) -> Mapping[Quantity, tuple[str, str]]:
        """quantity -> (source, device)."""
        with self._lock:
            return MappingProxyType({q: (o.source, o.device) for q, o in self._owners.items()})


class ReadingsWriter:
    """One source's handle: it writes only what the source owns."""

    def __init__(self, readings: Readings, source: str, claim: ClaimResult, optional: frozenset[Quantity]) -> None:
        self._readings = readings
        self.source = source
        self.claim = claim
        self._optional = optional

    def owns(self, q: Quantity) -> bool:
        """True while this source owns `q` (an optional claim can be taken over by a firm one)."""
        return self._readings._owns(self.source, q)

    def update(self, values: Mapping[Quantity, float], *, at_s: float) -> int:
        """Store the values with their receive time; returns how many were dropped."""
        return self._readings._store(self.source, values, at_s, self._optional)

    def set_bms_flags(self, *, protections: Iterable[str], warnings: Iterable[str], at_s: float) -> bool:
        return self._readings._set_flags(self.source, BmsFlags(frozenset(protections), frozenset(warnings), at_s))
