"""SunSpec discovery as one pure function over a register reader (SunSpec Information Model, "SunS"
marker + model chain): used by the device link at connect and by `emsctl modbus scan`.

`read(address, count)` returns the registers or None when the device refuses the request (a
Modbus exception response); transport errors propagate to the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["MAX_MODELS", "SUNSPEC_BASES", "SUNS_MARKER", "SunSpecChain", "SunSpecModel", "discover", "find_marker", "walk_models"]

SUNS_MARKER = (0x5375, 0x6E53)  # "SunS" in two registers
SUNSPEC_BASES = (40000, 0, 50000)  # the standard base addresses, in the order the spec suggests
MAX_MODELS = 64  # a chain longer than this is treated as broken
END_ID = 0xFFFF

ReadFn = Callable[[int, int], Sequence[int] | None]


@dataclass(frozen=True, slots=True)
class SunSpecModel:
    id: int
    address: int  # of the model's ID register (ID at +0, L at +1, points from +2)
    length: int  # L: registers after the ID and L registers


@dataclass(frozen=True, slots=True)
class SunSpecChain:
    base: int  # address of the marker
    models: tuple[SunSpecModel, ...]
    end_address: int | None  # the end marker, or None when the chain was cut short

    @property
    def ids(self) -> frozenset[int]:
        return frozenset(m.id for m in self.models)

    def model(self, model_id: int) -> SunSpecModel | None:
        """The first model with this ID (a device may repeat a model; the first is the one we use)."""
        return next((m for m in self.models if m.id == model_id), None)


def is_marker(regs: Sequence[int] | None) -> bool:
    return regs is not None and tuple(regs[:2]) == SUNS_MARKER


def find_marker(read: ReadFn, bases: Sequence[int] = SUNSPEC_BASES) -> int | None:
    """The first of `bases` that holds the marker."""
    for base in bases:
        if is_marker(read(base, 2)):
            return base
    return None


def walk_models(read: ReadFn, base: int, *, max_models: int = MAX_MODELS) -> SunSpecChain:
    """Walk the model chain after the marker at `base` until the end marker (or a refused read)."""
    models: list[SunSpecModel] = []
    addr = base + 2
    for _ in range(max_models):
        head = read(addr, 2)
        if head is None or len(head) < 2:
            return SunSpecChain(base, tuple(models), None)
        model_id, length = int(head[0]), int(head[1])
        if model_id == END_ID:
            return SunSpecChain(base, tuple(models), addr)
        models.append(SunSpecModel(model_id, addr, length))
        addr += 2 + length
        if addr > 0xFFFF:
            break
    return SunSpecChain(base, tuple(models), None)


def discover(read: ReadFn, bases: Sequence[int] = SUNSPEC_BASES) -> SunSpecChain | None:
    """Marker + model chain, or None when no base holds the marker."""
    base = find_marker(read, bases)
    return None if base is None else walk_models(read, base)
