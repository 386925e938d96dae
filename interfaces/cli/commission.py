"""`emsctl commission`: start a commissioning run in the EMS, follow it, print the report and write it as JSON.

The measurement runs inside the EMS (it owns the Modbus link); this is its client: it asks for an
explicit confirmation (or --yes), POSTs /api/v1/commission, polls GET /api/v1/commission?run=N (the
run ends itself if this client goes away), and on Ctrl-C asks the EMS to abort (DELETE) and waits
for it to be back at 0 W with the mode it started from. Exit 0 when every step was measured, 1 when
the run was aborted or failed (the report says why), 5 when the EMS refused to start it.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from interfaces.cli.client import EXIT_FAIL, EXIT_OK, EXIT_USAGE, ApiClient, CliError

__all__ = ["add_parser", "commission", "report_text"]

_FOLLOW_S = 0.5
_ABORT_WAIT_S = 90.0  # after an abort: at most this long for the EMS to be back at 0 W
_FINISHED = ("done", "aborted", "failed")


def add_parser(sub: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    cm = sub.add_parser(
        "commission",
        parents=list(parents),
        help="measure the site (operator token; MOVES THE BATTERY): readings' signs, inverter dead time, tau, gain, ramp, meter wiring",
    )
    cm.add_argument("--yes", action="store_true", help="do not ask for confirmation (needed when not interactive)")
    cm.add_argument("--step", type=float, default=1000.0, metavar="W", help="step size, W (default 1000; at most half of every limit)")
    cm.add_argument("--directions", choices=("both", "discharge", "charge"), default="both", help="both (default): +S, 0, -S, 0 W")
    cm.add_argument("--max-hold", type=float, default=30.0, metavar="S", help="longest hold of one step, s (default 30)")
    cm.add_argument(
        "--poll", type=float, default=0.1, metavar="S", help="fast poll of the inverter and meter during the run, s (default 0.1)"
    )
    cm.add_argument("-o", "--output", metavar="FILE", help="write the report as JSON here (default ./commission-<site>-run<N>-<time>.json)")


def _confirm(args: argparse.Namespace, err: TextIO, stdin: TextIO) -> None:
    if args.yes:
        return
    if not stdin.isatty():
        raise CliError("commission moves the battery: confirm with --yes (standard input is not a terminal)", EXIT_USAGE)
    steps = {"both": f"+{args.step:g}, 0, -{args.step:g}, 0 W", "discharge": f"+{args.step:g}, 0 W", "charge": f"-{args.step:g}, 0 W"}
    err.write(
        "emsctl commission: the EMS will take the battery (EXTERNAL, short TTL), hold 0 W, check every reading,\n"
        f"then step the set-point {steps[args.directions]} (inside every limit), and end at 0 W with the mode as before.\n"
        "It aborts on any FAULT or binding limit, on Ctrl-C, or if this client goes away.\n"
        "Type yes to go on: "
    )
    err.flush()
    if stdin.readline().strip().lower() != "yes":
        raise CliError("not confirmed: nothing was changed", EXIT_USAGE)


def commission(
    args: argparse.Namespace,
    api: ApiClient,
    emit: Callable[[Any, str | Callable[[], str]], None],
    stop: threading.Event,
    *,
    err: TextIO | None = None,
    stdin: TextIO | None = None,
    as_json: bool = False,
) -> int:
    err = err or sys.stderr
    _confirm(args, err, stdin or sys.stdin)
    body = {
        "confirm": True,
        "step_w": args.step,
        "directions": args.directions,
        "max_hold_s": args.max_hold,
        "poll_period_s": args.poll,
    }
    started = api.request("POST", "/commission", body=body, write=True, ok=(202,)).body
    run = int(started["run"])
    if not as_json:
        err.write(f"{started.get('note') or f'run {run} started'}\n")
        err.flush()
    view = _follow(api, run, stop, err, quiet=as_json)
    report = view.get("report") or {}
    path = _write(report, args.output, run)
    report_out = {**report, "report_file": str(path)}
    emit(report_out, lambda: report_text(report) + f"\nwrote {path}")
    return EXIT_OK if view.get("state") == "done" else EXIT_FAIL


def _follow(api: ApiClient, run: int, stop: threading.Event, err: TextIO, *, quiet: bool) -> dict[str, Any]:
    """Poll until the run finishes; Ctrl-C (or `stop`) asks the EMS to abort, then waits for its end."""
    aborting_since: float | None = None
    last_phase = ""
    waited_s = 0.0
    while True:
        try:
            view = api.request("GET", "/commission", params={"run": run}).body
            if view.get("run") != run:
                raise CliError(f"run {run} is no longer the EMS's latest run (it reports {view.get('run')})", EXIT_FAIL)
            if view.get("state") in _FINISHED:
                return view
            phase = str(view.get("phase", ""))
            if phase != last_phase and not quiet:
                p = view.get("progress") or {}
                err.write(f"  {p.get('elapsed_s', 0):>6} s  {phase}\n")
                err.flush()
                last_phase = phase
            if stop.is_set() and aborting_since is None:
                raise KeyboardInterrupt
            if stop.wait(_FOLLOW_S) and aborting_since is None:
                raise KeyboardInterrupt
            if aborting_since is not None:
                waited_s += _FOLLOW_S
                if waited_s > _ABORT_WAIT_S:
                    raise CliError(f"run {run}: aborted, but the EMS did not report its end within {_ABORT_WAIT_S:g} s", EXIT_FAIL)
        except KeyboardInterrupt:
            if aborting_since is not None:
                raise
            aborting_since = 0.0
            err.write(f"run {run}: aborting (the EMS goes back to 0 W and the previous mode) ...\n")
            err.flush()
            api.request("DELETE", "/commission", write=True, ok=(200, 409))
            stop = threading.Event()  # keep polling until the EMS reports the end


def _write(report: Mapping[str, Any], output: str | None, run: int) -> Path:
    if output:
        path = Path(output)
    else:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        site = str(report.get("site") or "site").replace("/", "_")
        path = Path(f"commission-{site}-run{run}-{stamp}.json")
    try:
        path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise CliError(f"--output: cannot write {path}: {exc.strerror or exc}", EXIT_USAGE) from exc
    return path


def _f(v: Any, fmt: str, unit: str = "") -> str:
    return "-" if not isinstance(v, int | float) or isinstance(v, bool) else f"{v:{fmt}}{unit}"


def report_text(r: Mapping[str, Any]) -> str:
    """The report as a field engineer reads it."""
    lines = [
        f"commissioning run {r.get('run')} by {r.get('who')} on site {r.get('site')}: {str(r.get('result', '?')).upper()}"
        f" in {_f(r.get('duration_s'), '.1f', ' s')} (profile {r.get('profile')}, fast poll {_f(r.get('poll_period_s'), '.2f', ' s')})"
    ]
    if r.get("reason"):
        lines.append(f"  reason: {r['reason']}")
    planned = r.get("steps_planned") or []
    lines.append("  steps: " + (", ".join(f"{s:+.0f} W" for s in planned) or "none"))
    lines += [f"  note: {n}" for n in r.get("notes") or []]
    lines.append("checks")
    for c in r.get("checks") or []:
        lines.append(f"  {c.get('status', '?'):5} {c.get('name', ''):34} {c.get('detail', '')}")
    lines.append("steps (dead time s, tau s, gain, ramp W/s, fit r2) inverter | grid meter")
    for s in r.get("steps") or []:
        e, g = s.get("ess") or {}, s.get("grid") or {}

        def cell(f: Mapping[str, Any]) -> str:
            if not f:
                return "no fit"
            return (
                f"{_f(f.get('dead_time_s'), '.2f')} {_f(f.get('tau_s'), '.2f')} {_f(f.get('gain'), '+.3f')} "
                f"{_f(f.get('ramp_w_per_s'), '.0f') if f.get('ramp_w_per_s') is not None else '-'} {_f(f.get('r2'), '.3f')}"
            )

        lines.append(f"  {s.get('index')}: {s.get('from_w', 0):+6.0f} -> {s.get('to_w', 0):+6.0f} W  {cell(e):34} | {cell(g)}")
    inv = r.get("inverter") or {}
    lines.append("inverter")
    lines.append(f"  dead time      {_f(inv.get('dead_time_s'), '.2f', ' s')}")
    lines.append(f"  time constant  {_f(inv.get('tau_s'), '.2f', ' s')}")
    lines.append(f"  gain           {_f(inv.get('gain'), '.3f')}")
    ramp = inv.get("ramp_w_per_s")
    lines.append(f"  ramp           {'not rate-limited' if ramp is None else _f(ramp, '.0f', ' W/s')}")
    lines.append(
        f"  steps          {inv.get('responded', 0)} of {inv.get('steps', 0)} responded"
        + ("" if inv.get("settled") else ", not all settled")
    )
    m = r.get("meter") or {}
    lines.append("meter")
    lines.append(f"  {m.get('verdict', '?')}: {m.get('detail', '')}")
    lines.append(
        f"  delay after the inverter {_f(m.get('delay_after_inverter_s'), '.2f', ' s')}, refresh {_f(m.get('refresh_s'), '.2f', ' s')}"
    )
    lines.append(f"  phase: {m.get('phase', '-')}")
    yaml_lines = r.get("suggested_yaml") or []
    lines.append("suggested config" + ("" if yaml_lines else ": none (the run did not finish)"))
    lines += [f"  {ln}" for ln in yaml_lines]
    end = r.get("end") or {}
    if end:
        at0 = "at 0 W" if end.get("at_zero") else "NOT confirmed at 0 W"
        lines.append(
            f"end: battery {at0} ({_f(end.get('ess_power_w'), '+.0f', ' W')}), mode {end.get('mode', '?')}"
            + (" restored" if end.get("restored") else f" NOT restored: {end.get('why') or end.get('release')}")
        )
    return "\n".join(lines)
