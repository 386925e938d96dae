"""The solver at the edge: HiGHS prints a banner on file descriptor 1 the first time a solver is made.

Logs go to stderr (JSON under systemd), but a banner on stdout still ends up in the journal as a
line that is not JSON. `captured_stdout()` points fd 1 at a temporary file for the duration of a
call and hands back what was written, so the planner thread can log it as a debug event instead.
Only the planner thread writes to stdout while it is captured (nothing else in the EMS prints).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["captured_stdout", "warm_up"]


@contextmanager
def captured_stdout(out: list[str]) -> Iterator[None]:
    """Capture what C code (and Python) writes to fd 1 during the block; appends it to `out`."""
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
            tmp.seek(0)
            out.append(tmp.read().decode("utf-8", "replace"))


def warm_up() -> str:
    """Import the solver and make one instance (the banner and the import cost, once, off the first plan)."""
    out: list[str] = []
    with captured_stdout(out):
        import highspy  # lazily: only the planner thread pays for the solver

        highspy.Highs()  # type: ignore[no-untyped-call]
    return "".join(out).strip()
