"""Day profiles of household load and PV production (DESIGN §7: CSV `t_s,load_w,pv_w`).

A profile is held on a 1 s grid (step-hold between rows) and wraps at its end, so a plant can
start at any time of day and run for longer than one day. Lookups are a list index: cheap enough
for replay at thousands of times real time.
"""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

__all__ = ["PROFILES_DIR", "Profile", "ProfileError", "available_profiles", "load_profile"]

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
_HEADER = ("t_s", "load_w", "pv_w")


class ProfileError(ValueError):
    """The profile file is missing or malformed (the message names the file and line)."""


class Profile:
    """Load and PV power on a 1 s grid; `at(t_s)` step-holds and wraps at `duration_s`."""

    __slots__ = ("_load_w", "_n", "_pv_w", "name")

    def __init__(self, load_w: list[float], pv_w: list[float], *, name: str = "profile") -> None:
        if not load_w or len(load_w) != len(pv_w):
            raise ProfileError(f"{name}: profile needs equally long, non-empty load and pv series")
        self._load_w = load_w
        self._pv_w = pv_w
        self._n = len(load_w)
        self.name = name

    @property
    def duration_s(self) -> int:
        return self._n

    def at(self, t_s: float) -> tuple[float, float]:
        """(load_w, pv_w) at profile time `t_s` (step-hold on whole seconds, wraps at the end)."""
        i = int(t_s) % self._n
        return self._load_w[i], self._pv_w[i]

    def series(self) -> tuple[list[float], list[float]]:
        """The (load_w, pv_w) lists on the 1 s grid (shared, do not modify): for hot loops."""
        return self._load_w, self._pv_w

    @classmethod
    def constant(cls, *, load_w: float, pv_w: float, duration_s: int = 1, name: str = "constant") -> Profile:
        """A flat profile (tests, rehearsals)."""
        return cls([float(load_w)] * duration_s, [float(pv_w)] * duration_s, name=name)


def available_profiles() -> list[str]:
    """Bare names of the profiles shipped in `simulators/profiles/`."""
    names = {p.name.removesuffix(".gz").removesuffix(".csv") for p in PROFILES_DIR.glob("*.csv*")}
    return sorted(names)


def _resolve(path_or_name: str | Path) -> Path:
    p = Path(path_or_name)
    if p.is_file():
        return p
    for candidate in (PROFILES_DIR / f"{p.name}.csv.gz", PROFILES_DIR / f"{p.name}.csv", PROFILES_DIR / p.name):
        if candidate.is_file():
            return candidate
    raise ProfileError(f"profile not found: {path_or_name!s} (shipped: {', '.join(available_profiles())})")


def load_profile(path_or_name: str | Path) -> Profile:
    """Read a `t_s,load_w,pv_w` CSV (plain or .gz), or a shipped profile by bare name (`summer-sunny`).

    Rows must have increasing `t_s`; gaps are step-held from the previous row onto a 1 s grid.
    """
    path = _resolve(path_or_name)
    raw = path.read_bytes()
    if path.suffix == ".gz" or raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    reader = csv.reader(io.StringIO(raw.decode("utf-8")))
    header = next(reader, None)
    if header is None or tuple(h.strip() for h in header[:3]) != _HEADER:
        raise ProfileError(f"{path}: header must be {','.join(_HEADER)} (got {header!r})")
    load_w: list[float] = []
    pv_w: list[float] = []
    prev_t = -1
    for lineno, row in enumerate(reader, start=2):
        if not row or not "".join(row).strip():
            continue
        try:
            t = int(float(row[0]))
            load, pv = float(row[1]), float(row[2])
        except (IndexError, ValueError) as exc:
            raise ProfileError(f"{path}:{lineno}: bad row {row!r} ({exc})") from exc
        if t <= prev_t:
            raise ProfileError(f"{path}:{lineno}: t_s must increase (got {t} after {prev_t})")
        if load_w:
            gap = t - prev_t - 1
            if gap > 0:
                load_w.extend([load_w[-1]] * gap)
                pv_w.extend([pv_w[-1]] * gap)
        elif t > 0:
            load_w.extend([load] * t)
            pv_w.extend([max(pv, 0.0)] * t)
        load_w.append(load)
        pv_w.append(max(pv, 0.0))
        prev_t = t
    if not load_w:
        raise ProfileError(f"{path}: no data rows")
    return Profile(load_w, pv_w, name=path.name.removesuffix(".gz").removesuffix(".csv"))
