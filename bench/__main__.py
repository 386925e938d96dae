"""`make bench` / `python -m bench`: run every `bench/bench_*.py`, write bench/results.json, print a table.

Each benchmark runs as its own process (`python -m bench.bench_x`) and prints one JSON object
(its last JSON line counts). A missing, failing or timed-out benchmark is recorded with its
error; the others still run. Ours run first (regulation, latency, loop), then any other
`bench_*.py` in name order. The whole run is kept under BUDGET_S: a benchmark whose time limit
would overrun the budget gets the time that is left (or is skipped, recorded as such).
`BENCH_QUICK=1` asks every benchmark for its short version. `--only bench_faults[,...]` (`make faults`)
runs just those and merges them into an existing bench/results.json.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

from bench.common import REPO_ROOT
from bench.goals import evaluate, table

BUDGET_S = 570.0  # the whole bench stays under 10 minutes (about 8 in practice)
FIRST = ("bench_regulation", "bench_latency", "bench_loop")
TIMEOUT_S = {"bench_regulation": 360.0, "bench_latency": 90.0, "bench_loop": 380.0, "bench_faults": 240.0}
DEFAULT_TIMEOUT_S = 120.0
RESERVED_S = {"bench_faults": 150.0}  # kept for these out of the budget, so the fault campaign always runs (~100 s)
MIN_USEFUL_S = 20.0


def discover() -> list[str]:
    found = sorted(p.stem for p in (REPO_ROOT / "bench").glob("bench_*.py"))
    return [n for n in FIRST if n in found] + [n for n in found if n not in FIRST]


def run_one(name: str, timeout_s: float) -> dict[str, Any]:
    t0 = time.monotonic()
    # its own process group, so a timeout also ends the worker processes a benchmark started
    proc = subprocess.Popen(
        [sys.executable, "-m", f"bench.{name}"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"error": f"timed out after {timeout_s:.0f} s", "wall_s": round(time.monotonic() - t0, 1)}
    proc_out = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    wall_s = round(time.monotonic() - t0, 1)
    result = None
    for line in reversed(proc_out.stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                result = json.loads(line)
                break
            except ValueError:
                continue
    if proc_out.returncode != 0 or not isinstance(result, dict):
        tail = (proc_out.stderr or proc_out.stdout)[-800:]
        return {
            "error": f"exit {proc_out.returncode}" + ("" if isinstance(result, dict) else ", no JSON object on stdout"),
            "stderr_tail": tail,
            "wall_s": wall_s,
            **({"partial": result} if isinstance(result, dict) else {}),
        }
    result.setdefault("bench_wall_s", wall_s)
    return result


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    only = args[1].split(",") if len(args) == 2 and args[0] == "--only" else None
    started = time.monotonic()
    out = REPO_ROOT / "bench" / "results.json"
    results: dict[str, Any] = {}
    if only is not None and out.exists():  # keep the other benchmarks' figures
        results = dict(json.loads(out.read_text(encoding="utf-8")).get("benchmarks", {}))
    names = only if only is not None else discover()
    for i, name in enumerate(names):
        held_s = sum(RESERVED_S.get(n, 0.0) for n in names[i + 1 :])  # for the reserved ones still to come
        left_s = BUDGET_S - (time.monotonic() - started) - held_s
        if left_s < MIN_USEFUL_S:
            results[name] = {"error": f"skipped: the {BUDGET_S:.0f} s budget of make bench is used up"}
            continue
        timeout_s = min(TIMEOUT_S.get(name, DEFAULT_TIMEOUT_S), left_s)
        print(f"bench: {name} (limit {timeout_s:.0f} s) ...", file=sys.stderr, flush=True)
        results[name] = run_one(name, timeout_s)
        status = "error: " + results[name]["error"] if "error" in results[name] else "ok"
        print(f"bench: {name} {status} in {results[name].get('bench_wall_s', results[name].get('wall_s'))} s", file=sys.stderr, flush=True)
    goals = evaluate(results)
    doc = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": os.environ.get("BENCH_QUICK") == "1",
        "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "load_avg_1m": round(os.getloadavg()[0], 2)},
        "total_wall_s": round(time.monotonic() - started, 1),
        "goals": goals,
        "benchmarks": results,
    }
    out.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    print(table(doc))
    print(f"\nwritten {out.relative_to(REPO_ROOT)} in {doc['total_wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
